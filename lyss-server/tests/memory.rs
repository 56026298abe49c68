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

/// Memory on for every request, small history, keyword retrieval (the model's own recall is
/// tested in lyss-core's memory suite).
async fn app() -> TestApp {
    app_with(|c| {
        c.memory.enabled = lyss_core::config::MemoryMode::On;
        c.memory.history_tokens = 300;
    })
    .await
}

/// An app with keyword retrieval and an upstream that answers "ok", configured by `tweak`.
async fn app_with(tweak: impl FnOnce(&mut lyss_core::config::Config)) -> TestApp {
    let app = TestApp::with(|c| {
        c.embedder.kind = EmbedderKind::None;
        tweak(c);
    })
    .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(lyss_testkit::openai::completion("up-mini", "ok")),
        )
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
    // The turn, and what it says about the person, for their profile.
    assert_eq!(app.state.lyss.ingest_pending().await.unwrap(), 2);
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
    let stored = app
        .state
        .lyss
        .memory()
        .unwrap()
        .list(&ann, 10)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(
        stored
            .iter()
            .filter(|m| m.profile)
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        ["By the way, I'm a Python developer and I like short answers."]
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
    // The block comes just before the newest user message, after the kept history: the
    // prompt's prefix stays stable for the provider's prompt cache.
    let block = messages[messages.len() - 2]["content"].as_str().unwrap();
    // Quoted as the user's own notes, never with a system message's authority.
    assert_eq!(messages[messages.len() - 2]["role"], "user");
    assert!(messages[1..].iter().all(|m| m["role"] != "system"));
    assert_eq!(
        messages[1]["role"], "user",
        "kept history after the system prompt"
    );
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

    // In the upstream's units: its count of what was sent, the original scaled alike.
    let row = &app.ledger().await[0];
    let scaled = (original as f64 * row.prompt_tokens as f64 / sent as f64).round() as u64;
    assert_eq!(row.prompt_tokens_original, scaled);
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
async fn a_memory_longer_than_a_fact_is_refused_and_nothing_is_stored() {
    let app = app().await;
    let kept = app
        .post("/v1/memories")
        .json(&json!({"text": "My bike is blue."}))
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 201);
    let id = kept.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let long = "word ".repeat(401);
    let added = app
        .post("/v1/memories")
        .json(&json!({"text": long}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 400);
    lyss_testkit::assert_openai_error(&added.json().await.unwrap(), "invalid_request_error", None);
    let updated = app
        .client
        .patch(format!("{}/v1/memories/{id}", app.base))
        .bearer_auth(&app.key)
        .json(&json!({"text": long}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 400);
    let listed: Value = app
        .get("/v1/memories")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let texts: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["My bike is blue."],
        "nothing stored, nothing changed"
    );
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

/// Memory as it is by default (`auto`), with small budgets.
async fn auto_app() -> TestApp {
    app_with(|c| {
        c.memory.history_tokens = 120;
        c.memory.memory_tokens = 200;
    })
    .await
}

const BIKE: &str = "My bike is a blue Gazelle with a wicker basket.";
const KEY: &str = "Noted: the spare key of your flat is under the fern pot by the door.";

/// A conversation lyss never saw: a fact of the user's, one the assistant stated, 24 filler
/// exchanges, then `last` from the user.
fn unseen_conversation(last: &str) -> Value {
    let mut messages = vec![
        json!({"role": "system", "content": "You are a helpful assistant."}),
        json!({"role": "user", "content": BIKE}),
        json!({"role": "assistant", "content": KEY}),
    ];
    for i in 0..24 {
        messages.push(json!({"role": "user", "content": format!("Filler question {i} about the weather in general terms.")}));
        messages.push(json!({"role": "assistant", "content": format!("Filler answer {i}: it was mild and grey all day.")}));
    }
    messages.push(json!({"role": "user", "content": last}));
    json!({"model": "gpt-4o-mini", "messages": messages})
}

#[tokio::test]
async fn turns_of_a_history_lyss_never_saw_are_remembered_when_dropped_and_then_recalled() {
    let app = auto_app().await;
    let resp = app
        .post("/v1/chat/completions")
        .json(&unseen_conversation(
            "Where is the spare key of my flat again?",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (original, sent) = headers(&resp);
    assert!(sent * 2 < original, "sent {sent} of {original}");

    // The dropped turns were stored before the request went upstream — no ingestion ran —
    // the assistant's as well as the user's, with who said them and where.
    let stored = app.memories().await;
    let find = |text: &str| stored.iter().find(|m| m["text"] == text).cloned();
    let bike = find(BIKE).expect("the user's dropped turn is a memory");
    let key = find(KEY).expect("the assistant's dropped turn is a memory");
    assert_eq!(
        (bike["role"].as_str(), bike["position"].as_u64()),
        (Some("user"), Some(1))
    );
    assert_eq!(
        (key["role"].as_str(), key["position"].as_u64()),
        (Some("assistant"), Some(2))
    );

    // The question reached the model with the assistant's own words recalled.
    let body = app.upstream_bodies().await.pop().unwrap();
    let messages = body["messages"].as_array().unwrap();
    assert!(
        !messages.iter().any(|m| m["content"] == KEY),
        "dropped from the history"
    );
    let block = messages[messages.len() - 2]["content"].as_str().unwrap();
    assert!(block.contains(&format!("(assistant) {KEY}")), "{block}");

    // And a later question on another topic finds the user's turn.
    app.post("/v1/chat/completions")
        .json(&unseen_conversation("Which bike do I ride, the Gazelle?"))
        .send()
        .await
        .unwrap();
    let body = app.upstream_bodies().await.pop().unwrap();
    let messages = body["messages"].as_array().unwrap();
    assert!(
        messages[messages.len() - 2]["content"]
            .as_str()
            .unwrap()
            .contains(BIKE),
        "{body}"
    );
}

#[tokio::test]
async fn questions_on_one_history_share_the_prompt_prefix_up_to_the_block() {
    let app = auto_app().await;
    for question in ["Which bike do I ride?", "Where did I leave the spare key?"] {
        let resp = app
            .post("/v1/chat/completions")
            .json(&unseen_conversation(question))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let bodies = app.upstream_bodies().await;
    let [a, b] = &bodies[bodies.len() - 2..] else {
        unreachable!()
    };
    let (a, b) = (
        a["messages"].as_array().unwrap(),
        b["messages"].as_array().unwrap(),
    );
    // System prompt and kept history, byte for byte; then each question's block and question.
    assert_eq!(a.len(), b.len());
    assert!(a.len() > 3, "history kept: {a:?}");
    assert_eq!(a[..a.len() - 2], b[..b.len() - 2]);
    for m in [a, b] {
        assert!(
            m[m.len() - 2]["content"]
                .as_str()
                .unwrap()
                .starts_with("What you know about the user"),
            "{m:?}"
        );
    }
    assert_ne!(a.last(), b.last());
}

#[tokio::test]
async fn resending_the_same_history_stores_nothing_twice() {
    let app = auto_app().await;
    let send = |body: Value| {
        let app = &app;
        async move {
            let resp = app
                .post("/v1/chat/completions")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            app.state.lyss.ingest_pending().await.unwrap();
        }
    };
    let first = unseen_conversation("And tomorrow?");
    send(first.clone()).await;
    let rows = app.memories().await.len();
    // Every turn before the newest message, once; identical filler is one turn per role.
    assert_eq!(rows, 2 + 24 * 2);
    send(first.clone()).await;
    send(first.clone()).await;
    assert_eq!(
        app.memories().await.len(),
        rows,
        "resent history adds nothing"
    );

    // The next turn of the conversation adds exactly its two new turns: the message before
    // (now history) and the answer to it.
    let mut next = first.clone();
    let messages = next["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": "Tomorrow looks sunny and warm."}));
    messages.push(json!({"role": "user", "content": "Great, thanks!"}));
    send(next).await;
    let after = app.memories().await;
    assert_eq!(after.len(), rows + 2);
    assert!(
        after
            .iter()
            .any(|m| m["text"] == "And tomorrow?" && m["role"] == "user")
    );
    assert!(
        after
            .iter()
            .any(|m| m["text"] == "Tomorrow looks sunny and warm.")
    );
}

#[tokio::test]
async fn by_default_every_chat_is_remembered_and_recalled_into_and_agents_are_left_alone() {
    let app = auto_app().await;
    let ask = |body: Value, header: Option<&'static str>| {
        let app = &app;
        async move {
            let mut req = app.post("/v1/chat/completions").json(&body);
            if let Some(h) = header {
                req = req.header("x-lyss-memory", h);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let changed = resp.headers().get("x-lyss-prompt-tokens-sent").is_some();
            let mut expected = body;
            expected["model"] = json!("up-mini");
            let untouched = app.upstream_bodies().await.pop().unwrap() == expected;
            assert_ne!(changed, untouched, "changed xor sent as is");
            changed
        }
    };
    // A short conversation with nothing to recall goes as sent — and is remembered.
    let short = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": BIKE},
        {"role": "assistant", "content": "Nice bike!"},
        {"role": "user", "content": "What colour is it?"}]});
    assert!(!ask(short, None).await);
    app.state.lyss.ingest_pending().await.unwrap();
    let remembered = app.memories().await;
    assert!(
        remembered.iter().any(|m| m["text"] == BIKE),
        "{remembered:?}"
    );
    // A new chat that needs it gets it, quoted in a user message before its question.
    let fresh = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Which basket would fit my Gazelle bike?"}]});
    assert!(ask(fresh, None).await);
    let sent = app.upstream_bodies().await.pop().unwrap();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[1]["role"], "user");
    assert!(messages[1]["content"].as_str().unwrap().contains(BIKE));
    // Chit-chat that matches nothing gets nothing.
    let chat = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "Tell me a joke about penguins."}]});
    assert!(!ask(chat, None).await);

    // Agent traffic — tools declared, tool calls and results — is left alone and not
    // remembered; so is a request that opts out.
    app.state.lyss.ingest_pending().await.unwrap();
    let before = app.memories().await.len();
    let mut with_tools = unseen_conversation("And tomorrow?");
    with_tools["tools"] = json!([{"type": "function", "function": {"name": "forecast",
        "parameters": {"type": "object", "properties": {}}}}]);
    assert!(!ask(with_tools, None).await);
    let mut tool_turns = unseen_conversation("And tomorrow?");
    let messages = tool_turns["messages"].as_array_mut().unwrap();
    messages.insert(
        3,
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
        "type": "function", "function": {"name": "forecast", "arguments": "{}"}}]}),
    );
    messages.insert(
        4,
        json!({"role": "tool", "tool_call_id": "call_1", "content": "mild"}),
    );
    assert!(!ask(tool_turns, None).await);
    assert!(!ask(unseen_conversation("And tomorrow?"), Some("off")).await);
    app.state.lyss.ingest_pending().await.unwrap();
    assert_eq!(app.memories().await.len(), before);

    // A long tool-free one is compressed.
    assert!(ask(unseen_conversation("And tomorrow?"), None).await);

    // A long prompt that is all newest exchange has nothing to drop: the memories recall
    // finds would only make it longer, so it goes as sent.
    let pasted = format!(
        "Summarise this, and mind my Gazelle bike: {}",
        "The weather report says mild and grey. ".repeat(60)
    );
    let one_message = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": pasted}]});
    assert!(!ask(one_message, None).await);
}

