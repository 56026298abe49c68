//! The policy conformance suite against SQLite (a fresh in-memory database per test), plus
//! SQLite-specific behaviour; the in-process rate limiter's suite.

mod sqlite {
    lyss_core::policy_conformance!(async {
        Some(std::sync::Arc::new(
            lyss_core::SqlitePolicy::connect("sqlite::memory:")
                .await
                .expect("open sqlite"),
        ) as std::sync::Arc<dyn lyss_core::Policy>)
    });
}

mod in_memory_limiter {
    lyss_core::ratelimit_conformance!(async {
        Some((
            std::sync::Arc::new(lyss_core::policy::InMemoryRateLimiter::new())
                as std::sync::Arc<dyn lyss_core::policy::RateLimiter>,
            "t".to_string(),
        ))
    });
}

#[tokio::test]
async fn data_survives_reopening_the_file() {
    use lyss_core::policy::prelude::*;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("lyss.db").display());
    let key = {
        let p = lyss_core::SqlitePolicy::connect(&url).await.expect("open");
        p.create_workspace("team", &["*".into()]).await.expect("ws");
        p.create_user("ann", "team").await.expect("user");
        p.create_key(&lyss_core::policy::NewKey {
            user: "ann".into(),
            ..Default::default()
        })
        .await
        .expect("key")
        .key
    };
    let p = lyss_core::SqlitePolicy::connect(&url)
        .await
        .expect("reopen");
    assert_eq!(p.authenticate(&key).await.expect("auth").user_name, "ann");
}
