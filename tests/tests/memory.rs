//! Memory's guarantee across a crash, with the real binaries: the turns a request drops from
//! its prompt are durable before the request goes upstream, so `kill -9` while the upstream is
//! still answering loses none of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use lyss_tests::{Server, write_config};
use serde_json::{Value, json};
use wiremock::matchers::method;
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
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Memory as it is by default (`auto`), small budgets, keyword retrieval.
    let config = write_config(
        dir.path(),
        &format!("{}/v1", upstream.uri()),
        "[memory]\nhistory_tokens = 120\nmemory_tokens = 200\n\n[embedder]\nkind = \"none\"",
    );
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let cli = |extra: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(extra);
        lyss_tests::lyss(&all)
    };
    cli(&["workspace", "create", "team", "--models", "*"]);
    cli(&["user", "create", "ann", "--workspace", "team"]);
    let key = cli(&["key", "create", "--user", "ann"])["key"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut server = Server::start(&args).await;
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

    let server = Server::start(&args).await;
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
