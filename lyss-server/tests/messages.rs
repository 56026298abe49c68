//! `POST /v1/messages`: Anthropic's Messages API in front of an OpenAI-compatible upstream,
//! with lyss keys in `x-api-key` or as a bearer token, Anthropic's answer, event stream and
//! error shapes, and the same governance as chat completions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestApp;
use lyss_core::policy::{NewBudget, Period, Scope, Unit};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, Request, ResponseTemplate};

async fn app() -> TestApp {
    let app = TestApp::new().await;
    Mock::given(method("POST"))
        .respond_with(|req: &Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            if body["stream"] == true {
                ResponseTemplate::new(200)
                    .insert_header("content-type", "text/event-stream")
                    .set_body_string(lyss_testkit::openai::sse("up-mini", &["Bon", "jour"], true))
            } else {
                ResponseTemplate::new(200)
                    .set_body_json(lyss_testkit::openai::completion("up-mini", "Bonjour"))
            }
        })
        .mount(&app.upstream)
        .await;
    app
}

fn message(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 64, "stream": stream,
           "system": "Answer in French.",
           "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]})
}

async fn send(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/messages", app.base))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_message_is_answered_in_anthropics_shape() {
    let app = app().await;
    let resp = send(&app, &app.key, &message(false)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "Bonjour"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], 1117);
    assert_eq!(body["usage"]["output_tokens"], 46);
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    // The upstream got an OpenAI request: the system prompt first, the cap, the model's name.
    let sent = app.upstream_bodies().await.pop().unwrap();
    assert_eq!(sent["model"], "up-mini");
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"}])
    );
    // A bearer token works too, and the ledger has the request.
    let resp = app
        .post("/v1/messages")
        .json(&message(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.ledger().await.len(), 2);
}

#[tokio::test]
async fn a_streamed_message_is_anthropics_event_stream() {
    let app = app().await;
    let resp = send(&app, &app.key, &message(true)).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let events = lyss_testkit::sse::events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], *name, "each event's type names it");
    }
    let said: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(said, "Bonjour");
    assert_eq!(events[5].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(events[5].1["usage"]["output_tokens"], 12);
    // Usage was asked upstream, so the stream was billed.
    let sent = app.upstream_bodies().await.pop().unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let ledger = app.ledger().await;
    assert_eq!(ledger[0].completion_tokens, 12);
}

#[tokio::test]
async fn errors_have_anthropics_shape_and_governance_applies() {
    let app = app().await;
    let expect = |status: u16, kind: &'static str| {
        move |resp: reqwest::Response| async move {
            assert_eq!(resp.status(), status);
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["type"], "error", "{body}");
            assert_eq!(body["error"]["type"], kind, "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
            body
        }
    };
    expect(401, "authentication_error")(send(&app, "lyss-sk-nope-nope", &message(false)).await)
        .await;
    // Bad JSON from an unknown caller is still just 401.
    let resp = app
        .client
        .post(format!("{}/v1/messages", app.base))
        .header("x-api-key", "lyss-sk-nope-nope")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect(401, "authentication_error")(resp).await;
    let resp = app
        .client
        .post(format!("{}/v1/messages", app.base))
        .header("x-api-key", &app.key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect(400, "invalid_request_error")(resp).await;
    let mut unknown = message(false);
    unknown["model"] = json!("claude-opus-4");
    expect(404, "not_found_error")(send(&app, &app.key, &unknown).await).await;
    let mut server_tool = message(false);
    server_tool["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
    expect(400, "invalid_request_error")(send(&app, &app.key, &server_tool).await).await;

    // A budget too small for the request: refused before anything goes upstream.
    let before = app.upstream_bodies().await.len();
    app.state
        .lyss
        .policy()
        .set_budget(&NewBudget {
            scope: Scope::User,
            target: "ann".into(),
            unit: Unit::Tokens,
            limit: 5,
            period: Period::Monthly,
            tz: None,
            expires_at: None,
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let body = expect(429, "rate_limit_error")(send(&app, &app.key, &message(false)).await).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("budget"),
        "{body}"
    );
    assert_eq!(app.upstream_bodies().await.len(), before);
}

/// A Messages request with the client's own cache breakpoints (as Claude Code sends them).
fn marked_message() -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 64,
           "system": [{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}],
           "messages": [{"role": "user", "content": [
               {"type": "text", "text": "The whole repository map.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
               {"type": "text", "text": "Fix the bug."}]}]})
}

#[tokio::test]
async fn a_clients_cache_breakpoints_reach_an_anthropic_upstream_and_never_an_openai_one() {
    // To an OpenAI-compatible upstream: the marks are Anthropic's, not OpenAI's; removed.
    let app = app().await;
    let resp = send(&app, &app.key, &marked_message()).await;
    assert_eq!(resp.status(), 200);
    let sent = app.upstream_bodies().await.pop().unwrap();
    assert!(!sent.to_string().contains("cache_control"), "{sent}");
    assert_eq!(
        sent["messages"][0]["content"][0]["text"],
        "You are a coding agent."
    );
    assert_eq!(sent["messages"][1]["content"][1]["text"], "Fix the bug.");

    // To an Anthropic upstream: exactly where the client put them.
    let app =
        TestApp::with(|c| c.providers[0].kind = lyss_core::config::ProviderKind::Anthropic).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "up-mini",
            "content": [{"type": "text", "text": "Done."}], "stop_reason": "end_turn",
            "stop_sequence": null, "usage": {"input_tokens": 30, "output_tokens": 2,
            "cache_read_input_tokens": 0, "cache_creation_input_tokens": 20}
        })))
        .mount(&app.upstream)
        .await;
    let resp = send(&app, &app.key, &marked_message()).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["usage"]["cache_creation_input_tokens"], 20);
    let sent = app.upstream_bodies().await.pop().unwrap();
    assert_eq!(sent["system"], marked_message()["system"]);
    assert_eq!(sent["messages"], marked_message()["messages"]);
}

#[tokio::test]
async fn an_output_cap_above_the_models_own_is_lowered_and_what_cannot_go_upstream_is_named() {
    let app = TestApp::with(|c| c.models[0].max_output_tokens = Some(16_384)).await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(lyss_testkit::openai::completion("up-mini", "ok")),
        )
        .mount(&app.upstream)
        .await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 128_000,
    "thinking": {"type": "adaptive"}, "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
    "messages": [
        {"role": "user", "content": "List the files."},
        {"role": "system", "content": [{"type": "text", "text": "You are in /tmp."}]}
    ]});
    let resp = send(&app, &app.key, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-lyss-max-tokens-capped"],
        "asked=128000, sent=16384"
    );
    // The model is not a reasoning one: the effort lyss translated goes no further, said so.
    assert_eq!(
        resp.headers()["x-lyss-dropped"],
        "context_management, reasoning_effort"
    );
    let sent = app.upstream_bodies().await.pop().unwrap();
    assert_eq!(sent["max_tokens"], 16_384);
    assert!(sent.get("reasoning_effort").is_none());
    // The system entry stays where it was said.
    assert_eq!(sent["messages"][1]["role"], "system");
    assert_eq!(sent["messages"][1]["content"], "You are in /tmp.");
    assert_eq!(app.ledger().await[0].endpoint, "messages");
}
