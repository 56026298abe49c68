use serde_json::{Value, json};

use super::answer::*;
use super::outbound::*;
use super::wire::*;
use crate::error::Error;
use crate::wire::*;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/anthropic/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// (event, data) pairs of an SSE text.
fn events(sse: &str) -> Vec<(String, String)> {
    sse.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut event = String::new();
            let mut data = String::new();
            for line in e.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v.to_owned();
                }
            }
            (event, data)
        })
        .collect()
}

fn chat(body: Value) -> ChatRequest {
    serde_json::from_value(body).unwrap()
}

#[test]
fn an_openai_request_becomes_a_messages_request() {
    let req = chat(json!({
        "model": "claude-sonnet-4-5", "temperature": 1.5, "stop": "END", "user": "u-7",
        "parallel_tool_calls": false, "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                   "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use tools."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image, and the weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Lyon\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "20C"},
            {"role": "user", "content": "Thanks"}
        ]
    }));
    let m = serde_json::to_value(request_from_openai(&req, 4096).unwrap()).unwrap();
    assert_eq!(
        m,
        json!({
            "model": "claude-sonnet-4-5", "max_tokens": 4096, "system": "Be brief.\n\nUse tools.",
            "stop_sequences": ["END"], "temperature": 1.0, "metadata": {"user_id": "u-7"},
            "tools": [{"name": "get_weather", "description": "Weather",
                       "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this image, and the weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"location": "Lyon"}}]},
                // Tool results and the next user text are one user turn (turns alternate).
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "20C"},
                    {"type": "text", "text": "Thanks"}]}
            ]
        })
    );
    let capped = chat(json!({"model": "m", "max_completion_tokens": 50,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]}]}));
    let m = serde_json::to_value(request_from_openai(&capped, 4096).unwrap()).unwrap();
    assert_eq!(m["max_tokens"], 50);
    assert_eq!(
        m["messages"][0]["content"][0]["source"],
        json!({"type": "url", "url": "https://x/cat.png"})
    );
    let audio = chat(
        json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}),
    );
    assert!(matches!(
        request_from_openai(&audio, 10),
        Err(Error::InvalidRequest { .. })
    ));
}

#[test]
fn a_messages_answer_becomes_a_completion_with_tool_calls_and_cache_usage() {
    let resp: MessagesResponse = serde_json::from_str(&fixture("tool_use.json")).unwrap();
    let c = response_to_openai(resp, 7);
    let m = &c.choices[0].message;
    assert_eq!(
        m.content,
        Some(Content::Text("I'll check the weather.".into()))
    );
    let call = &m.tool_calls.as_ref().unwrap()[0];
    assert_eq!(call.id.as_deref(), Some("toolu_01A09q90qw90lq917835lq9"));
    let f = call.function.as_ref().unwrap();
    assert_eq!(f.name.as_deref(), Some("get_weather"));
    let args: Value = serde_json::from_str(f.arguments.as_deref().unwrap()).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(c.choices[0].finish_reason.as_deref(), Some("tool_calls"));
    let u = c.usage.unwrap();
    // Anthropic's input excludes cache writes and reads; OpenAI's prompt includes them.
    assert_eq!((u.prompt_tokens, u.completion_tokens), (2095 + 2051, 503));
    assert_eq!(u.cached_tokens(), 0);
    assert_eq!(
        u.prompt_tokens_details.unwrap().extra["cache_creation_tokens"],
        2051
    );
}

/// Feeds a recorded stream through the translator: (text, tool calls, finishes, usage, done).
fn run_stream(
    sse: &str,
    include_usage: bool,
) -> (String, Vec<ToolCall>, Vec<String>, Option<Usage>, bool) {
    let mut t = StreamToOpenAi::new(1, include_usage);
    let (mut text, mut calls, mut finishes, mut usage, mut done) = (
        String::new(),
        Vec::<ToolCall>::new(),
        Vec::new(),
        None,
        false,
    );
    for (event, data) in events(sse) {
        assert!(!done, "nothing after message_stop");
        let (chunks, d) = t.on_event(&event, &data).unwrap();
        done = d;
        for c in chunks {
            assert_eq!(c.object, "chat.completion.chunk");
            usage = usage.or(c.usage.clone());
            for choice in &c.choices {
                text.push_str(choice.delta.content.as_deref().unwrap_or(""));
                finishes.extend(choice.finish_reason.clone());
                for call in choice.delta.tool_calls.iter().flatten() {
                    let i = call.index.unwrap() as usize;
                    if i == calls.len() {
                        calls.push(call.clone());
                    } else {
                        let f = calls[i].function.as_mut().unwrap();
                        let args = f.arguments.get_or_insert_with(String::new);
                        args.push_str(
                            call.function
                                .as_ref()
                                .unwrap()
                                .arguments
                                .as_deref()
                                .unwrap_or(""),
                        );
                    }
                }
            }
        }
    }
    (text, calls, finishes, usage, done)
}

