use serde_json::json;

use super::*;
use crate::provider::openai::responses::{chat_from_response, request_from_chat};
use crate::wire::{ChatChunk, ChatResponse, ChunkChoice, Delta};

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
    let chat = serde_json::to_value(to_chat(&req, history).unwrap().chat).unwrap();
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
    let chat = to_chat(&searching, Vec::new()).unwrap().chat;
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
    // A string is one user message. Hosted tools lyss cannot run are dropped, and said so;
    // the calls they made in earlier turns are skipped; unknown tools and items are refused.
    let simple = to_chat(&request(json!({"model": "m", "input": "Hi"})), Vec::new()).unwrap();
    assert_eq!(simple.chat.messages, vec![Message::text(Role::User, "Hi")]);
    let hosted = to_chat(
        &request(
            json!({"model": "m", "tools": [{"type": "file_search"}, {"type": "tool_search"}],
            "input": [{"type": "file_search_call", "id": "x"}, {"role": "user", "content": "Hi"}]}),
        ),
        Vec::new(),
    )
    .unwrap();
    assert_eq!(hosted.dropped, ["tools[file_search]", "tools[tool_search]"]);
    assert!(hosted.chat.tools.is_none());
    assert_eq!(hosted.chat.messages.len(), 1);
    for bad in [
        json!({"model": "m", "input": "Hi", "tools": [{"type": "teleport"}]}),
        json!({"model": "m", "input": [{"type": "teleport_call", "id": "x"}]}),
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
    let echo = Echo::new(&req, 1_700_000_000, ToolMap::default());
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
    let mut s = StreamToResponses::new(Echo::new(&req, 1, ToolMap::default()));
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
    let echo = Echo::new(
        &request(json!({"model": "m", "input": "x"})),
        0,
        ToolMap::default(),
    );
    let mut wide = completion(json!({"role": "assistant", "content": "x"}), "stop");
    wide.usage.as_mut().unwrap().completion_tokens = u64::MAX;
    assert_eq!(from_chat(&wide, &echo)["usage"]["total_tokens"], u64::MAX);
}

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clients")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn codex_default_request_becomes_a_chat_request_and_its_calls_come_back_namespaced() {
    let codex = request(fixture("codex-0.171-default-responses.json"));
    let t = to_chat(&codex, Vec::new()).unwrap();
    // Every tool of every namespace is offered; the `functions` namespace is the default one.
    let names: Vec<&str> = t
        .chat
        .tools
        .iter()
        .flatten()
        .map(|tool| tool.function.as_ref().unwrap().name.as_str())
        .collect();
    assert!(names.contains(&"exec"), "{names:?}");
    assert!(names.contains(&"clock__sleep"), "{names:?}");
    assert!(names.contains(&"collaboration__spawn_agent"), "{names:?}");
    // The custom tool takes its whole input as one string, its grammar in the description.
    let exec = t
        .chat
        .tools
        .iter()
        .flatten()
        .find(|tool| tool.function.as_ref().unwrap().name == "exec")
        .unwrap();
    let f = exec.function.as_ref().unwrap();
    assert_eq!(f.parameters.as_ref().unwrap()["required"], json!(["input"]));
    assert!(f.description.as_deref().unwrap().contains("lark grammar"));
    // Messages: the developer prompts and the user's turns, no tool list among them.
    assert_eq!(t.chat.messages.len(), 6);
    assert_eq!(
        t.chat
            .messages
            .last()
            .unwrap()
            .content
            .as_ref()
            .unwrap()
            .text(),
        "Reply with the word PONG"
    );
    // Reasoning and verbosity go on; what a chat upstream has no place for is said.
    assert_eq!(t.chat.extra["reasoning_effort"], "low");
    assert_eq!(t.chat.extra["verbosity"], "low");
    assert!(
        t.dropped.contains(&"reasoning.context".to_owned()),
        "{:?}",
        t.dropped
    );
    assert!(t.dropped.contains(&"include".to_owned()));

    // The upstream calls `clock__sleep` and `exec`: they come back as Codex named them.
    let echo = Echo::new(&codex, 1, t.tools.clone());
    let r = from_chat(
        &completion(
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "clock__sleep", "arguments": "{\"ms\":5}"}},
                {"id": "call_2", "type": "function", "function": {"name": "exec", "arguments": "{\"input\":\"console.log(1)\"}"}}]}),
            "tool_calls",
        ),
        &echo,
    );
    assert_eq!(r["output"][0]["type"], "function_call");
    assert_eq!(r["output"][0]["name"], "sleep");
    assert_eq!(r["output"][0]["namespace"], "clock");
    assert_eq!(r["output"][1]["type"], "custom_tool_call");
    assert_eq!(r["output"][1]["name"], "exec");
    assert_eq!(r["output"][1]["namespace"], "functions");
    assert_eq!(r["output"][1]["input"], "console.log(1)");

    // The next turn sends both calls and their outputs back: they map to the same chat names.
    let next = request(
        json!({"model": "m", "tools": codex.input.as_ref().unwrap()[0]["tools"], "input": [
            r["output"][0], r["output"][1],
            {"type": "function_call_output", "call_id": "call_1", "output": "slept"},
            {"type": "custom_tool_call_output", "call_id": "call_2", "output": "1"}
        ]}),
    );
    let chat = to_chat(&next, Vec::new()).unwrap().chat;
    let calls = chat.messages[0].tool_calls.as_ref().unwrap();
    assert_eq!(
        calls[0].function.as_ref().unwrap().name.as_deref(),
        Some("clock__sleep")
    );
    assert_eq!(
        calls[1].function.as_ref().unwrap().name.as_deref(),
        Some("exec")
    );
    assert_eq!(
        calls[1].function.as_ref().unwrap().arguments.as_deref(),
        Some("{\"input\":\"console.log(1)\"}")
    );
    assert_eq!(chat.messages[1].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(chat.messages[2].content.as_ref().unwrap().text(), "1");
}

#[test]
fn a_streamed_custom_tool_call_goes_out_whole_when_done() {
    let codex = request(fixture("codex-0.171-default-responses.json"));
    let t = to_chat(&codex, Vec::new()).unwrap();
    let mut s = StreamToResponses::new(Echo::new(&codex, 1, t.tools));
    let mut events = Vec::new();
    for delta in [
        json!({"tool_calls": [{"index": 0, "id": "call_7", "type": "function", "function": {"name": "exec", "arguments": ""}}]}),
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"input\":\"1+"}}]}),
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "1\"}"}}]}),
    ] {
        events.extend(s.on_chunk(&chunk(delta, None, None)));
    }
    events.extend(s.on_chunk(&chunk(json!({}), Some("tool_calls"), None)));
    let (last, response) = s.finish();
    events.extend(last);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| *k).collect();
    assert!(
        !kinds.contains(&"response.function_call_arguments.delta"),
        "{kinds:?}"
    );
    let done = events
        .iter()
        .find(|(k, _)| *k == "response.custom_tool_call_input.done")
        .unwrap();
    assert_eq!(done.1["input"], "1+1");
    assert_eq!(response["output"][0]["type"], "custom_tool_call");
    assert_eq!(response["output"][0]["input"], "1+1");
}
