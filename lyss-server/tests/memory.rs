//! Memory in the request path: a preference stated early reaches the model after its turn was
//! dropped from the history, the prompt shrinks, and nothing crosses users.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestApp;
use lyss_core::config::EmbedderKind;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

const PREFERENCE: &str = "By the way, I'm a Python developer and I like short answers.";
const QUESTION: &str = "Which language should a developer like me use for a quick CSV script?";

async fn app() -> TestApp {
    let app = TestApp::with(|c| {
        c.memory.enabled = lyss_core::config::MemoryMode::On;
        c.memory.history_tokens = 300;
        // Keyword retrieval keeps this test independent of the model files; the model's own
        // recall is tested in lyss-core's memory suite.
        c.embedder.kind = EmbedderKind::None;
    })
    .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(common::completion("up-mini", "ok")))
        .mount(&app.upstream)
        .await;
    app
}

fn long_conversation() -> Value {
    long_conversation_opening_with(PREFERENCE)
}

fn long_conversation_opening_with(first: &str) -> Value {
    let mut messages = vec![
        json!({"role": "system", "content": "You are a helpful assistant."}),
        json!({"role": "user", "content": first}),
        json!({"role": "assistant", "content": "Noted."}),
    ];
    for i in 0..40 {
        messages.push(json!({"role": "user", "content": format!("Tell me fact number {i} about the history of the Roman aqueducts in some detail.")}));
        messages.push(json!({"role": "assistant", "content": "The aqueducts carried water over long distances using gravity alone, with arcades and tunnels along the way."}));
    }
    messages.push(json!({"role": "user", "content": QUESTION}));
    json!({"model": "gpt-4o-mini", "messages": messages})
}

fn headers(resp: &reqwest::Response) -> (u64, u64) {
    let n = |h: &str| resp.headers()[h].to_str().unwrap().parse::<u64>().unwrap();
    (
        n("x-lyss-prompt-tokens-original"),
        n("x-lyss-prompt-tokens-sent"),
    )
}

#[tokio::test]
async fn an_early_preference_reaches_the_model_after_its_turn_is_dropped() {
    let app = app().await;
    // The turn in which the user said it, as its own request (how a chat client sends it).
    let first = app
        .post("/v1/chat/completions")
        .json(
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PREFERENCE}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(app.state.lyss.ingest_pending().await.unwrap(), 1);
    // Regenerating the same turn does not store it twice.
    app.post("/v1/chat/completions")
        .json(
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PREFERENCE}]}),
        )
        .send()
        .await
        .unwrap();
    app.state.lyss.ingest_pending().await.unwrap();
    let ann = lyss_core::memory::MemoryScope::user(
        app.ledger().await[0].workspace_id.clone(),
        app.ledger().await[0].user_id.clone(),
    );
    assert_eq!(
        app.state
            .lyss
            .memory()
            .unwrap()
            .list(&ann, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    let resp = app
        .post("/v1/chat/completions")
        .json(&long_conversation())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (original, sent) = headers(&resp);
    assert!(sent * 3 < original, "sent {sent} of {original} tokens");

    let sent_body = app.upstream_bodies().await.pop().unwrap();
    let messages = sent_body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["content"], "You are a helpful assistant.");
    let block = messages[1]["content"].as_str().unwrap();
    assert_eq!(messages[1]["role"], "system");
    assert!(
        block.contains("Python developer"),
        "no memory block: {block}"
    );
    // The turn itself was dropped from the history; the newest turns are kept verbatim.
    assert!(
        !messages
            .iter()
            .any(|m| m["role"] == "user" && m["content"] == PREFERENCE)
    );
    assert_eq!(messages.last().unwrap()["content"], QUESTION);
    assert!(messages.len() < 20);

    let row = &app.ledger().await[0];
    assert_eq!(row.prompt_tokens_original, original);
}

