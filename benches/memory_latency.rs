//! Memory search latency at scale: one user with N memories (random unit vectors, so the
//! index does real work), search p50/p95 excluding the query embedding, and the local model's
//! query-embedding latency.
//!
//! `cargo run --release -p lyss-benches --bin memory_latency -- [--sizes 10000,100000] [--queries 200]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use lyss_core::embed::{Embedder as _, LocalEmbedder};
use lyss_core::memory::index::{IndexRow, ScopeIndex};

fn unit(rng: &mut impl rand::Rng, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
    lyss_core::embed::normalize(&mut v);
    v
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q) as usize]
}

#[tokio::main]
async fn main() {
    let mut sizes = vec![10_000usize, 100_000];
    let mut queries = 200usize;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--sizes" => {
                sizes = it
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|s| s.parse().unwrap())
                    .collect()
            }
            "--queries" => queries = it.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let mut rng = rand::rng();
    let words = [
        "python", "rust", "lyon", "paris", "violin", "chess", "coffee", "tea", "train", "budget",
    ];
    for n in sizes {
        let rows: Vec<_> = (0..n)
            .map(|i| {
                let text = format!(
                    "memory {i} about {} and {}",
                    words[i % 10],
                    words[(i / 10) % 10]
                );
                IndexRow {
                    text,
                    context: None,
                    speaker: None,
                    vector: Some(unit(&mut rng, 384)),
                }
            })
            .collect();
        // As a store loads a scope: all rows at once.
        let mut idx = ScopeIndex::new();
        let t0 = Instant::now();
        idx.extend(rows);
        let build = t0.elapsed().as_secs_f64();
        let mut ms = Vec::with_capacity(queries);
        for q in 0..queries {
            let v = unit(&mut rng, 384);
            let text = format!("what about {}", words[q % 10]);
            let t = Instant::now();
            let hits = idx.search(&text, Some(&v), 10, 0.0);
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(!hits.is_empty());
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "{n} memories/user: search p50 {:.2} ms, p95 {:.2} ms (index built in {build:.1} s)",
            pct(&ms, 0.5),
            pct(&ms, 0.95)
        );
    }
    match tokio::task::spawn_blocking(LocalEmbedder::load_default)
        .await
        .unwrap()
    {
        Ok(e) => {
            let mut ms = Vec::new();
            for i in 0..queries {
                let t = Instant::now();
                e.embed(&[format!("What did Caroline do in Lyon on day {i}?")])
                    .await
                    .unwrap();
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            ms.sort_by(f64::total_cmp);
            println!(
                "query embedding (local all-MiniLM-L6-v2, int8 weights): p50 {:.2} ms, p95 {:.2} ms",
                pct(&ms, 0.5),
                pct(&ms, 0.95)
            );
        }
        Err(e) => println!("query embedding: skipped ({e})"),
    }
}
