//! Routing through the HTTP API with two fake upstreams: a failing target (500, 429, hung,
//! garbage, a stream cut before or after its first chunk) falls back to the next one, retries
//! honour `Retry-After`, the circuit breaker opens and recovers, a request the upstream calls
//! wrong is not retried, nothing left is a clean 502/504, and usage is billed once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestApp;
use lyss_core::config::{ProviderConfig, ProviderKind, Secret, TargetConfig};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// An app whose `gpt-4o-mini` is served by upstream `a` first, then `b` (a standby).
async fn app(tweak: impl FnOnce(&mut lyss_core::Config)) -> (TestApp, MockServer) {
    let b = MockServer::start().await;
    let b_url = format!("{}/v1", b.uri());
    let app = TestApp::with(|c| {
        c.providers.push(ProviderConfig {
            name: "b".into(),
            kind: ProviderKind::Openai,
            base_url: b_url,
            api_key_env: None,
            api_key: Some(Secret::new("sk-b")),
            connect_timeout_secs: 2,
            timeout_secs: 5,
            discover_models: false,
            api_version: None,
            prompt_cache: None,
            responses_models: None,
        });
        let m = c
            .models
            .iter_mut()
            .find(|m| m.name == "gpt-4o-mini")
            .unwrap();
        m.targets.push(TargetConfig {
            provider: "b".into(),
            upstream: Some("b-mini".into()),
            weight: Some(0),
            timeout_secs: None,
            first_byte_timeout_secs: None,
        });
        c.router.backoff_ms = 10;
        c.router.max_backoff_ms = 200;
        tweak(c);
    })
    .await;
    (app, b)
}

async fn answers(server: &MockServer, text: &str) {
    let text = text.to_owned();
    Mock::given(method("POST"))
        .respond_with(move |req: &wiremock::Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            if body["stream"] == true {
                ResponseTemplate::new(200)
                    .insert_header("content-type", "text/event-stream")
                    .set_body_string(lyss_testkit::openai::sse("b-mini", &["From ", "b."], true))
            } else {
                ResponseTemplate::new(200)
                    .set_body_json(lyss_testkit::openai::completion("b-mini", &text))
            }
        })
        .mount(server)
        .await;
}

