//! Ingestion with an extraction model: one LLM call per turn turns it into ADD / UPDATE /
//! DELETE / NONE against the user's most similar memories, every change in the history; an
//! upstream outage keeps the turn queued, an unreadable answer stores it raw; each call is
//! charged to the budgets of the user and key it was said with, and a turn they cannot pay for
//! is stored raw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestApp;
use lyss_core::config::EmbedderKind;
use lyss_core::policy::Scope;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, Request, Respond, ResponseTemplate};

/// The upstream model: answers extraction requests the way a model would for these turns,
/// reading the numbered memories it was shown, and chats with "ok" otherwise.
/// With `down`, extraction requests get a 503.
struct FakeModel {
    down: bool,
}

impl Respond for FakeModel {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let system = body["messages"][0]["content"].as_str().unwrap_or("");
        if !system.contains("long-term memory") {
            return ResponseTemplate::new(200)
                .set_body_json(lyss_testkit::openai::completion("up-mini", "ok"));
        }
        assert_eq!(body["response_format"], json!({"type": "json_object"}));
        if self.down {
            return ResponseTemplate::new(503).set_body_json(
                json!({"error": {"message": "overloaded", "type": "server_error"}}),
            );
        }
        let prompt = body["messages"][1]["content"].as_str().unwrap();
        let number = |word: &str| {
            prompt
                .lines()
                .find(|l| l.contains(word) && l.chars().next().is_some_and(|c| c.is_ascii_digit()))
                .and_then(|l| l.split('.').next())
                .map(|n| n.parse::<u64>().unwrap())
        };
        let new = prompt.rsplit("):\n").next().unwrap();
        let answer = if new.contains("gibberish") {
            "Sorry, I can't do that.".to_owned()
        } else if new.contains("Lyon") {
            json!({"operations": [
                {"op": "ADD", "text": "Lives in Lyon"},
                {"op": "ADD", "text": "Is vegetarian"},
            ]})
            .to_string()
        } else if new.contains("Paris") {
            json!({"operations": [
                {"op": "UPDATE", "id": number("Lyon").unwrap(), "text": "Lives in Paris since 2026-11"},
                {"op": "DELETE", "id": number("vegetarian").unwrap()},
                // A number it was never shown touches nothing.
                {"op": "DELETE", "id": 99},
            ]})
            .to_string()
        } else {
            json!({"operations": []}).to_string()
        };
        ResponseTemplate::new(200)
            .set_body_json(lyss_testkit::openai::completion("up-mini", &answer))
    }
}

async fn app(down: bool) -> TestApp {
    let app = TestApp::with(|c| {
        c.memory.enabled = lyss_core::config::MemoryMode::On;
        c.memory.extraction_model = Some("gpt-5-mini".into());
        c.embedder.kind = EmbedderKind::None;
        // One attempt per ingestion run, so that an outage does not also open the circuit.
        c.router.retries = 0;
    })
    .await;
    Mock::given(method("POST"))
        .respond_with(FakeModel { down })
        .mount(&app.upstream)
        .await;
    app
}

async fn say(app: &TestApp, text: &str) -> String {
    let resp = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()["x-request-id"].to_str().unwrap().to_owned()
}

async fn memories(app: &TestApp) -> Vec<Value> {
    app.memories().await
}

