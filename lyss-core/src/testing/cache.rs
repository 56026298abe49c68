//! The `Cache` conformance suite.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::Cache;

/// Generates one test per case for a cache, given an `async` block that returns a cache and a
/// key prefix no other test uses (`None` to skip).
#[macro_export]
macro_rules! cache_conformance {
    ($factory:expr) => {
        $crate::cache_conformance!(@cases $factory;
            a_value_lives_until_its_ttl,
            the_last_put_wins_and_keys_never_mix,
            clear_removes_one_prefix_only,
            stats_count_entries,
        );
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((cache, prefix)): Option<(::std::sync::Arc<dyn $crate::cache::Cache>, String)> = $factory.await else {
                    return;
                };
                $crate::testing::cache::$case(cache, &prefix).await;
            }
        )+
    };
}

const HOUR: Duration = Duration::from_secs(3600);

pub async fn a_value_lives_until_its_ttl(cache: Arc<dyn Cache>, p: &str) {
    let key = format!("{p}:ws:x:short");
    cache
        .put(&key, b"answer".to_vec(), Duration::from_millis(300))
        .await
        .unwrap();
    cache
        .put(&format!("{p}:ws:x:long"), b"kept".to_vec(), HOUR)
        .await
        .unwrap();
    assert_eq!(
        cache.get(&key).await.unwrap().as_deref(),
        Some(&b"answer"[..])
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(cache.get(&key).await.unwrap(), None, "expired");
    assert_eq!(
        cache
            .get(&format!("{p}:ws:x:long"))
            .await
            .unwrap()
            .as_deref(),
        Some(&b"kept"[..])
    );
}

pub async fn the_last_put_wins_and_keys_never_mix(cache: Arc<dyn Cache>, p: &str) {
    let (a, b) = (format!("{p}:ws_a:x:1"), format!("{p}:ws_b:x:1"));
    cache.put(&a, b"first".to_vec(), HOUR).await.unwrap();
    cache.put(&a, b"second".to_vec(), HOUR).await.unwrap();
    assert_eq!(
        cache.get(&a).await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
    assert_eq!(cache.get(&b).await.unwrap(), None);
    // Binary values come back byte for byte.
    let binary: Vec<u8> = (0..=255).collect();
    cache.put(&b, binary.clone(), HOUR).await.unwrap();
    assert_eq!(cache.get(&b).await.unwrap(), Some(binary));
}

pub async fn clear_removes_one_prefix_only(cache: Arc<dyn Cache>, p: &str) {
    for i in 0..3 {
        cache
            .put(&format!("{p}:ws_a:x:{i}"), b"a".to_vec(), HOUR)
            .await
            .unwrap();
    }
    cache
        .put(&format!("{p}:ws_b:x:0"), b"b".to_vec(), HOUR)
        .await
        .unwrap();
    // A prefix with glob characters matches only itself.
    assert_eq!(cache.clear(&format!("{p}:ws_*")).await.unwrap(), 0);
    assert_eq!(cache.clear(&format!("{p}:ws_a:")).await.unwrap(), 3);
    assert_eq!(cache.get(&format!("{p}:ws_a:x:1")).await.unwrap(), None);
    assert!(cache.get(&format!("{p}:ws_b:x:0")).await.unwrap().is_some());
}

pub async fn stats_count_entries(cache: Arc<dyn Cache>, p: &str) {
    let before = cache.stats().await.unwrap().entries;
    for i in 0..4 {
        cache
            .put(&format!("{p}:ws:x:{i}"), vec![0; 100], HOUR)
            .await
            .unwrap();
    }
    let after = cache.stats().await.unwrap();
    assert_eq!(after.entries, before + 4);
    if let Some(bytes) = after.bytes {
        assert!(bytes >= 400, "{bytes}");
    }
}
