//! HTTP behaviour through the real router, against a wiremock upstream in OpenAI's wire format.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{ADMIN, TestApp};
use lyss_testkit::{
    assert_openai_error, openai::completion, openai::sse, sse::chunks as sse_chunks,
    sse::data as sse_data,
};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

async fn mock_completion(app: &TestApp, model: &str) {
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-upstream-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(model, "Hello!")))
        .mount(&app.upstream)
        .await;
}

async fn mock_stream(app: &TestApp, body: String) {
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(body),
        )
        .mount(&app.upstream)
        .await;
}

#[tokio::test]
async fn chat_relays_upstream_answer_and_records_the_ledger() {
    let app = TestApp::new().await;
    mock_completion(&app, "up-mini").await;
    let request = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
        ],
        "temperature": 0.3,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "some_new_field": {"x": [1, 2]}
    });
    let resp = app
        .post("/v1/chat/completions")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-request-id").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, completion("up-mini", "Hello!"));

    // Upstream saw the upstream model name and every other field untouched.
    let sent = &app.upstream_bodies().await[0];
    let mut expected = request.clone();
    expected["model"] = json!("up-mini");
    assert_eq!(sent, &expected);

    let ledger = app.ledger().await;
    assert_eq!(ledger.len(), 1);
    let row = &ledger[0];
    assert_eq!(
        (row.model.as_str(), row.upstream_model.as_str()),
        ("gpt-4o-mini", "up-mini")
    );
    assert_eq!((row.prompt_tokens, row.completion_tokens), (1117, 46));
    // 1117 × 1 USD/M + 46 × 2 USD/M, in nano-USD.
    assert_eq!(row.cost_nusd, 1117 * 1000 + 46 * 2000);
    assert_eq!(row.status, 200);
    assert!(!row.stream);
}

#[tokio::test]
async fn an_alias_reaches_the_same_upstream_model() {
    let app = TestApp::new().await;
    mock_completion(&app, "up-mini").await;
    let resp = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.upstream_bodies().await[0]["model"], "up-mini");
    assert_eq!(app.ledger().await[0].model, "gpt-5-mini");
}

#[tokio::test]
async fn stream_relays_chunks_and_the_usage_chunk_when_asked() {
    let app = TestApp::new().await;
    mock_stream(&app, sse("up-mini", &["Hel", "lo"], true)).await;
    let resp = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o-mini", "stream": true,
                      "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let chunks = sse_chunks(&resp.text().await.unwrap());
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 12);
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));

    let sent = &app.upstream_bodies().await[0];
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let row = &app.ledger().await[0];
    assert!(row.stream);
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens, row.status),
        (9, 12, 200)
    );
}

#[tokio::test]
async fn stream_hides_the_usage_chunk_the_client_did_not_ask_for_but_bills_it() {
    let app = TestApp::new().await;
    mock_stream(&app, sse("up-mini", &["Hi"], true)).await;
    let resp = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o-mini", "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    for d in &data[..data.len() - 1] {
        let v: Value = serde_json::from_str(d).unwrap();
        assert!(
            v.get("usage").is_none_or(Value::is_null),
            "usage leaked: {d}"
        );
        assert_ne!(v["choices"], json!([]));
    }
    // Lyss asked upstream for usage anyway, and billed it.
    assert_eq!(
        app.upstream_bodies().await[0]["stream_options"]["include_usage"],
        true
    );
    assert_eq!(app.ledger().await[0].completion_tokens, 12);
}

#[tokio::test]
async fn a_stream_without_upstream_usage_is_counted_not_recorded_as_zero() {
    let app = TestApp::new().await;
    mock_stream(&app, sse("up-mini", &["hello", " world"], false)).await;
    let resp = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o-mini", "stream": true,
                      "messages": [{"role": "user", "content": "hello world"}]}))
        .send()
        .await
        .unwrap();
    resp.text().await.unwrap();
    let row = &app.ledger().await[0];
    assert_eq!(row.completion_tokens, 2);
    assert!(row.prompt_tokens >= 2);
    assert!(row.cost_nusd > 0);
}

