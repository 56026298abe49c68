//! Semantic cache lookup latency at scale: one partition (one workspace, one context) holding
//! N cached answers, on each backend. Vectors are random 384-d unit vectors (the local model's
//! dimension), so the index does real work; the query is a stored question's vector with
//! noise (cosine ≈ 0.97, above the default threshold 0.95) for hits, a fresh random vector
//! for misses. Reports lookup p50/p99 (the query's embedding excluded; it is measured last),
//! how often a hit found its own question (the graph search is approximate above 4,096
//! vectors), and for Redis how long a second replica took to mirror the partition.
//!
//! `cargo run --release -p lyss-benches --bin cache_latency -- [--sizes 10000,100000]
//!  [--queries 1000] [--backends memory,redis] [--redis redis://127.0.0.1:6379]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use lyss_core::cache::{Cache, InMemoryCache, RedisCache};
use lyss_core::embed::{Embedder as _, LocalEmbedder, normalize};
use rand::Rng as _;

const DIM: usize = 384;
const TTL: Duration = Duration::from_secs(3600);
const THRESHOLD: f32 = 0.95;

fn unit(rng: &mut impl rand::Rng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM).map(|_| rng.random::<f32>() - 0.5).collect();
    normalize(&mut v);
    v
}

/// `v` moved a little: cosine with `v` about 0.97.
fn near(rng: &mut impl rand::Rng, v: &[f32]) -> Vec<f32> {
    let noise = unit(rng);
    let mut out: Vec<f32> = v.iter().zip(&noise).map(|(a, b)| a + 0.25 * b).collect();
    normalize(&mut out);
    out
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q) as usize]
}

/// An answer of a realistic size (~700 bytes of JSON).
fn answer(i: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": format!("chatcmpl-{i}"), "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": format!("Answer {i}: {}", "lorem ipsum ".repeat(40))}}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 120, "total_tokens": 160}
    }))
    .unwrap()
}

async fn fill(cache: Arc<dyn Cache>, partition: &str, vectors: &Arc<Vec<Vec<f32>>>) {
    // A few writers at once, as concurrent requests would store.
    let tasks: Vec<_> = (0..4)
        .map(|w| {
            let (cache, vectors, partition) =
                (cache.clone(), vectors.clone(), partition.to_owned());
            tokio::spawn(async move {
                for i in (w..vectors.len()).step_by(4) {
                    let key = format!("w:bench:x:{i:08}");
                    cache.put(&key, answer(i), TTL).await.unwrap();
                    cache
                        .put_vector(&partition, &key, &vectors[i], TTL)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn measure(
    name: &str,
    cache: &dyn Cache,
    partition: &str,
    vectors: &[Vec<f32>],
    queries: usize,
) {
    let mut rng = rand::rng();
    let (mut hit_ms, mut miss_ms, mut own, mut found) = (Vec::new(), Vec::new(), 0, 0);
    for _ in 0..queries {
        let i = rng.random_range(0..vectors.len());
        let q = near(&mut rng, &vectors[i]);
        let t = Instant::now();
        let got = cache.get_similar(partition, &q, THRESHOLD).await.unwrap();
        hit_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if let Some(s) = got {
            found += 1;
            if s.value == answer(i) {
                own += 1;
            }
        }
        let q = unit(&mut rng);
        let t = Instant::now();
        let got = cache.get_similar(partition, &q, THRESHOLD).await.unwrap();
        miss_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(got.is_none(), "a random vector is never that close");
    }
    hit_ms.sort_by(f64::total_cmp);
    miss_ms.sort_by(f64::total_cmp);
    println!(
        "{name:>7} {:>7} entries: hit p50 {:.3} ms p99 {:.3} ms | miss p50 {:.3} ms p99 {:.3} ms | hits {found}/{queries}, own answer {own}/{queries}",
        vectors.len(),
        pct(&hit_ms, 0.5),
        pct(&hit_ms, 0.99),
        pct(&miss_ms, 0.5),
        pct(&miss_ms, 0.99),
    );
}

#[tokio::main]
async fn main() {
    let mut sizes = vec![10_000usize, 100_000];
    let mut queries = 1000usize;
    let mut backends = vec!["memory".to_owned(), "redis".to_owned()];
    let mut redis_url = "redis://127.0.0.1:6379".to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().expect("a value");
        match a.as_str() {
            "--sizes" => sizes = value().split(',').map(|s| s.parse().unwrap()).collect(),
            "--queries" => queries = value().parse().unwrap(),
            "--backends" => backends = value().split(',').map(str::to_owned).collect(),
            "--redis" => redis_url = value(),
            other => panic!("unknown argument {other}"),
        }
    }
    let mut rng = rand::rng();
    for n in sizes {
        let vectors: Arc<Vec<Vec<f32>>> = Arc::new((0..n).map(|_| unit(&mut rng)).collect());
        let partition = format!("w:bench:s:{n}");
        for backend in &backends {
            match backend.as_str() {
                "memory" => {
                    let cache: Arc<dyn Cache> = Arc::new(InMemoryCache::new(8 << 30));
                    let t = Instant::now();
                    fill(cache.clone(), &partition, &vectors).await;
                    println!(
                        "memory  {n:>7} entries: filled in {:.1} s",
                        t.elapsed().as_secs_f64()
                    );
                    measure("memory", &*cache, &partition, &vectors, queries).await;
                }
                "redis" => {
                    let prefix = format!("lyss-bench:{}:", rand::random::<u64>());
                    let writer: Arc<dyn Cache> =
                        Arc::new(RedisCache::connect(&redis_url, &prefix).await.unwrap());
                    let t = Instant::now();
                    fill(writer.clone(), &partition, &vectors).await;
                    println!(
                        "redis   {n:>7} entries: filled in {:.1} s",
                        t.elapsed().as_secs_f64()
                    );
                    // Another replica: it mirrors the partition on first use (in the
                    // background); measured once it has all of it.
                    let replica = RedisCache::connect(&redis_url, &prefix).await.unwrap();
                    let t = Instant::now();
                    let last = &vectors[n - 1];
                    while replica
                        .get_similar(&partition, last, 0.999)
                        .await
                        .unwrap()
                        .is_none()
                    {
                        assert!(
                            t.elapsed() < Duration::from_secs(900),
                            "mirror never caught up"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    println!(
                        "redis   {n:>7} entries: a new replica mirrored them in {:.1} s",
                        t.elapsed().as_secs_f64()
                    );
                    measure("redis", &replica, &partition, &vectors, queries).await;
                    writer.clear("").await.unwrap();
                }
                other => panic!("unknown backend {other}"),
            }
        }
    }
    match tokio::task::spawn_blocking(LocalEmbedder::load_default)
        .await
        .unwrap()
    {
        Ok(e) => {
            let mut ms = Vec::new();
            for i in 0..200 {
                let t = Instant::now();
                e.embed(&[format!("How do I reverse a list of {i} items in Python?")])
                    .await
                    .unwrap();
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            ms.sort_by(f64::total_cmp);
            println!(
                "question embedding (local all-MiniLM-L6-v2): p50 {:.2} ms, p99 {:.2} ms",
                pct(&ms, 0.5),
                pct(&ms, 0.99)
            );
        }
        Err(e) => println!("question embedding: skipped ({e})"),
    }
}
