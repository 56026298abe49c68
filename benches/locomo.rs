//! LOCOMO memory-retrieval benchmark.
//!
//! `cargo run --release -p lyss-benches --bin locomo -- --data FILE [--json] [--embedder local|hash|none]`
//!
//! Each conversation is one user's memory: every turn is ingested raw (`Speaker: text`, dated
//! with its session's date), then every question of categories 1–4 searches that memory.
//! Reported per category and overall: recall of the gold evidence turns in the top 10, and
//! within a 1,024-token memory block (results in rank order while they fit, each as the
//! pipeline injects it — `- text` under a heading per day), and the tokens of that block
//! against the whole conversation (every turn as `[date] Speaker: text`). The product path,
//! with the conversation as a chat client sends it, is measured by the `replay` benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use lyss_core::embed::{Embedder, HashEmbedder, LocalEmbedder};
use lyss_core::memory::{MemoryScope, MemoryStore as _, NewMemory, SearchQuery, SqliteMemoryStore};
use serde_json::{Value, json};

const BLOCK_TOKENS: u64 = 1024;
const TOKENIZER_MODEL: &str = "gpt-4o-mini";

struct Args {
    data: String,
    json: bool,
    embedder: String,
}

fn args() -> Args {
    let mut a = Args {
        data: String::new(),
        json: false,
        embedder: "local".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--data" => a.data = it.next().expect("--data FILE"),
            "--json" => a.json = true,
            "--embedder" => a.embedder = it.next().expect("--embedder local|hash|none"),
            other => panic!(
                "unknown argument {other}; usage: --data FILE [--json] [--embedder local|hash|none]"
            ),
        }
    }
    assert!(!a.data.is_empty(), "usage: locomo --data FILE [--json]");
    a
}

/// "1:56 pm on 8 May, 2023" → "2023-05-08".
fn session_day(s: &str) -> String {
    let date = s.split(" on ").nth(1).unwrap_or(s).replace(',', "");
    let parts: Vec<&str> = date.split_whitespace().collect();
    let month = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ]
    .iter()
    .position(|m| parts.get(1).is_some_and(|p| p.eq_ignore_ascii_case(m)))
    .map_or(0, |i| i + 1);
    match (parts.first(), parts.get(2)) {
        (Some(d), Some(y)) => format!("{y}-{month:02}-{:0>2}", d),
        _ => s.to_owned(),
    }
}

/// "2023-05-08" → midnight UTC of that day.
fn day_start(day: &str) -> Option<time::OffsetDateTime> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(day, format)
        .ok()
        .map(|d| d.midnight().assume_utc())
}

#[derive(Default)]
struct Tally {
    questions: u64,
    recall10: f64,
    recall_block: f64,
}

