//! The profile end to end: people who say something about themselves once — in a chat about
//! something else — and, after other chats, open a new, unrelated chat that needs it without
//! naming it. Replayed through the real `lyss-server` with its default memory (no `[memory]`
//! section), the local embedder and a fake upstream that records every body.
//!
//! `cargo run --release -p lyss-benches --bin profiles -- [--data benches/data/profiles.json]
//! [--server PATH] [--json]`
//!
//! Every person chats in new chats only: their first message (the statement inside), then the
//! fillers (ordinary chats of another kind), then — after everyone has — the later chat. Half
//! the people have a key of their own; the other half share one key, told apart by OpenAI's
//! `user` field (a chat app's deployment key). Reported per split (dev: the rules were tuned
//! on it; held-out: written before, never tuned on): the share whose statement reached the
//! model in the later chat, the share where another person's statement did (must be 0), and
//! the tokens memory added to the later chats and to the fillers (mean, upstream − client).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lyss_benches::{admin, ensure_local_model, fake_upstream, free_port, server_binary};
use lyss_core::tokens;
use lyss_core::wire::ChatRequest;
use serde_json::{Value, json};

const ADMIN: &str = "profiles-admin-token";
const MODEL: &str = "gpt-4o-mini";
const SYSTEM: &str = "You are a helpful assistant.";

fn normalise(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Sends a new chat (system prompt + one message) and returns the body the upstream received.
async fn chat(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    user: Option<&str>,
    text: &str,
    bodies: &Mutex<Vec<Value>>,
) -> (ChatRequest, ChatRequest) {
    let mut body = json!({"model": MODEL, "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": text}
    ]});
    if let Some(u) = user {
        body["user"] = json!(u);
    }
    let before = bodies.lock().unwrap().len();
    let resp = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let _ = resp.bytes().await;
    let sent = bodies.lock().unwrap()[before].clone();
    (
        serde_json::from_value(body).unwrap(),
        serde_json::from_value(sent).unwrap(),
    )
}

#[derive(Default)]
struct Split {
    people: u64,
    reached: u64,
    leaked: u64,
    later_added: i64,
    filler_added: i64,
    fillers: u64,
}

