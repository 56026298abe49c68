//! Each vendor's provider against a fake upstream speaking that vendor's real wire format
//! (recorded shapes in tests/fixtures): requests as the vendor expects them (paths, auth
//! headers, body), answers and streams translated to OpenAI's shapes with tool calls and
//! usage, and errors mapped with the vendor's message and `Retry-After`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt as _;
use lyss_core::config::{ProviderConfig, ProviderKind, Secret};
use lyss_core::provider::{AnthropicProvider, GeminiProvider, OpenAiProvider, Provider};
use lyss_core::wire::{ChatChunk, ChatRequest, EmbeddingsRequest};
use lyss_core::{Error, Result};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn fixture(vendor: &str, name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{vendor}/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn config(kind: ProviderKind, base_url: String) -> ProviderConfig {
    ProviderConfig {
        name: "up".into(),
        kind,
        base_url,
        api_key_env: None,
        api_key: Some(Secret::new("secret-key")),
        connect_timeout_secs: 2,
        timeout_secs: 5,
        discover_models: false,
        api_version: Some("2024-10-21".into()),
        prompt_cache: None,
        responses_models: None,
    }
}

fn chat(body: Value) -> ChatRequest {
    serde_json::from_value(body).unwrap()
}

fn sse(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "text/event-stream")
        .set_body_string(body)
}

/// Every chunk of a stream, and the error it ended with, if any.
async fn drain(p: &dyn Provider, req: &ChatRequest) -> (Vec<ChatChunk>, Option<Error>) {
    let mut s = p.chat_stream(req).await.unwrap();
    let mut chunks = Vec::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(c) => chunks.push(c),
            Err(e) => return (chunks, Some(e)),
        }
    }
    (chunks, None)
}

fn text(chunks: &[ChatChunk]) -> String {
    chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.delta.content.as_deref())
        .collect()
}

fn question(stream: bool) -> ChatRequest {
    chat(json!({"model": "up-model", "stream": stream,
                "stream_options": {"include_usage": true}, "max_tokens": 100,
                "messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Weather in SF?"}],
                "tools": [{"type": "function", "function": {"name": "get_weather",
                           "parameters": {"type": "object"}}}]}))
}

#[tokio::test]
async fn anthropic_answers_streams_and_errors() {
    let server = MockServer::start().await;
    let p = AnthropicProvider::from_config(&config(
        ProviderKind::Anthropic,
        format!("{}/v1", server.uri()),
    ))
    .unwrap();
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", "secret-key"))
        .and(header("anthropic-version", "2023-06-01"))
        .and(body_partial_json(json!({"model": "up-model", "max_tokens": 100,
            "system": "Be brief.", "messages": [{"role": "user"}],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}], "stream": true})))
        .respond_with(sse(fixture("anthropic", "tool_use.sse")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", "secret-key"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(fixture("anthropic", "tool_use.json")),
        )
        .mount(&server)
        .await;

    let answer = p.chat(&question(false)).await.unwrap();
    let sent: Value =
        serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
    assert!(sent.get("stream").is_none(), "{sent}");
    let call = &answer.choices[0].message.tool_calls.as_ref().unwrap()[0];
    assert_eq!(
        call.function.as_ref().unwrap().name.as_deref(),
        Some("get_weather")
    );
    assert_eq!(
        answer.choices[0].finish_reason.as_deref(),
        Some("tool_calls")
    );
    assert_eq!(answer.usage.unwrap().prompt_tokens, 2095 + 2051);

    let (chunks, err) = drain(&p, &question(true)).await;
    assert!(err.is_none());
    assert_eq!(text(&chunks), "Okay, let me check the weather.");
    let args: String = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .flat_map(|c| c.delta.tool_calls.iter().flatten())
        .filter_map(|t| t.function.as_ref()?.arguments.clone())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"location": "San Francisco, CA"})
    );
    let usage = chunks.last().unwrap().usage.as_ref().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (472, 89));

    // Errors: the vendor's message and Retry-After come through.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(529)
                .insert_header("retry-after", "7")
                .set_body_string(fixture("anthropic", "error_overloaded.json")),
        )
        .mount(&server)
        .await;
    match p.chat(&question(false)).await {
        Err(Error::Upstream {
            status,
            message,
            retry_after,
            ..
        }) => {
            assert_eq!((status, message.as_str()), (529, "Overloaded"));
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("{other:?}"),
    }
    // An error event mid-stream ends the stream with an error, after what came before.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(sse(fixture("anthropic", "overloaded_midstream.sse")))
        .mount(&server)
        .await;
    let (chunks, err) = drain(&p, &question(true)).await;
    assert_eq!(text(&chunks), "Partial");
    assert!(err.unwrap().to_string().contains("Overloaded"));
    assert!(matches!(
        p.embeddings(
            &serde_json::from_value::<EmbeddingsRequest>(json!({"model": "m", "input": "x"}))
                .unwrap()
        )
        .await,
        Err(Error::InvalidRequest { .. })
    ));
}

