use serde_json::{Value, json};

use super::*;
use crate::error::Error;
use crate::wire::*;

#[test]
fn a_messages_request_runs_as_a_chat_request() {
    let req: MessagesRequest = serde_json::from_value(json!({
        "model": "gpt-4o-mini", "max_tokens": 256, "stream": true, "temperature": 0.2,
        "stop_sequences": ["###"], "metadata": {"user_id": "end-user-1"},
        "system": [{"type": "text", "text": "You are terse."}],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "…", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "text", "text": "And tomorrow?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}}]}
        ]
    }))
    .unwrap();
    let c = serde_json::to_value(request_to_openai(req).unwrap().0).unwrap();
    assert_eq!(
        c,
        json!({
            "model": "gpt-4o-mini", "max_tokens": 256, "stream": true,
            "stream_options": {"include_usage": true}, "user": "end-user-1",
            "temperature": 0.2, "stop": ["###"], "parallel_tool_calls": false,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                       "parameters": {"type": "object"}}}],
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "Let me look.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "user", "content": [
                    {"type": "text", "text": "And tomorrow?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}]}
            ]
        })
    );
    let server_tool: MessagesRequest =
        serde_json::from_value(json!({"model": "m", "max_tokens": 1,
        "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}))
        .unwrap();
    assert!(matches!(
        request_to_openai(server_tool),
        Err(Error::InvalidRequest { .. })
    ));
}

#[test]
fn a_completion_goes_back_as_a_message() {
    let resp: ChatResponse = serde_json::from_value(json!({
        "id": "chatcmpl-abc", "object": "chat.completion", "created": 1, "model": "up",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Sure.",
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35,
                  "prompt_tokens_details": {"cached_tokens": 10}}
    }))
    .unwrap();
    let m = serde_json::to_value(response_from_openai(&resp, "claude-alias")).unwrap();
    assert_eq!(
        m,
        json!({"id": "msg_abc", "type": "message", "role": "assistant", "model": "claude-alias",
               "content": [{"type": "text", "text": "Sure."},
                           {"type": "tool_use", "id": "call_9", "name": "f", "input": {"a": 1}}],
               "stop_reason": "tool_use", "stop_sequence": null,
               "usage": {"input_tokens": 20, "output_tokens": 5, "cache_read_input_tokens": 10}})
    );
}

#[test]
fn openai_chunks_go_back_as_anthropic_events() {
    let chunk = |v: Value| -> ChatChunk { serde_json::from_value(v).unwrap() };
    let c = |delta: Value, finish: Value| {
        chunk(
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "up",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let mut s = StreamFromOpenAi::new("gpt-4o-mini");
    let mut all = Vec::new();
    for ch in [
        c(json!({"role": "assistant", "content": ""}), Value::Null),
        c(json!({"content": "Hi"}), Value::Null),
        c(json!({"content": " you"}), Value::Null),
        c(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
            Value::Null,
        ),
        c(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}),
            Value::Null,
        ),
        c(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            Value::Null,
        ),
        c(json!({}), json!("tool_calls")),
        chunk(
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "up", "choices": [],
                     "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}),
        ),
    ] {
        all.extend(s.on_chunk(&ch));
    }
    all.extend(s.finish());
    let names: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(all[0].1["message"]["id"], "msg_1");
    assert_eq!(all[0].1["message"]["model"], "gpt-4o-mini");
    assert_eq!(
        all[2].1["delta"],
        json!({"type": "text_delta", "text": "Hi"})
    );
    assert_eq!(
        all[5].1["content_block"],
        json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {}})
    );
    assert_eq!(all[5].1["index"], 1);
    assert_eq!(all[7].1["delta"]["partial_json"], "1}");
    assert_eq!(
        all[9].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"input_tokens": 9, "output_tokens": 4}})
    );
}

/// Found by fuzzing: counts whose sum overflows saturate (and so cost the most there is)
/// instead of wrapping to a handful of tokens that would be all the ledger charged.

#[test]
fn claude_codes_default_request_runs_with_its_system_turn_in_place_and_says_what_it_dropped() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clients/claude-code-2.1.332-default-messages.json");
    let req: MessagesRequest =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let tools = req.tools.as_ref().unwrap().len();
    let (chat, dropped) = request_to_openai(req).unwrap();
    // The system prompt, then the user's turn and the system entry after it, where it was.
    let roles: Vec<Role> = chat.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::User, Role::System]);
    assert!(
        chat.messages[2]
            .content
            .as_ref()
            .unwrap()
            .text()
            .starts_with("# Environment")
    );
    assert_eq!(chat.tools.as_ref().unwrap().len(), tools);
    // Adaptive thinking at medium effort: the chat API's reasoning effort.
    assert_eq!(chat.extra["reasoning_effort"], "medium");
    assert_eq!(chat.max_tokens, Some(128_000));
    // What has no place upstream is named, not dropped silently.
    assert!(
        dropped.contains(&"context_management".to_owned()),
        "{dropped:?}"
    );
    assert!(
        dropped.contains(&"tools[].defer_loading".to_owned()),
        "{dropped:?}"
    );
    assert!(
        !dropped
            .iter()
            .any(|d| d == "thinking" || d == "output_config")
    );
}

#[test]
fn message_start_reports_the_prompt_lyss_counted() {
    let mut s = StreamFromOpenAi::new("claude-x").input_tokens(1_234);
    let chunk: ChatChunk = serde_json::from_value(json!({
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": null}]
    }))
    .unwrap();
    let events = s.on_chunk(&chunk);
    assert_eq!(events[0].0, "message_start");
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 1_234);
}
