//! Soak and highest-sustained-rate runs of the real `lyss-server` (docs/reliability.md;
//! `scripts/soak.sh` builds and starts it).
//!
//! An in-process fake upstream (OpenAI wire format: JSON after 20 ms, or 8 SSE chunks 5 ms
//! apart with a usage chunk) and an open-loop load at a fixed rate, mixed in equal parts:
//! non-streaming and streaming questions never asked before, repeats of 20 questions (exact
//! cache hits), and streaming or not turns of 10 users whose workspace has memory on (local
//! embeddings, memories stored from every turn). Every workspace has a USD budget and an RPM
//! limit, so every request is rate-limited, reserved and settled.
//!
//! - soak: `--duration SECS --rate R`: per minute, requests, errors, p50/p99 and the server's
//!   RSS; at the end the ledger's row count against the requests answered. Fails (exit 1) on
//!   an error, a missing or extra ledger row, RSS growing > 25% after the first two minutes,
//!   or a last-minute p99 more than twice the second minute's.
//! - `--find-max`: the rate stepped up (20 s each) until lyss no longer keeps up (answers
//!   < 99% of what was offered, an error, or p99 > 1 s); prints every step.
//!
//! `--mix gateway` leaves the memory turns out (thirds of the rest): the gateway path alone.
//!
//! `--backend embedded` (SQLite, caches in process) or `cluster` (a fresh schema in
//! `--postgres`, rate limits and cache in `--redis`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lyss_benches::{Server, free_port};
use lyss_testkit::openai::{chunk, usage_chunk};
use lyss_testkit::upstream;
use serde_json::{Value, json};

const ADMIN: &str = "soak-admin-token";
/// Requests in flight beyond this are counted as not kept up with, not sent.
const MAX_IN_FLIGHT: u64 = 2_000;

struct Args {
    server: String,
    backend: String,
    duration: u64,
    rate: u64,
    find_max: bool,
    /// `memory` (the default mix) or `gateway`: without memory turns (thirds of the rest).
    mix: String,
    postgres: String,
    redis: String,
}

fn args() -> Args {
    let mut a = Args {
        server: String::new(),
        backend: "embedded".into(),
        duration: 600,
        rate: 40,
        find_max: false,
        mix: "memory".into(),
        postgres: "postgres://postgres@127.0.0.1:5432/test".into(),
        redis: "redis://127.0.0.1:6379".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => a.server = value(),
            "--backend" => a.backend = value(),
            "--duration" => a.duration = value().parse().unwrap(),
            "--rate" => a.rate = value().parse().unwrap(),
            "--postgres" => a.postgres = value(),
            "--redis" => a.redis = value(),
            "--find-max" => a.find_max = true,
            "--mix" => a.mix = value(),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!a.server.is_empty(), "--server PATH/lyss-server is needed");
    a
}

/// The fake upstream: answers every chat request, streaming or not.
async fn upstream() -> String {
    async fn chat(axum::Json(body): axum::Json<Value>) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let usage = json!({"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48});
        if body["stream"] != json!(true) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            return axum::Json(json!({
                "id": "chatcmpl-soak", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Sure: here is a short answer."},
                             "finish_reason": "stop"}],
                "usage": usage
            }))
            .into_response();
        }
        let event = |delta: Value, finish: Value| chunk("gpt-4o-mini", delta, finish).to_string();
        let mut events: Vec<String> = (0..8)
            .map(|_| event(json!({"content": "word "}), Value::Null))
            .collect();
        events.push(event(json!({}), json!("stop")));
        events.push(usage_chunk("gpt-4o-mini", usage).to_string());
        events.push("[DONE]".into());
        upstream::sse(futures::stream::iter(events), Duration::from_millis(5))
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat));
    upstream::serve(app, 0).await
}

