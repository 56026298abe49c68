//! OpenAI's chat wire as a fake upstream speaks it: a whole answer, stream chunks, an SSE body.

use serde_json::{Value, json};
use wiremock::MockServer;

/// An OpenAI `chat.completion` as the real API sends it.
pub fn completion(model: &str, text: &str) -> Value {
    json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        },
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306"
    })
}

/// One `chat.completion.chunk` of `model` with this delta and finish reason (`null` for none).
pub fn chunk(model: &str, delta: Value, finish: Value) -> Value {
    json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
           "model": model, "system_fingerprint": "fp_44709d6fcb",
           "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
           "usage": null})
}

/// The last chunk of a stream asked for with `stream_options.include_usage`: no choices, the
/// usage.
pub fn usage_chunk(model: &str, usage: Value) -> Value {
    json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
           "model": model, "system_fingerprint": "fp_44709d6fcb", "choices": [], "usage": usage})
}

/// An OpenAI SSE stream: role chunk, content chunks, finish chunk, usage chunk, `[DONE]`.
pub fn sse(model: &str, parts: &[&str], usage: bool) -> String {
    sse_with_usage(model, parts, usage.then_some((9, 12)))
}

/// [`sse`] whose usage chunk reports `(prompt, completion)` tokens.
pub fn sse_with_usage(model: &str, parts: &[&str], usage: Option<(u64, u64)>) -> String {
    let mut out = String::new();
    let mut push = |v: Value| out.push_str(&format!("data: {v}\n\n"));
    push(chunk(
        model,
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    ));
    for p in parts {
        push(chunk(model, json!({"content": p}), Value::Null));
    }
    push(chunk(model, json!({}), json!("stop")));
    if let Some((prompt, completion)) = usage {
        push(usage_chunk(
            model,
            json!({"prompt_tokens": prompt, "completion_tokens": completion,
                   "total_tokens": prompt + completion}),
        ));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

/// Answers every POST to `path` with `body` as a server-sent-event stream.
pub async fn mount_sse(upstream: &MockServer, path: &str, body: String) {
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path(path))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(body),
        )
        .mount(upstream)
        .await;
}
