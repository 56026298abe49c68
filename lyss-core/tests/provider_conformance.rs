//! The `Provider` conformance suite: the contract on the trait (`provider/mod.rs`), checked
//! for every vendor over a fake upstream speaking that vendor's wire format — a chat answer
//! with its usage, a stream with its usage, errors with the vendor's message and
//! `Retry-After` (before a stream starts too), embeddings (or a clear refusal where the vendor
//! has none) and the model list. Each kind states its wire once ([`wire`]); the checks are
//! written once ([`conforms`]) and run for every kind in the registry.
//! Vendor-specific translation (tools, images, breakpoints) is tested in `providers.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use lyss_core::Error;
use lyss_core::config::{ProviderConfig, ProviderKind, Secret};
use lyss_core::provider::Provider;
use lyss_core::wire::{ChatRequest, EmbeddingVector, EmbeddingsRequest};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// How one vendor spells a short conversation on the wire: the answer "Hello." to an 11-token
/// prompt in 3 tokens, streamed as "Hel" + "lo.", a 429 "Slow down", an embedding
/// `[0.5, 0.25]` and the models `m-1` and `m-2`.
struct Wire {
    kind: ProviderKind,
    /// `base_url`, after the fake's address.
    base: &'static str,
    /// The header that carries the key, and its value for the key `secret-key`.
    auth: (&'static str, &'static str),
    chat: (&'static str, Value),
    stream: (&'static str, String),
    error: Value,
    /// `None`: the vendor has no embeddings API.
    embeddings: Option<(&'static str, Value)>,
    models: (&'static str, Value),
}

/// Server-sent events: `(event name, data)`; a `None` name for data-only streams.
fn sse(events: &[(Option<&str>, Value)], done: bool) -> String {
    let mut out = String::new();
    for (name, data) in events {
        if let Some(n) = name {
            out.push_str(&format!("event: {n}\n"));
        }
        out.push_str(&format!("data: {data}\n\n"));
    }
    if done {
        out.push_str("data: [DONE]\n\n");
    }
    out
}

fn openai_chunk(delta: Value, finish: Value) -> (Option<&'static str>, Value) {
    (
        None,
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
               "model": "up-model",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
    )
}

/// OpenAI's shapes, under `prefix` (OpenAI's paths, or an Azure deployment's).
fn openai_shaped(kind: ProviderKind, base: &'static str, chat: &'static str) -> Wire {
    let (auth, embeddings, models) = match kind {
        ProviderKind::Azure => (
            ("api-key", "secret-key"),
            "/openai/deployments/up-model/embeddings",
            "/openai/models",
        ),
        _ => (
            ("authorization", "Bearer secret-key"),
            "/v1/embeddings",
            "/v1/models",
        ),
    };
    let usage = json!({"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14});
    let mut events = vec![
        openai_chunk(json!({"role": "assistant", "content": "Hel"}), Value::Null),
        openai_chunk(json!({"content": "lo."}), Value::Null),
        openai_chunk(json!({}), json!("stop")),
    ];
    events.push((
        None,
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
               "model": "up-model", "choices": [], "usage": usage}),
    ));
    Wire {
        kind,
        base,
        auth,
        chat: (
            chat,
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                   "model": "up-model",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."},
                                "finish_reason": "stop"}],
                   "usage": usage}),
        ),
        stream: (chat, sse(&events, true)),
        error: json!({"error": {"message": "Slow down", "type": "requests", "param": null,
                                "code": "rate_limit_exceeded"}}),
        embeddings: Some((
            embeddings,
            json!({"object": "list", "model": "up-model",
                   "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
                   "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
        )),
        models: (
            models,
            json!({"object": "list", "data": [
                {"id": "m-1", "object": "model", "created": 1, "owned_by": "x"},
                {"id": "m-2", "object": "model", "created": 1, "owned_by": "x"}]}),
        ),
    }
}

fn anthropic() -> Wire {
    let text_delta = |t: &str| {
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": t}}),
        )
    };
    let events = [
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
                   "role": "assistant", "content": [], "model": "up-model", "stop_reason": null,
                   "stop_sequence": null, "usage": {"input_tokens": 11, "output_tokens": 1}}}),
        ),
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        ),
        text_delta("Hel"),
        text_delta("lo."),
        (
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            Some("message_delta"),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                   "stop_sequence": null}, "usage": {"output_tokens": 3}}),
        ),
        (Some("message_stop"), json!({"type": "message_stop"})),
    ];
    Wire {
        kind: ProviderKind::Anthropic,
        base: "/v1",
        auth: ("x-api-key", "secret-key"),
        chat: (
            "/v1/messages",
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "up-model",
                   "content": [{"type": "text", "text": "Hello."}], "stop_reason": "end_turn",
                   "stop_sequence": null, "usage": {"input_tokens": 11, "output_tokens": 3}}),
        ),
        stream: ("/v1/messages", sse(&events, false)),
        error: json!({"type": "error",
                      "error": {"type": "rate_limit_error", "message": "Slow down"}}),
        embeddings: None,
        models: (
            "/v1/models",
            json!({"data": [
                {"type": "model", "id": "m-1", "display_name": "M 1", "created_at": "2025-01-01T00:00:00Z"},
                {"type": "model", "id": "m-2", "display_name": "M 2", "created_at": "2025-01-01T00:00:00Z"}],
                "has_more": false, "first_id": "m-1", "last_id": "m-2"}),
        ),
    }
}

