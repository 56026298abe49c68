//! The `Cache` conformance suite.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{Cache, Similar};

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
            a_similar_question_finds_its_answer_in_its_partition_only,
            a_vector_never_outlives_its_answer,
            a_large_partition_is_searched_too,
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

/// A unit vector pointing mostly along `axis`, tilted by `tilt` towards the next axis.
fn direction(dim: usize, axis: usize, tilt: f32) -> Vec<f32> {
    let mut v = vec![0.0; dim];
    v[axis % dim] = 1.0;
    v[(axis + 1) % dim] = tilt;
    crate::embed::normalize(&mut v);
    v
}

/// Looks up until a hit or `patience` runs out: a mirror catching up may miss for a moment.
async fn similar_within(
    cache: &dyn Cache,
    partition: &str,
    vector: &[f32],
    min: f32,
    patience: Duration,
) -> Option<Similar> {
    let until = tokio::time::Instant::now() + patience;
    loop {
        let found = cache.get_similar(partition, vector, min).await.unwrap();
        if found.is_some() || tokio::time::Instant::now() >= until {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn a_similar_question_finds_its_answer_in_its_partition_only(
    cache: Arc<dyn Cache>,
    p: &str,
) {
    let (part, other) = (format!("{p}:ws_a:s:1"), format!("{p}:ws_b:s:1"));
    for (i, answer) in ["zero", "one"].iter().enumerate() {
        let key = format!("{p}:ws_a:x:{i}");
        cache
            .put(&key, answer.as_bytes().to_vec(), HOUR)
            .await
            .unwrap();
        cache
            .put_vector(&part, &key, &direction(8, i * 4, 0.0), HOUR)
            .await
            .unwrap();
    }
    // A paraphrase: close to question 1.
    let asked = direction(8, 4, 0.2);
    let hit = cache
        .get_similar(&part, &asked, 0.95)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hit.value, b"one");
    assert!((hit.similarity - 0.9806).abs() < 1e-3, "{}", hit.similarity);
    // Above the threshold only; never from another partition.
    assert_eq!(cache.get_similar(&part, &asked, 0.99).await.unwrap(), None);
    assert_eq!(cache.get_similar(&other, &asked, 0.5).await.unwrap(), None);
    assert_eq!(
        cache
            .get_similar(&part, &direction(8, 2, 0.0), 0.5)
            .await
            .unwrap(),
        None
    );
    // Clearing a prefix clears its partitions.
    cache.clear(&format!("{p}:ws_a:")).await.unwrap();
    assert_eq!(cache.get_similar(&part, &asked, 0.5).await.unwrap(), None);
}

pub async fn a_vector_never_outlives_its_answer(cache: Arc<dyn Cache>, p: &str) {
    let part = format!("{p}:ws:s:1");
    let (short, evicted) = (format!("{p}:ws:x:short"), format!("{p}:ws:x:gone"));
    cache
        .put(&short, b"short".to_vec(), Duration::from_millis(300))
        .await
        .unwrap();
    cache
        .put_vector(
            &part,
            &short,
            &direction(8, 0, 0.0),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert!(
        cache
            .get_similar(&part, &direction(8, 0, 0.0), 0.9)
            .await
            .unwrap()
            .is_some()
    );
    // An answer removed behind the index's back (evicted, or cleared by another replica).
    cache.put(&evicted, b"gone".to_vec(), HOUR).await.unwrap();
    cache
        .put_vector(&part, &evicted, &direction(8, 3, 0.0), HOUR)
        .await
        .unwrap();
    cache.clear(&evicted).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        cache
            .get_similar(&part, &direction(8, 0, 0.0), 0.9)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        cache
            .get_similar(&part, &direction(8, 3, 0.0), 0.9)
            .await
            .unwrap(),
        None
    );
}

pub async fn a_large_partition_is_searched_too(cache: Arc<dyn Cache>, p: &str) {
    // More vectors than are scanned exactly, so the graph path answers.
    let n = crate::vectors::EXACT_MAX + 200;
    let part = format!("{p}:ws:s:big");
    let vectors: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            let mut v: Vec<f32> = (0..16)
                .map(|d| ((i * 31 + d * 17) % 97) as f32 - 48.0)
                .collect();
            v[i % 16] += 400.0;
            v[(i / 16) % 16] += 200.0 * ((i / 256) as f32 + 1.0).ln();
            crate::embed::normalize(&mut v);
            v
        })
        .collect();
    for (i, v) in vectors.iter().enumerate() {
        let key = format!("{p}:ws:x:{i}");
        cache
            .put(&key, i.to_string().into_bytes(), HOUR)
            .await
            .unwrap();
        cache.put_vector(&part, &key, v, HOUR).await.unwrap();
    }
    for probe in [7, n / 2, n - 1] {
        let hit = similar_within(
            &*cache,
            &part,
            &vectors[probe],
            0.999,
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|| panic!("vector {probe} not found"));
        assert!(hit.similarity > 0.999);
        let found: usize = String::from_utf8(hit.value).unwrap().parse().unwrap();
        // Identical vectors may exist; the answer must be one of them.
        assert!(crate::embed::cosine(&vectors[found], &vectors[probe]) > 0.999);
    }
}