#[tokio::test]
async fn a_stream_cut_mid_way_ends_with_an_error_event_and_no_done() {
    let app = TestApp::new().await;
    let full = sse("up-mini", &["Hel", "lo"], true);
    // Keep the role chunk and one content chunk only: no finish_reason, no [DONE].
    let cut: String = full
        .split("\n\n")
        .take(2)
        .map(|c| format!("{c}\n\n"))
        .collect();
    mock_stream(&app, cut).await;
    let resp = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o-mini", "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let data = sse_data(&resp.text().await.unwrap());
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error");
    assert!(!data.iter().any(|d| d == "[DONE]"));
    let row = &app.ledger().await[0];
    assert_eq!(row.status, 502);
    assert!(
        row.completion_tokens > 0,
        "tokens that flowed must be billed"
    );
}

#[tokio::test]
async fn bad_missing_and_revoked_keys_get_401_invalid_api_key() {
    let app = TestApp::new().await;
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    for auth in [
        None,
        Some("lyss-sk-abcdefghijkl-0123456789abcdef0123456789abcdef"),
        Some("sk-not-ours"),
    ] {
        let mut rb = app
            .client
            .post(format!("{}/v1/chat/completions", app.base))
            .json(&chat);
        if let Some(a) = auth {
            rb = rb.bearer_auth(a);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_openai_error(
            &resp.json().await.unwrap(),
            "invalid_request_error",
            Some("invalid_api_key"),
        );
    }
    // Revocation reaches the running server within a second (the key cache lives 500 ms).
    mock_completion(&app, "up-mini").await;
    assert_eq!(
        app.post("/v1/chat/completions")
            .json(&chat)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let id = app.key.split('-').nth(2).unwrap();
    app.state.lyss.policy().revoke_key(id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let resp = app
        .post("/v1/chat/completions")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(app.get("/v1/models").send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn models_outside_the_allow_list_or_unknown_are_model_not_found() {
    let app = TestApp::new().await;
    mock_completion(&app, "up-big").await;
    for model in ["gpt-4o", "no-such-model"] {
        let resp = app
            .post("/v1/chat/completions")
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        let body: Value = resp.json().await.unwrap();
        assert_openai_error(&body, "invalid_request_error", Some("model_not_found"));
        assert_eq!(body["error"]["param"], "model");
    }
    assert!(
        app.upstream_bodies().await.is_empty(),
        "nothing may reach upstream"
    );
}

#[tokio::test]
async fn a_key_may_narrow_but_not_widen_its_workspace_models() {
    let app = TestApp::new().await;
    mock_completion(&app, "up-mini").await;
    let policy = app.state.lyss.policy();
    let narrow = policy
        .create_key(&lyss_core::policy::NewKey {
            user: "ann".into(),
            models: Some(vec!["text-embedding-3-small".into(), "gpt-4o".into()]),
            ..Default::default()
        })
        .await
        .unwrap()
        .key;
    let ids = |v: Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let listed = app
        .client
        .get(format!("{}/v1/models", app.base))
        .bearer_auth(&narrow)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ids(listed.json().await.unwrap()),
        vec!["text-embedding-3-small"]
    );
    let resp = app
        .client
        .post(format!("{}/v1/chat/completions", app.base))
        .bearer_auth(&narrow)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn models_lists_exactly_the_allowed_models_and_their_aliases() {
    let app = TestApp::new().await;
    let resp = app.get("/v1/models").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "list");
    let mut ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec!["gpt-4o-mini", "gpt-5-mini", "text-embedding-3-small"]
    );
    let first = &body["data"][0];
    assert_eq!(first["object"], "model");
    // The same on every start and replica (LobeChat shows it as the release date).
    assert_eq!(first["created"], lyss_core::pipeline::MODELS_CREATED);
    assert_eq!(first["owned_by"], "up");

    // One of them by id (the SDKs' `models.retrieve`): an alias too.
    let one: Value = app
        .get("/v1/models/gpt-5-mini")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&one["id"], &one["object"]),
        (&json!("gpt-5-mini"), &json!("model"))
    );
    // A model the key may not use looks exactly like one that does not exist, and a retry
    // cannot help.
    for id in ["gpt-4o", "no-such-model", "org/no-such-model"] {
        let resp = app.get(&format!("/v1/models/{id}")).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{id}");
        assert_eq!(resp.headers()["x-should-retry"], "false");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "model_not_found", "{id}");
    }
}

