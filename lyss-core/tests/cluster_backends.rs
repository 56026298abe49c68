//! The policy conformance suite against Postgres (a fresh schema per test), alone and with its
//! budget counters in Redis, and the rate-limit suite against Redis (a unique key prefix per
//! test); budget counters that Redis loses. They need `LYSS_TEST_POSTGRES_URL` and
//! `LYSS_TEST_REDIS_URL`; unset, they skip locally and fail in CI.
#![allow(clippy::expect_used)]

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

mod postgres_with_redis_counters {
    lyss_core::policy_conformance!(async {
        let url = lyss_core::testing::services::postgres().await?;
        let (redis, prefix) = lyss_core::testing::services::redis().await?;
        Some(std::sync::Arc::new(
            lyss_core::PostgresPolicy::connect(&url)
                .await
                .expect("connect to postgres")
                .with_redis_counters(&redis, &prefix)
                .await
                .expect("connect to redis"),
        ) as std::sync::Arc<dyn lyss_core::Policy>)
    });
}

mod redis {
    lyss_core::ratelimit_conformance!(async {
        let (url, prefix) = lyss_core::testing::services::redis().await?;
        Some((
            std::sync::Arc::new(
                lyss_core::ratelimit::RedisRateLimiter::connect(&url, &prefix)
                    .await
                    .expect("connect to redis"),
            ) as std::sync::Arc<dyn lyss_core::ratelimit::RateLimiter>,
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
            who.payer(),
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
    use lyss_core::ratelimit::Charge;
    use lyss_core::ratelimit::RateLimiter as _;
    if lyss_core::testing::services::redis().await.is_none() {
        return;
    }
    let mut redis = lyss_core::testing::services::PrivateRedis::start().await;
    let limiter = lyss_core::ratelimit::RedisRateLimiter::connect(&redis.url(), "t:")
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

/// A policy with its budget counters in a Redis of the test's own, and a 1,000-token budget
/// on its principal's user.
async fn counted_in_private_redis() -> Option<(
    lyss_core::testing::services::PrivateRedis,
    String,
    lyss_core::PostgresPolicy,
    lyss_core::policy::Principal,
    String,
)> {
    use lyss_core::policy::{Period, Scope, Unit};
    use lyss_core::testing::policy::{budget, principal};
    let url = lyss_core::testing::services::postgres().await?;
    lyss_core::testing::services::redis().await?;
    let redis = lyss_core::testing::services::PrivateRedis::start().await;
    let policy = lyss_core::PostgresPolicy::connect(&url)
        .await
        .expect("connect")
        .with_redis_counters(&redis.url(), "b:")
        .await
        .expect("counters");
    let (who, _) = principal(&policy).await;
    let id = budget(
        &policy,
        Scope::User,
        "ann",
        Unit::Tokens,
        1_000,
        Period::None,
    )
    .await;
    Some((redis, url, policy, who, id))
}

/// What Postgres recorded for a budget: (spent, hold rows' total).
async fn recorded(url: &str, id: &str) -> (i64, i64) {
    let db = sqlx::PgPool::connect(url).await.expect("postgres");
    let spent: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(spent), 0)::BIGINT FROM budget_usage WHERE budget_id = $1",
    )
    .bind(id)
    .fetch_one(&db)
    .await
    .expect("spent");
    let held: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(amount), 0)::BIGINT FROM reservations WHERE budget_id = $1",
    )
    .bind(id)
    .fetch_one(&db)
    .await
    .expect("held");
    (spent, held)
}

/// Redis restarts empty while one request is in flight and another settles: admission is
/// refused while Redis is down, the counters are rebuilt from Postgres when it is back (the
/// open hold included), nothing is counted twice, and the budget still fills exactly to its
/// limit.
#[tokio::test]
async fn budget_counters_lost_with_redis_are_rebuilt_from_postgres() {
    use lyss_core::policy::prelude::*;
    use lyss_core::testing::policy::{ask, spent_entry, usage_of};
    let Some((mut redis, url, policy, who, id)) = counted_in_private_redis().await else {
        return;
    };
    let now = time::OffsetDateTime::now_utc();
    let ttl = std::time::Duration::from_secs(60);
    let open = policy
        .reserve(who.payer(), &ask(100, Some(100)), now, ttl)
        .await
        .expect("open");
    let done = policy
        .reserve(who.payer(), &ask(50, Some(50)), now, ttl)
        .await
        .expect("done");
    assert_eq!(usage_of(&policy, &id, now).await, (0, 300));

    redis.kill();
    assert!(matches!(
        policy
            .reserve(who.payer(), &ask(10, Some(10)), now, ttl)
            .await,
        Err(lyss_core::Error::Unavailable { .. })
    ));
    // Durable in Postgres while Redis is down; it reaches the counters after the rebuild.
    policy
        .settle(&done, &spent_entry(&who, 50, 20))
        .await
        .expect("a settlement is recorded while Redis is down");
    assert_eq!(recorded(&url, &id).await, (70, 200));
    redis.restart().await;

    let mut rebuilt = None;
    for _ in 0..50 {
        if let Ok(all) = policy.budgets(now).await {
            rebuilt = all.into_iter().find(|b| b.budget.id == id);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let rebuilt = rebuilt.expect("the counters are rebuilt once Redis is back");
    // The settled request's spend, the open one's hold; then the background retry of the
    // settlement finds nothing left to do (it must not count its spend again).
    assert_eq!((rebuilt.spent, rebuilt.reserved), (70, 200));
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(usage_of(&policy, &id, now).await, (70, 200));

    policy
        .settle(&open, &spent_entry(&who, 100, 30))
        .await
        .expect("settle across the rebuild");
    assert_eq!(usage_of(&policy, &id, now).await, (200, 0));
    // 800 tokens left: 8 requests of 100 fit, the ninth does not.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(
            policy
                .reserve(who.payer(), &ask(50, Some(50)), now, ttl)
                .await
                .expect("fits"),
        );
    }
    assert!(matches!(
        policy
            .reserve(who.payer(), &ask(50, Some(50)), now, ttl)
            .await,
        Err(lyss_core::Error::BudgetExceeded(_))
    ));
    for r in &held {
        policy
            .settle(r, &spent_entry(&who, 50, 50))
            .await
            .expect("settle");
    }
    assert_eq!(usage_of(&policy, &id, now).await, (1_000, 0));
    assert_eq!(recorded(&url, &id).await, (1_000, 0));
}

/// A hold row that Postgres does not acknowledge within a second refuses its request (503),
/// and the hold already taken in Redis is given back: a rebuild after a Redis loss waits only
/// that second for rows, so a request must never go on without one.
#[tokio::test]
async fn a_hold_row_written_too_late_refuses_the_request_and_gives_the_hold_back() {
    use lyss_core::policy::prelude::*;
    use lyss_core::testing::policy::{ask, spent_entry, usage_of};
    let Some((_redis, url, policy, who, id)) = counted_in_private_redis().await else {
        return;
    };
    let now = time::OffsetDateTime::now_utc();
    let ttl = std::time::Duration::from_secs(60);
    let first = policy
        .reserve(who.payer(), &ask(10, Some(10)), now, ttl)
        .await
        .expect("reserve");
    policy
        .settle(&first, &spent_entry(&who, 10, 10))
        .await
        .expect("settle");
    assert_eq!(usage_of(&policy, &id, now).await, (20, 0));

    // Every write to the hold rows waits behind this lock for 1.5 s.
    let db = sqlx::PgPool::connect(&url).await.expect("postgres");
    let mut lock = db.begin().await.expect("begin");
    sqlx::query("LOCK TABLE reservations IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let asked = std::time::Instant::now();
    let late = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        policy.reserve(who.payer(), &ask(100, Some(100)), now, ttl),
    )
    .await
    .expect("refused within the hold rows' deadline, not after the lock");
    assert!(
        matches!(late, Err(lyss_core::Error::Unavailable { .. })),
        "{late:?}"
    );
    assert!(asked.elapsed() >= std::time::Duration::from_secs(1));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    lock.rollback().await.expect("unlock");

    // The Redis hold is given back and the row, written once the lock went, deleted after it.
    let mut seen = None;
    for _ in 0..50 {
        seen = Some((usage_of(&policy, &id, now).await, recorded(&url, &id).await));
        if seen == Some(((20, 0), (20, 0))) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen, Some(((20, 0), (20, 0))));
    let next = policy
        .reserve(who.payer(), &ask(100, Some(100)), now, ttl)
        .await
        .expect("admitted again once Postgres answers");
    assert_eq!(usage_of(&policy, &id, now).await, (20, 200));
    policy
        .settle(&next, &spent_entry(&who, 100, 50))
        .await
        .expect("settle");
}

/// A Redis that restarted from an old snapshot has counters, but old ones: they are noticed
/// (the server's `run_id` changed) and rebuilt from Postgres within about a second.
#[tokio::test]
async fn budget_counters_from_an_old_snapshot_are_rebuilt() {
    use lyss_core::policy::prelude::*;
    use lyss_core::testing::policy::{ask, spent_entry, usage_of};
    let Some((redis, _url, policy, who, id)) = counted_in_private_redis().await else {
        return;
    };
    let now = time::OffsetDateTime::now_utc();
    let ttl = std::time::Duration::from_secs(60);
    let r = policy
        .reserve(who.payer(), &ask(100, Some(100)), now, ttl)
        .await
        .expect("reserve");
    policy
        .settle(&r, &spent_entry(&who, 100, 100))
        .await
        .expect("settle");
    assert_eq!(usage_of(&policy, &id, now).await, (200, 0));
    // What a reloaded snapshot looks like: the spend is missing, and `ready` names the
    // process that wrote it.
    let client = ::redis::Client::open(redis.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let _: () = ::redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("flush");
    let _: () = ::redis::cmd("SET")
        .arg("b:ready")
        .arg("a-process-before-the-restart")
        .query_async(&mut conn)
        .await
        .expect("set");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let seen = policy.budgets(now).await.map(|all| {
            let b = all.into_iter().find(|b| b.budget.id == id).expect("listed");
            (b.spent, b.reserved)
        });
        if let Ok((200, 0)) = seen {
            let exists: bool = ::redis::cmd("EXISTS")
                .arg(format!("b:u:{id}:0"))
                .query_async(&mut conn)
                .await
                .expect("exists");
            if exists {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not rebuilt: {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // 800 left, exactly.
    let r = policy
        .reserve(who.payer(), &ask(400, Some(400)), now, ttl)
        .await
        .expect("fits");
    assert!(matches!(
        policy
            .reserve(who.payer(), &ask(1, Some(1)), now, ttl)
            .await,
        Err(lyss_core::Error::BudgetExceeded(_))
    ));
    policy
        .settle(&r, &spent_entry(&who, 400, 400))
        .await
        .expect("settle");
}