#[tokio::test]
async fn a_clients_housekeeping_is_neither_remembered_nor_recalled_into() {
    let app = auto_app().await;
    let fixture = |name: &str| -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../lyss-core/tests/fixtures/clients")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    // Something to recall that the title's text matches well.
    app.post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": "My cats Pixel and Byte live with me in Lyon."}]}))
        .send()
        .await
        .unwrap();
    app.state.lyss.ingest_pending().await.unwrap();
    let before = app.memories().await.len();
    assert!(before > 0);
    // LobeChat's topic title and its history summary, as it sends them.
    let mut title = fixture("lobechat-1.143-topic-title.json");
    title["model"] = json!("gpt-4o-mini");
    title["stream"] = json!(false);
    title.as_object_mut().unwrap().remove("stream_options");
    let summary = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You're an assistant who's good at extracting key takeaways from conversations and summarizing them. Please summarize according to the user's needs. The content you need to summarize is located in the <chat_history> </chat_history> group of xml tags. The summary needs to maintain the original language."},
        {"role": "user", "content": "<chat_history><user>Pixel is my grey tabby in Lyon.</user><assistant>Lovely!</assistant></chat_history>\n\nPlease summarize the above conversation and retain key information. The summarized content will be used as context for subsequent prompts, and should be limited to 400 tokens."}]});
    for body in [title, summary] {
        let resp = app
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("x-lyss-prompt-tokens-sent").is_none());
        let mut expected = body;
        expected["model"] = json!("up-mini");
        assert_eq!(
            app.upstream_bodies().await.pop().unwrap(),
            expected,
            "sent as is"
        );
    }
    app.state.lyss.ingest_pending().await.unwrap();
    assert_eq!(
        app.memories().await.len(),
        before,
        "nothing of it remembered"
    );
}

