//! Memory end to end: LOCOMO conversations replayed through the real `lyss-server` as a chat
//! client sends them, judged by what reaches the upstream.
//!
//! `cargo run --release -p lyss-benches --bin replay -- --data FILE [--json]`
//!
//! Starts `lyss-server` (built first with `cargo build --release -p lyss-server`, or `--server
//! PATH`; or targets a running one with `--base URL --admin-token T --upstream-port P`, whose
//! model `--model` must go to `http://127.0.0.1:P/v1`) with memory as lyss runs it by default
//! (`--memory auto`; `true` or `false` to force it), raw ingestion and the local embedder,
//! against an in-process fake OpenAI upstream that answers at once and records every body.
//! Each conversation is one user with its own key: speaker A is the user, speaker B the assistant,
//! consecutive turns of one speaker merged into one message (a shared photo as its caption after
//! the text, `[shares a photo of …]`), under a system prompt; every user message is sent with the
//! whole history before it, as LobeChat sends it, after a pause (`--pause-ms`, default 50: a brisk
//! client's think time). Then every question of categories 1–4 is asked as system prompt + the
//! whole conversation + question.
//!
//! Reported per category, per conversation and overall: the client's and the upstream's mean
//! prompt tokens (o200k) and the share saved; evidence reach — the share of questions where
//! the normalised text (lower-cased, whitespace collapsed, first 80 characters; the caption
//! excluded) of *every* evidence turn occurs in the messages that reached the upstream; the
//! share of evidence turns that reached it, by speaker; the same for naive truncation (system
//! prompt + the newest messages within the same budget, `history_tokens + memory_tokens`); and
//! the time per request through lyss. And the prompt dollars of lyss and of a plain gateway,
//! each with the provider's prompt cache simulated (`replay/prompt_cache.rs`), at the prices of
//! `--model` when it is `gpt-4o-mini` or `claude-sonnet-4-5` (the prices lyss weighed the
//! cache by in `--memory auto`: the fake provider caches prompts), else at both. `--json`
//! prints one object (`question_savings`, `evidence_reach`, `dollars`, … as fractions and
//! USD).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lyss_benches::{
    FAKE_ANSWER, Server, admin, ensure_local_model, fake_upstream, free_port, server_binary,
};
use prompt_cache::{Cache, Prompt, Spend};

#[path = "replay/prompt_cache.rs"]
mod prompt_cache;
use lyss_core::config::MemoryConfig;
use lyss_core::tokens;
use lyss_core::wire::{ChatRequest, Message, Role};
use serde_json::{Value, json};

const ADMIN: &str = "replay-admin-token";
/// How lyss's memory block starts (where its Anthropic breakpoint goes before).
const BLOCK_HEADER: &str = "What you know about the user";
const SYSTEM: &str = "You are a helpful assistant. You are chatting with a friend; answer in \
                      their language, briefly, and use what you know of them and of your \
                      earlier conversations.";

struct Args {
    data: String,
    json: bool,
    server: Option<String>,
    base: Option<String>,
    admin_token: String,
    upstream_port: u16,
    model: String,
    memory: String,
    embedder: String,
    history_tokens: Option<u64>,
    memory_tokens: Option<u64>,
    conversations: Option<Vec<String>>,
    pause: Duration,
    server_log: Option<String>,
    /// The client sends only its last N messages (0: all).
    window: usize,
    /// LobeChat's history summary calls and block (with `window`).
    summary: bool,
    /// Every session a new chat, every question a new chat.
    topics: bool,
}