fn gemini() -> Wire {
    let part = |text: &str, finish: Option<&str>, out: u64| {
        let mut candidate = json!({"content": {"parts": [{"text": text}], "role": "model"},
                                   "index": 0});
        if let Some(f) = finish {
            candidate["finishReason"] = json!(f);
        }
        json!({"candidates": [candidate], "modelVersion": "up-model",
               "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": out,
                                 "totalTokenCount": 11 + out}})
    };
    Wire {
        kind: ProviderKind::Gemini,
        base: "/v1beta",
        auth: ("x-goog-api-key", "secret-key"),
        chat: (
            "/v1beta/models/up-model:generateContent",
            part("Hello.", Some("STOP"), 3),
        ),
        stream: (
            "/v1beta/models/up-model:streamGenerateContent",
            sse(
                &[
                    (None, part("Hel", None, 1)),
                    (None, part("lo.", Some("STOP"), 3)),
                ],
                false,
            ),
        ),
        error: json!({"error": {"code": 429, "message": "Slow down",
                                "status": "RESOURCE_EXHAUSTED"}}),
        embeddings: Some((
            "/v1beta/models/up-model:batchEmbedContents",
            json!({"embeddings": [{"values": [0.5, 0.25]}]}),
        )),
        models: (
            "/v1beta/models",
            json!({"models": [{"name": "models/m-1"}, {"name": "models/m-2"}]}),
        ),
    }
}

fn question(stream: bool) -> ChatRequest {
    serde_json::from_value(json!({"model": "up-model", "stream": stream,
        "stream_options": {"include_usage": true}, "max_tokens": 100,
        "messages": [{"role": "user", "content": "Say hello."}]}))
    .unwrap()
}

/// The checks every provider passes, against a fake upstream speaking `wire`.
async fn conforms(wire: Wire) {
    let vendor = wire.kind.as_str();
    let server = MockServer::start().await;
    let provider = wire
        .kind
        .build(&ProviderConfig {
            api_key: Some(Secret::new("secret-key")),
            api_version: Some("2024-10-21".into()),
            ..ProviderConfig::new("up", wire.kind, format!("{}{}", server.uri(), wire.base))
        })
        .unwrap();
    let (auth, key) = wire.auth;

    // A chat answer, translated, with the upstream's usage.
    Mock::given(method("POST"))
        .and(path(wire.chat.0))
        .and(header(auth, key))
        .respond_with(ResponseTemplate::new(200).set_body_json(&wire.chat.1))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let answer = provider.chat(&question(false)).await.unwrap();
    let choice = &answer.choices[0];
    assert_eq!(
        choice.message.content.as_ref().map(|c| c.text()).as_deref(),
        Some("Hello."),
        "{vendor}"
    );
    assert_eq!(choice.finish_reason.as_deref(), Some("stop"), "{vendor}");
    let usage = answer.usage.expect("usage");
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (11, 3),
        "{vendor}"
    );

    // A stream, chunk by chunk in order, ending with the usage chunk asked for.
    Mock::given(method("POST"))
        .and(path(wire.stream.0))
        .and(header(auth, key))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(wire.stream.1.clone()),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let mut stream = provider.chat_stream(&question(true)).await.unwrap();
    let (mut text, mut finish, mut usage) = (String::new(), Vec::new(), None);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap_or_else(|e| panic!("{vendor}: {e}"));
        for c in &chunk.choices {
            text.extend(c.delta.content.as_deref());
            finish.extend(c.finish_reason.clone());
        }
        usage = chunk.usage.or(usage);
    }
    assert_eq!(text, "Hello.", "{vendor}");
    assert_eq!(finish, ["stop"], "{vendor}");
    let usage = usage.expect("a usage chunk");
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (11, 3),
        "{vendor}"
    );

    // Errors: the status, the vendor's own message and its Retry-After — for a stream too,
    // returned by the call itself (nothing was streamed yet).
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "7")
                .set_body_json(&wire.error),
        )
        .mount(&server)
        .await;
    for stream in [false, true] {
        let refused = match stream {
            false => provider.chat(&question(false)).await.err(),
            true => provider.chat_stream(&question(true)).await.err(),
        };
        match refused {
            Some(Error::Upstream {
                status: 429,
                message,
                retry_after,
                ..
            }) => {
                assert!(message.contains("Slow down"), "{vendor}: {message}");
                assert_eq!(retry_after, Some(Duration::from_secs(7)), "{vendor}");
            }
            other => panic!("{vendor}, stream {stream}: {other:?}"),
        }
    }

    // Embeddings as floats, or a clear refusal where the vendor has none.
    server.reset().await;
    let embed: EmbeddingsRequest =
        serde_json::from_value(json!({"model": "up-model", "input": "hello"})).unwrap();
    match wire.embeddings {
        Some((at, body)) => {
            Mock::given(method("POST"))
                .and(path(at))
                .and(header(auth, key))
                .respond_with(ResponseTemplate::new(200).set_body_json(body))
                .mount(&server)
                .await;
            let out = provider.embeddings(&embed).await.unwrap();
            match &out.data[0].embedding {
                EmbeddingVector::Float(v) => assert_eq!(v, &[0.5, 0.25], "{vendor}"),
                other => panic!("{vendor}: {other:?}"),
            }
        }
        None => assert!(
            matches!(
                provider.embeddings(&embed).await,
                Err(Error::InvalidRequest { .. })
            ),
            "{vendor}"
        ),
    }

    // The model list, by id.
    Mock::given(method("GET"))
        .and(path(wire.models.0))
        .and(header(auth, key))
        .respond_with(ResponseTemplate::new(200).set_body_json(&wire.models.1))
        .mount(&server)
        .await;
    assert_eq!(
        provider.list_models().await.unwrap(),
        ["m-1", "m-2"],
        "{vendor}"
    );
}

