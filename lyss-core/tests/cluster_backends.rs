//! The policy conformance suite against Postgres (a fresh schema per test) and the rate-limit
//! suite against Redis (a unique key prefix per test). They need `LYSS_TEST_POSTGRES_URL` and
//! `LYSS_TEST_REDIS_URL`; unset, they skip locally and fail in CI.

mod postgres {
    lyss_core::policy_conformance!(async {
        let url = lyss_core::testing::services::postgres().await?;
        Some(std::sync::Arc::new(
            lyss_core::PostgresPolicy::connect(&url)
                .await
                .expect("connect to postgres"),
        ) as std::sync::Arc<dyn lyss_core::Policy>)
    });
}

mod redis {
    lyss_core::ratelimit_conformance!(async {
        let (url, prefix) = lyss_core::testing::services::redis().await?;
        Some((
            std::sync::Arc::new(
                lyss_core::policy::RedisRateLimiter::connect(&url, &prefix)
                    .await
                    .expect("connect to redis"),
            ) as std::sync::Arc<dyn lyss_core::policy::RateLimiter>,
            "t".to_string(),
        ))
    });
}

/// Budgets fail closed: a Postgres that stops answering (here: its schema is gone) refuses
/// the reservation instead of admitting it.
#[tokio::test]
async fn postgres_failure_refuses_reservations() {
    use lyss_core::policy::prelude::*;
    use lyss_core::policy::{Ask, NewBudget, NewKey, Period, Scope, Unit};
    let Some(url) = lyss_core::testing::services::postgres().await else {
        return;
    };
    let policy = lyss_core::PostgresPolicy::connect(&url)
        .await
        .expect("connect");
    policy
        .create_workspace("team", &["*".into()])
        .await
        .expect("ws");
    policy.create_user("ann", "team").await.expect("user");
    let key = policy
        .create_key(&NewKey {
            user: "ann".into(),
            ..NewKey::default()
        })
        .await
        .expect("key")
        .key;
    policy
        .set_budget(&NewBudget {
            scope: Scope::User,
            target: "ann".into(),
            unit: Unit::Tokens,
            limit: 1_000_000,
            period: Period::None,
            tz: None,
            expires_at: None,
        })
        .await
        .expect("budget");
    let who = policy.authenticate(&key).await.expect("auth");
    let schema = url
        .rsplit("search_path%3D")
        .next()
        .expect("schema in url")
        .to_owned();
    let admin = sqlx::PgPool::connect(&url).await.expect("admin connection");
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .expect("drop schema");
    let ask = Ask {
        prompt_tokens: 10,
        requested_output: Some(10),
        output_cap: 100,
        price: lyss_core::Price::default(),
        grows: None,
    };
    let result = policy
        .reserve(
            &who,
            &ask,
            time::OffsetDateTime::now_utc(),
            std::time::Duration::from_secs(60),
        )
        .await;
    assert!(
        matches!(result, Err(lyss_core::Error::Unavailable { .. })),
        "{result:?}"
    );
}

/// Rate limits fail closed: a Redis that dies mid-run refuses requests, and they pass again
/// once it is back — without restarting lyss.
#[tokio::test]
async fn redis_failure_refuses_and_recovers() {
    use lyss_core::policy::RateLimiter as _;
    use lyss_core::policy::ratelimit::Charge;
    if lyss_core::testing::services::redis().await.is_none() {
        return;
    }
    let mut redis = lyss_core::testing::services::PrivateRedis::start().await;
    let limiter = lyss_core::policy::RedisRateLimiter::connect(&redis.url(), "t:")
        .await
        .expect("connect");
    let charge = [Charge {
        bucket: "k".into(),
        label: "k".into(),
        per_minute: 1_000,
        cost: 1,
    }];
    let now = time::OffsetDateTime::now_utc();
    limiter.charge(&charge, now).await.expect("up");
    redis.kill();
    assert!(matches!(
        limiter.charge(&charge, now).await,
        Err(lyss_core::Error::Unavailable { .. })
    ));
    redis.restart().await;
    let mut recovered = false;
    for _ in 0..50 {
        if limiter.charge(&charge, now).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the limiter did not recover after Redis came back"
    );
}

mod postgres_memory {
    lyss_core::memory_conformance!(async {
        let url = lyss_core::testing::services::postgres().await?;
        Some(std::sync::Arc::new(
            lyss_core::memory::PostgresMemoryStore::connect(
                &url,
                Some(std::sync::Arc::new(lyss_core::embed::HashEmbedder::new(
                    256,
                ))),
            )
            .await
            .expect("connect to postgres"),
        )
            as std::sync::Arc<dyn lyss_core::memory::MemoryStore>)
    });
}

/// Two replicas share one Postgres: what one remembers, updates or deletes, the other's
/// searches reflect at once, although each keeps its own in-process index.
#[tokio::test]
async fn memory_is_right_across_replicas() {
    use lyss_core::memory::{
        MemoryScope, MemoryStore as _, NewMemory, PostgresMemoryStore, SearchQuery,
    };
    let Some(url) = lyss_core::testing::services::postgres().await else {
        return;
    };
    let embedder = std::sync::Arc::new(lyss_core::embed::HashEmbedder::new(256));
    let a = PostgresMemoryStore::connect(&url, Some(embedder.clone()))
        .await
        .expect("a");
    let b = PostgresMemoryStore::connect(&url, Some(embedder))
        .await
        .expect("b");
    let ann = MemoryScope::user("ws", "ann");
    let q = |text: &str| SearchQuery {
        text: text.into(),
        limit: 5,
        min_similarity: 0.0,
    };
    // B builds its index before A writes anything.
    assert!(
        b.search(&ann, &q("peanuts"))
            .await
            .expect("search")
            .is_empty()
    );
    let m = a
        .add(
            &ann,
            &NewMemory {
                text: "I am allergic to peanuts.".into(),
                ..NewMemory::default()
            },
        )
        .await
        .expect("add");
    let seen = b.search(&ann, &q("peanuts")).await.expect("search");
    assert_eq!(seen[0].memory.id, m.id);
    b.update(&ann, &m.id, "I am allergic to shellfish.")
        .await
        .expect("update");
    assert!(
        a.search(&ann, &q("peanuts"))
            .await
            .expect("search")
            .iter()
            .all(|h| h.memory.id != m.id || h.memory.text.contains("shellfish"))
    );
    assert_eq!(
        a.search(&ann, &q("shellfish")).await.expect("search")[0]
            .memory
            .id,
        m.id
    );
    a.delete(&ann, &m.id).await.expect("delete");
    assert!(
        b.search(&ann, &q("shellfish"))
            .await
            .expect("search")
            .is_empty()
    );
    a.add(
        &ann,
        &NewMemory {
            text: "Ticket 42 is open.".into(),
            ..NewMemory::default()
        },
    )
    .await
    .expect("add");
    b.forget(&ann).await.expect("forget");
    assert!(
        a.search(&ann, &q("ticket"))
            .await
            .expect("search")
            .is_empty()
    );
}