#[tokio::test]
async fn a_workspace_switched_off_is_never_touched() {
    let app = app_with(|c| {
        c.memory.history_tokens = 120;
        c.memory.memory_tokens = 200;
        c.memory.workspaces.insert(
            "team".into(),
            lyss_core::config::WorkspaceMemory::Switch(lyss_core::config::MemoryMode::Off),
        );
    })
    .await;
    let body = unseen_conversation("And tomorrow?");
    let resp = app
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("x-lyss-prompt-tokens-sent").is_none());
    let mut expected = body;
    expected["model"] = json!("up-mini");
    assert_eq!(app.upstream_bodies().await.pop().unwrap(), expected);
}

/// An upstream whose token counts are not lyss's: it reports twice lyss's count of what it
/// received, plus 7 (another tokenizer, chat-format overhead).
struct CountsDifferently;

impl wiremock::Respond for CountsDifferently {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let req: lyss_core::wire::ChatRequest = serde_json::from_slice(&request.body).unwrap();
        let theirs = 2 * lyss_core::tokens::count_request(&req.model, &req) + 7;
        let mut body = lyss_testkit::openai::completion("up-mini", "ok");
        body["usage"]["prompt_tokens"] = json!(theirs);
        body["usage"]["total_tokens"] = json!(theirs + 46);
        ResponseTemplate::new(200).set_body_json(body)
    }
}