fn args() -> Args {
    let mut a = Args {
        data: String::new(),
        json: false,
        server: None,
        base: None,
        admin_token: ADMIN.into(),
        upstream_port: 0,
        model: "gpt-4o-mini".into(),
        memory: "auto".into(),
        embedder: "local".into(),
        history_tokens: None,
        memory_tokens: None,
        conversations: None,
        pause: Duration::from_millis(50),
        server_log: None,
        window: 0,
        summary: false,
        topics: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = value(),
            "--json" => a.json = true,
            "--server" => a.server = Some(value()),
            "--base" => a.base = Some(value()),
            "--admin-token" => a.admin_token = value(),
            "--upstream-port" => a.upstream_port = value().parse().expect("--upstream-port N"),
            "--model" => a.model = value(),
            "--memory" => a.memory = value(),
            "--embedder" => a.embedder = value(),
            "--history-tokens" => a.history_tokens = Some(value().parse().expect("a number")),
            "--memory-tokens" => a.memory_tokens = Some(value().parse().expect("a number")),
            "--server-log" => a.server_log = Some(value()),
            "--pause-ms" => a.pause = Duration::from_millis(value().parse().expect("--pause-ms N")),
            "--window" => a.window = value().parse().expect("--window N"),
            "--summary" => a.summary = true,
            "--topics" => a.topics = true,
            "--conversations" => {
                a.conversations = Some(value().split(',').map(str::to_owned).collect())
            }
            other => panic!(
                "unknown argument {other}; usage: replay --data FILE [--json] [--server PATH | \
                 --base URL --admin-token T --upstream-port P] [--model M] \
                 [--memory true|auto|false] [--embedder local|none] [--history-tokens N] \
                 [--memory-tokens N] [--conversations ID,ID] [--pause-ms N] [--server-log FILE] \
                 [--window N [--summary]] [--topics]"
            ),
        }
    }
    assert!(!a.data.is_empty(), "usage: replay --data FILE [--json]");
    assert!(!a.summary || a.window > 0, "--summary needs --window N");
    a
}

