//! What memory adds to a request's time, through the real `lyss-server`: two servers in the
//! same run against one fake upstream that answers at once — `plain` (memory off) and
//! `memory` (the default configuration: memory `auto`, local embedder) — and one client sending
//! every request one at a time (c = 1), a different prompt each time (so no vector is reused
//! from a cache).
//!
//! `cargo run --release -p lyss-benches --bin memory_overhead -- [--requests N] [--server PATH]
//! [--embedder local|none] [--pause-ms N]`
//!
//! The memory server's user first chats 60 turns about their life (ingested before the
//! measurement). Then, interleaved, after a client's think time (`--pause-ms`, default 100: the
//! turn queued by one request is ingested before the next, as between a person's messages): a
//! message recall leaves **untouched** (an ordinary turn whose words match nothing said
//! before: made of words used once), and one it **recalls into** (a question about what they
//! said), each also sent to `plain`. Reported: p50 and p95 of each, and the p50 memory adds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use lyss_benches::{Server, admin, ensure_local_model, fake_upstream, free_port, server_binary};
use serde_json::{Value, json};

const ADMIN: &str = "overhead-admin-token";
const MODEL: &str = "gpt-4o-mini";

const TOPICS: &[&str] = &[
    "my sister Ida and her bakery in Lyon",
    "the violin lessons I started in March",
    "our cat Pixel who hates the vacuum cleaner",
    "the marathon I am training for in October",
    "my job as a nurse on the night shift",
    "the garden where I grow tomatoes and basil",
    "my trip to Lisbon with my college friends",
    "the chess club I joined last winter",
    "my grandmother's recipe for plum cake",
    "the old blue Gazelle bike I repaired",
];

async fn start(upstream: &str, memory: &str, given: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("lyss.toml"),
        format!(
            "bind = \"127.0.0.1:{port}\"\nadmin_token = \"{ADMIN}\"\nauth_failures_per_minute = 0\n\n\
             {memory}\n\n[[providers]]\nname = \"fake\"\nkind = \"openai\"\nbase_url = \"{upstream}\"\n\n\
             [[models]]\nname = \"{MODEL}\"\nprovider = \"fake\"\n"
        ),
    )
    .unwrap();
    lyss_benches::start_server(&server_binary(given), dir, port, None).await
}

async fn key(http: &reqwest::Client, base: &str) -> String {
    admin(
        http,
        base,
        ADMIN,
        "/admin/workspaces",
        json!({"name": "w", "models": [MODEL]}),
    )
    .await;
    admin(
        http,
        base,
        ADMIN,
        "/admin/users",
        json!({"name": "u", "workspace": "w"}),
    )
    .await;
    admin(http, base, ADMIN, "/admin/keys", json!({"user": "u"})).await["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Sends a chat and returns its time in ms and whether memory changed the prompt.
async fn time(http: &reqwest::Client, base: &str, key: &str, messages: Value) -> (f64, bool) {
    let t = Instant::now();
    let resp = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": MODEL, "messages": messages}))
        .send()
        .await
        .unwrap();
    let changed = resp.headers().contains_key("x-lyss-prompt-tokens-sent");
    assert!(resp.status().is_success());
    let _ = resp.bytes().await;
    (t.elapsed().as_secs_f64() * 1000.0, changed)
}

/// The `n`th made-up word: consonant-vowel syllables, a different word for every `n`.
fn word(n: usize) -> String {
    const C: &[u8] = b"bdfgklmnprstvz";
    const V: &[u8] = b"aeiou";
    let mut w = String::new();
    let mut k = n + 1000;
    while k > 0 {
        w.push(C[k % C.len()] as char);
        w.push(V[(k / C.len()) % V.len()] as char);
        k /= C.len() * V.len();
    }
    w
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

#[tokio::main]
async fn main() {
    let (mut requests, mut given, mut embedder) = (200usize, None, "local".to_owned());
    let mut pause = Duration::from_millis(100);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--requests" => requests = it.next().unwrap().parse().unwrap(),
            "--server" => given = it.next(),
            "--embedder" => embedder = it.next().unwrap(),
            "--pause-ms" => pause = Duration::from_millis(it.next().unwrap().parse().unwrap()),
            other => panic!("unknown argument {other}"),
        }
    }
    ensure_local_model();
    let (upstream, _) = fake_upstream(0).await;
    let plain = start(&upstream, "[memory]\nenabled = false", given.as_deref()).await;
    let memory = start(
        &upstream,
        &format!("[embedder]\nkind = \"{embedder}\""),
        given.as_deref(),
    )
    .await;
    let http = reqwest::Client::new();
    let (plain_key, memory_key) = (
        key(&http, &plain.base).await,
        key(&http, &memory.base).await,
    );
    // The person's past: 60 turns of one conversation about their life.
    let mut history = vec![json!({"role": "system", "content": "You are a helpful assistant."})];
    for i in 0..30 {
        let topic = TOPICS[i % TOPICS.len()];
        history.push(json!({"role": "user", "content": format!("Let me tell you about {topic}: part {i} of the story, it matters to me.")}));
        time(
            &http,
            &memory.base,
            &memory_key,
            Value::Array(history.clone()),
        )
        .await;
        history.push(json!({"role": "assistant", "content": format!("Thanks for telling me about {topic}.")}));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fresh = |text: String| {
        json!([{"role": "system", "content": "You are a helpful assistant."},
                                      {"role": "user", "content": text}])
    };
    let (mut untouched, mut recalled) = (Vec::new(), Vec::new());
    let (mut plain_untouched, mut plain_recalled) = (Vec::new(), Vec::new());
    let (mut left_alone, mut recalled_into) = (0, 0);
    let started = Instant::now();
    for i in 0..requests {
        if started.elapsed() > Duration::from_secs(300) {
            break;
        }
        // Words no one used before: nothing to match.
        let chit = format!("{} {} {}.", word(3 * i), word(3 * i + 1), word(3 * i + 2));
        tokio::time::sleep(pause).await;
        let (ms, changed) = time(&http, &memory.base, &memory_key, fresh(chit.clone())).await;
        if !changed {
            untouched.push(ms);
            left_alone += 1;
        }
        plain_untouched.push(time(&http, &plain.base, &plain_key, fresh(chit)).await.0);
        let ask = format!(
            "What did I tell you about {}? (question {i})",
            TOPICS[i % TOPICS.len()]
        );
        tokio::time::sleep(pause).await;
        let (ms, changed) = time(&http, &memory.base, &memory_key, fresh(ask.clone())).await;
        if changed {
            recalled.push(ms);
            recalled_into += 1;
        }
        plain_recalled.push(time(&http, &plain.base, &plain_key, fresh(ask)).await.0);
    }
    let (pu, pr) = (
        pct(&mut plain_untouched, 0.5),
        pct(&mut plain_recalled, 0.5),
    );
    let (mu, mr) = (pct(&mut untouched, 0.5), pct(&mut recalled, 0.5));
    println!(
        "plain: p50 {pu:.2} ms (chit-chat), {pr:.2} ms (questions); {} requests each",
        plain_untouched.len()
    );
    println!(
        "memory, left untouched ({left_alone} of {requests} chit-chat): p50 {mu:.2} ms, p95 {:.2} ms — adds {:+.2} ms p50",
        pct(&mut untouched, 0.95),
        mu - pu
    );
    println!(
        "memory, recalled into ({recalled_into} of {requests} questions): p50 {mr:.2} ms, p95 {:.2} ms — adds {:+.2} ms p50",
        pct(&mut recalled, 0.95),
        mr - pr
    );
}