#[tokio::main]
async fn main() {
    let mut data_path = format!("{}/data/profiles.json", env!("CARGO_MANIFEST_DIR"));
    let (mut given_server, mut as_json) = (None, false);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--data" => data_path = it.next().expect("--data FILE"),
            "--server" => given_server = Some(it.next().expect("--server PATH")),
            "--json" => as_json = true,
            other => panic!(
                "unknown argument {other}; usage: profiles [--data FILE] [--server PATH] [--json]"
            ),
        }
    }
    let data: Value = serde_json::from_str(&std::fs::read_to_string(&data_path).unwrap()).unwrap();
    ensure_local_model();
    let (upstream, bodies) = fake_upstream(0).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("lyss.toml"),
        format!(
            "bind = \"127.0.0.1:{port}\"\nadmin_token = \"{ADMIN}\"\nauth_failures_per_minute = 0\n\n\
             [[providers]]\nname = \"fake\"\nkind = \"openai\"\nbase_url = \"{upstream}\"\n\n\
             [[models]]\nname = \"{MODEL}\"\nprovider = \"fake\"\n"
        ),
    )
    .unwrap();
    let server =
        lyss_benches::start_server(&server_binary(given_server.as_deref()), dir, port, None).await;
    let base = server.base.clone();
    let http = reqwest::Client::new();
    admin(
        &http,
        &base,
        ADMIN,
        "/admin/workspaces",
        json!({"name": "people", "models": [MODEL]}),
    )
    .await;
    let key_of = |user: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            admin(
                &http,
                &base,
                ADMIN,
                "/admin/users",
                json!({"name": user, "workspace": "people"}),
            )
            .await;
            admin(&http, &base, ADMIN, "/admin/keys", json!({"user": user})).await["key"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let shared = key_of("shared-app".into()).await;
    let people = data["people"].as_array().unwrap();
    let fillers: Vec<&str> = data["fillers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let started = Instant::now();
    // (key, end-user) per person.
    let mut who = Vec::new();
    for (i, _) in people.iter().enumerate() {
        if i % 2 == 0 {
            who.push((key_of(format!("person-{i}")).await, None));
        } else {
            who.push((shared.clone(), Some(format!("app-user-{i}"))));
        }
    }
    let mut splits: BTreeMap<String, Split> = BTreeMap::new();
    for (p, (key, user)) in people.iter().zip(&who) {
        chat(
            &http,
            &base,
            key,
            user.as_deref(),
            p["said"].as_str().unwrap(),
            &bodies,
        )
        .await;
        let split = splits
            .entry(p["split"].as_str().unwrap().to_owned())
            .or_default();
        for f in &fillers {
            let (asked, sent) = chat(&http, &base, key, user.as_deref(), f, &bodies).await;
            split.filler_added += tokens::count_request(MODEL, &sent) as i64
                - tokens::count_request(MODEL, &asked) as i64;
            split.fillers += 1;
        }
    }
    // Months later (ingestion has long finished).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let evidence: Vec<String> = people
        .iter()
        .map(|p| normalise(p["evidence"].as_str().unwrap()))
        .collect();
    let mut misses = Vec::new();
    for (i, (p, (key, user))) in people.iter().zip(&who).enumerate() {
        let (asked, sent) = chat(
            &http,
            &base,
            key,
            user.as_deref(),
            p["later"].as_str().unwrap(),
            &bodies,
        )
        .await;
        let hay = normalise(
            &serde_json::to_string(&sent.messages)
                .unwrap()
                .replace("\\n", " "),
        );
        let split = splits.get_mut(p["split"].as_str().unwrap()).unwrap();
        split.people += 1;
        let reached = hay.contains(&evidence[i]);
        split.reached += u64::from(reached);
        if !reached {
            misses.push(p["said"].as_str().unwrap().to_owned());
        }
        // Another person's words, unless this person said them too ("vegetarian", "newborn").
        let own = normalise(&format!("{} {}", p["said"], p["later"]));
        let leaked = evidence
            .iter()
            .enumerate()
            .any(|(j, e)| j != i && hay.contains(e.as_str()) && !own.contains(e.as_str()));
        split.leaked += u64::from(leaked);
        split.later_added += tokens::count_request(MODEL, &sent) as i64
            - tokens::count_request(MODEL, &asked) as i64;
    }
    let report: serde_json::Map<String, Value> = splits
        .iter()
        .map(|(name, s)| {
            let n = s.people.max(1) as f64;
            (
                name.clone(),
                json!({
                    "people": s.people,
                    "reached": s.reached as f64 / n,
                    "another_persons_reached": s.leaked as f64 / n,
                    "later_chat_tokens_added_mean": s.later_added as f64 / n,
                    "filler_tokens_added_mean": s.filler_added as f64 / s.fillers.max(1) as f64,
                }),
            )
        })
        .collect();
    if as_json {
        println!("{}", json!({"splits": report, "misses": misses}));
        return;
    }
    println!(
        "profiles: {} people, {} fillers each, {:.0} s",
        people.len(),
        fillers.len(),
        started.elapsed().as_secs_f64()
    );
    for (name, r) in &report {
        println!(
            "{name:<9} {} people: reached {:.0}%, another person's {:.0}%, later chat +{:.0} tokens, fillers +{:.0} tokens (means)",
            r["people"],
            100.0 * r["reached"].as_f64().unwrap(),
            100.0 * r["another_persons_reached"].as_f64().unwrap(),
            r["later_chat_tokens_added_mean"].as_f64().unwrap(),
            r["filler_tokens_added_mean"].as_f64().unwrap(),
        );
    }
    for m in &misses {
        println!("  missed: {m}");
    }
    drop(server);
}