async fn start_server(a: &Args, upstream: &str) -> Server {
    if a.embedder == "local" {
        ensure_local_model();
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut memory = format!("enabled = {}\n", toml_mode(&a.memory));
    if let Some(n) = a.history_tokens {
        memory.push_str(&format!("history_tokens = {n}\n"));
    }
    if let Some(n) = a.memory_tokens {
        memory.push_str(&format!("memory_tokens = {n}\n"));
    }
    let config = dir.path().join("lyss.toml");
    std::fs::write(
        &config,
        format!(
            r#"bind = "127.0.0.1:{port}"
admin_token = "{ADMIN}"
auth_failures_per_minute = 0

[memory]
{memory}
[embedder]
kind = "{embedder}"

[[providers]]
name = "fake"
kind = "openai"
base_url = "{upstream}"
prompt_cache = true

[[models]]
name = "{model}"
provider = "fake"
"#,
            embedder = a.embedder,
            model = a.model,
        ),
    )
    .unwrap();
    let log = a.server_log.as_ref().map(PathBuf::from);
    lyss_benches::start_server(
        &server_binary(a.server.as_deref()),
        dir,
        port,
        log.as_deref(),
    )
    .await
}

fn toml_mode(mode: &str) -> String {
    match mode {
        "true" | "on" => "true".into(),
        "false" | "off" => "false".into(),
        other => format!("\"{other}\""),
    }
}

/// Lower-cased, whitespace collapsed.
fn normalise(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// What identifies a turn in a prompt: its first 80 normalised characters.
fn evidence_key(text: &str) -> String {
    normalise(text).chars().take(80).collect()
}

/// One message of the replayed chat, with the turns merged into it.
struct Said {
    role: Role,
    /// LOCOMO's session (a sitting; sessions are days apart) of its first turn.
    session: u32,
    text: String,
    /// (dia_id, text) of each merged turn.
    turns: Vec<(String, String)>,
}

/// A conversation as a chat: speaker A's turns as the user, speaker B's as the assistant,
/// consecutive turns of one speaker merged.
fn chat_of(conv: &Value) -> Vec<Said> {
    let c = &conv["conversation"];
    let user = c["speaker_a"].as_str().unwrap_or("");
    let mut out: Vec<Said> = Vec::new();
    let mut n = 1;
    while let Some(turns) = c.get(format!("session_{n}")).and_then(Value::as_array) {
        for t in turns {
            let role = if t["speaker"].as_str() == Some(user) {
                Role::User
            } else {
                Role::Assistant
            };
            let text = t["text"].as_str().unwrap_or("").trim().to_owned();
            let id = t["dia_id"].as_str().unwrap_or("").to_owned();
            // A shared photo reaches the chat as its caption after the text (as LOCOMO's own
            // evaluation renders it); evidence is matched on the text alone.
            let said = match t["blip_caption"].as_str() {
                Some(caption) => format!("{text} [shares {caption}]"),
                None => text.clone(),
            };
            match out.last_mut() {
                Some(last) if last.role == role => {
                    last.text.push('\n');
                    last.text.push_str(&said);
                    last.turns.push((id, text));
                }
                _ => out.push(Said {
                    role,
                    session: n,
                    text: said,
                    turns: vec![(id, text)],
                }),
            }
        }
        n += 1;
    }
    out
}

/// LobeChat's history compression prompt (`enableCompressHistory`), as it sends it.
const SUMMARY_SYSTEM: &str = "You're an assistant who's good at extracting key takeaways from \
    conversations and summarizing them. Please summarize according to the user's needs. The \
    content you need to summarize is located in the <chat_history> </chat_history> group of xml \
    tags. The summary needs to maintain the original language.";
const SUMMARY_ASK: &str = "Please summarize the above conversation and retain key information. \
    The summarized content will be used as context for subsequent prompts, and should be \
    limited to 400 tokens.";

/// What the client sends for a new message: its system prompt (with its own summary of older
/// messages, if it keeps one), then the history it keeps — all of it, or its last `window`
/// messages counting the new one — and the new message.
fn request_as_sent(
    model: &str,
    history: &[Message],
    last: &str,
    window: usize,
    summary: Option<&str>,
) -> ChatRequest {
    let from = if window == 0 {
        0
    } else {
        history.len().saturating_sub(window - 1)
    };
    let mut req = request(model, &history[from..], Some(last));
    if let (Some(text), true) = (summary, from > 0) {
        req.messages[0] = Message::text(
            Role::System,
            format!(
                "{SYSTEM}\n\n<chat_history_summary>\n<docstring>Users may have lots of chat \
                 messages, here is the summary of the history:</docstring>\n<summary>{text}\
                 </summary>\n</chat_history_summary>"
            ),
        );
    }
    req
}

/// LobeChat's summary call over the messages that fell out of its window.
fn summary_request(model: &str, older: &[Message]) -> ChatRequest {
    let quoted: String = older
        .iter()
        .map(|m| {
            let tag = if m.role == Role::User {
                "user"
            } else {
                "assistant"
            };
            let text = m.content.as_ref().map(|c| c.text()).unwrap_or_default();
            format!("<{tag}>{text}</{tag}>")
        })
        .collect();
    ChatRequest {
        model: model.into(),
        messages: vec![
            Message::text(Role::System, SUMMARY_SYSTEM),
            Message::text(
                Role::User,
                format!("<chat_history>{quoted}</chat_history>\n\n{SUMMARY_ASK}"),
            ),
        ],
        ..ChatRequest::default()
    }
}

fn request(model: &str, history: &[Message], last: Option<&str>) -> ChatRequest {
    let mut messages = vec![Message::text(Role::System, SYSTEM)];
    messages.extend(history.iter().cloned());
    if let Some(q) = last {
        messages.push(Message::text(Role::User, q));
    }
    ChatRequest {
        model: model.into(),
        messages,
        ..ChatRequest::default()
    }
}

/// The system prompt and the newest messages within `budget` tokens (the last always kept).
fn truncated(req: &ChatRequest, budget: u64) -> ChatRequest {
    let model = req.model.as_str();
    let mut used = tokens::count_messages(model, &req.messages[..1]);
    let mut from = req.messages.len();
    while from > 1 {
        let cost = tokens::count_messages(model, &req.messages[from - 1..from]) - 3;
        if from < req.messages.len() && used + cost > budget {
            break;
        }
        used += cost;
        from -= 1;
    }
    let mut messages = vec![req.messages[0].clone()];
    messages.extend(req.messages[from..].iter().cloned());
    ChatRequest {
        model: req.model.clone(),
        messages,
        ..ChatRequest::default()
    }
}

/// Everything the messages say, normalised (what evidence keys are looked for in).
fn haystack(messages: &[Message]) -> String {
    normalise(
        &messages
            .iter()
            .filter_map(|m| m.content.as_ref().map(|c| c.text()))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

#[derive(Default, Clone)]
struct Tally {
    questions: u64,
    client_tokens: u64,
    upstream_tokens: u64,
    reached: u64,
    naive_tokens: u64,
    naive_reached: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.questions += o.questions;
        self.client_tokens += o.client_tokens;
        self.upstream_tokens += o.upstream_tokens;
        self.reached += o.reached;
        self.naive_tokens += o.naive_tokens;
        self.naive_reached += o.naive_reached;
    }

    fn json(&self) -> Value {
        let n = self.questions.max(1) as f64;
        let saved = |t: u64| 1.0 - t as f64 / self.client_tokens.max(1) as f64;
        json!({
            "questions": self.questions,
            "client_prompt_tokens_mean": self.client_tokens as f64 / n,
            "upstream_prompt_tokens_mean": self.upstream_tokens as f64 / n,
            "savings": saved(self.upstream_tokens),
            "added_tokens_mean": (self.upstream_tokens as f64 - self.client_tokens as f64) / n,
            "evidence_reach": self.reached as f64 / n,
            "naive_prompt_tokens_mean": self.naive_tokens as f64 / n,
            "naive_savings": saved(self.naive_tokens),
            "naive_evidence_reach": self.naive_reached as f64 / n,
        })
    }
}

/// One request's prompt as lyss sent it upstream and as the client sent it (what a plain
/// gateway forwards); `session` is LOCOMO's sitting, `None` for the questions asked after.
struct Sent {
    ours: Prompt,
    plain: Prompt,
    session: Option<u32>,
}

/// Spend per price table: (lyss, plain gateway).
type Spends = Vec<(Spend, Spend)>;

/// Prompt spend per price table, for the questions and for every request; `expiring`: the
/// provider's cache is cold at each new sitting (days apart).
fn bill(
    conversations: &[Vec<Sent>],
    tables: &[prompt_cache::Table],
    model: &str,
    expiring: bool,
) -> (Spends, Spends) {
    let mut questions = vec![(Spend::default(), Spend::default()); tables.len()];
    let mut all = questions.clone();
    for conversation in conversations {
        let mut caches: Vec<(Cache, Cache)> = tables
            .iter()
            .map(|t| (Cache::new(*t, model), Cache::new(*t, model)))
            .collect();
        let mut sitting = None;
        for sent in conversation {
            if expiring && sent.session != sitting {
                for (ours, plain) in &mut caches {
                    ours.expire();
                    plain.expire();
                }
            }
            sitting = sent.session;
            for (i, (ours, plain)) in caches.iter_mut().enumerate() {
                let (l, p) = (ours.bill(&sent.ours), plain.bill(&sent.plain));
                all[i].0.add(&l);
                all[i].1.add(&p);
                if sent.session.is_none() {
                    questions[i].0.add(&l);
                    questions[i].1.add(&p);
                }
            }
        }
    }
    (questions, all)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

fn latency_json(ms: &mut [f64]) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "requests": ms.len(),
        "p50_ms": percentile(ms, 0.5),
        "p95_ms": percentile(ms, 0.95),
        "mean_ms": ms.iter().sum::<f64>() / ms.len().max(1) as f64,
    })
}

/// Sends one chat request after `pause` (a client's think time, in which lyss ingests what
/// the last request queued); returns (latency ms, the body the upstream received).
async fn send(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    req: &ChatRequest,
    bodies: &Mutex<Vec<Value>>,
    pause: Duration,
) -> (f64, ChatRequest) {
    tokio::time::sleep(pause).await;
    let before = bodies.lock().unwrap().len();
    let t0 = Instant::now();
    let resp = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(req)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    assert!(status.is_success(), "lyss answered {status}: {text}");
    let body = bodies
        .lock()
        .unwrap()
        .get(before)
        .cloned()
        .expect("the upstream saw no request");
    (
        ms,
        serde_json::from_value(body).expect("an OpenAI chat body"),
    )
}

#[tokio::main]
async fn main() {
    let args = args();
    let data: Value =
        serde_json::from_str(&std::fs::read_to_string(&args.data).expect("read --data"))
            .expect("--data is JSON");
    let defaults = MemoryConfig::default();
    let budget = args.history_tokens.unwrap_or(defaults.history_tokens)
        + args.memory_tokens.unwrap_or(defaults.memory_tokens);
    let (upstream_url, bodies) = fake_upstream(args.upstream_port).await;
    let (server, base) = match &args.base {
        Some(b) => (None, b.clone()),
        None => {
            let s = start_server(&args, &upstream_url).await;
            let b = s.base.clone();
            (Some(s), b)
        }
    };
    let http = reqwest::Client::new();
    let token = if server.is_some() {
        ADMIN.to_owned()
    } else {
        args.admin_token.clone()
    };
    let run = format!("replay{}", std::process::id());
    admin(
        &http,
        &base,
        &token,
        "/admin/workspaces",
        json!({"name": run, "models": [args.model]}),
    )
    .await;

    let names = |c: u64| match c {
        1 => "multi-hop",
        2 => "temporal",
        3 => "open-domain",
        4 => "single-hop",
        _ => "other",
    };
    let mut per_cat: BTreeMap<u64, Tally> = BTreeMap::new();
    let mut per_conv: BTreeMap<String, Tally> = BTreeMap::new();
    let (mut turn_ms, mut question_ms) = (Vec::new(), Vec::new());
    // Ordinary turns' and summary calls' prompts as the client sent them and as they reached
    // the upstream (counted at the end).
    let (mut turn_prompts, mut summary_prompts) = (Vec::new(), Vec::new());
    // Evidence turns reached, by who said them: (reached, all) for the user and the assistant.
    let mut by_role: HashMap<Role, (u64, u64)> = HashMap::new();
    // Every request's prompt as lyss sent it and as a plain gateway would have, by conversation
    // (billed at the end: tokenizing them here would load the cores lyss is measured on).
    let mut prompts: Vec<Vec<Sent>> = Vec::new();
    let started = Instant::now();
    let mut conversations = 0;
    for conv in data.as_array().expect("a list of conversations") {
        let id = conv["sample_id"].as_str().unwrap_or("conv");
        if args
            .conversations
            .as_ref()
            .is_some_and(|only| !only.iter().any(|o| o == id))
        {
            continue;
        }
        conversations += 1;
        let user = format!("{run}-{id}");
        admin(
            &http,
            &base,
            &token,
            "/admin/users",
            json!({"name": user, "workspace": run}),
        )
        .await;
        let key = admin(&http, &base, &token, "/admin/keys", json!({"user": user})).await["key"]
            .as_str()
            .unwrap()
            .to_owned();
        let chat = chat_of(conv);
        let mut turn_text: HashMap<String, (Role, String)> = HashMap::new();
        for said in &chat {
            for (dia, text) in &said.turns {
                turn_text.insert(dia.clone(), (said.role, text.clone()));
            }
        }
        let mut sent_prompts = Vec::new();
        let mut keep = |sent: &ChatRequest, asked: &ChatRequest, session: Option<u32>| {
            sent_prompts.push(Sent {
                ours: Prompt::of(&sent.messages, BLOCK_HEADER),
                plain: Prompt::of(&asked.messages, BLOCK_HEADER),
                session,
            });
        };
        // The conversation, one user message at a time, as the client sends it.
        let mut history: Vec<Message> = Vec::new();
        let mut summary: Option<String> = None;
        let mut session = 0;
        for said in &chat {
            if args.topics && said.session != session {
                history.clear();
                summary = None;
            }
            session = said.session;
            if said.role == Role::User {
                let req = request_as_sent(
                    &args.model,
                    &history,
                    &said.text,
                    args.window,
                    summary.as_deref(),
                );
                let (ms, sent) = send(&http, &base, &key, &req, &bodies, args.pause).await;
                turn_ms.push(ms);
                keep(&sent, &req, Some(said.session));
                turn_prompts.push((req, sent));
            }
            history.push(Message::text(said.role, said.text.clone()));
            // LobeChat summarises what fell out of its window after every reply.
            if args.summary && said.role == Role::Assistant && history.len() >= args.window {
                let older = &history[..history.len() + 1 - args.window];
                let req = summary_request(&args.model, older);
                let (_, sent) = send(&http, &base, &key, &req, &bodies, args.pause).await;
                summary = Some(FAKE_ANSWER.to_owned());
                summary_prompts.push((req, sent));
            }
        }
        // Then the questions, each with the whole conversation.
        for q in conv["qa"].as_array().expect("qa") {
            let cat = q["category"].as_u64().unwrap_or(0);
            if !(1..=4).contains(&cat) {
                continue;
            }
            let evidence: Vec<&(Role, String)> = q["evidence"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .flat_map(|e| e.split([';', ',']))
                .filter_map(|e| turn_text.get(e.trim()))
                .collect();
            if evidence.is_empty() {
                continue;
            }
            let question = q["question"].as_str().unwrap_or("");
            let req = if args.topics {
                request(&args.model, &[], Some(question))
            } else {
                request_as_sent(
                    &args.model,
                    &history,
                    question,
                    args.window,
                    summary.as_deref(),
                )
            };
            let (ms, sent) = send(&http, &base, &key, &req, &bodies, args.pause).await;
            question_ms.push(ms);
            keep(&sent, &req, None);
            let reached_in = |messages: &[Message]| {
                let hay = haystack(messages);
                evidence
                    .iter()
                    .map(|(role, text)| (*role, hay.contains(&evidence_key(text))))
                    .collect::<Vec<_>>()
            };
            let reached = reached_in(&sent.messages);
            for (role, hit) in &reached {
                let e = by_role.entry(*role).or_default();
                e.0 += u64::from(*hit);
                e.1 += 1;
            }
            let naive = truncated(&req, budget);
            let this = Tally {
                questions: 1,
                client_tokens: tokens::count_request(&args.model, &req),
                upstream_tokens: tokens::count_request(&args.model, &sent),
                reached: u64::from(reached.iter().all(|(_, hit)| *hit)),
                naive_tokens: tokens::count_request(&args.model, &naive),
                naive_reached: u64::from(reached_in(&naive.messages).iter().all(|(_, hit)| *hit)),
            };
            per_cat.entry(cat).or_default().add(&this);
            per_conv.entry(id.to_owned()).or_default().add(&this);
        }
        prompts.push(sent_prompts);
        if !args.json {
            eprintln!(
                "replay: {id} done ({} messages) after {:.0} s",
                chat.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let mut all = Tally::default();
    for t in per_cat.values() {
        all.add(t);
    }
    let share = |role: Role| {
        let (hit, n) = by_role.get(&role).copied().unwrap_or_default();
        hit as f64 / n.max(1) as f64
    };
    let mut every_ms: Vec<f64> = turn_ms.iter().chain(&question_ms).copied().collect();
    // Lyss weighed the provider's cache at the model's own prices: bill it at those alone.
    let tables: Vec<_> = prompt_cache::tables()
        .into_iter()
        .filter(|t| t.model == args.model)
        .collect();
    let tables = if tables.is_empty() {
        prompt_cache::tables()
    } else {
        tables
    };
    let dollars = |spend: &[(Spend, Spend)]| {
        tables
            .iter()
            .zip(spend)
            .map(|(t, (ours, plain))| {
                let saved = 1.0 - ours.nusd as f64 / plain.nusd.max(1) as f64;
                (
                    t.model.to_owned(),
                    json!({
                        "lyss": ours.json(),
                        "plain": plain.json(),
                        "saved_vs_plain_cached": saved,
                        "saved_vs_plain_uncached":
                            1.0 - ours.nusd as f64 / plain.nusd_uncached.max(1) as f64,
                    }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
    };
    let overall = all.json();
    let dollar_report: serde_json::Map<String, Value> = [false, true]
        .into_iter()
        .map(|expiring| {
            let (questions, every) = bill(&prompts, &tables, &args.model, expiring);
            let name = if expiring {
                "cache_expires_between_sessions"
            } else {
                "cache_never_expires"
            };
            (
                name.to_owned(),
                json!({"questions": dollars(&questions), "all_requests": dollars(&every)}),
            )
        })
        .collect();
    let sent_apart = |pairs: &[(ChatRequest, ChatRequest)]| {
        let n = pairs.len().max(1) as f64;
        let (client, upstream) = pairs.iter().fold((0u64, 0u64), |(c, u), (req, sent)| {
            (
                c + tokens::count_request(&args.model, req),
                u + tokens::count_request(&args.model, sent),
            )
        });
        json!({
            "requests": pairs.len(),
            "client_prompt_tokens_mean": client as f64 / n,
            "upstream_prompt_tokens_mean": upstream as f64 / n,
            "added_tokens_mean": (upstream as f64 - client as f64) / n,
        })
    };
    let report = json!({
        "data": args.data,
        "client": if args.topics { "topics".to_owned() } else if args.window > 0 {
            format!("window {}{}", args.window, if args.summary { " + summary" } else { "" })
        } else { "whole history".to_owned() },
        "ordinary_turns": sent_apart(&turn_prompts),
        "summary_calls": sent_apart(&summary_prompts),
        "conversations": conversations,
        "memory": args.memory,
        "embedder": args.embedder,
        "budget_tokens": budget,
        "question_savings": overall["savings"],
        "evidence_reach": overall["evidence_reach"],
        "naive_question_savings": overall["naive_savings"],
        "naive_evidence_reach": overall["naive_evidence_reach"],
        "dollars": dollar_report,
        "turn_recall_user": share(Role::User),
        "turn_recall_assistant": share(Role::Assistant),
        "overall": overall,
        "per_category": per_cat.iter().map(|(c, t)| (names(*c).to_owned(), t.json())).collect::<serde_json::Map<_, _>>(),
        "per_conversation": per_conv.iter().map(|(c, t)| (c.clone(), t.json())).collect::<serde_json::Map<_, _>>(),
        "latency": {
            "conversation_turns": latency_json(&mut turn_ms),
            "questions": latency_json(&mut question_ms),
            "all": latency_json(&mut every_ms),
        },
        "seconds": started.elapsed().as_secs_f64(),
    });
    if args.json {
        println!("{report}");
        return;
    }
    println!(
        "replay of {} ({} conversations) through lyss-server, memory {}, embedder {}, client sends {}; naive truncation at {budget} tokens",
        args.data, conversations, args.memory, args.embedder, report["client"]
    );
    for (name, v) in [
        ("ordinary turns", &report["ordinary_turns"]),
        ("summary calls", &report["summary_calls"]),
    ] {
        if v["requests"].as_u64().unwrap_or(0) > 0 {
            println!(
                "{name}: {} requests, client {:.0} → upstream {:.0} tokens (mean, {:+.0})",
                v["requests"],
                v["client_prompt_tokens_mean"].as_f64().unwrap_or(0.0),
                v["upstream_prompt_tokens_mean"].as_f64().unwrap_or(0.0),
                v["added_tokens_mean"].as_f64().unwrap_or(0.0),
            );
        }
    }
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8}",
        "category", "questions", "client", "upstream", "saved", "reach", "naive", "n.reach"
    );
    let row = |name: &str, v: &Value| {
        println!(
            "{:<12} {:>9} {:>9.0} {:>9.0} {:>7.1}% {:>7.1}% {:>8.1}% {:>7.1}%",
            name,
            v["questions"],
            v["client_prompt_tokens_mean"].as_f64().unwrap_or(0.0),
            v["upstream_prompt_tokens_mean"].as_f64().unwrap_or(0.0),
            100.0 * v["savings"].as_f64().unwrap_or(0.0),
            100.0 * v["evidence_reach"].as_f64().unwrap_or(0.0),
            100.0 * v["naive_savings"].as_f64().unwrap_or(0.0),
            100.0 * v["naive_evidence_reach"].as_f64().unwrap_or(0.0),
        )
    };
    for (c, t) in &per_cat {
        row(names(*c), &t.json());
    }
    for (c, t) in &per_conv {
        row(c, &t.json());
    }
    row("all 1-4", &report["overall"]);
    println!(
        "evidence turns reached: user {:.1}%, assistant {:.1}%",
        100.0 * share(Role::User),
        100.0 * share(Role::Assistant)
    );
    println!(
        "prompt dollars with the provider's prompt cache (no expiry), lyss vs a plain gateway:"
    );
    for (expiry, by_scope) in report["dollars"].as_object().unwrap() {
        println!("  {expiry}:");
        for (scope, by_model) in by_scope.as_object().unwrap() {
            for (model, d) in by_model.as_object().unwrap() {
                let f = |v: &Value| v.as_f64().unwrap_or(0.0);
                println!(
                    "    {scope:<12} {model:<18} lyss ${:.4} ({:.1}% cached) vs plain ${:.4} ({:.1}% cached, ${:.4} uncached): {:.1}% saved ({:.1}% vs uncached)",
                    f(&d["lyss"]["usd"]),
                    100.0 * f(&d["lyss"]["cached_share"]),
                    f(&d["plain"]["usd"]),
                    100.0 * f(&d["plain"]["cached_share"]),
                    f(&d["plain"]["usd_uncached"]),
                    100.0 * f(&d["saved_vs_plain_cached"]),
                    100.0 * f(&d["saved_vs_plain_uncached"]),
                );
            }
        }
    }
    for (name, l) in report["latency"].as_object().unwrap() {
        println!(
            "time per request, {name}: p50 {:.2} ms, p95 {:.2} ms, mean {:.2} ms ({} requests)",
            l["p50_ms"].as_f64().unwrap_or(0.0),
            l["p95_ms"].as_f64().unwrap_or(0.0),
            l["mean_ms"].as_f64().unwrap_or(0.0),
            l["requests"]
        );
    }
    drop(server);
}