async fn events(app: &TestApp, id: &str) -> Vec<(String, Value)> {
    let history: Value = app
        .get(&format!("/v1/memories/{id}/history"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["event"].as_str().unwrap().to_owned(),
                h["new_text"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn facts_are_added_updated_and_deleted_with_history_and_provenance() {
    let app = app(false).await;
    let request_id = say(
        &app,
        "Just moved to Lyon, and the vegetarian food here is great.",
    )
    .await;
    assert_eq!(app.state.lyss.ingest_pending().await.unwrap(), 1);
    let first = memories(&app).await;
    let mut texts: Vec<&str> = first.iter().map(|m| m["text"].as_str().unwrap()).collect();
    texts.sort();
    assert_eq!(texts, vec!["Is vegetarian", "Lives in Lyon"]);
    for m in &first {
        assert_eq!(
            m["source"],
            request_id.as_str(),
            "provenance: the turn's request"
        );
        assert!(m["occurred_at"].is_string());
    }
    let id_of = |t: &str| {
        first.iter().find(|m| m["text"] == t).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (lyon, veggie) = (id_of("Lives in Lyon"), id_of("Is vegetarian"));

    say(
        &app,
        "Update: moved again, Paris now, and fish is back on the menu.",
    )
    .await;
    app.state.lyss.ingest_pending().await.unwrap();
    let after = memories(&app).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["id"], lyon.as_str());
    assert_eq!(after[0]["text"], "Lives in Paris since 2026-11");
    assert_eq!(
        events(&app, &lyon).await,
        vec![
            ("add".to_owned(), json!("Lives in Lyon")),
            ("update".to_owned(), json!("Lives in Paris since 2026-11")),
        ]
    );
    let gone: Vec<String> = events(&app, &veggie)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(gone, vec!["add", "delete"]);

    // Small talk holds no facts.
    say(&app, "Thanks, that's all.").await;
    app.state.lyss.ingest_pending().await.unwrap();
    assert_eq!(memories(&app).await.len(), 1);

    // Each extraction call is in the ledger, billed to the user, beside the chats.
    let ledger = app.ledger().await;
    let memory: Vec<_> = ledger.iter().filter(|e| e.endpoint == "memory").collect();
    assert_eq!(memory.len(), 3);
    let ann = &ledger
        .iter()
        .find(|e| e.endpoint == "chat")
        .unwrap()
        .user_id;
    for e in &memory {
        assert_eq!(&e.user_id, ann);
        assert_eq!(e.model, "gpt-4o-mini");
        assert_eq!((e.prompt_tokens, e.completion_tokens), (1117, 46));
        assert_eq!(e.cost_nusd, 1117 * 1_000 + 46 * 2_000);
    }
    assert!(memory.iter().any(|e| e.request_id == request_id));
}

#[tokio::test]
async fn an_outage_keeps_the_turn_queued_and_an_unreadable_answer_stores_it_raw() {
    let app = app(true).await;
    say(&app, "Remember this while the model is overloaded.").await;
    assert!(app.state.lyss.ingest_pending().await.is_err());
    assert!(
        app.state.lyss.ingest_pending().await.is_err(),
        "still queued"
    );
    assert!(memories(&app).await.is_empty());

    // The upstream recovers.
    app.upstream.reset().await;
    Mock::given(method("POST"))
        .respond_with(FakeModel { down: false })
        .mount(&app.upstream)
        .await;
    // The failed runs gave the turn back: it is still queued, unclaimed.
    let store = app.state.lyss.memory().unwrap();
    let queued = store
        .claim(10, lyss_core::memory::INGEST_LEASE)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    store.release(queued[0].id).await.unwrap();
    // The queued turn now reaches the model, which finds no facts in it: nothing is added,
    // and the turn leaves the queue.
    assert_eq!(app.state.lyss.ingest_pending().await.unwrap(), 1);
    assert!(
        store
            .claim(10, lyss_core::memory::INGEST_LEASE)
            .await
            .unwrap()
            .is_empty()
    );

    say(&app, "Here is some gibberish the model will not parse.").await;
    app.state.lyss.ingest_pending().await.unwrap();
    let raw: Vec<Value> = memories(&app).await;
    assert_eq!(raw.len(), 1);
    assert_eq!(
        raw[0]["text"],
        "Here is some gibberish the model will not parse."
    );
}

#[tokio::test]
async fn extraction_is_charged_to_the_budget_and_a_turn_it_cannot_pay_for_is_stored_raw() {
    let app = app(false).await;
    let budget = common::token_budget(&app, Scope::User, "ann", 1_000_000).await;
    say(
        &app,
        "Just moved to Lyon, and the vegetarian food here is great.",
    )
    .await;
    let (after_chat, _) = common::spent_reserved(&app, &budget).await;
    assert!(after_chat > 0);

    // Room for less than the extraction call's worst case (its prompt alone is ~1,100
    // tokens): refused before the model is asked, so it costs nothing, and the turn is kept
    // as it was said.
    common::token_budget(&app, Scope::User, "ann", after_chat + 200).await;
    let asked = app.upstream.received_requests().await.unwrap().len();
    assert_eq!(app.state.lyss.ingest_pending().await.unwrap(), 1);
    assert_eq!(
        app.upstream.received_requests().await.unwrap().len(),
        asked,
        "the model was not asked"
    );
    let raw = memories(&app).await;
    assert_eq!(raw.len(), 1);
    assert_eq!(
        raw[0]["text"],
        "Just moved to Lyon, and the vegetarian food here is great."
    );
    assert_eq!(common::spent_reserved(&app, &budget).await, (after_chat, 0));
    assert!(app.ledger().await.iter().all(|e| e.endpoint != "memory"));

    // With room, the call is reserved, then settled at what it used: the budget and the
    // ledger agree, and nothing stays held.
    common::token_budget(&app, Scope::User, "ann", 1_000_000).await;
    say(&app, "Thanks, that's all.").await;
    let (before, _) = common::spent_reserved(&app, &budget).await;
    app.state.lyss.ingest_pending().await.unwrap();
    let ledger = app.ledger().await;
    let memory: Vec<_> = ledger.iter().filter(|e| e.endpoint == "memory").collect();
    assert_eq!(memory.len(), 1);
    let used = (memory[0].prompt_tokens + memory[0].completion_tokens) as i64;
    assert_eq!(used, 1117 + 46);
    assert_eq!(
        common::spent_reserved(&app, &budget).await,
        (before + used, 0)
    );
    let booked: u64 = ledger
        .iter()
        .map(|e| e.prompt_tokens + e.completion_tokens)
        .sum();
    assert_eq!(booked as i64, before + used, "the budget is the ledger");
}

#[tokio::test]
async fn extraction_is_charged_to_the_key_the_turn_was_said_with() {
    let app = app(false).await;
    let key_id = app.key.split('-').nth(2).unwrap().to_owned();
    let budget = common::token_budget(&app, Scope::Key, &key_id, 1_000_000).await;
    say(&app, "Thanks, that's all.").await;
    let (before, _) = common::spent_reserved(&app, &budget).await;
    app.state.lyss.ingest_pending().await.unwrap();
    let ledger = app.ledger().await;
    let row = ledger.iter().find(|e| e.endpoint == "memory").unwrap();
    assert_eq!(row.key_id, key_id);
    let used = (row.prompt_tokens + row.completion_tokens) as i64;
    assert_eq!(
        common::spent_reserved(&app, &budget).await,
        (before + used, 0)
    );

    // The key's own limit holds for memory work too, whatever room its user has left.
    say(
        &app,
        "Just moved to Lyon, and the vegetarian food here is great.",
    )
    .await;
    let (after_chat, _) = common::spent_reserved(&app, &budget).await;
    common::token_budget(&app, Scope::Key, &key_id, after_chat + 200).await;
    let asked = app.upstream.received_requests().await.unwrap().len();
    assert_eq!(app.state.lyss.ingest_pending().await.unwrap(), 1);
    assert_eq!(app.upstream.received_requests().await.unwrap().len(), asked);
    let raw = memories(&app).await;
    assert_eq!(raw.len(), 1);
    assert_eq!(
        raw[0]["text"],
        "Just moved to Lyon, and the vegetarian food here is great."
    );
    assert_eq!(common::spent_reserved(&app, &budget).await, (after_chat, 0));
}

#[tokio::test]
async fn an_extraction_answer_without_usage_is_billed_what_lyss_counts() {
    let app = app(false).await;
    say(&app, "Thanks, that's all.").await;
    app.upstream.reset().await;
    let text = r#"{"operations": []}"#;
    let mut answer = lyss_testkit::openai::completion("up-mini", text);
    answer.as_object_mut().unwrap().remove("usage");
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&app.upstream)
        .await;
    assert_eq!(app.state.lyss.ingest_pending().await.unwrap(), 1);
    let ledger = app.ledger().await;
    let row = ledger.iter().find(|e| e.endpoint == "memory").unwrap();
    let completion = lyss_core::tokens::count_text("up-mini", text);
    assert!(completion > 0);
    assert_eq!(row.completion_tokens, completion);
    // The instructions alone are a few hundred tokens.
    assert!(row.prompt_tokens > 200, "{}", row.prompt_tokens);
    assert_eq!(
        row.cost_nusd,
        (row.prompt_tokens * 1_000 + completion * 2_000) as i64
    );
}

const LYON: &str = "Just moved to Lyon, and the vegetarian food here is great.";

/// A conversation that opens with [`LYON`], then `quarters` exchanges about the city.
fn lyon_conversation(quarters: usize) -> Value {
    let mut messages = vec![
        json!({"role": "user", "content": LYON}),
        json!({"role": "assistant", "content": "Welcome to Lyon!"}),
    ];
    for i in 0..quarters {
        messages.push(
            json!({"role": "user", "content": format!("Tell me about quarter {i} of the city.")}),
        );
        messages.push(json!({"role": "assistant", "content": format!("Quarter {i} has markets, bakeries and old streets.")}));
    }
    messages.push(json!({"role": "user", "content": "Which market is best on Sunday?"}));
    json!({"model": "gpt-4o-mini", "messages": messages})
}

/// The extraction requests the upstream received, by the new message each one asked about.
async fn extracted(app: &TestApp) -> Vec<String> {
    app.upstream_bodies()
        .await
        .iter()
        .filter(|b| {
            b["messages"][0]["content"]
                .as_str()
                .is_some_and(|s| s.contains("long-term memory"))
        })
        .map(|b| {
            b["messages"][1]["content"]
                .as_str()
                .unwrap()
                .rsplit("):\n")
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_turn_that_drops_out_before_its_extraction_is_kept_raw_and_never_extracted() {
    let app = TestApp::with(|c| {
        c.memory.enabled = lyss_core::config::MemoryMode::On;
        c.memory.extraction_model = Some("gpt-5-mini".into());
        c.memory.history_tokens = 120;
        c.memory.memory_tokens = 200;
        c.embedder.kind = EmbedderKind::None;
        c.router.retries = 0;
    })
    .await;
    Mock::given(method("POST"))
        .respond_with(FakeModel { down: false })
        .mount(&app.upstream)
        .await;
    // Said as a short conversation: queued for extraction, not ingested yet.
    say(&app, LYON).await;
    // The conversation goes on; by the time it is long, that turn drops out of the prompt.
    let resp = app
        .post("/v1/chat/completions")
        .json(&lyon_conversation(20))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Before any extraction: the dropped turns are memories, as said.
    let raw: Vec<Value> = memories(&app)
        .await
        .into_iter()
        .filter(|m| m["text"] == LYON)
        .collect();
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0]["role"], "user");
    assert!(extracted(&app).await.is_empty());

    // Ingestion extracts the turns still kept in the prompt, and not the one stored raw.
    while app.state.lyss.ingest_pending().await.unwrap() > 0 {}
    let asked = extracted(&app).await;
    assert!(!asked.is_empty());
    assert!(!asked.iter().any(|t| t == LYON), "{asked:?}");
    let texts: Vec<String> = memories(&app)
        .await
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(texts.iter().any(|t| t == LYON));
    assert!(!texts.iter().any(|t| t == "Lives in Lyon"), "{texts:?}");
}

#[tokio::test]
async fn a_turn_extracted_before_it_drops_out_is_remembered_by_its_facts_alone() {
    let app = app(false).await;
    say(&app, LYON).await;
    assert_eq!(app.state.lyss.ingest_pending().await.unwrap(), 1);
    let resp = app
        .post("/v1/chat/completions")
        .json(&lyon_conversation(60))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers().get("x-lyss-prompt-tokens-sent").is_some(),
        "compressed"
    );
    let listed = app.memories().await;
    let texts: Vec<&str> = listed.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert!(texts.contains(&"Lives in Lyon"), "{texts:?}");
    assert!(!texts.contains(&LYON), "not stored raw again: {texts:?}");
}