#[tokio::test]
async fn memory_stays_with_its_user_and_a_header_opts_out() {
    let app = app().await;
    app.post("/v1/chat/completions")
        .json(
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PREFERENCE}]}),
        )
        .send()
        .await
        .unwrap();
    app.state.lyss.ingest_pending().await.unwrap();

    // Bob, same workspace, asks the same question in a conversation of his own: nothing of
    // Ann's reaches his prompt (his own dropped turns may).
    let bob = app.key_for("bob", "team").await;
    let resp = app
        .client
        .post(format!("{}/v1/chat/completions", app.base))
        .bearer_auth(&bob)
        .json(&long_conversation_opening_with("Hello there!"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = app.upstream_bodies().await.pop().unwrap();
    assert!(!body.to_string().contains("Python developer"), "{body}");

    // Ann opts out for one request: the prompt goes upstream exactly as sent.
    let resp = app
        .post("/v1/chat/completions")
        .header("x-lyss-memory", "off")
        .json(&long_conversation())
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("x-lyss-prompt-tokens-sent").is_none());
    let mut expected = long_conversation();
    expected["model"] = json!("up-mini");
    assert_eq!(app.upstream_bodies().await.pop().unwrap(), expected);
}

#[tokio::test]
async fn the_memories_api_serves_only_the_callers_own_memories() {
    let app = app().await;
    let url = |p: &str| format!("{}/v1/memories{p}", app.base);
    let added = app
        .post("/v1/memories")
        .json(&json!({"text": "I am allergic to peanuts."}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let added: Value = added.json().await.unwrap();
    let id = added["id"].as_str().unwrap().to_owned();
    assert_eq!(added["source"], "api");
    app.post("/v1/memories")
        .json(&json!({"text": "Customer 7 wants invoices by email.", "user": "customer-7"}))
        .send()
        .await
        .unwrap();

    let listed: Value = app
        .get("/v1/memories")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["object"], "list");
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        1,
        "the narrowed scope is separate"
    );
    let narrowed: Value = app
        .get("/v1/memories?user=customer-7")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        narrowed["data"][0]["text"],
        "Customer 7 wants invoices by email."
    );
    let found: Value = app
        .get("/v1/memories?q=peanuts")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["data"][0]["memory"]["id"], id.as_str());

    let patched = app
        .client
        .patch(url(&format!("/{id}")))
        .bearer_auth(&app.key)
        .json(&json!({"text": "I am allergic to peanuts and shellfish."}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let history: Value = app
        .get(&format!("/v1/memories/{id}/history"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, vec!["add", "update"]);

    // Another user of the same workspace: none of it exists for them.
    let bob = app.key_for("bob", "team").await;
    let as_bob = |rb: reqwest::RequestBuilder| rb.bearer_auth(&bob);
    assert_eq!(
        as_bob(app.client.get(url(&format!("/{id}"))))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        as_bob(app.client.get(url(&format!("/{id}/history"))))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        as_bob(app.client.delete(url(&format!("/{id}"))))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let patch = as_bob(app.client.patch(url(&format!("/{id}"))))
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 404);
    let bobs: Value = as_bob(app.client.get(url("?q=peanuts")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bobs["data"], json!([]));
    // Bob's "forget me" forgets only Bob.
    as_bob(app.client.delete(url(""))).send().await.unwrap();
    assert_eq!(
        app.get(&format!("/v1/memories/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let deleted = app
        .client
        .delete(url(&format!("/{id}")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.json::<Value>().await.unwrap()["deleted"], true);
    let forgot: Value = app
        .client
        .delete(url(""))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(forgot["deleted"], 1, "the end-user's memory went too");
    assert_eq!(
        app.client.get(url("")).send().await.unwrap().status(),
        401,
        "no key, no memories"
    );
}

#[tokio::test]
async fn with_memory_off_the_api_says_so() {
    // By default memory is on (`auto`), so the API serves.
    let default = TestApp::new().await;
    assert_eq!(
        default.get("/v1/memories").send().await.unwrap().status(),
        200
    );

    let app = TestApp::with(|c| c.memory.enabled = lyss_core::config::MemoryMode::Off).await;
    let resp = app.get("/v1/memories").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("memory")
    );
}
