//! The `RateLimiter` conformance suite.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::error::Error;
use crate::ratelimit::{Charge, RateLimiter};

/// Generates one test per case for a rate limiter, given an `async` block that returns a fresh
/// limiter and a unique bucket prefix (`None` to skip).
#[macro_export]
macro_rules! ratelimit_conformance {
    ($factory:expr) => {
        $crate::ratelimit_conformance!(@cases $factory;
            limits_hold_and_name_the_bucket,
            charges_are_all_or_nothing,
            concurrent_callers_never_exceed_the_limit,
        );
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((limiter, prefix)): Option<(::std::sync::Arc<dyn $crate::ratelimit::RateLimiter>, String)> = $factory.await else {
                    return;
                };
                $crate::testing::ratelimit::$case(limiter, &prefix).await;
            }
        )+
    };
}

fn charge(prefix: &str, name: &str, per_minute: u32, cost: u64) -> Charge {
    Charge {
        bucket: format!("{prefix}:{name}"),
        label: name.to_owned(),
        per_minute,
        cost,
    }
}

pub async fn limits_hold_and_name_the_bucket(limiter: Arc<dyn RateLimiter>, prefix: &str) {
    let now = OffsetDateTime::now_utc();
    for _ in 0..5 {
        limiter
            .charge(&[charge(prefix, "rpm", 5, 1)], now)
            .await
            .expect("within the limit");
    }
    match limiter.charge(&[charge(prefix, "rpm", 5, 1)], now).await {
        Err(Error::RateLimited { scope, retry_after }) => {
            assert_eq!(scope, "rpm");
            assert!(retry_after.as_secs_f64() > 0.0 && retry_after.as_secs() <= 60);
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // A request larger than a minute's allowance never passes.
    assert!(
        limiter
            .charge(&[charge(prefix, "tpm", 100, 101)], now)
            .await
            .is_err()
    );
}

pub async fn charges_are_all_or_nothing(limiter: Arc<dyn RateLimiter>, prefix: &str) {
    let now = OffsetDateTime::now_utc();
    limiter
        .charge(&[charge(prefix, "small", 1, 1)], now)
        .await
        .expect("first");
    // `big` would pass, `small` refuses: `big` must not be charged.
    for _ in 0..3 {
        assert!(
            limiter
                .charge(
                    &[charge(prefix, "big", 3, 1), charge(prefix, "small", 1, 1)],
                    now
                )
                .await
                .is_err()
        );
    }
    for _ in 0..3 {
        limiter
            .charge(&[charge(prefix, "big", 3, 1)], now)
            .await
            .expect("big was never charged");
    }
}

pub async fn concurrent_callers_never_exceed_the_limit(
    limiter: Arc<dyn RateLimiter>,
    prefix: &str,
) {
    let now = OffsetDateTime::now_utc();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let limiter = limiter.clone();
            let c = charge(prefix, "shared", 20, 1);
            tokio::spawn(async move { limiter.charge(&[c], now).await.is_ok() })
        })
        .collect();
    let mut passed = 0;
    for t in tasks {
        passed += usize::from(t.await.expect("join"));
    }
    assert_eq!(passed, 20);
}
