//! `POST /v1/responses` through the real server: the Responses API on the chat pipeline, to an
//! OpenAI-compatible fake and to an Anthropic one, streaming and not, with conversations kept
//! by lyss for `previous_response_id` (and `GET`/`DELETE /v1/responses/{id}`), and governance
//! (allow-lists, budgets) in OpenAI's shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestApp, token_budget};
use lyss_core::config::ProviderKind;
use lyss_core::policy::Scope;
use lyss_testkit::{openai::completion, openai::mount_sse, openai::sse};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

async fn answering(app: &TestApp) {
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("up-mini", "Hello!")))
        .mount(&app.upstream)
        .await;
}

async fn respond(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    let resp = app
        .client
        .post(format!("{}/v1/responses", app.base))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_response_runs_on_the_pipeline_and_continues_from_its_id() {
    let app = TestApp::new().await;
    answering(&app).await;
    let (status, first) = respond(
        &app,
        &app.key,
        json!({"model": "gpt-4o-mini", "instructions": "Be brief.", "input": "hi"}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["object"], "response");
    assert_eq!(first["status"], "completed");
    assert_eq!(first["model"], "gpt-4o-mini");
    assert_eq!(first["output"][0]["type"], "message");
    assert_eq!(first["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(first["output"][0]["content"][0]["text"], "Hello!");
    assert_eq!(
        (
            &first["usage"]["input_tokens"],
            &first["usage"]["output_tokens"]
        ),
        (&json!(1117), &json!(46))
    );
    let sent = app.upstream_bodies().await.pop().unwrap();
    assert_eq!(sent["model"], "up-mini");
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    );
    // The ledger has it, priced as any chat request.
    let row = &app.ledger().await[0];
    assert_eq!(
        (row.model.as_str(), row.prompt_tokens, row.completion_tokens),
        ("gpt-4o-mini", 1117, 46)
    );

    // The next turn names the previous response: lyss sends the conversation so far (the
    // instructions were that request's only).
    let id = first["id"].as_str().unwrap();
    assert!(id.starts_with("resp_"));
    let (status, second) = respond(
        &app,
        &app.key,
        json!({"model": "gpt-4o-mini", "input": "and again?", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["previous_response_id"], id);
    let sent = app.upstream_bodies().await.pop().unwrap();
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"},
               {"role": "user", "content": "and again?"}])
    );

    // Another user cannot continue it; a response not stored cannot be continued.
    let bob = app.key_for("bob", "team").await;
    let (status, err) = respond(
        &app,
        &bob,
        json!({"model": "gpt-4o-mini", "input": "x", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, 400);
    lyss_testkit::assert_openai_error(&err, "invalid_request_error", None);
    assert_eq!(err["error"]["param"], "previous_response_id");
    let (_, unstored) = respond(
        &app,
        &app.key,
        json!({"model": "gpt-4o-mini", "input": "hi", "store": false}),
    )
    .await;
    let (status, _) = respond(
        &app,
        &app.key,
        json!({"model": "gpt-4o-mini", "input": "x",
               "previous_response_id": unstored["id"]}),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_kept_response_is_read_back_and_deleted_by_its_user_only() {
    let app = TestApp::new().await;
    answering(&app).await;
    let (status, created) = respond(
        &app,
        &app.key,
        json!({"model": "gpt-4o-mini", "input": "hi"}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let url = format!(
        "{}/v1/responses/{}",
        app.base,
        created["id"].as_str().unwrap()
    );
    let get = |key: &str| app.client.get(&url).bearer_auth(key.to_owned()).send();
    // Read back exactly as it was returned.
    let resp = get(&app.key).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), created);
    // Another user's is not there, to read or to delete; without a key, 401.
    let bob = app.key_for("bob", "team").await;
    let resp = get(&bob).await.unwrap();
    assert_eq!(resp.status(), 404);
    let err: Value = resp.json().await.unwrap();
    lyss_testkit::assert_openai_error(&err, "invalid_request_error", Some("not_found"));
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Response with id")
    );
    let resp = app
        .client
        .delete(&url)
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 401);
    // Deleted by its user: gone, and no longer a previous_response_id.
    let resp = app
        .client
        .delete(&url)
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let deleted: Value = resp.json().await.unwrap();
    assert_eq!(
        (&deleted["id"], &deleted["deleted"]),
        (&created["id"], &json!(true))
    );
    assert_eq!(get(&app.key).await.unwrap().status(), 404);
    let (status, _) = respond(
        &app,
        &app.key,
        json!({"model": "gpt-4o-mini", "input": "x", "previous_response_id": created["id"]}),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_streamed_response_is_events_and_is_kept() {
    let app = TestApp::new().await;
    mount_sse(
        &app.upstream,
        "/v1/chat/completions",
        sse("up-mini", &["Hel", "lo"], true),
    )
    .await;
    let resp = app
        .post("/v1/responses")
        .json(&json!({"model": "gpt-4o-mini", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let events = lyss_testkit::sse::events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "Hello");
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(done["usage"]["output_tokens"], 12);
    // The upstream was asked for usage; the ledger has the stream's.
    let sent = app.upstream_bodies().await.pop().unwrap();
    assert_eq!(sent["stream"], true);
    let row = &app.ledger().await[0];
    assert!(row.stream);
    assert_eq!((row.prompt_tokens, row.completion_tokens), (9, 12));

    // And the streamed conversation continues like any other.
    app.upstream.reset().await;
    answering(&app).await;
    let (status, next) = respond(
        &app,
        &app.key,
        json!({"model": "gpt-4o-mini", "input": "more", "previous_response_id": done["id"]}),
    )
    .await;
    assert_eq!(status, 200, "{next}");
    let sent = app.upstream_bodies().await.pop().unwrap();
    assert_eq!(
        sent["messages"][1],
        json!({"role": "assistant", "content": "Hello"})
    );
}

#[tokio::test]
async fn governance_refuses_in_openais_shape() {
    let app = TestApp::new().await;
    answering(&app).await;
    token_budget(&app, Scope::User, "ann", 5).await;
    // gpt-4o exists but is not on the workspace's allow-list.
    let (status, err) = respond(&app, &app.key, json!({"model": "gpt-4o", "input": "hi"})).await;
    assert_eq!(status, 404);
    lyss_testkit::assert_openai_error(&err, "invalid_request_error", Some("model_not_found"));
    // A budget that cannot admit the request: refused, nothing sent.
    let (status, err) = respond(
        &app,
        &app.key,
        json!({"model": "gpt-4o-mini", "input": "hi"}),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(err["error"]["code"], "insufficient_quota");
    // Bad input is a 400 that names the field.
    let (status, err) = respond(
        &app,
        &app.key,
        json!({"model": "gpt-4o-mini", "input": "hi", "tools": [{"type": "teleport"}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["param"], "tools");
    assert!(app.upstream_bodies().await.is_empty());
    // No key, no answer.
    let resp = app
        .client
        .post(format!("{}/v1/responses", app.base))
        .json(&json!({"model": "gpt-4o-mini", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn a_response_reaches_an_anthropic_upstream_translated() {
    let app = TestApp::with(|c| c.providers[0].kind = ProviderKind::Anthropic).await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "up-mini",
            "content": [{"type": "text", "text": "Bonjour !"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 4}
        })))
        .mount(&app.upstream)
        .await;
    let (status, r) = respond(
        &app,
        &app.key,
        json!({"model": "gpt-4o-mini", "instructions": "Answer in French.", "input": "Hello",
               "max_output_tokens": 64}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["output"][0]["content"][0]["text"], "Bonjour !");
    assert_eq!(r["usage"]["input_tokens"], 12);
    let sent = app.upstream_bodies().await.pop().unwrap();
    assert_eq!(sent["system"], "Answer in French.");
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(sent["messages"][0]["content"][0]["text"], "Hello");
}

#[tokio::test]
async fn web_search_goes_to_an_openai_upstreams_responses_api_and_is_never_cached() {
    let app = TestApp::with(|c| {
        c.cache.mode = lyss_core::config::CacheMode::Exact;
        // An upstream with a Responses API (OpenAI's own, or one configured so).
        c.providers[0].responses_models = Some(vec!["up-pro".into()]);
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "resp_up", "object": "response", "created_at": 1, "status": "completed",
            "model": "up-mini", "incomplete_details": null,
            "output": [
                {"type": "web_search_call", "id": "ws_1", "status": "completed"},
                {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "It rained in Lyon today.",
                              "annotations": [{"type": "url_citation", "url": "https://meteo.example"}]}]}],
            "usage": {"input_tokens": 300, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": 309}
        })))
        .mount(&app.upstream)
        .await;
    let ask = json!({"model": "gpt-4o-mini", "input": "Weather in Lyon today?",
                     "tools": [{"type": "web_search"}]});
    for _ in 0..2 {
        let (status, r) = respond(&app, &app.key, ask.clone()).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(
            r["output"][0]["content"][0]["text"],
            "It rained in Lyon today."
        );
    }
    // Both went upstream (a search is never answered from the cache), with the tool.
    let sent = app.upstream_bodies().await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["tools"], json!([{"type": "web_search"}]));
    assert_eq!(sent[0]["model"], "up-mini");
    assert_eq!(app.ledger().await[0].prompt_tokens, 300);
}

#[tokio::test]
async fn web_search_behind_a_chat_only_upstream_is_answered_without_it_and_said_so() {
    let app = TestApp::new().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(completion("up-mini", "No search here.")),
        )
        .mount(&app.upstream)
        .await;
    let ask = json!({"model": "gpt-4o-mini", "input": "Weather in Lyon today?",
                     "tools": [{"type": "web_search"}, {"type": "tool_search"}]});
    let resp = app.post("/v1/responses").json(&ask).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-lyss-dropped"],
        "tools[tool_search], tools[web_search]"
    );
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["output"][0]["content"][0]["text"], "No search here.");
    let sent = app.upstream_bodies().await.pop().unwrap();
    assert!(sent.get("tools").is_none(), "{sent}");
    assert_eq!(app.ledger().await[0].endpoint, "responses");

    // Configured to refuse: a 400 that names the tool.
    let strict =
        TestApp::with(|c| c.router.builtin_tools = lyss_core::config::BuiltinTools::Refuse).await;
    let (status, err) = respond(&strict, &strict.key, ask).await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("web_search")
    );
}

/// Codex CLI's default request (streamed, its tools as `additional_tools` namespaces holding
/// function and custom tools, `reasoning.context`, `text.verbosity`) completes a tool call
/// behind an Anthropic and a Gemini upstream: the namespaced tools are offered by their chat
/// names, the call comes back as a `function_call` with its namespace, and what neither
/// upstream can carry is named in `x-lyss-dropped`.
#[tokio::test]
async fn codex_default_request_completes_its_tool_call_behind_anthropic_and_gemini_upstreams() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lyss-core/tests/fixtures/clients/codex-0.171-default-responses.json");
    let mut codex: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    // The one change a user makes: a model the key may use.
    codex["model"] = json!("gpt-4o-mini");
    let anthropic = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"up-mini","stop_sequence":null,"usage":{"input_tokens":900,"output_tokens":1},"content":[],"stop_reason":null}}"#,
        "\n\nevent: content_block_start\n",
        r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_01","name":"clock__sleep","input":{}}}"#,
        "\n\nevent: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"duration_ms\":"}}"#,
        "\n\nevent: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":" 10}"}}"#,
        "\n\nevent: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":0}"#,
        "\n\nevent: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":15}}"#,
        "\n\nevent: message_stop\n",
        r#"data: {"type":"message_stop"}"#,
        "\n\n"
    );
    let gemini = concat!(
        r#"data: {"candidates":[{"content":{"parts":[{"functionCall":{"name":"clock__sleep","args":{"duration_ms":10}}}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":900,"candidatesTokenCount":15,"totalTokenCount":915},"modelVersion":"up-mini"}"#,
        "\n\n"
    );
    for (kind, route, body) in [
        (ProviderKind::Anthropic, "/v1/messages", anthropic),
        (
            ProviderKind::Gemini,
            "/v1/models/up-mini:streamGenerateContent",
            gemini,
        ),
    ] {
        let app = TestApp::with(|c| c.providers[0].kind = kind).await;
        mount_sse(&app.upstream, route, body.to_owned()).await;
        let resp = app.post("/v1/responses").json(&codex).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{kind:?}");
        let dropped = resp.headers()["x-lyss-dropped"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(dropped.contains("reasoning.context"), "{kind:?}: {dropped}");
        let events = lyss_testkit::sse::events(&resp.text().await.unwrap());
        let (last, done) = events.last().unwrap();
        assert_eq!(last, "response.completed", "{kind:?}");
        let call = &done["response"]["output"][0];
        assert_eq!(call["type"], "function_call", "{kind:?}: {call}");
        assert_eq!(
            (&call["name"], &call["namespace"]),
            (&json!("sleep"), &json!("clock")),
            "{kind:?}"
        );
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"duration_ms": 10}), "{kind:?}");

        // The upstream was offered the namespaced tools by their chat names (`functions` is
        // Codex's own namespace, offered bare), Codex's custom `exec` among them.
        let sent = app.upstream_bodies().await.pop().unwrap();
        let names: Vec<&str> = match kind {
            ProviderKind::Anthropic => sent["tools"].as_array().unwrap().iter(),
            _ => sent["tools"][0]["functionDeclarations"]
                .as_array()
                .unwrap()
                .iter(),
        }
        .map(|t| t["name"].as_str().unwrap())
        .collect();
        for name in ["clock__sleep", "exec"] {
            assert!(names.contains(&name), "{kind:?}: {names:?}");
        }
        assert_eq!(app.ledger().await[0].endpoint, "responses", "{kind:?}");
    }
}
