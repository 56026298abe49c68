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