#[tokio::test]
async fn gemini_answers_streams_embeds_and_errors() {
    let server = MockServer::start().await;
    let p = GeminiProvider::from_config(&config(
        ProviderKind::Gemini,
        format!("{}/v1beta", server.uri()),
    ))
    .unwrap();
    Mock::given(method("POST"))
        .and(path("/v1beta/models/up-model:streamGenerateContent"))
        .and(query_param("alt", "sse"))
        .and(header("x-goog-api-key", "secret-key"))
        .and(body_partial_json(
            json!({"systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"role": "user", "parts": [{"text": "Weather in SF?"}]}],
            "generationConfig": {"maxOutputTokens": 100},
            "tools": [{"functionDeclarations": [{"name": "get_weather"}]}]}),
        ))
        .respond_with(sse(fixture("gemini", "text.sse")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/up-model:generateContent"))
        .and(header("x-goog-api-key", "secret-key"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(fixture("gemini", "function_call.json")),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/embed-model:batchEmbedContents"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}]}),
            ),
        )
        .mount(&server)
        .await;

    let answer = p.chat(&question(false)).await.unwrap();
    let call = &answer.choices[0].message.tool_calls.as_ref().unwrap()[0];
    let f = call.function.as_ref().unwrap();
    assert_eq!(f.name.as_deref(), Some("get_weather"));
    assert_eq!(
        serde_json::from_str::<Value>(f.arguments.as_deref().unwrap()).unwrap(),
        json!({"location": "Paris"})
    );
    assert_eq!(
        answer.choices[0].finish_reason.as_deref(),
        Some("tool_calls")
    );
    let u = answer.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.cached_tokens()),
        (55, 6, 10)
    );

    let (chunks, err) = drain(&p, &question(true)).await;
    assert!(err.is_none());
    assert_eq!(text(&chunks), "Hello there! How can I help?");
    let finish: Vec<_> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.finish_reason.clone())
        .collect();
    assert_eq!(finish, ["stop"]);
    let usage = chunks.last().unwrap().usage.as_ref().unwrap();
    // Thinking tokens are billed as output.
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (9, 8 + 24));

    let emb: EmbeddingsRequest =
        serde_json::from_value(json!({"model": "embed-model", "input": ["a", "b"]})).unwrap();
    let out = p.embeddings(&emb).await.unwrap();
    assert_eq!(out.data.len(), 2);

    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429).set_body_string(fixture("gemini", "error_429.json")),
        )
        .mount(&server)
        .await;
    match p.chat(&question(false)).await {
        Err(Error::Upstream {
            status: 429,
            message,
            ..
        }) => {
            assert!(
                message.starts_with("Resource has been exhausted"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn azure_uses_deployments_api_version_and_its_key_header() {
    let server = MockServer::start().await;
    let p = OpenAiProvider::from_config(&config(ProviderKind::Azure, server.uri())).unwrap();
    let completion = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}});
    Mock::given(method("POST"))
        .and(path("/openai/deployments/up-model/chat/completions"))
        .and(query_param("api-version", "2024-10-21"))
        .and(header("api-key", "secret-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion))
        .mount(&server)
        .await;
    let answer: Result<_> = p.chat(&question(false)).await;
    assert_eq!(
        answer.unwrap().choices[0]
            .message
            .content
            .as_ref()
            .unwrap()
            .text(),
        "Hi"
    );
    let sent = &server.received_requests().await.unwrap()[0];
    assert!(
        sent.headers.get("authorization").is_none(),
        "no bearer for Azure"
    );

    let mut no_version = config(ProviderKind::Azure, server.uri());
    no_version.api_version = None;
    assert!(matches!(
        OpenAiProvider::from_config(&no_version),
        Err(Error::Config(_))
    ));
}

/// OpenAI's Responses API event stream for a text answer and a function call, as the API sends
/// it (trimmed to the fields a client reads).
fn responses_sse() -> String {
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": "resp_1", "object": "response", "created_at": 1741476777, "status": status,
               "model": "gpt-5-pro", "output": output, "usage": usage, "incomplete_details": null})
    };
    let call = json!({"type": "function_call", "id": "fc_1", "call_id": "call_7",
                      "name": "get_weather", "arguments": "", "status": "in_progress"});
    let events = [
        (
            "response.created",
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        ),
        (
            "response.in_progress",
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        ),
        (
            "response.output_item.added",
            json!({"output_index": 0, "item": {"type": "message",
            "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}}),
        ),
        (
            "response.content_part.added",
            json!({"item_id": "msg_1", "output_index": 0,
            "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        ),
        (
            "response.output_text.delta",
            json!({"item_id": "msg_1", "output_index": 0,
            "content_index": 0, "delta": "Check"}),
        ),
        (
            "response.output_text.delta",
            json!({"item_id": "msg_1", "output_index": 0,
            "content_index": 0, "delta": "ing."}),
        ),
        (
            "response.output_item.added",
            json!({"output_index": 1, "item": call}),
        ),
        (
            "response.function_call_arguments.delta",
            json!({"item_id": "fc_1", "output_index": 1,
            "delta": "{\"location\":"}),
        ),
        (
            "response.function_call_arguments.delta",
            json!({"item_id": "fc_1", "output_index": 1,
            "delta": "\"Paris\"}"}),
        ),
        (
            "response.completed",
            json!({"response": response("completed", json!([]),
            json!({"input_tokens": 40, "input_tokens_details": {"cached_tokens": 32},
                   "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 12},
                   "total_tokens": 60}))}),
        ),
    ];
    events
        .iter()
        .enumerate()
        .map(|(i, (kind, data))| {
            let mut data = data.clone();
            data["type"] = json!(kind);
            data["sequence_number"] = json!(i);
            format!("event: {kind}\ndata: {data}\n\n")
        })
        .collect()
}

#[tokio::test]
async fn openai_serves_responses_only_models_through_its_responses_api() {
    let server = MockServer::start().await;
    let mut cfg = config(ProviderKind::Openai, format!("{}/v1", server.uri()));
    cfg.responses_models = Some(vec!["gpt-5-pro".into()]);
    let p = OpenAiProvider::from_config(&cfg).unwrap();
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .and(header("authorization", "Bearer secret-key"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(sse(responses_sse()))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "resp_2", "object": "response", "created_at": 1741476777, "status": "completed",
            "model": "gpt-5-pro", "incomplete_details": null,
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "id": "msg_2", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Sunny.", "annotations": []}]}],
            "usage": {"input_tokens": 40, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 25},
                      "total_tokens": 70}
        })))
        .mount(&server)
        .await;

    let mut q = question(false);
    q.model = "gpt-5-pro".into();
    let answer = p.chat(&q).await.unwrap();
    assert_eq!(
        answer.choices[0].message.content.as_ref().unwrap().text(),
        "Sunny."
    );
    assert_eq!(answer.choices[0].finish_reason.as_deref(), Some("stop"));
    let usage = answer.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (40, 30));
    // The request went out in the Responses shape: instructions, input items, function tools.
    let sent: Value =
        serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(
        sent,
        json!({"model": "gpt-5-pro", "store": false, "instructions": "Be brief.",
               "max_output_tokens": 100,
               "input": [{"role": "user", "content": [{"type": "input_text", "text": "Weather in SF?"}]}],
               "tools": [{"type": "function", "name": "get_weather", "description": null,
                          "parameters": {"type": "object"}, "strict": false}]})
    );

    let mut q = question(true);
    q.model = "gpt-5-pro".into();
    let (chunks, err) = drain(&p, &q).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text(&chunks), "Checking.");
    let calls: Vec<_> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .flat_map(|c| c.delta.tool_calls.iter().flatten())
        .collect();
    assert_eq!(calls[0].id.as_deref(), Some("call_7"));
    let args: String = calls
        .iter()
        .filter_map(|t| t.function.as_ref()?.arguments.clone())
        .collect();
    assert_eq!(args, "{\"location\":\"Paris\"}");
    let finish = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .find_map(|c| c.finish_reason.clone());
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    let usage = chunks.last().unwrap().usage.as_ref().unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens()
        ),
        (40, 20, 32)
    );

    // Other models keep chat completions.
    server.reset().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "c", "object":
            "chat.completion", "created": 1, "model": "up-model", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]})),
        )
        .mount(&server)
        .await;
    assert!(p.chat(&question(false)).await.is_ok());
}