/// A fresh schema in Postgres (search_path in the URL), as the tests do.
async fn fresh_schema(base: &str) -> String {
    use sqlx::Connection as _;
    let schema = format!("lyss_soak_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

async fn start_lyss(a: &Args, upstream: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let stores = match a.backend.as_str() {
        "embedded" => String::new(),
        "cluster" => format!(
            "database_url = \"{}\"\nredis_url = \"{}\"\n",
            fresh_schema(&a.postgres).await,
            a.redis
        ),
        other => panic!("--backend embedded|cluster, not {other}"),
    };
    let cache_backend = if a.backend == "cluster" {
        "redis"
    } else {
        "memory"
    };
    let config = dir.path().join("lyss.toml");
    std::fs::write(
        &config,
        format!(
            r#"bind = "127.0.0.1:{port}"
admin_token = "{ADMIN}"
auth_failures_per_minute = 0
{stores}
[memory]
enabled = false
workspaces.mem = true

[cache]
mode = "exact"
backend = "{cache_backend}"

[[providers]]
name = "fake"
kind = "openai"
base_url = "{upstream}"

[[models]]
name = "gpt-4o-mini"
provider = "fake"
input_per_mtok = 0.15
output_per_mtok = 0.60
"#
        ),
    )
    .unwrap();
    lyss_benches::start_server(Path::new(&a.server), dir, port, None).await
}

async fn admin(http: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    lyss_benches::admin(http, base, ADMIN, path, body).await
}

/// Keys: [0] for the plain workspace, [1..=10] for the memory workspace's users.
async fn tenants(http: &reqwest::Client, base: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for (ws, users) in [("plain", 1), ("mem", 10)] {
        admin(
            http,
            base,
            "/admin/workspaces",
            json!({"name": ws, "models": ["gpt-4o-mini"]}),
        )
        .await;
        admin(
            http,
            base,
            "/admin/budgets",
            json!({"scope": "workspace", "target": ws, "unit": "usd",
                    "limit": 1_000_000_000_000i64, "period": "monthly"}),
        )
        .await;
        admin(
            http,
            base,
            "/admin/limits",
            json!({"scope": "workspace", "target": ws, "rpm": 10_000_000}),
        )
        .await;
        for u in 0..users {
            let user = format!("{ws}-user{u}");
            admin(
                http,
                base,
                "/admin/users",
                json!({"name": user, "workspace": ws}),
            )
            .await;
            let k = admin(http, base, "/admin/keys", json!({"user": user})).await;
            keys.push(k["key"].as_str().unwrap().to_owned());
        }
    }
    keys
}

/// Request `i` of the mix: (key index, body). Without memory, `i` skips the memory turns.
fn request(i: u64, memory: bool) -> (usize, Value) {
    let i = if memory { i } else { i / 3 * 4 + i % 3 };
    let ask = |text: String, stream: bool| {
        let mut b = json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": text}]});
        if stream {
            b["stream"] = json!(true);
        }
        b
    };
    match i % 4 {
        0 => (
            0,
            ask(
                format!("Question {i}: what is the capital of country {i}?"),
                false,
            ),
        ),
        1 => (
            0,
            ask(format!("Question {i}: tell me about topic {i}."), true),
        ),
        2 => (
            0,
            ask(format!("Frequently asked question {}", i % 20), false),
        ),
        _ => {
            let user = 1 + (i / 4 % 10) as usize;
            let text = format!(
                "I have been working on project {} this week and I prefer tea to coffee. What next?",
                i % 97
            );
            (user, ask(text, i % 8 == 3))
        }
    }
}

#[derive(Default)]
struct Outcome {
    latency_ms: f64,
    status: u16,
}

async fn one(http: reqwest::Client, base: String, key: String, body: Value) -> Outcome {
    let start = Instant::now();
    let resp = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await;
    let status = match resp {
        Ok(r) => {
            let status = r.status().as_u16();
            match r.bytes().await {
                Ok(b) if status == 200 && body["stream"] == json!(true) => {
                    if b.ends_with(b"data: [DONE]\n\n") {
                        200
                    } else {
                        599
                    }
                }
                Ok(_) => status,
                Err(_) => 599,
            }
        }
        Err(_) => 598,
    };
    Outcome {
        latency_ms: start.elapsed().as_secs_f64() * 1000.0,
        status,
    }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// What one window of a run saw.
#[derive(Default)]
struct Window {
    offered: u64,
    answered: u64,
    errors: u64,
    latencies: Vec<f64>,
}

/// Where the load goes, and what it is made of.
struct Target {
    http: reqwest::Client,
    base: String,
    keys: Arc<Vec<String>>,
    /// The next request's number in the mix.
    next: AtomicU64,
    memory: bool,
}

/// Offers `rate` requests per second for `secs`; returns one window per `window` seconds
/// (by the second the request was offered) and the count not sent because too many were in
/// flight.
async fn drive(t: &Target, rate: u64, secs: u64, window: u64) -> (Vec<Window>, u64) {
    let (http, base, keys, next, memory) = (&t.http, t.base.as_str(), &t.keys, &t.next, t.memory);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Outcome)>();
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut skipped = 0;
    let start = tokio::time::Instant::now();
    let total = rate * secs;
    let mut offered = vec![0u64; secs.div_ceil(window) as usize];
    for n in 0..total {
        let at = start + Duration::from_secs_f64(n as f64 / rate as f64);
        tokio::time::sleep_until(at).await;
        let w = (n / rate / window) as usize;
        offered[w] += 1;
        if in_flight.load(Ordering::SeqCst) >= MAX_IN_FLIGHT {
            skipped += 1;
            continue;
        }
        let (key, body) = request(next.fetch_add(1, Ordering::SeqCst), memory);
        let (http, base, key, tx, in_flight) = (
            http.clone(),
            base.to_owned(),
            keys[key].clone(),
            tx.clone(),
            in_flight.clone(),
        );
        in_flight.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let o = one(http, base, key, body).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send((w as u64, o));
        });
    }
    drop(tx);
    let mut windows: Vec<Window> = offered
        .iter()
        .map(|&o| Window {
            offered: o,
            ..Window::default()
        })
        .collect();
    // Bounded: every request has lyss's own timeouts; give stragglers 60 s at most.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some((w, o))) = tokio::time::timeout_at(deadline, rx.recv()).await {
        let win = &mut windows[w as usize];
        if o.status == 200 {
            win.answered += 1;
            win.latencies.push(o.latency_ms);
        } else {
            win.errors += 1;
        }
    }
    for w in &mut windows {
        w.latencies.sort_by(f64::total_cmp);
    }
    (windows, skipped)
}

