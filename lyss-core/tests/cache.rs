//! The `Cache` conformance suite on both backends, and the in-process cache's byte bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "redis")]
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "redis")]
use lyss_core::cache::RedisCache;
use lyss_core::cache::{Cache, InMemoryCache};

mod in_memory {
    lyss_core::cache_conformance!(async {
        Some((
            std::sync::Arc::new(lyss_core::cache::InMemoryCache::new(1 << 20))
                as std::sync::Arc<dyn lyss_core::cache::Cache>,
            "t".to_string(),
        ))
    });
}

#[cfg(feature = "redis")]
mod redis {
    lyss_core::cache_conformance!(async {
        let (url, prefix) = lyss_core::testing::services::redis().await?;
        Some((
            std::sync::Arc::new(
                lyss_core::cache::RedisCache::connect(&url, &format!("{prefix}:cache:"))
                    .await
                    .expect("connect to redis"),
            ) as std::sync::Arc<dyn lyss_core::cache::Cache>,
            "t".to_string(),
        ))
    });
}

#[tokio::test]
async fn the_in_process_cache_stays_within_its_bytes() {
    let cache = InMemoryCache::new(64 * 1024);
    for i in 0..200 {
        cache
            .put(&format!("ws:x:{i}"), vec![7; 1024], Duration::from_secs(60))
            .await
            .unwrap();
    }
    let stats = cache.stats().await.unwrap();
    assert!(stats.bytes.unwrap() <= 64 * 1024, "{stats:?}");
    assert!(stats.entries < 200);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn two_caches_on_one_redis_share_entries_but_not_prefixes() {
    let Some((url, prefix)) = lyss_core::testing::services::redis().await else {
        return;
    };
    let one: Arc<dyn Cache> = Arc::new(
        RedisCache::connect(&url, &format!("{prefix}:a:"))
            .await
            .unwrap(),
    );
    let replica: Arc<dyn Cache> = Arc::new(
        RedisCache::connect(&url, &format!("{prefix}:a:"))
            .await
            .unwrap(),
    );
    let other: Arc<dyn Cache> = Arc::new(
        RedisCache::connect(&url, &format!("{prefix}:b:"))
            .await
            .unwrap(),
    );
    one.put("ws:x:1", b"hi".to_vec(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        replica.get("ws:x:1").await.unwrap().as_deref(),
        Some(&b"hi"[..])
    );
    assert_eq!(other.get("ws:x:1").await.unwrap(), None);
    // A question filed through one handle is found by meaning through the other.
    let question = [0.6f32, 0.8, 0.0];
    replica
        .put_vector("ws:s:1", "ws:x:1", &question, Duration::from_secs(60))
        .await
        .unwrap();
    let hit = one
        .get_similar("ws:s:1", &[0.6, 0.8, 0.01], 0.95)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hit.value, b"hi");
    assert_eq!(
        other.get_similar("ws:s:1", &question, 0.5).await.unwrap(),
        None
    );
    // Later questions reach a mirror that is already up to date.
    one.put("ws:x:2", b"two".to_vec(), Duration::from_secs(60))
        .await
        .unwrap();
    one.put_vector(
        "ws:s:1",
        "ws:x:2",
        &[0.0, 0.0, 1.0],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let hit = replica
        .get_similar("ws:s:1", &[0.0, 0.05, 1.0], 0.95)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hit.value, b"two");
}
