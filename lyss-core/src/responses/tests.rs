use serde_json::json;

use super::*;
use crate::openai::{ChunkChoice, Delta};
use crate::provider::openai::responses::{chat_from_response, request_from_chat};

fn request(body: Value) -> ResponsesRequest {
    serde_json::from_value(body).unwrap()
}

#[test]
fn a_responses_request_becomes_a_chat_request() {
    let req = request(json!({
        "model": "gpt-4o-mini", "instructions": "Be brief.", "max_output_tokens": 50,
        "temperature": 0.2, "reasoning": {"effort": "low"}, "user": "u-1",
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather",
                   "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"},
                {"type": "input_image", "image_url": "https://x/paris.png"}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
            {"type": "reasoning", "id": "rs_1", "summary": []}
        ]
    }));
    let history = vec![
        Message::text(Role::User, "Hi"),
        Message::text(Role::Assistant, "Hello!"),
    ];
    let chat = serde_json::to_value(to_chat(&req, history).unwrap()).unwrap();
    assert_eq!(
        chat,
        json!({
            "model": "gpt-4o-mini", "max_completion_tokens": 50, "user": "u-1",
            "temperature": 0.2, "reasoning_effort": "low",
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "description": "Weather", "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"},
                    {"type": "image_url", "image_url": {"url": "https://x/paris.png"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "content": "18C", "tool_call_id": "call_1"}
            ]
        })
    );
    // Web search is kept aside for an OpenAI upstream's Responses API, which sends it on.
    let searching = request(json!({"model": "m", "input": "News?",
        "tools": [{"type": "web_search", "search_context_size": "low"}]}));
    let chat = to_chat(&searching, Vec::new()).unwrap();
    assert!(chat.tools.is_none());
    assert_eq!(
        chat.builtin_tools,
        Some(vec![
            json!({"type": "web_search", "search_context_size": "low"})
        ])
    );
    assert_eq!(
        request_from_chat(&chat)["tools"],
        json!([{"type": "web_search", "search_context_size": "low"}])
    );
    // A string is one user message; other built-in tools and unknown items are refused clearly.
    let simple = to_chat(&request(json!({"model": "m", "input": "Hi"})), Vec::new()).unwrap();
    assert_eq!(simple.messages, vec![Message::text(Role::User, "Hi")]);
    for bad in [
        json!({"model": "m", "input": "Hi", "tools": [{"type": "file_search"}]}),
        json!({"model": "m", "input": [{"type": "file_search_call", "id": "x"}]}),
        json!({"model": "m"}),
    ] {
        assert!(matches!(
            to_chat(&request(bad), Vec::new()),
            Err(Error::InvalidRequest { .. })
        ));
    }
}

fn completion(message: Value, finish: &str) -> ChatResponse {
    serde_json::from_value(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25,
                  "prompt_tokens_details": {"cached_tokens": 8}}
    }))
    .unwrap()
}

#[test]
fn a_completion_becomes_a_response_and_its_output_a_turn() {
    let req = request(json!({"model": "gpt-4o-mini", "input": "Hi", "store": false}));
    let echo = Echo::new(&req, 1_700_000_000);
    let r = from_chat(
        &completion(
            json!({"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "call_9",
            "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}),
            "tool_calls",
        ),
        &echo,
    );
    assert!(r["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(
        (&r["object"], &r["status"], &r["model"], &r["store"]),
        (
            &json!("response"),
            &json!("completed"),
            &json!("gpt-4o-mini"),
            &json!(false)
        )
    );
    assert_eq!(r["output"][0]["content"][0]["text"], "Checking.");
    assert_eq!(r["output"][1]["call_id"], "call_9");
    assert_eq!(
        r["usage"],
        json!({"input_tokens": 20, "input_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 0},
               "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 25})
    );
    let turn = output_message(&r);
    assert_eq!(turn.content, Some(Content::Text("Checking.".into())));
    assert_eq!(turn.tool_calls.unwrap()[0].id.as_deref(), Some("call_9"));

    let cut = from_chat(
        &completion(json!({"role": "assistant", "content": "Par"}), "length"),
        &echo,
    );
    assert_eq!(cut["status"], "incomplete");
    assert_eq!(cut["incomplete_details"]["reason"], "max_output_tokens");
}

fn chunk(delta: Value, finish: Option<&str>, usage: Option<Value>) -> ChatChunk {
    ChatChunk {
        id: "c".into(),
        object: "chat.completion.chunk".into(),
        created: 1,
        model: "up".into(),
        choices: if usage.is_some() {
            Vec::new()
        } else {
            vec![ChunkChoice {
                index: 0,
                delta: serde_json::from_value::<Delta>(delta).unwrap(),
                finish_reason: finish.map(str::to_owned),
                extra: Map::new(),
            }]
        },
        usage: usage.map(|u| serde_json::from_value(u).unwrap()),
        ..serde_json::from_value(json!({"id": "c", "choices": []})).unwrap()
    }
}

#[test]
fn chat_chunks_become_response_events() {
    let req = request(json!({"model": "gpt-4o-mini", "input": "Hi", "stream": true}));
    let mut s = StreamToResponses::new(Echo::new(&req, 1));
    let mut events = Vec::new();
    for c in [
        chunk(json!({"role": "assistant", "content": ""}), None, None),
        chunk(json!({"content": "Hel"}), None, None),
        chunk(json!({"content": "lo"}), None, None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                     "function": {"name": "f", "arguments": "{\"a\""}}]}),
            None,
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
            Some("tool_calls"),
            None,
        ),
        chunk(
            json!({}),
            None,
            Some(json!({"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21})),
        ),
    ] {
        events.extend(s.on_chunk(&c));
    }
    let (end, response) = s.finish();
    events.extend(end);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    // Every event carries its type and the next sequence number.
    for (i, (kind, data)) in events.iter().enumerate() {
        assert_eq!(
            (data["type"].as_str(), data["sequence_number"].as_u64()),
            (Some(*kind), Some(i as u64))
        );
    }
    assert_eq!(events[6].1["text"], "Hello");
    assert_eq!(events[12].1["arguments"], "{\"a\":1}");
    assert_eq!(response["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(response["output"][1]["arguments"], "{\"a\":1}");
    assert_eq!(response["usage"]["output_tokens"], 12);
    assert_eq!(events.last().unwrap().1["response"], response);
}

#[test]
fn usage_that_overflows_saturates_rather_than_wrapping() {
    let answer = json!({"id": "resp_1", "output": [], "usage": {"input_tokens": 40,
        "output_tokens": u64::MAX, "input_tokens_details": {"cached_tokens": 1}}});
    let usage = chat_from_response(&answer).usage.unwrap();
    assert_eq!(
        (usage.completion_tokens, usage.total_tokens),
        (u64::MAX, u64::MAX)
    );
    let echo = Echo::new(&request(json!({"model": "m", "input": "x"})), 0);
    let mut wide = completion(json!({"role": "assistant", "content": "x"}), "stop");
    wide.usage.as_mut().unwrap().completion_tokens = u64::MAX;
    assert_eq!(from_chat(&wide, &echo)["usage"]["total_tokens"], u64::MAX);
}