#[tokio::test]
async fn savings_are_net_and_in_the_upstreams_units() {
    let app = TestApp::with(|c| {
        c.embedder.kind = EmbedderKind::None;
        c.memory.history_tokens = 300;
    })
    .await;
    Mock::given(method("POST"))
        .respond_with(CountsDifferently)
        .mount(&app.upstream)
        .await;
    // An untouched prompt saves exactly nothing, however the upstream counts it.
    let ping = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ping"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 200);
    assert!(
        ping.headers()
            .get("x-lyss-prompt-tokens-original")
            .is_none()
    );
    // A long conversation, compressed.
    let long = app
        .post("/v1/chat/completions")
        .json(&long_conversation())
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 200);
    let (original, sent) = headers(&long);
    assert!(sent * 3 < original);
    let rows = app.ledger().await;
    let ping_row = rows.iter().find(|r| r.prompt_tokens < 100).unwrap();
    assert_eq!(ping_row.prompt_tokens_original, ping_row.prompt_tokens);
    assert_eq!(ping_row.memory_saved_nusd, 0);
    let long_row = rows.iter().find(|r| r.prompt_tokens >= 100).unwrap();
    // In the upstream's units: its count of what was sent, and the original scaled alike.
    assert_eq!(long_row.prompt_tokens, 2 * sent + 7);
    let scaled = (original as f64 * (2 * sent + 7) as f64 / sent as f64).round() as u64;
    assert_eq!(long_row.prompt_tokens_original, scaled);
    let price = lyss_core::price::Price::per_mtok(1.0, 2.0, 1.0);
    assert_eq!(
        long_row.memory_saved_nusd,
        (scaled - long_row.prompt_tokens) as i64 * price.cached_input
    );
    // `usage` sums the net saving.
    let usage = app
        .state
        .lyss
        .policy()
        .usage(&Default::default())
        .await
        .unwrap();
    assert_eq!(
        usage.iter().map(|r| r.memory_saved_tokens).sum::<i64>(),
        (scaled - long_row.prompt_tokens) as i64
    );
}

#[tokio::test]
async fn a_chat_offering_lyss_memory_tools_is_remembered_and_gets_the_profile_once() {
    // LobeChat with lyss's MCP server installed as a plugin offers its five tools with every
    // message (named as LobeChat names them).
    let app = auto_app().await;
    let tools: Vec<Value> = lyss_core::memory::traffic::MEMORY_TOOLS
        .iter()
        .map(|t| {
            json!({"type": "function", "function": {"name": format!("lyss-memory____{t}____mcp"),
            "parameters": {"type": "object", "properties": {}}}})
        })
        .collect();
    let said = json!({"model": "gpt-4o-mini", "tools": tools, "messages": [
        {"role": "user", "content": "I am vegetarian."}]});
    assert_eq!(app.chat(&said).await.status(), 200);
    app.state.lyss.ingest_pending().await.unwrap();
    assert!(
        app.memories()
            .await
            .iter()
            .any(|m| m["text"] == "I am vegetarian."),
        "the statement is remembered"
    );
    // A new chat of the same kind gets the profile, and the block does not quote it again.
    let fresh = json!({"model": "gpt-4o-mini", "tools": tools, "messages": [
        {"role": "user", "content": "Am I vegetarian, and what should I cook?"}]});
    assert_eq!(app.chat(&fresh).await.status(), 200);
    let sent = app.upstream_bodies().await.pop().unwrap();
    let quoting: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_str())
        .filter(|c| c.contains("I am vegetarian."))
        .collect();
    assert_eq!(quoting.len(), 1, "{sent}");
    assert!(quoting[0].contains("<profile>"), "{sent}");
    assert_eq!(
        sent["tools"].as_array().unwrap().len(),
        5,
        "the tools go as sent"
    );
}
