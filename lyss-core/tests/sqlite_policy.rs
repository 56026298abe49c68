//! The policy conformance suite against SQLite (a fresh in-memory database per test) opened
//! both ways — reservations in the file, and held by the process serving it — plus
//! SQLite-specific behaviour (a served file's lock, restart and failure rules); the in-process
//! rate limiter's suite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
            std::sync::Arc::new(lyss_core::ratelimit::InMemoryRateLimiter::new())
                as std::sync::Arc<dyn lyss_core::ratelimit::RateLimiter>,
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

mod serving {
    lyss_core::policy_conformance!(async {
        Some(std::sync::Arc::new(
            lyss_core::SqlitePolicy::serve("sqlite::memory:")
                .await
                .expect("open sqlite"),
        ) as std::sync::Arc<dyn lyss_core::Policy>)
    });
}

mod served_file {
    use std::sync::Arc;
    use std::time::Duration;

    use lyss_core::policy::prelude::*;
    use lyss_core::policy::{Period, Principal, Reservation, Scope, Unit};
    use lyss_core::testing::policy::{ask, budget, principal, spent_entry, usage_of};
    use lyss_core::{Error, Policy, SqlitePolicy};
    use time::OffsetDateTime;

    const TTL: Duration = Duration::from_secs(60);

    fn url(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}", dir.path().join("lyss.db").display())
    }

    /// A served file with ann's 1,000-token monthly budget and one reservation on it (10
    /// prompt tokens, up to 100 more): the policy, ann, the budget's id and the reservation.
    async fn served_with_a_reservation(
        dir: &tempfile::TempDir,
        now: OffsetDateTime,
    ) -> (Arc<dyn Policy>, Principal, String, Reservation) {
        let p: Arc<dyn Policy> = Arc::new(SqlitePolicy::serve(&url(dir)).await.expect("serve"));
        let (who, _) = principal(p.as_ref()).await;
        let id = budget(
            p.as_ref(),
            Scope::User,
            "ann",
            Unit::Tokens,
            1_000,
            Period::Monthly,
        )
        .await;
        let r = p
            .reserve(who.payer(), &ask(10, Some(100)), now, TTL)
            .await
            .expect("fits");
        (p, who, id, r)
    }

    #[tokio::test]
    async fn one_process_serves_a_file_and_the_next_may_once_it_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = SqlitePolicy::serve(&url(&dir)).await.expect("serve");
        let refused = SqlitePolicy::serve(&url(&dir))
            .await
            .expect_err("second server");
        let msg = refused.to_string();
        assert!(matches!(refused, Error::Config(_)), "{msg}");
        assert!(
            msg.contains(&format!("process {}", std::process::id())) && msg.contains("Postgres"),
            "{msg}"
        );
        // The admin's `lyss` opens the file beside its server; a process keeping reservations
        // in the file may not reserve beside it (the server could not see its holds).
        let admin = SqlitePolicy::connect(&url(&dir)).await.expect("connect");
        let (who, _) = principal(&admin).await;
        assert!(matches!(
            admin
                .reserve(
                    who.payer(),
                    &ask(1, Some(1)),
                    OffsetDateTime::now_utc(),
                    TTL
                )
                .await,
            Err(Error::Unavailable { .. })
        ));
        drop(first);
        admin
            .reserve(
                who.payer(),
                &ask(1, Some(1)),
                OffsetDateTime::now_utc(),
                TTL,
            )
            .await
            .expect("no server now");
        // ... and while it reserves, no server may start.
        assert!(matches!(
            SqlitePolicy::serve(&url(&dir)).await,
            Err(Error::Config(_))
        ));
        drop(admin);
        SqlitePolicy::serve(&url(&dir)).await.expect("served again");
    }

    #[tokio::test]
    async fn spend_is_on_disk_when_settled_and_holds_end_with_their_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = OffsetDateTime::now_utc();
        let (who, id) = {
            let (p, who, id, r) = served_with_a_reservation(&dir, now).await;
            p.settle(&r, &spent_entry(&who, 10, 20))
                .await
                .expect("settle");
            // In flight when the process goes away: never settled.
            p.reserve(who.payer(), &ask(10, Some(500)), now, TTL)
                .await
                .expect("fits");
            assert_eq!(usage_of(p.as_ref(), &id, now).await, (30, 510));
            (who, id)
        };
        let p: Arc<dyn Policy> = Arc::new(SqlitePolicy::serve(&url(&dir)).await.expect("reopen"));
        assert_eq!(usage_of(p.as_ref(), &id, now).await, (30, 0));
        let r = p
            .reserve(who.payer(), &ask(10, Some(960)), now, TTL)
            .await
            .expect("all that is left");
        assert!(matches!(
            p.reserve(who.payer(), &ask(1, Some(1)), now, TTL).await,
            Err(Error::BudgetExceeded(_))
        ));
        p.settle(&r, &spent_entry(&who, 10, 0))
            .await
            .expect("settle");
        assert_eq!(usage_of(p.as_ref(), &id, now).await, (40, 0));
        let rows = p.ledger(&Default::default()).await.expect("ledger");
        assert_eq!(rows.len(), 2);
    }

    #[tokio::test]
    async fn admission_closed_by_a_failed_settlement_reopens_once_the_file_takes_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = OffsetDateTime::now_utc();
        let (p, who, id, r) = served_with_a_reservation(&dir, now).await;
        let side = sqlx::SqlitePool::connect(&url(&dir))
            .await
            .expect("side door");
        let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
        sqlx::query(&rename("usage_ledger", "away"))
            .execute(&side)
            .await
            .expect("break");
        assert!(matches!(
            p.settle(&r, &spent_entry(&who, 10, 20)).await,
            Err(Error::Unavailable { .. })
        ));
        assert!(matches!(
            p.reserve(who.payer(), &ask(1, Some(1)), now, TTL).await,
            Err(Error::Unavailable { .. })
        ));
        sqlx::query(&rename("away", "usage_ledger"))
            .execute(&side)
            .await
            .expect("mend");
        // Nobody retries the settlement here: admission reopens by itself.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let second = loop {
            match p.reserve(who.payer(), &ask(1, Some(1)), now, TTL).await {
                Ok(r) => break r,
                Err(Error::Unavailable { .. }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("admission did not reopen: {other:?}"),
            }
        };
        // The failed settlement, retried, spends once.
        p.settle(&r, &spent_entry(&who, 10, 20))
            .await
            .expect("settled");
        assert_eq!(
            usage_of(p.as_ref(), &id, now).await,
            (30, second.holds[0].amount)
        );
        assert_eq!(
            p.ledger(&Default::default()).await.expect("ledger").len(),
            1
        );
    }

    #[tokio::test]
    async fn a_limit_lowered_by_another_process_applies_within_a_second() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = OffsetDateTime::now_utc();
        let server: Arc<dyn Policy> =
            Arc::new(SqlitePolicy::serve(&url(&dir)).await.expect("serve"));
        let admin: Arc<dyn Policy> =
            Arc::new(SqlitePolicy::connect(&url(&dir)).await.expect("connect"));
        let (who, _) = principal(admin.as_ref()).await;
        budget(
            admin.as_ref(),
            Scope::Workspace,
            "team",
            Unit::Tokens,
            1_000,
            Period::Monthly,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        server
            .reserve(who.payer(), &ask(10, Some(10)), now, TTL)
            .await
            .expect("fits");
        budget(
            admin.as_ref(),
            Scope::Workspace,
            "team",
            Unit::Tokens,
            25,
            Period::Monthly,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert!(matches!(
            server
                .reserve(who.payer(), &ask(10, Some(10)), now, TTL)
                .await,
            Err(Error::BudgetExceeded(_))
        ));
    }
}
