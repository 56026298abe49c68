//! The Responses API's output items read as chat messages — by the Responses dialect (a stored
//! answer continued with `previous_response_id`) and by the OpenAI provider (an upstream's
//! `/v1/responses` answer).

use serde_json::{Value, json};

use super::{Content, FunctionCall, Message, Role, ToolCall};

/// A `function_call` or `custom_tool_call` item as the assistant's tool call: the name the
/// chat upstream knows it by ([`chat_name`]), and a custom tool's `input` as the one string
/// argument it was offered with.
pub fn function_call(item: &Value) -> ToolCall {
    let name = chat_name(
        item["namespace"].as_str(),
        item["name"].as_str().unwrap_or(""),
    );
    let arguments = match item["type"].as_str() {
        Some("custom_tool_call") => {
            json!({"input": item["input"].as_str().unwrap_or("")}).to_string()
        }
        _ => item["arguments"].as_str().unwrap_or("{}").to_owned(),
    };
    ToolCall {
        id: item["call_id"].as_str().map(str::to_owned),
        kind: Some("function".into()),
        function: Some(FunctionCall {
            name: Some(name),
            arguments: Some(arguments),
        }),
        index: None,
    }
}

/// The name a tool is offered to a chat upstream by: its own, or `namespace__name` for a
/// member of a namespace (chat tools have no namespaces; `functions` is the default one).
pub fn chat_name(namespace: Option<&str>, name: &str) -> String {
    match namespace.filter(|n| !n.is_empty() && *n != "functions") {
        Some(ns) => format!("{ns}__{name}"),
        None => name.to_owned(),
    }
}

/// The assistant turn a response's output adds to the conversation (what is stored for
/// `previous_response_id`).
pub fn output_message(response: &Value) -> Message {
    let mut text = String::new();
    let mut calls = Vec::new();
    for item in response["output"].as_array().into_iter().flatten() {
        match item["type"].as_str() {
            Some("message") => {
                for p in item["content"].as_array().into_iter().flatten() {
                    text.push_str(p["text"].as_str().unwrap_or(""));
                }
            }
            Some("function_call" | "custom_tool_call") => calls.push(function_call(item)),
            _ => {}
        }
    }
    Message {
        content: (!text.is_empty()).then_some(Content::Text(text)),
        tool_calls: (!calls.is_empty()).then_some(calls),
        ..Message::text(Role::Assistant, "")
    }
}