/// Each kind's wire: a new vendor does not compile until it states its own.
fn wire(kind: ProviderKind) -> Wire {
    match kind {
        ProviderKind::Openai => openai_shaped(kind, "/v1", "/v1/chat/completions"),
        ProviderKind::Azure => {
            openai_shaped(kind, "", "/openai/deployments/up-model/chat/completions")
        }
        ProviderKind::Anthropic => anthropic(),
        ProviderKind::Gemini => gemini(),
    }
}

/// A provider of `kind` in front of a fake upstream that always answers as [`wire`] says (the
/// fake lives as long as the test process), for the trait's suite.
async fn fake(kind: ProviderKind) -> Option<Arc<dyn Provider>> {
    let wire = wire(kind);
    let server = MockServer::start().await;
    let (auth, key) = wire.auth;
    // A stream is told from a whole answer by its path, or where both share one by the body.
    let stream = Mock::given(method("POST"))
        .and(path(wire.stream.0))
        .and(header(auth, key));
    let stream = if wire.stream.0 == wire.chat.0 {
        stream.and(body_partial_json(json!({"stream": true})))
    } else {
        stream
    };
    stream
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(wire.stream.1.clone()),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(wire.chat.0))
        .and(header(auth, key))
        .respond_with(ResponseTemplate::new(200).set_body_json(&wire.chat.1))
        .mount(&server)
        .await;
    if let Some((at, body)) = &wire.embeddings {
        Mock::given(method("POST"))
            .and(path(*at))
            .and(header(auth, key))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path(wire.models.0))
        .and(header(auth, key))
        .respond_with(ResponseTemplate::new(200).set_body_json(&wire.models.1))
        .mount(&server)
        .await;
    let server: &'static MockServer = Box::leak(Box::new(server));
    let provider = kind
        .build(&ProviderConfig {
            api_key: Some(Secret::new("secret-key")),
            api_version: Some("2024-10-21".into()),
            ..ProviderConfig::new("up", kind, format!("{}{}", server.uri(), wire.base))
        })
        .unwrap();
    Some(provider)
}

/// The trait's suite, one named test per case, for each kind.
mod openai {
    lyss_core::provider_conformance!(super::fake(super::ProviderKind::Openai));
}
mod azure {
    lyss_core::provider_conformance!(super::fake(super::ProviderKind::Azure));
}
mod anthropic {
    lyss_core::provider_conformance!(super::fake(super::ProviderKind::Anthropic));
}
mod gemini {
    lyss_core::provider_conformance!(super::fake(super::ProviderKind::Gemini));
}

/// Every kind's wire: the status, message and `Retry-After` of its errors, and exact values.
#[tokio::test]
async fn every_kind_of_provider_conforms() {
    for kind in ProviderKind::ALL {
        conforms(wire(kind)).await;
    }
}