#[test]
fn an_anthropic_stream_becomes_openai_chunks_with_usage() {
    let (text, calls, finishes, usage, done) = run_stream(&fixture("text.sse"), true);
    assert_eq!(text, "Hello there!");
    assert!(calls.is_empty());
    assert_eq!(finishes, ["stop"]);
    assert!(done);
    let u = usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.cached_tokens()),
        (125, 15, 100)
    );
    let (_, _, _, usage, _) = run_stream(&fixture("text.sse"), false);
    assert!(usage.is_none(), "usage only when asked");
}

#[test]
fn streamed_tool_use_arrives_as_one_tool_call() {
    let (text, calls, finishes, _, _) = run_stream(&fixture("tool_use.sse"), true);
    assert_eq!(text, "Okay, let me check the weather.");
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].id.as_deref(),
        Some("toolu_01T1x1fJ34qAmk2tNTrN7Up6")
    );
    let f = calls[0].function.as_ref().unwrap();
    assert_eq!(f.name.as_deref(), Some("get_weather"));
    let args: Value = serde_json::from_str(f.arguments.as_deref().unwrap()).unwrap();
    assert_eq!(args, json!({"location": "San Francisco, CA"}));
    assert_eq!(finishes, ["tool_calls"]);
}

#[test]
fn an_error_event_mid_stream_is_an_error() {
    let mut t = StreamToOpenAi::new(1, false);
    let mut failed = None;
    for (event, data) in events(&fixture("overloaded_midstream.sse")) {
        if let Err(e) = t.on_event(&event, &data) {
            failed = Some(e.to_string());
            break;
        }
    }
    assert!(failed.unwrap().contains("Overloaded"));
}

#[test]
fn usage_that_overflows_saturates_rather_than_wrapping() {
    let usage = usage_to_openai(&AnthropicUsage {
        input_tokens: u64::MAX,
        output_tokens: 7,
        cache_creation_input_tokens: Some(3),
        cache_read_input_tokens: Some(5),
    });
    assert_eq!(usage.prompt_tokens, u64::MAX);
    assert_eq!(usage.total_tokens, u64::MAX);
    let price = crate::price::Price::per_mtok(1.0, 1.0, 0.1);
    assert_eq!(price.cost(&usage), i64::MAX);
}

#[test]
fn injected_instructions_stay_in_place_and_the_breakpoint_goes_before_them() {
    let system = "Answer as the shop's assistant. ".repeat(200);
    let history = "The chain skips on the smallest sprocket. ".repeat(10);
    let req = chat(json!({"model": "m", "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": history},
        {"role": "assistant", "content": "Is it an old chain?"},
        // Injected context (lyss's memory block, a user message), then the question.
        {"role": "user", "content": "What you know about the user: rides a Gazelle."},
        {"role": "user", "content": "Which chain fits?"}
    ]}));
    let mut body = request_from_openai(&req, 100).unwrap();
    // The injected context is text of the user turn it falls in, not `system`.
    assert_eq!(
        serde_json::to_value(&body.system).unwrap(),
        json!(system.clone())
    );
    let last = serde_json::to_value(&body.messages[2]).unwrap();
    assert_eq!(
        last,
        json!({"role": "user", "content": [
            {"type": "text", "text": "What you know about the user: rides a Gazelle."},
            {"type": "text", "text": "Which chain fits?"}]})
    );
    mark_cache_breakpoints(&req, &mut body);
    let v = serde_json::to_value(&body).unwrap();
    assert_eq!(
        v["system"],
        json!([{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}])
    );
    // The stable part ends with the answer before the injected context; the turn before it
    // is marked too (another question on the same history reads it).
    for i in [0, 1] {
        assert_eq!(
            v["messages"][i]["content"][0]["cache_control"],
            json!({"type": "ephemeral"}),
            "{i}"
        );
    }
    assert!(!v["messages"][2].to_string().contains("cache_control"));

    // Without injected context the whole prompt is the stable part.
    let plain = chat(json!({"model": "m", "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": "Which chain fits?"}
    ]}));
    let mut body = request_from_openai(&plain, 100).unwrap();
    mark_cache_breakpoints(&plain, &mut body);
    let v = serde_json::to_value(&body).unwrap();
    assert_eq!(
        v["messages"][0]["content"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
}