#[tokio::test]
async fn refusals_say_whether_to_retry_and_are_counted_where_admins_look() {
    let app = TestApp::new().await;
    // A model the key may not use: 404, no retry, a ledger row under the caller with the reason.
    let refused = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    assert_eq!(refused.headers()["x-should-retry"], "false");
    // A bad key: 401, no retry, and no row (a flood of bad keys must not grow the ledger).
    let bad = app
        .client
        .get(format!("{}/v1/models", app.base))
        .bearer_auth("lyss-sk-nobody00000-0000000000000000000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert_eq!(bad.headers()["x-should-retry"], "false");
    let rows = app.ledger().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].status, rows[0].cost_nusd), (404, 0));
    assert_eq!(rows[0].endpoint, "chat");
    assert!(rows[0].error.as_deref().unwrap().starts_with("model:"));
    let usage = app
        .state
        .lyss
        .policy()
        .usage(&Default::default())
        .await
        .unwrap();
    assert_eq!(usage.iter().map(|r| r.errors).sum::<i64>(), 1);
}

/// A request the upstream's translation cannot carry fails after its reservation: it has its
/// failure row, with the status the client got, and is not counted a second time as a refusal.
#[tokio::test]
async fn a_failure_after_the_reservation_has_one_row() {
    let app =
        TestApp::with(|c| c.providers[0].kind = lyss_core::config::ProviderKind::Gemini).await;
    let resp = app
        .post("/v1/chat/completions")
        .json(
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let rows = app.ledger().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, 400, "the status the client was given");
}

#[tokio::test]
async fn malformed_json_is_400_but_only_for_a_valid_key() {
    let app = TestApp::new().await;
    let resp = app
        .post("/v1/chat/completions")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_openai_error(&resp.json().await.unwrap(), "invalid_request_error", None);
    let resp = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["param"],
        "messages"
    );
    let resp = app
        .client
        .post(format!("{}/v1/chat/completions", app.base))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_in_openai_shape() {
    let app = TestApp::with(|c| c.body_limit = 64 * 1024).await;
    let big = "x".repeat(100 * 1024);
    let resp = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": big}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_openai_error(
        &resp.json().await.unwrap(),
        "invalid_request_error",
        Some("request_too_large"),
    );
}

#[tokio::test]
async fn the_default_body_limit_takes_a_long_conversation_with_images() {
    let app = TestApp::new().await;
    mock_completion(&app, "up-mini").await;
    // ~3 MiB: a long history plus a base64 screenshot.
    let image = format!("data:image/png;base64,{}", "A".repeat(3 * 1024 * 1024));
    let mut messages: Vec<Value> = (0..200)
        .map(|i| json!({"role": if i % 2 == 0 {"user"} else {"assistant"}, "content": "word ".repeat(100)}))
        .collect();
    messages.push(
        json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]}),
    );
    let resp = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o-mini", "messages": messages}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn upstream_failures_map_to_clean_openai_errors() {
    // One attempt each and no circuit breaking: this is about how each failure is reported
    // (retries and fallbacks are tested in routing.rs).
    let app = TestApp::with(|c| {
        c.router.retries = 0;
        c.router.breaker_failures = 1_000;
    })
    .await;
    let cases: Vec<(ResponseTemplate, u16, &str)> = vec![
        (
            ResponseTemplate::new(500).set_body_string("boom"),
            502,
            "upstream_error",
        ),
        (
            ResponseTemplate::new(503).set_body_json(json!({"error": {"message": "overloaded"}})),
            502,
            "upstream_error",
        ),
        (
            ResponseTemplate::new(200).set_body_string("{\"id\": tru"),
            502,
            "upstream_error",
        ),
        (
            ResponseTemplate::new(429).set_body_json(json!({"error": {"message": "slow down"}})),
            429,
            "upstream_rate_limited",
        ),
        (
            ResponseTemplate::new(400).set_body_json(
                json!({"error": {"message": "bad temperature", "type": "invalid_request_error"}}),
            ),
            400,
            "upstream_rejected",
        ),
    ];
    for (template, status, code) in cases {
        app.upstream.reset().await;
        Mock::given(method("POST"))
            .respond_with(template)
            .mount(&app.upstream)
            .await;
        let resp = app
            .post("/v1/chat/completions")
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        if status == 400 {
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("bad temperature")
            );
        }
        if status >= 500 {
            // 5xx bodies stay generic: nothing of the upstream's answer leaks.
            assert!(!body.to_string().contains("boom") && !body.to_string().contains("overloaded"));
        }
    }
    let errors: Vec<u16> = app.ledger().await.iter().map(|r| r.status).collect();
    assert_eq!(errors.len(), 5, "failed requests are in the ledger too");
}

