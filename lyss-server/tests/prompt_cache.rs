//! Provider prompt caching, through the real server against fakes speaking each vendor's wire
//! format: lyss marks Anthropic cache breakpoints and sends OpenAI a stable `prompt_cache_key`,
//! and prices cache reads and writes in the ledger, streamed or not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestApp;
use lyss_core::config::{ModelConfig, ProviderKind};
use lyss_core::policy::LedgerEntry;
use lyss_testkit::sse::data as sse_data;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

/// A system prompt long enough to be worth caching (Anthropic caches 1,024 tokens and more).
fn long_system() -> String {
    "You are the support assistant of a bicycle shop. Answer politely and precisely. ".repeat(80)
}

fn conversation(system: &str, last: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": "Hello, my chain skips."},
        {"role": "assistant", "content": "Is it a new chain or an old one?"},
        {"role": "user", "content": last}
    ]})
}

/// The ledger row of the newest request, once its settlement has landed.
async fn newest_row(app: &TestApp, rows: usize) -> LedgerEntry {
    for _ in 0..100 {
        let ledger = app.ledger().await;
        if ledger.len() >= rows {
            return ledger[0].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no ledger row {rows}");
}

/// Every `cache_control` in a Messages request body, as (where, the block's text).
fn breakpoints(body: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    if let Some(blocks) = body["system"].as_array() {
        for b in blocks.iter().filter(|b| b.get("cache_control").is_some()) {
            found.push(("system".into(), b["text"].as_str().unwrap().to_owned()));
        }
    }
    for (i, m) in body["messages"].as_array().unwrap().iter().enumerate() {
        for b in m["content"].as_array().into_iter().flatten() {
            if b.get("cache_control").is_some() {
                assert_eq!(b["cache_control"], json!({"type": "ephemeral"}));
                found.push((
                    format!("messages[{i}]"),
                    b["text"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    found
}

/// The test upstream as Anthropic's, serving `gpt-4o-mini` as Claude — with the built-in Claude
/// prices: 3 USD in, 15 out, 0.30 cache reads, 3.75 cache writes.
fn claude_upstream(c: &mut lyss_core::config::Config) {
    c.providers[0].kind = ProviderKind::Anthropic;
    c.models = vec![ModelConfig {
        name: "gpt-4o-mini".into(),
        provider: "up".into(),
        upstream: Some("claude-sonnet-4-5".into()),
        ..ModelConfig::default()
    }];
}

async fn anthropic_app() -> TestApp {
    TestApp::with(claude_upstream).await
}

#[tokio::test]
async fn anthropic_gets_breakpoints_and_cache_reads_and_writes_are_priced() {
    let app = anthropic_app().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "An old one."}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 50, "cache_creation_input_tokens": 2000,
                      "cache_read_input_tokens": 0, "output_tokens": 10}
        })))
        .mount(&app.upstream)
        .await;
    let system = long_system();
    let resp = app
        .post("/v1/chat/completions")
        .json(&conversation(&system, "It is old."))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer["usage"]["prompt_tokens_details"]["cache_creation_tokens"],
        2000
    );

    // The end of the system prompt and of the conversation's last two turns are breakpoints.
    let body = app.upstream_bodies().await.pop().unwrap();
    assert_eq!(
        breakpoints(&body),
        [
            ("system".to_owned(), system.clone()),
            (
                "messages[1]".to_owned(),
                "Is it a new chain or an old one?".to_owned()
            ),
            ("messages[2]".to_owned(), "It is old.".to_owned())
        ]
    );

    // Writes cost 1.25× input: 50 × 3,000 + 2,000 × 3,750 + 10 × 15,000 nano-USD.
    let row = newest_row(&app, 1).await;
    assert_eq!((row.cached_tokens, row.cache_write_tokens), (0, 2000));
    assert_eq!(row.prompt_tokens, 2050);
    assert_eq!(row.cost_nusd, 150_000 + 7_500_000 + 150_000);
    assert_eq!(row.prompt_cache_saved_nusd, -2000 * 750);

    // The next turn, streamed: the prefix is read back at 0.1× input.
    app.upstream.reset().await;
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_02",
            "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5",
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 60, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 2000, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "Replace it."}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 12}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let sse: String = events
        .iter()
        .map(|(e, d)| format!("event: {e}\ndata: {d}\n\n"))
        .collect();
    lyss_testkit::openai::mount_sse(&app.upstream, "/v1/messages", sse).await;
    let mut next = conversation(&system, "It is old.");
    let messages = next["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": "An old one."}));
    messages.push(json!({"role": "user", "content": "What now?"}));
    next["stream"] = json!(true);
    next["stream_options"] = json!({"include_usage": true});
    let resp = app
        .post("/v1/chat/completions")
        .json(&next)
        .send()
        .await
        .unwrap();
    let data = sse_data(&resp.text().await.unwrap());
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(
        usage["usage"]["prompt_tokens_details"]["cached_tokens"],
        2000
    );
    let body = app.upstream_bodies().await.pop().unwrap();
    assert_eq!(body["stream"], true);
    assert_eq!(
        breakpoints(&body).last().unwrap(),
        &("messages[4]".to_owned(), "What now?".to_owned())
    );
    let row = newest_row(&app, 2).await;
    assert!(row.stream);
    assert_eq!((row.cached_tokens, row.cache_write_tokens), (2000, 0));
    assert_eq!(row.cost_nusd, 60 * 3000 + 2000 * 300 + 12 * 15_000);
    assert_eq!(row.prompt_cache_saved_nusd, 2000 * 2700);

    // `lyss usage` sums both: the read saved more than the write cost.
    let usage = app
        .state
        .lyss
        .policy()
        .usage(&Default::default())
        .await
        .unwrap();
    assert_eq!(
        (
            usage[0].cached_tokens,
            usage[0].cache_write_tokens,
            usage[0].prompt_cache_saved_nusd
        ),
        (2000, 2000, 2000 * 2700 - 2000 * 750)
    );
}