async fn calls(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

async fn ask(app: &TestApp, stream: bool) -> reqwest::Response {
    app.post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o-mini", "stream": stream,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn failures_fall_back_to_the_next_target_and_bill_once() {
    let failures: Vec<(&str, ResponseTemplate)> = vec![
        ("500", ResponseTemplate::new(500).set_body_string("boom")),
        (
            "garbage",
            ResponseTemplate::new(200).set_body_string("{\"id\": tru"),
        ),
        (
            "hung",
            ResponseTemplate::new(200)
                .set_body_json(lyss_testkit::openai::completion("up-mini", "late"))
                .set_delay(Duration::from_secs(3)),
        ),
    ];
    for (what, failure) in failures {
        let (app, b) = app(|c| {
            c.router.retries = 1;
            c.models[0].timeout_secs = Some(1);
        })
        .await;
        Mock::given(method("POST"))
            .respond_with(failure)
            .mount(&app.upstream)
            .await;
        answers(&b, "from b").await;
        let resp = ask(&app, false).await;
        assert_eq!(resp.status(), 200, "{what}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "from b", "{what}");
        assert_eq!(
            calls(&app.upstream).await,
            2,
            "{what}: one retry at a, then b"
        );
        assert_eq!(calls(&b).await, 1, "{what}");
        let sent: Value =
            serde_json::from_slice(&b.received_requests().await.unwrap()[0].body).unwrap();
        assert_eq!(sent["model"], "b-mini", "b gets its own model name");
        // Billed once: one ledger row, with b's usage.
        let ledger = app.ledger().await;
        assert_eq!(ledger.len(), 1, "{what}");
        assert_eq!(
            (
                ledger[0].status,
                ledger[0].prompt_tokens,
                ledger[0].completion_tokens
            ),
            (200, 1117, 46)
        );
    }
}

#[tokio::test]
async fn a_429_is_retried_after_the_time_the_upstream_asks() {
    let (app, b) = app(|c| c.router.max_backoff_ms = 1_000).await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "0.3")
                .set_body_json(json!({"error": {"message": "slow down"}})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.upstream)
        .await;
    answers(&app.upstream, "from a").await;
    answers(&b, "from b").await;
    let started = std::time::Instant::now();
    let resp = ask(&app, false).await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "from a");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited as asked"
    );
    assert_eq!((calls(&app.upstream).await, calls(&b).await), (2, 0));

    // A Retry-After longer than the longest backoff moves on to the next target at once.
    app.upstream.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "30"))
        .mount(&app.upstream)
        .await;
    let started = std::time::Instant::now();
    let body: Value = ask(&app, false).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "from b");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_stream_is_retried_only_before_its_first_chunk() {
    let (app, b) = app(|c| c.router.retries = 0).await;
    // An empty event stream: nothing reached the client, so b answers.
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(""),
        )
        .mount(&app.upstream)
        .await;
    answers(&b, "from b").await;
    let sse = ask(&app, true).await.text().await.unwrap();
    assert!(
        sse.contains("From ") && sse.ends_with("data: [DONE]\n\n"),
        "{sse}"
    );
    assert_eq!(calls(&b).await, 1);

    // Cut after the first chunks: the client sees what came and an error; no retry.
    app.upstream.reset().await;
    b.reset().await;
    answers(&b, "from b").await;
    let cut: String = lyss_testkit::openai::sse("up-mini", &["Once ", "upon "], false)
        .split("\n\n")
        .take(3)
        .map(|e| format!("{e}\n\n"))
        .collect::<String>()
        + "data: {\"id\": broken\n\n";
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(cut),
        )
        .mount(&app.upstream)
        .await;
    let sse = ask(&app, true).await.text().await.unwrap();
    let data = lyss_testkit::sse::data(&sse);
    assert!(data.iter().any(|d| d.contains("Once ")), "{sse}");
    assert!(data.last().unwrap().contains("\"error\""), "{sse}");
    assert_eq!(calls(&b).await, 0, "never a retry after the first byte");
}

#[tokio::test]
async fn with_nothing_left_the_client_gets_a_clean_502_or_504() {
    let (app, b) = app(|c| {
        c.router.retries = 0;
        c.models[0].timeout_secs = Some(1);
        c.models[0].targets[0].timeout_secs = Some(1);
    })
    .await;
    for server in [&app.upstream, &b] {
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(503).set_body_string("down"))
            .mount(server)
            .await;
    }
    let resp = ask(&app, false).await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_error");
    for server in [&app.upstream, &b] {
        server.reset().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
            .mount(server)
            .await;
    }
    let resp = ask(&app, false).await;
    assert_eq!(resp.status(), 504);
    // A request the upstream calls wrong is not retried anywhere.
    for server in [&app.upstream, &b] {
        server.reset().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(400)
                    .set_body_json(json!({"error": {"message": "bad temperature"}})),
            )
            .mount(server)
            .await;
    }
    let resp = ask(&app, false).await;
    assert_eq!(resp.status(), 400);
    assert_eq!((calls(&app.upstream).await, calls(&b).await), (1, 0));
}

#[tokio::test]
async fn the_breaker_opens_after_repeated_failures_and_recovers() {
    let (app, b) = app(|c| {
        c.router.retries = 0;
        c.router.breaker_failures = 2;
        c.router.breaker_cooldown_secs = 1;
    })
    .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&app.upstream)
        .await;
    answers(&b, "from b").await;
    for _ in 0..2 {
        assert_eq!(ask(&app, false).await.status(), 200);
    }
    assert_eq!(calls(&app.upstream).await, 2);
    // Open: a is skipped.
    for _ in 0..3 {
        assert_eq!(ask(&app, false).await.status(), 200);
    }
    assert_eq!(
        calls(&app.upstream).await,
        2,
        "the open circuit kept requests away"
    );
    // a recovers; after the cooldown one probe closes the circuit.
    app.upstream.reset().await;
    answers(&app.upstream, "from a").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let body: Value = ask(&app, false).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "from a");
    let body: Value = ask(&app, false).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "from a");
    assert_eq!(app.ledger().await.len(), 7, "one row per request");
}
