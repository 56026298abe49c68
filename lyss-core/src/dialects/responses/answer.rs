//! A chat completion as a Responses API answer: the response object, its output items and
//! usage, and the assistant message a stored response continues from.

use serde_json::{Value, json};

use super::{ResponsesRequest, ToolMap, new_id};
use crate::wire::{ChatResponse, Content, Usage};

/// What the caller asked for that a response echoes back, and how its tools map back.
#[derive(Debug, Clone)]
pub struct Echo {
    pub id: String,
    pub model: String,
    pub created_at: u64,
    request: Value,
    tools: ToolMap,
}

impl Echo {
    /// `model` is the public name the caller asked for; `tools` how the chat upstream knows
    /// its tools ([`Translated::tools`]).
    pub fn new(req: &ResponsesRequest, created_at: u64, tools: ToolMap) -> Self {
        Self {
            id: new_id("resp"),
            model: req.model.clone(),
            created_at,
            tools,
            request: json!({
                "instructions": req.instructions,
                "max_output_tokens": req.max_output_tokens,
                "metadata": req.metadata.clone().unwrap_or_else(|| json!({})),
                "parallel_tool_calls": req.parallel_tool_calls.unwrap_or(true),
                "previous_response_id": req.previous_response_id,
                "store": req.stores(),
                "temperature": req.temperature,
                "text": req.text.clone().unwrap_or_else(|| json!({"format": {"type": "text"}})),
                "tool_choice": req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
                "tools": req.tools.clone().unwrap_or_default(),
                "top_p": req.top_p,
                "user": req.user,
            }),
        }
    }

    /// A tool call item: a `function_call`, or a `custom_tool_call` whose `input` is the one
    /// argument lyss offered it with; either with its namespace when it has one.
    pub(super) fn call_item(
        &self,
        id: &str,
        call_id: &str,
        chat_name: &str,
        arguments: &str,
        status: &str,
    ) -> Value {
        let t = self.tools.resolve(chat_name);
        let mut item = if t.custom {
            let input = serde_json::from_str::<Value>(arguments)
                .ok()
                .and_then(|v| v["input"].as_str().map(str::to_owned))
                .unwrap_or_else(|| arguments.to_owned());
            json!({"type": "custom_tool_call", "id": id, "call_id": call_id, "name": t.name,
                   "input": input, "status": status})
        } else {
            json!({"type": "function_call", "id": id, "call_id": call_id, "name": t.name,
                   "arguments": arguments, "status": status})
        };
        if let Some(ns) = t.namespace {
            item["namespace"] = json!(ns);
        }
        item
    }

    pub(super) fn is_custom(&self, chat_name: &str) -> bool {
        self.tools.0.get(chat_name).is_some_and(|t| t.custom)
    }

    /// The response object: `status` and its output items, usage when known.
    pub(super) fn response(
        &self,
        status: &str,
        output: Vec<Value>,
        usage: Option<&Usage>,
        finish: Option<&str>,
    ) -> Value {
        let mut r = json!({
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": status, "error": null,
            "incomplete_details": (finish == Some("length")).then(|| json!({"reason": "max_output_tokens"})),
            "model": self.model, "output": output, "usage": usage.map(usage_json),
        });
        if let (Value::Object(r), Value::Object(echo)) = (&mut r, &self.request) {
            r.extend(echo.clone());
        }
        r
    }
}

/// Chat usage in the Responses shape.
pub(super) fn usage_json(u: &Usage) -> Value {
    let reasoning = u
        .extra
        .get("completion_tokens_details")
        .and_then(|d| d.get("reasoning_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens(), "cache_write_tokens": u.cache_write_tokens()},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
    })
}

pub(super) fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": if status == "in_progress" { json!([]) } else { json!([text_part(text)]) }})
}

pub(super) fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

pub(super) fn status_of(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length" | "content_filter") => "incomplete",
        _ => "completed",
    }
}

/// A chat completion as a response object.
pub fn from_chat(resp: &ChatResponse, echo: &Echo) -> Value {
    let choice = resp.choices.first();
    let mut output = Vec::new();
    if let Some(m) = choice.map(|c| &c.message) {
        let text = m.content.as_ref().map(Content::text).unwrap_or_default();
        if !text.is_empty() {
            output.push(message_item(&new_id("msg"), &text, "completed"));
        }
        for call in m.tool_calls.iter().flatten() {
            let f = call.function.as_ref();
            output.push(echo.call_item(
                &new_id("fc"),
                call.id.as_deref().unwrap_or(""),
                f.and_then(|f| f.name.as_deref()).unwrap_or(""),
                f.and_then(|f| f.arguments.as_deref()).unwrap_or("{}"),
                "completed",
            ));
        }
    }
    let finish = choice.and_then(|c| c.finish_reason.as_deref());
    echo.response(status_of(finish), output, resp.usage.as_ref(), finish)
}
