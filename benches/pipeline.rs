//! Micro-benchmarks of the per-request work lyss adds: parsing a chat body, counting its
//! tokens, authenticating a key through the key cache, appending a ledger row to SQLite (group
//! commit), and a budget reservation + settlement.
//!
//! `cargo bench -p lyss-benches`. The whole-gateway numbers come from `scripts/bench-gateway.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use lyss_core::policy::prelude::*;
use lyss_core::policy::{
    Ask, CreatedKey, LedgerEntry, NewBudget, NewKey, Period, Reservation, Scope, Unit,
};
use lyss_core::price::Price;
use lyss_core::wire::ChatRequest;
use lyss_core::{Lyss, SqlitePolicy};
use serde_json::json;

fn chat_body(turns: usize) -> Vec<u8> {
    let messages: Vec<_> = std::iter::once(json!({"role": "system", "content": "You are a helpful assistant."}))
        .chain((0..turns).map(|i| {
            json!({"role": if i % 2 == 0 {"user"} else {"assistant"},
                   "content": "Tell me more about the borrow checker and lifetimes in Rust. ".repeat(4)})
        }))
        .collect();
    serde_json::to_vec(
        &json!({"model": "gpt-4o-mini", "messages": messages, "stream": true,
                               "temperature": 0.7, "max_tokens": 512}),
    )
    .unwrap()
}

fn parse(c: &mut Criterion) {
    for turns in [2, 40] {
        let body = chat_body(turns);
        c.bench_function(&format!("parse_chat_request/{turns}_turns"), |b| {
            b.iter(|| serde_json::from_slice::<ChatRequest>(&body).unwrap())
        });
        let req: ChatRequest = serde_json::from_slice(&body).unwrap();
        c.bench_function(&format!("count_prompt_tokens/{turns}_turns"), |b| {
            b.iter(|| lyss_core::tokens::count_request("gpt-4o-mini", &req))
        });
        let text: String = req
            .messages
            .iter()
            .filter_map(|m| m.content.as_ref().map(|c| c.text()))
            .collect();
        c.bench_function(&format!("count_tokens_uncached/{turns}_turns"), |b| {
            b.iter(|| lyss_core::tokens::count_text_uncached("gpt-4o-mini", &text))
        });
    }
}

/// A one-worker runtime (the gateway benchmark gives lyss one core) and a SQLite store in a
/// temporary directory with workspace, user and key `bench`: served by this process
/// (reservations in memory, as `lyss-server` runs it) or with reservations in the file.
fn store(file: &str, serve: bool) -> (tokio::runtime::Runtime, Arc<SqlitePolicy>, CreatedKey) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile_dir();
    let (policy, key) = rt.block_on(async {
        let url = format!("sqlite://{}/{file}", dir.display());
        let policy = Arc::new(match serve {
            true => SqlitePolicy::serve(&url).await.unwrap(),
            false => SqlitePolicy::connect(&url).await.unwrap(),
        });
        policy
            .create_workspace("bench", &["*".into()])
            .await
            .unwrap();
        policy.create_user("bench", "bench").await.unwrap();
        let key = policy
            .create_key(&NewKey {
                user: "bench".into(),
                ..NewKey::default()
            })
            .await
            .unwrap();
        (policy, key)
    });
    (rt, policy, key)
}

fn governance(c: &mut Criterion) {
    let (rt, policy, key) = store("bench.db", true);
    let key = key.key;
    let lyss = Lyss::builder(policy.clone()).build();
    c.bench_function("authenticate/cached", |b| {
        b.to_async(&rt)
            .iter(|| async { lyss.authenticate(&key).await.unwrap() })
    });
    let entry = ledger_entry("ws", "u", "k");
    let none = Reservation::default();
    c.bench_function("ledger_record/sqlite_sequential", |b| {
        b.to_async(&rt)
            .iter(|| async { policy.settle(&none, &entry).await.unwrap() })
    });
    c.bench_function("ledger_record/sqlite_64_concurrent", |b| {
        b.to_async(&rt).iter(|| async {
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let (p, e) = (policy.clone(), entry.clone());
                    tokio::spawn(
                        async move { p.settle(&Reservation::default(), &e).await.unwrap() },
                    )
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        })
    });
}

fn budgets(c: &mut Criterion) {
    for (serve, name) in [(true, "in_process"), (false, "in_file")] {
        reserve_and_settle(c, serve, name);
    }
}

fn reserve_and_settle(c: &mut Criterion, serve: bool, name: &str) {
    let (rt, policy, key) = store(&format!("budgets-{name}.db"), serve);
    let who = rt.block_on(async {
        for (scope, target, unit, limit) in [
            (
                Scope::Workspace,
                "bench".to_string(),
                Unit::Usd,
                i64::MAX / 4,
            ),
            (Scope::Key, key.info.id.clone(), Unit::Tokens, i64::MAX / 4),
        ] {
            policy
                .set_budget(&NewBudget {
                    scope,
                    target,
                    unit,
                    limit,
                    period: Period::Monthly,
                    tz: None,
                    expires_at: None,
                })
                .await
                .unwrap();
        }
        policy.authenticate(&key.key).await.unwrap()
    });
    let ask = Ask {
        prompt_tokens: 20,
        requested_output: Some(32),
        output_cap: 16_384,
        price: Price::per_mtok(0.15, 0.6, 0.075),
        grows: None,
    };
    let entry = ledger_entry(&who.workspace_id, &who.user_id, &who.key_id);
    c.bench_function(
        &format!("reserve_and_settle/sqlite_two_budgets_{name}"),
        |b| {
            b.to_async(&rt).iter(|| async {
                let now = time::OffsetDateTime::now_utc();
                let r = policy
                    .reserve(who.payer(), &ask, now, std::time::Duration::from_secs(900))
                    .await
                    .unwrap();
                policy.settle(&r, &entry).await.unwrap()
            })
        },
    );
}

/// A small chat request as the ledger records it.
fn ledger_entry(workspace: &str, user: &str, key: &str) -> LedgerEntry {
    let payer = lyss_core::policy::Payer {
        workspace_id: workspace,
        user_id: user,
        key_id: key,
        workspace_name: workspace,
        user_name: user,
    };
    LedgerEntry {
        provider: "p".into(),
        upstream_model: "gpt-4o-mini".into(),
        prompt_tokens: 20,
        prompt_tokens_original: 20,
        completion_tokens: 10,
        cost_nusd: 9000,
        latency_ms: 0.3,
        ..LedgerEntry::new(
            payer,
            "bench",
            "chat",
            "gpt-4o-mini",
            std::time::Instant::now(),
        )
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lyss-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

criterion_group!(benches, parse, governance, budgets);
criterion_main!(benches);
