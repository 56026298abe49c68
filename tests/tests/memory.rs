//! Memory with the real binaries: the turns a request drops from its prompt are durable before
//! the request goes upstream, so `kill -9` while the upstream is still answering loses none of
//! them; and the MCP memory server, driven by the official MCP SDK, steers what chats recall.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use lyss_tests::Deployment;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BIKE: &str = "My bike is a blue Gazelle with a wicker basket.";
const KEY: &str = "Noted: the spare key of your flat is under the fern pot by the door.";

#[tokio::test]
async fn a_crash_after_the_dropped_turns_are_stored_loses_none_of_them() {
    // An upstream that takes its time: the server is killed while it waits.
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(60)))
        .mount(&upstream)
        .await;
    // Memory as it is by default (`auto`), small budgets, keyword retrieval.
    let d = Deployment::new(
        &format!("{}/v1", upstream.uri()),
        "[memory]\nhistory_tokens = 120\nmemory_tokens = 200\n\n[embedder]\nkind = \"none\"",
    );
    d.lyss(&["workspace", "create", "team", "--models", "*"]);
    d.lyss(&["user", "create", "ann", "--workspace", "team"]);
    let key = d.lyss(&["key", "create", "--user", "ann"])["key"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut server = d.serve().await;
    let mut messages = vec![
        json!({"role": "system", "content": "You are a helpful assistant."}),
        json!({"role": "user", "content": BIKE}),
        json!({"role": "assistant", "content": KEY}),
    ];
    for i in 0..24 {
        messages.push(
            json!({"role": "user", "content": format!("Filler question {i} about the weather.")}),
        );
        messages.push(
            json!({"role": "assistant", "content": format!("Filler answer {i}: mild and grey.")}),
        );
    }
    messages.push(json!({"role": "user", "content": "Where is the spare key again?"}));
    let body = json!({"model": "gpt-4o-mini", "messages": messages});
    let url = format!("{}/v1/chat/completions", server.base);
    let waiting = {
        let key = key.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
        })
    };
    // Once the upstream has the (compressed) request, the dropped turns must be durable.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let received = upstream.received_requests().await.unwrap_or_default();
        if let Some(r) = received.first() {
            let sent: Value = serde_json::from_slice(&r.body).unwrap();
            assert!(
                !sent["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["content"] == BIKE),
                "the turn was dropped from the prompt: {sent}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the request never went upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill_hard();
    assert!(waiting.await.unwrap().is_err(), "the answer never came");

    let server = d.serve().await;
    let listed: Value = reqwest::Client::new()
        .get(format!("{}/v1/memories?limit=1000", server.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored = listed["data"].as_array().unwrap();
    let has = |text: &str, role: &str| {
        stored
            .iter()
            .any(|m| m["text"] == text && m["role"] == role)
    };
    assert!(has(BIKE, "user"), "{listed}");
    assert!(has(KEY, "assistant"), "{listed}");
    assert!(has("Filler question 0 about the weather.", "user"));
    // The newest exchange stayed in the prompt; the rest of the dropped history is there.
    assert!(stored.len() >= 40, "{} memories", stored.len());
}

/// The official MCP SDK's client (`tests/sdk/mcp_sdk.py`, PyPI `mcp`) lists and calls every
/// tool, as a 2026 client and as a handshake-era one; another user's key and another end-user
/// of the same key see nothing. Then chats see what it did: the profile it remembered (as
/// corrected) reaches a new chat, a memory it added for an end-user is recalled into that
/// end-user's chat, and the one it forgot is not. Every tool call is a ledger row.
#[tokio::test]
async fn the_mcp_server_steers_what_chats_recall() {
    let python = std::env::var("LYSS_TEST_PYTHON").ok();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(
            python.is_some(),
            "CI=true needs LYSS_TEST_PYTHON (scripts/test.sh sets it)"
        );
    }
    let Some(python) = python else {
        eprintln!("skipping the MCP SDK check: LYSS_TEST_PYTHON is not set");
        return;
    };
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Sure."},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 2, "total_tokens": 52}
        })))
        .mount(&upstream)
        .await;
    // The default configuration: memory `auto`, the local embedding model.
    let d = Deployment::new(
        &format!("{}/v1", upstream.uri()),
        "admin_token = \"mcp-test-admin-token-0123456789\"",
    );
    let cli = |a: &[&str]| d.lyss(a);
    cli(&["workspace", "create", "team", "--models", "*"]);
    cli(&["user", "create", "ann", "--workspace", "team"]);
    cli(&["user", "create", "bob", "--workspace", "team"]);
    let ann = cli(&["key", "create", "--user", "ann"]);
    let bob = cli(&["key", "create", "--user", "bob"]);
    let probe = cli(&["key", "create", "--user", "bob", "--name", "probe"]);
    let server = d.serve().await;
    embedder_ready(&server.base, probe["key"].as_str().unwrap()).await;

    // Without a key that checks out, no MCP message is read.
    for key in [None, Some("lyss-sk-not-a-key")] {
        let mut req = reqwest::Client::new()
            .post(format!("{}/mcp", server.base))
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.json::<Value>().await.unwrap()["error"]["code"],
            "invalid_api_key"
        );
    }

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/mcp_sdk.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .env("LYSS_MCP_URL", format!("{}/mcp", server.base))
        .env("LYSS_KEY", ann["key"].as_str().unwrap())
        .env("LYSS_OTHER_KEY", bob["key"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "MCP SDK check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // What the next chats send upstream.
    let chat = async |user: Option<&str>, question: &str| -> String {
        let mut body = json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": question}]});
        if let Some(u) = user {
            body["user"] = json!(u);
        }
        let before = upstream.received_requests().await.unwrap_or_default().len();
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", server.base))
            .bearer_auth(ann["key"].as_str().unwrap())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        let sent = upstream.received_requests().await.unwrap();
        assert_eq!(sent.len(), before + 1);
        String::from_utf8_lossy(&sent[before].body).into_owned()
    };
    let sent = chat(None, "Can you suggest a restaurant for dinner tonight?").await;
    assert!(
        sent.contains("I am vegetarian and I live in Grenoble."),
        "the corrected profile did not reach a new chat: {sent}"
    );
    assert!(!sent.contains("Lyon"), "{sent}");
    let sent = chat(Some("ann-phone"), "Which phone do I have again?").await;
    assert!(sent.contains("My phone is a Fairphone."), "{sent}");
    let bike = "What colour is my bike and does it have a basket?";
    let sent = chat(None, bike).await;
    assert!(
        !sent.contains("Gazelle"),
        "a forgotten memory was recalled: {sent}"
    );
    // The same memory, remembered again, is recalled by the same question.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/memories", server.base))
        .bearer_auth(ann["key"].as_str().unwrap())
        .json(&json!({"text": "My bike is a blue Gazelle with a wicker basket."}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(chat(None, bike).await.contains("blue Gazelle"));

    let rows = lyss_tests::ledger(&server.base, "mcp-test-admin-token-0123456789").await;
    let mcp: Vec<&Value> = rows.iter().filter(|r| r["endpoint"] == "mcp").collect();
    let tools: std::collections::BTreeSet<&str> =
        mcp.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(
        tools.into_iter().collect::<Vec<_>>(),
        [
            "correct_memory",
            "forget_memory",
            "get_profile",
            "remember",
            "search_memories"
        ]
    );
    assert!(
        mcp.iter()
            .all(|r| r["prompt_tokens"] == 0 && r["cost_nusd"] == 0)
    );
    // Bob's calls are his, and his forget of ann's memory found nothing.
    let bobs: Vec<&&Value> = mcp.iter().filter(|r| r["key_id"] == bob["id"]).collect();
    assert_eq!(bobs.len(), 4, "{bobs:?}");
    assert!(
        bobs.iter()
            .any(|r| r["model"] == "forget_memory" && r["status"] == 404)
    );
}

/// Waits (at most a minute) until the server's embedding model has loaded — a search ranks by
/// meaning — so that what the test remembers is embedded. A memory of its own key shows it.
async fn embedder_ready(base: &str, key: &str) {
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{base}/v1/memories"))
        .bearer_auth(key)
        .json(&json!({"text": "The probe memory waits for the embedding model."}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found: Value = client
            .get(format!(
                "{base}/v1/memories?q=a probe waiting for a model&min_similarity=0.1"
            ))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if found["data"][0]["similarity"].is_number() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the local embedding model never loaded (scripts/fetch-models.sh fetches it): {found}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