async fn ledger_rows(http: &reqwest::Client, base: &str) -> u64 {
    let rows: Value = http
        .get(format!("{base}/admin/usage?by=workspace"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum()
}

#[tokio::main]
async fn main() {
    let a = args();
    let upstream = upstream().await;
    let lyss = start_lyss(&a, &upstream).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4_096)
        .build()
        .unwrap();
    let pid = lyss.pid();
    let target = Target {
        keys: Arc::new(tenants(&http, &lyss.base).await),
        http: http.clone(),
        base: lyss.base.clone(),
        next: AtomicU64::new(0),
        memory: match a.mix.as_str() {
            "memory" => true,
            "gateway" => false,
            other => panic!("--mix memory|gateway, not {other}"),
        },
    };
    println!(
        "lyss-server ({}) pid {pid}, RSS at start {:.1} MiB",
        a.backend,
        rss_mib(pid)
    );

    if a.find_max {
        // Warm up (model load, connections), then step up.
        drive(&target, 20, 5, 5).await;
        println!("| offered req/s | answered req/s | errors | p50 ms | p99 ms | RSS MiB |");
        println!("|---:|---:|---:|---:|---:|---:|");
        let mut best = 0;
        for rate in [
            50, 100, 200, 300, 400, 600, 800, 1_000, 1_300, 1_600, 2_000, 2_500, 3_000,
        ] {
            let (w, skipped) = drive(&target, rate, 20, 20).await;
            let w = &w[0];
            let answered = w.answered as f64 / 20.0;
            let (p50, p99) = (pct(&w.latencies, 0.5), pct(&w.latencies, 0.99));
            println!(
                "| {rate} | {answered:.0} | {} | {p50:.1} | {p99:.1} | {:.1} |",
                w.errors + skipped,
                rss_mib(pid)
            );
            if answered < 0.99 * rate as f64 || w.errors + skipped > 0 || p99 > 1_000.0 {
                break;
            }
            best = rate;
        }
        println!(
            "highest sustained rate: {best} req/s ({}, {} mix)",
            a.backend, a.mix
        );
        return;
    }

    let mut rss: BTreeMap<u64, f64> = BTreeMap::new();
    let sampler = {
        let stop = Arc::new(AtomicU64::new(0));
        let s = stop.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            while s.load(Ordering::SeqCst) == 0 {
                samples.push((started.elapsed().as_secs() / 60, rss_mib(pid)));
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            samples
        });
        (stop, task)
    };
    println!(
        "soak: {} req/s for {} s (a quarter each: fresh, fresh streaming, cache repeats, memory turns)",
        a.rate, a.duration
    );
    let (windows, skipped) = drive(&target, a.rate, a.duration, 60).await;
    sampler.0.store(1, Ordering::SeqCst);
    for (minute, mib) in sampler.1.await.unwrap() {
        rss.insert(minute, mib); // the last sample of each minute
    }
    println!("| minute | offered | answered | errors | p50 ms | p99 ms | RSS MiB (end) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let (mut answered, mut errors) = (0, skipped);
    for (m, w) in windows.iter().enumerate() {
        answered += w.answered;
        errors += w.errors;
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
            m + 1,
            w.offered,
            w.answered,
            w.errors,
            pct(&w.latencies, 0.5),
            pct(&w.latencies, 0.99),
            rss.get(&(m as u64)).copied().unwrap_or(0.0)
        );
    }
    // Rows of streams are written as they end; give the last ones a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows = ledger_rows(&http, &lyss.base).await;
    let cache: Value = http
        .get(format!("{}/admin/cache", lyss.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null);
    println!("cache: {cache}");
    println!(
        "requests answered {answered}, errors {errors} (not sent: {skipped}), ledger rows {rows}, RSS now {:.1} MiB",
        rss_mib(pid)
    );
    let mut failed = Vec::new();
    if errors > 0 {
        failed.push(format!("{errors} errors"));
    }
    if rows != answered {
        failed.push(format!("ledger rows {rows} ≠ requests answered {answered}"));
    }
    let minutes: Vec<f64> = rss.values().copied().collect();
    if minutes.len() >= 4 {
        let (early, last) = (minutes[1], minutes[minutes.len() - 1]);
        if last > early * 1.25 {
            failed.push(format!(
                "RSS grew from {early:.1} to {last:.1} MiB after warm-up"
            ));
        }
    }
    if windows.len() >= 3 {
        let (second, last) = (
            pct(&windows[1].latencies, 0.99),
            pct(&windows[windows.len() - 1].latencies, 0.99),
        );
        if last > 2.0 * second.max(10.0) {
            failed.push(format!("p99 rose from {second:.1} to {last:.1} ms"));
        }
    }
    if failed.is_empty() {
        println!("soak passed");
    } else {
        println!("soak FAILED: {}", failed.join("; "));
        std::process::exit(1);
    }
}