#[tokio::test]
async fn a_clients_own_breakpoints_are_kept_and_short_prompts_get_none() {
    let app = anthropic_app().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_03", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Yes."}], "stop_reason": "end_turn",
            "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 1}
        })))
        .mount(&app.upstream)
        .await;
    let system = long_system();
    let own = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": [
            {"type": "text", "text": "A long manual.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            {"type": "text", "text": "Does it cover chains?"}]}
    ]});
    let short = conversation("Be brief.", "It is old.");
    for body in [own, short] {
        let resp = app
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let bodies = app.upstream_bodies().await;
    // The client's breakpoint, as the client set it, and no other.
    assert_eq!(bodies[0]["system"], json!(system));
    assert_eq!(
        bodies[0]["messages"][0]["content"][0]["cache_control"],
        json!({"type": "ephemeral", "ttl": "1h"})
    );
    assert!(
        bodies[0]["messages"][0]["content"][1]
            .get("cache_control")
            .is_none()
    );
    // A prompt too short to cache is sent as it was.
    assert_eq!(bodies[1]["system"], "Be brief.");
    assert!(!bodies[1].to_string().contains("cache_control"));
}

#[tokio::test]
async fn openai_gets_one_cache_key_per_conversation_and_cached_tokens_are_priced() {
    let app = TestApp::with(|c| {
        c.providers[0].prompt_cache = Some(true);
        c.models[0].cached_input_per_mtok = Some(0.5);
    })
    .await;
    let usage = json!({"prompt_tokens": 1200, "completion_tokens": 20, "total_tokens": 1220,
                       "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0}});
    let mut completion = lyss_testkit::openai::completion("up-mini", "Replace it.");
    completion["usage"] = usage.clone();
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion))
        .mount(&app.upstream)
        .await;
    let bob = app.key_for("bob", "team").await;
    let system = long_system();
    let first = conversation(&system, "It is old.");
    let mut second = first.clone();
    let messages = second["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": "Replace it."}));
    messages.push(json!({"role": "user", "content": "Which one?"}));
    let mut own = first.clone();
    own["prompt_cache_key"] = json!("my-app-key");
    for (key, body) in [
        (&app.key, &first),
        (&app.key, &second),
        (&bob, &first),
        (&app.key, &own),
    ] {
        let resp = app
            .client
            .post(format!("{}/v1/chat/completions", app.base))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let keys: Vec<Value> = app
        .upstream_bodies()
        .await
        .iter()
        .map(|b| b["prompt_cache_key"].clone())
        .collect();
    assert!(keys[0].as_str().unwrap().starts_with("lyss-"));
    assert_eq!(keys[0], keys[1], "one conversation, one key");
    assert_ne!(keys[0], keys[2], "another user never shares it");
    assert_eq!(keys[3], "my-app-key", "the client's own key wins");

    // 176 fresh × 1,000 + 1,024 cached × 500 + 20 out × 2,000 nano-USD.
    let row = newest_row(&app, 4).await;
    assert_eq!(row.cached_tokens, 1024);
    assert_eq!(row.cost_nusd, 176_000 + 512_000 + 40_000);
    assert_eq!(row.prompt_cache_saved_nusd, 1024 * 500);

    // Streamed: the usage chunk's cached tokens are priced the same.
    app.upstream.reset().await;
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1694268190,
               "model": "up-mini", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let sse = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Replace it."}), Value::Null),
        chunk(json!({}), json!("stop")),
        json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1694268190,
               "model": "up-mini", "choices": [], "usage": usage}),
    ]
    .iter()
    .map(|c| format!("data: {c}\n\n"))
    .chain(["data: [DONE]\n\n".to_owned()])
    .collect::<String>();
    lyss_testkit::openai::mount_sse(&app.upstream, "/v1/chat/completions", sse).await;
    let mut streamed = first.clone();
    streamed["stream"] = json!(true);
    let resp = app
        .post("/v1/chat/completions")
        .json(&streamed)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains("Replace it."));
    assert_eq!(
        app.upstream_bodies().await[0]["prompt_cache_key"],
        keys[0],
        "streamed or not, one key"
    );
    let row = newest_row(&app, 5).await;
    assert!(row.stream);
    assert_eq!(row.cached_tokens, 1024);
    assert_eq!(row.cost_nusd, 176_000 + 512_000 + 40_000);
}

