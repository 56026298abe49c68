//! One way to connect to Redis for every Redis backend: a reconnecting connection manager
//! with short timeouts, so a slow or dead Redis shows as [`Error::Unavailable`] quickly.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::{Error, Result};

/// Connects to `url` (`redis://host:port/db`); `backend` names it in errors.
pub(crate) async fn connect(
    url: &str,
    response_timeout: Duration,
    backend: &'static str,
) -> Result<ConnectionManager> {
    let client = redis::Client::open(url).map_err(|e| Error::Config(format!("redis_url: {e}")))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(response_timeout)
        .set_number_of_retries(1);
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| unavailable(backend, e))
}

/// A Redis failure as [`Error::Unavailable`].
pub(crate) fn unavailable(backend: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        backend,
        message: e.to_string(),
        contended: false,
    }
}

/// Every key that starts with `prefix`, by `SCAN` (never `KEYS`, which blocks Redis).
pub(crate) async fn keys_under(
    conn: &mut ConnectionManager,
    prefix: &str,
    backend: &'static str,
) -> Result<Vec<String>> {
    let pattern = format!("{}*", glob_escape(prefix));
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(|e| unavailable(backend, e))?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// `s` with Redis glob characters escaped, for a `MATCH` pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