#[tokio::test]
async fn a_hung_upstream_is_504_and_a_dead_one_502() {
    let app = TestApp::with(|c| c.providers[0].timeout_secs = 1).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&app.upstream)
        .await;
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let resp = app
        .post("/v1/chat/completions")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert_openai_error(
        &resp.json().await.unwrap(),
        "api_error",
        Some("upstream_timeout"),
    );

    let dead = TestApp::with(|c| c.providers[0].base_url = "http://127.0.0.1:9/v1".into()).await;
    let resp = dead
        .post("/v1/chat/completions")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_openai_error(
        &resp.json().await.unwrap(),
        "api_error",
        Some("upstream_error"),
    );
}

#[tokio::test]
async fn upstream_stream_errors_before_the_first_byte_are_http_statuses() {
    let app = TestApp::new().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&app.upstream)
        .await;
    let resp = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
}

#[tokio::test]
async fn embeddings_come_as_floats_or_base64() {
    let app = TestApp::new().await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0, 0.25]}],
            "model": "up-embed",
            "usage": {"prompt_tokens": 5, "total_tokens": 5}
        })))
        .mount(&app.upstream)
        .await;
    let resp = app
        .post("/v1/embeddings")
        .json(&json!({"model": "text-embedding-3-small", "input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"][0]["embedding"], json!([0.5, -1.0, 0.25]));

    let resp = app
        .post("/v1/embeddings")
        .json(&json!({"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "base64"}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let b64 = body["data"][0]["embedding"].as_str().unwrap();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let floats: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(floats, vec![0.5, -1.0, 0.25]);
    // Upstream is always asked for floats.
    let sent = app.upstream_bodies().await;
    assert!(sent[1].get("encoding_format").is_none());
    assert_eq!(sent[1]["model"], "up-embed");
    let ledger = app.ledger().await;
    assert_eq!(ledger.len(), 2);
    assert_eq!(ledger[0].endpoint, "embeddings");
    assert_eq!(ledger[0].prompt_tokens, 5);
}

#[tokio::test]
async fn cors_preflight_allows_browser_sdk_headers() {
    let app = TestApp::new().await;
    let resp = app
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/chat/completions", app.base),
        )
        .header("origin", "http://localhost:3210")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-stainless-os,x-stainless-lang",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for want in ["authorization", "content-type", "x-stainless-os"] {
        assert!(allowed.contains(want), "{allowed}");
    }
    assert!(h.get("access-control-allow-credentials").is_none());
}

#[tokio::test]
async fn request_ids_are_returned_and_client_ids_kept() {
    let app = TestApp::new().await;
    let resp = app
        .get("/v1/models")
        .header("x-request-id", "my-trace-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "my-trace-1");
}

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let app = TestApp::new().await;
    let url = format!("{}/admin/workspaces", app.base);
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 401);
    // A user key is not an admin token.
    assert_eq!(
        app.client
            .get(&url)
            .bearer_auth(&app.key)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let resp = app
        .client
        .get(&url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()[0]["name"], "team");

    let created: Value = app
        .client
        .post(format!("{}/admin/keys", app.base))
        .bearer_auth(ADMIN)
        .json(&json!({"user": "ann", "name": "ci"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap();
    assert_eq!(
        app.client
            .get(format!("{}/v1/models", app.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let revoked = app
        .client
        .post(format!(
            "{}/admin/keys/{}/revoke",
            app.base,
            created["id"].as_str().unwrap()
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let dup = app
        .client
        .post(format!("{}/admin/workspaces", app.base))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "team"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::new().await;
    assert_eq!(
        app.client
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.client
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let resp = app
        .client
        .get(format!("{}/nope", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_object());
}

/// An upstream that streams one chunk every 20 ms for a long time and notes when the
/// connection is dropped — something a canned wiremock body cannot do.
async fn slow_stream_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let guard = Dropped(flag.clone());
            async move {
                let chunks = futures::stream::unfold((0u32, guard), |(i, guard)| async move {
                    if i >= 500 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
                        "model": "up-mini", "choices": [{"index": 0, "delta": {"content": "word "}, "finish_reason": null}]});
                    Some((Ok::<_, std::convert::Infallible>(format!("data: {chunk}\n\n")), (i + 1, guard)))
                });
                axum::response::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(axum::body::Body::from_stream(chunks))
                    .unwrap()
            }
        }),
    );
    let url = lyss_testkit::upstream::serve(app, 0).await;
    (url, dropped)
}

#[tokio::test]
async fn a_client_leaving_mid_stream_cancels_upstream_and_is_billed_for_what_flowed() {
    use futures::StreamExt as _;
    use std::sync::atomic::Ordering;
    let (url, upstream_dropped) = slow_stream_upstream().await;
    let app = TestApp::with(|c| c.providers[0].base_url = url).await;
    let resp = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = 0;
    while seen < 5 {
        let bytes = body.next().await.unwrap().unwrap();
        seen += String::from_utf8_lossy(&bytes).matches("data:").count();
    }
    drop(body);
    let mut row = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some(r) = app.ledger().await.into_iter().next() {
            row = Some(r);
            if upstream_dropped.load(Ordering::SeqCst) {
                break;
            }
        }
    }
    let row = row.expect("a ledger row for the cancelled stream");
    assert_eq!(row.status, 499);
    assert!(
        row.completion_tokens >= 5,
        "billed {} tokens",
        row.completion_tokens
    );
    assert!(row.completion_tokens < 500);
    assert!(
        upstream_dropped.load(Ordering::SeqCst),
        "upstream request was not cancelled"
    );
}

#[tokio::test]
async fn failed_credential_checks_slow_the_address_but_never_block_who_authenticates() {
    let app = TestApp::with(|c| c.auth_failures_per_minute = 5).await;
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let (guesser, neighbour) = (from([127, 0, 0, 1]), from([127, 0, 0, 2]));
    let admin = |client: &reqwest::Client, token: &str| {
        client
            .get(format!("{}/admin/ledger", app.base))
            .bearer_auth(token)
            .send()
    };
    for _ in 0..5 {
        assert_eq!(admin(&guesser, "wrong-token").await.unwrap().status(), 401);
    }
    // Slowed now: a wrong admin token is answered 429 after a pause, and told when to come
    // back — one guess per second at most.
    let started = std::time::Instant::now();
    let refused = admin(&guesser, "still-wrong").await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(refused.headers()["retry-after"], "60");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    // Who authenticates is served at once from the same address: the admin token, a key, and
    // the health checks (which need none).
    let started = std::time::Instant::now();
    assert_eq!(admin(&guesser, ADMIN).await.unwrap().status(), 200);
    let models = guesser
        .get(format!("{}/v1/models", app.base))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    for path in ["/healthz", "/readyz"] {
        let r = guesser
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    assert!(started.elapsed() < Duration::from_millis(900));
    // Another address is not slowed.
    let started = std::time::Instant::now();
    assert_eq!(admin(&neighbour, "wrong").await.unwrap().status(), 401);
    assert!(started.elapsed() < Duration::from_millis(900));
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_huge_ones_refused() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = TestApp::with(|c| {
        c.header_read_timeout_secs = 1;
        c.max_header_bytes = 16 * 1024;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Slowloris: a request line and one header, then nothing. The server hangs up.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A head larger than the limit: 431, and nothing else is read.
    let huge = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-padding", "a".repeat(32 * 1024))
        .send()
        .await;
    match huge {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert!(e.is_request() || e.is_connect(), "{e}"),
    }
    // Ordinary requests still work.
    let ok = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}