#[tokio::test]
async fn an_openai_compatible_server_gets_no_cache_key_unless_configured() {
    let app = TestApp::new().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(lyss_testkit::openai::completion("up-mini", "Hi.")),
        )
        .mount(&app.upstream)
        .await;
    let resp = app
        .post("/v1/chat/completions")
        .json(&conversation("Be brief.", "It is old."))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = app.upstream_bodies().await.pop().unwrap();
    assert!(body.get("prompt_cache_key").is_none(), "{body}");
}

/// A conversation of `exchanges` user/assistant turns, then the next question, as a chat
/// client resends it turn after turn.
fn chat_of(exchanges: usize) -> Value {
    let question = |i: usize| {
        json!({"role": "user", "content": format!(
            "Tell me about the history of town square number {i}, its fountain and its market days.")})
    };
    let mut messages = vec![json!({"role": "system", "content": "You are a helpful assistant."})];
    for i in 0..exchanges {
        messages.push(question(i));
        messages.push(json!({"role": "assistant", "content": format!(
            "Square {i} was laid out in the twelfth century; its fountain dates from 1790.")}));
    }
    messages.push(question(exchanges));
    json!({"model": "gpt-4o-mini", "messages": messages})
}

fn prompt_tokens(body: &Value) -> u64 {
    let req: lyss_core::wire::ChatRequest = serde_json::from_value(body.clone()).unwrap();
    lyss_core::tokens::count_request("claude-sonnet-4-5", &req)
}

#[tokio::test]
async fn auto_memory_sends_a_conversation_whole_while_the_providers_cache_makes_that_cheaper() {
    let clock = std::sync::Arc::new(lyss_core::clock::ManualClock::new(
        time::OffsetDateTime::now_utc(),
    ));
    let app = TestApp::with_clock(
        |c| {
            claude_upstream(c);
            c.embedder.kind = lyss_core::config::EmbedderKind::None;
            // `auto` (the default) compresses prompts over 1,400 tokens.
            c.memory.history_tokens = 200;
            c.memory.memory_tokens = 1_200;
        },
        clock.clone(),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Noted."}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 50, "output_tokens": 2}
        })))
        .mount(&app.upstream)
        .await;
    let send = |body: Value| {
        let app = &app;
        async move {
            let resp = app.chat(&body).await;
            assert_eq!(resp.status(), 200);
            let compressed = resp.headers().contains_key("x-lyss-prompt-tokens-sent");
            let upstream = app.upstream_bodies().await.pop().unwrap();
            (compressed, upstream["messages"].as_array().unwrap().len())
        }
    };
    // A conversation over the 1,024 tokens Anthropic caches, under memory's threshold: whole.
    let mut exchanges = 1;
    while prompt_tokens(&chat_of(exchanges)) < 1_100 {
        exchanges += 1;
    }
    let first = chat_of(exchanges);
    assert!(prompt_tokens(&first) < 1_400);
    assert_eq!(send(first).await, (false, exchanges * 2 + 1));

    // Eight exchanges later it is over the threshold, but its first 1,100 tokens are in the
    // provider's cache: read at 0.1× and the rest written at 1.25× costs less than ~1,400
    // tokens sent fresh, so it goes whole, and its turns are queued for memory.
    let grown = chat_of(exchanges + 8);
    assert!(prompt_tokens(&grown) > 1_400);
    assert_eq!(send(grown.clone()).await, (false, (exchanges + 8) * 2 + 1));
    assert_eq!(app.memories().await.len(), 0, "nothing stored on the way");
    let mut ingested = 0;
    loop {
        match app.state.lyss.ingest_pending().await.unwrap() {
            0 => break,
            n => ingested += n,
        }
    }
    assert_eq!(
        ingested,
        (exchanges + 8) * 2,
        "every turn but the newest queued"
    );

    // Another question on the same history reads the history from the cache too: whole.
    let mut sibling = grown.clone();
    let newest = sibling["messages"].as_array().unwrap().len() - 1;
    sibling["messages"][newest]["content"] = json!("Which square has the oldest fountain?");
    assert_eq!(send(sibling).await, (false, (exchanges + 8) * 2 + 1));

    // Another conversation of the same user's (another opening) finds no cache: compressed.
    let mut other = grown.clone();
    other["messages"][1]["content"] = json!("A different opening.");
    assert!(send(other).await.0);

    // Six minutes later the provider's cache has expired: compressed, turns already stored.
    clock.advance(time::Duration::minutes(6));
    let (compressed, sent) = send(chat_of(exchanges + 9)).await;
    assert!(compressed);
    assert!(sent < exchanges * 2, "{sent} messages sent");
}