#[tokio::main]
async fn main() {
    let args = args();
    let data: Value =
        serde_json::from_str(&std::fs::read_to_string(&args.data).expect("read data"))
            .expect("json");
    let embedder: Option<Arc<dyn Embedder>> = match args.embedder.as_str() {
        "local" => Some(Arc::new(
            tokio::task::spawn_blocking(LocalEmbedder::load_default)
                .await
                .unwrap()
                .expect("local model (run scripts/fetch-models.sh)"),
        )),
        "hash" => Some(Arc::new(HashEmbedder::new(384))),
        _ => None,
    };
    let store = SqliteMemoryStore::connect("sqlite::memory:", embedder)
        .await
        .expect("store");
    let mut per_cat: BTreeMap<u64, Tally> = BTreeMap::new();
    let (mut sent_total, mut full_total, mut asked) = (0u64, 0u64, 0u64);
    let mut search_ms = Vec::new();
    let started = Instant::now();
    let mut turns_total = 0;
    for conv in data.as_array().expect("a list of conversations") {
        let c = &conv["conversation"];
        let scope = MemoryScope::user("locomo", conv["sample_id"].as_str().unwrap_or("conv"));
        let mut full = String::new();
        let mut n = 1;
        while let Some(turns) = c.get(format!("session_{n}")).and_then(Value::as_array) {
            let day = session_day(c[format!("session_{n}_date_time")].as_str().unwrap_or(""));
            for t in turns {
                let said = format!(
                    "{}: {}",
                    t["speaker"].as_str().unwrap_or(""),
                    t["text"].as_str().unwrap_or("")
                );
                full.push_str(&format!("[{day}] {said}"));
                full.push('\n');
                store
                    .add(
                        &scope,
                        &NewMemory {
                            text: said,
                            source: t["dia_id"].as_str().map(str::to_owned),
                            occurred_at: day_start(&day),
                            ..NewMemory::default()
                        },
                    )
                    .await
                    .expect("add");
                turns_total += 1;
            }
            n += 1;
        }
        let full_tokens = lyss_core::tokens::count_text(TOKENIZER_MODEL, &full);
        for q in conv["qa"].as_array().expect("qa") {
            let cat = q["category"].as_u64().unwrap_or(0);
            if !(1..=4).contains(&cat) {
                continue;
            }
            let evidence: HashSet<&str> = q["evidence"]
                .as_array()
                .map(|e| e.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if evidence.is_empty() {
                continue;
            }
            let t0 = Instant::now();
            let hits = store
                .search(
                    &scope,
                    &SearchQuery {
                        text: q["question"].as_str().unwrap_or("").to_owned(),
                        limit: 60,
                        min_similarity: 0.0,
                    },
                )
                .await
                .expect("search");
            search_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            let found = |hits: &[&lyss_core::memory::Hit]| {
                let got: HashSet<&str> = hits
                    .iter()
                    .filter_map(|h| h.memory.source.as_deref())
                    .collect();
                evidence.iter().filter(|e| got.contains(*e)).count() as f64 / evidence.len() as f64
            };
            let top10: Vec<_> = hits.iter().take(10).collect();
            let mut block: Vec<&lyss_core::memory::Hit> = Vec::new();
            let mut used = 0;
            for h in &hits {
                // As the pipeline injects it: a line per memory, a heading per day; what does
                // not fit is skipped.
                let day = h.memory.occurred_at.map(|t| t.date());
                let heading = if block
                    .iter()
                    .any(|b| b.memory.occurred_at.map(|t| t.date()) == day)
                {
                    0
                } else {
                    lyss_core::tokens::count_text(
                        TOKENIZER_MODEL,
                        &format!("\n{}:", day.map(|d| d.to_string()).unwrap_or_default()),
                    )
                };
                let cost = heading
                    + lyss_core::tokens::count_text(
                        TOKENIZER_MODEL,
                        &format!("\n- {}", h.memory.text),
                    );
                if used + cost > BLOCK_TOKENS {
                    continue;
                }
                used += cost;
                block.push(h);
            }
            let tally = per_cat.entry(cat).or_default();
            tally.questions += 1;
            tally.recall10 += found(&top10);
            tally.recall_block += found(&block);
            sent_total += used;
            full_total += full_tokens;
            asked += 1;
        }
    }
    let all = per_cat.values().fold(Tally::default(), |mut a, t| {
        a.questions += t.questions;
        a.recall10 += t.recall10;
        a.recall_block += t.recall_block;
        a
    });
    search_ms.sort_by(f64::total_cmp);
    let p = |q: f64| {
        search_ms
            .get(((search_ms.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let names = |c: u64| match c {
        1 => "multi-hop",
        2 => "temporal",
        3 => "open-domain",
        4 => "single-hop",
        _ => "other",
    };
    let per_category: serde_json::Map<String, Value> = per_cat
        .iter()
        .map(|(c, t)| {
            (
                names(*c).to_owned(),
                json!({"questions": t.questions,
                       "recall_at_10": t.recall10 / t.questions as f64,
                       "recall_at_1024_tokens": t.recall_block / t.questions as f64}),
            )
        })
        .collect();
    let report = json!({
        "embedder": args.embedder,
        "questions": all.questions,
        "turns_ingested": turns_total,
        "recall_at_10": all.recall10 / all.questions.max(1) as f64,
        "recall_at_1024_tokens": all.recall_block / all.questions.max(1) as f64,
        "per_category": per_category,
        "tokens_sent_mean": sent_total as f64 / asked.max(1) as f64,
        "tokens_full_mean": full_total as f64 / asked.max(1) as f64,
        "search_ms_p50_with_embedding": p(0.5),
        "search_ms_p95_with_embedding": p(0.95),
        "seconds": started.elapsed().as_secs_f64(),
    });
    if args.json {
        println!("{report}");
        return;
    }
    println!(
        "LOCOMO ({}, embedder {}): {} questions of categories 1-4, {} turns",
        args.data, args.embedder, all.questions, turns_total
    );
    println!(
        "{:<12} {:>9} {:>10} {:>13}",
        "category", "questions", "recall@10", "recall@1024t"
    );
    for (c, t) in &per_cat {
        println!(
            "{:<12} {:>9} {:>9.1}% {:>12.1}%",
            names(*c),
            t.questions,
            100.0 * t.recall10 / t.questions as f64,
            100.0 * t.recall_block / t.questions as f64
        );
    }
    println!(
        "{:<12} {:>9} {:>9.1}% {:>12.1}%",
        "all 1-4",
        all.questions,
        100.0 * report["recall_at_10"].as_f64().unwrap_or(0.0),
        100.0 * report["recall_at_1024_tokens"].as_f64().unwrap_or(0.0)
    );
    println!(
        "memory block {:.0} tokens vs full conversation {:.0} tokens ({:.1}% fewer); search p50 {:.2} ms, p95 {:.2} ms (with query embedding)",
        report["tokens_sent_mean"].as_f64().unwrap_or(0.0),
        report["tokens_full_mean"].as_f64().unwrap_or(0.0),
        100.0
            * (1.0
                - report["tokens_sent_mean"].as_f64().unwrap_or(0.0)
                    / report["tokens_full_mean"].as_f64().unwrap_or(1.0)),
        p(0.5),
        p(0.95)
    );
}
