//! Real Postgres and Redis for tests, from `LYSS_TEST_POSTGRES_URL` and `LYSS_TEST_REDIS_URL`.
//!
//! Unset locally: the test is skipped with a printed reason. With `CI=true`, an unset or
//! unreachable service fails the test — CI never passes by skipping.

use sqlx::Connection as _;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if in_ci() => {
            panic!("CI=true but {var} is not set: integration tests must not be skipped")
        }
        _ => {
            eprintln!("skipped: set {var} to run this test against a real server");
            None
        }
    }
}

/// A fresh, empty Postgres schema for one test: the returned URL selects it with
/// `search_path`. Schemas are named `lyss_t_…` (`scripts/test.sh` drops old ones).
pub async fn postgres() -> Option<String> {
    let base = service_url("LYSS_TEST_POSTGRES_URL")?;
    let schema = format!("lyss_t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("LYSS_TEST_POSTGRES_URL={base} is unreachable: {e}"));
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create schema {schema}: {e}"));
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

/// The Redis URL and a unique key prefix for one test (never `FLUSHDB`).
pub async fn redis() -> Option<(String, String)> {
    let url = service_url("LYSS_TEST_REDIS_URL")?;
    let client = redis::Client::open(url.as_str())
        .unwrap_or_else(|e| panic!("LYSS_TEST_REDIS_URL={url}: {e}"));
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("LYSS_TEST_REDIS_URL={url} is unreachable: {e}"));
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("LYSS_TEST_REDIS_URL={url} does not answer PING: {e}"));
    Some((url, format!("lyss-test:{}:", uuid::Uuid::new_v4().simple())))
}

/// The local embedding model from the default models directory (`scripts/fetch-models.sh`).
pub async fn local_embedder() -> Option<std::sync::Arc<dyn crate::embed::Embedder>> {
    let loaded = tokio::task::spawn_blocking(crate::embed::LocalEmbedder::load_default)
        .await
        .expect("load task");
    match loaded {
        Ok(e) => Some(std::sync::Arc::new(e)),
        Err(e) if in_ci() => panic!("CI=true but the local embedding model is unavailable: {e}"),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}
