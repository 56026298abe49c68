//! Outbound: an OpenAI upstream's own Responses API, for the models it serves there only
//! (`-pro`, `codex`) and for its built-in web search. A chat request goes out as a Responses
//! request; the answer and its events come back as a completion and chunks.

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::wire::responses::{function_call, output_message};
use crate::wire::{
    ChatChunk, ChatRequest, ChatResponse, Choice, Content, ContentPart, Delta, FunctionCall,
    KnownPart, Message, ResponseFormat, Role, ToolCall, Usage,
};

/// A chat request as a Responses request (stateless: the whole conversation is the input, and
/// the upstream keeps nothing).
pub fn request_from_chat(req: &ChatRequest) -> Value {
    let mut instructions = Vec::new();
    let mut input = Vec::new();
    let lead = req.leading_instructions();
    for (i, m) in req.messages.iter().enumerate() {
        let text = m.content.as_ref().map(Content::text).unwrap_or_default();
        match m.role {
            Role::System | Role::Developer if i < lead => instructions.push(text),
            Role::System | Role::Developer => {
                input.push(json!({"role": "developer", "content": text}));
            }
            Role::User => input.push(json!({"role": "user", "content": input_parts(m)})),
            Role::Assistant => {
                if !text.is_empty() {
                    input.push(json!({"role": "assistant", "content": text}));
                }
                for c in m.tool_calls.iter().flatten() {
                    let f = c.function.as_ref();
                    input.push(json!({"type": "function_call",
                        "call_id": c.id.as_deref().unwrap_or(""),
                        "name": f.and_then(|f| f.name.as_deref()).unwrap_or(""),
                        "arguments": f.and_then(|f| f.arguments.as_deref()).unwrap_or("{}")}));
                }
            }
            Role::Tool | Role::Function => input.push(json!({"type": "function_call_output",
                "call_id": m.tool_call_id.as_deref().unwrap_or(""), "output": text})),
        }
    }
    let mut body = json!({"model": req.model, "input": input, "store": false});
    if !instructions.is_empty() {
        body["instructions"] = json!(instructions.join("\n\n"));
    }
    if let Some(n) = req.max_completion_tokens.or(req.max_tokens) {
        body["max_output_tokens"] = json!(n);
    }
    let tools: Vec<Value> = req
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref())
        .map(|f| {
            json!({"type": "function", "name": f.name, "description": f.description,
                   "parameters": f.parameters, "strict": f.strict.unwrap_or(false)})
        })
        .chain(req.builtin_tools.iter().flatten().cloned())
        .collect();
    if !tools.is_empty() {
        body["tools"] = Value::Array(tools);
    }
    match &req.tool_choice {
        Some(Value::Object(o)) => {
            if let Some(name) = o.get("function").and_then(|f| f.get("name")) {
                body["tool_choice"] = json!({"type": "function", "name": name});
            }
        }
        Some(choice) => body["tool_choice"] = choice.clone(),
        None => {}
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            body["text"] = json!({"format": {"type": "json_object"}})
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            let mut format = json_schema.clone();
            format["type"] = json!("json_schema");
            body["text"] = json!({"format": format});
        }
        _ => {}
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("prompt_cache_key", "prompt_cache_key"),
        ("metadata", "metadata"),
    ] {
        if let Some(v) = req.extra.get(from) {
            body[to] = v.clone();
        }
    }
    if let Some(effort) = req.extra.get("reasoning_effort") {
        body["reasoning"] = json!({"effort": effort});
    }
    if let Some(user) = &req.user {
        body["user"] = json!(user);
    }
    if req.is_stream() {
        body["stream"] = json!(true);
    }
    body
}

/// A user message's content as input parts.
fn input_parts(m: &Message) -> Value {
    match &m.content {
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Known(KnownPart::Text { text, .. }) => {
                    Some(json!({"type": "input_text", "text": text}))
                }
                ContentPart::Known(KnownPart::ImageUrl { image_url, .. }) => Some(json!({
                    "type": "input_image", "image_url": image_url.url,
                    "detail": image_url.detail.as_deref().unwrap_or("auto")})),
                _ => None,
            })
            .collect(),
        other => json!([{"type": "input_text",
                         "text": other.as_ref().map(Content::text).unwrap_or_default()}]),
    }
}

/// A Responses usage object as chat usage.
fn usage_from(u: &Value) -> Usage {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mut usage: Usage = serde_json::from_value(json!({
        "prompt_tokens": n(&u["input_tokens"]),
        "completion_tokens": n(&u["output_tokens"]),
        // Sums saturate: counts that overflow are charged as the most there is, never wrapped.
        "total_tokens": n(&u["input_tokens"]).saturating_add(n(&u["output_tokens"])),
        "prompt_tokens_details": {"cached_tokens": n(&u["input_tokens_details"]["cached_tokens"])},
    }))
    .unwrap_or_default();
    let reasoning = n(&u["output_tokens_details"]["reasoning_tokens"]);
    usage.extra.insert(
        "completion_tokens_details".into(),
        json!({"reasoning_tokens": reasoning}),
    );
    usage
}

/// Why a response stopped, as a chat `finish_reason`.
fn finish_of(response: &Value, called: bool) -> &'static str {
    match response["incomplete_details"]["reason"].as_str() {
        Some("max_output_tokens") => "length",
        Some("content_filter") => "content_filter",
        _ if called => "tool_calls",
        _ => "stop",
    }
}

/// A Responses answer as a chat completion.
pub fn chat_from_response(r: &Value) -> ChatResponse {
    let message = output_message(r);
    let called = message.tool_calls.is_some();
    let mut out = ChatResponse {
        id: r["id"].as_str().unwrap_or_default().to_owned(),
        object: "chat.completion".into(),
        created: r["created_at"].as_u64().unwrap_or(0),
        model: r["model"].as_str().unwrap_or_default().to_owned(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(finish_of(r, called).to_owned()),
            extra: Map::new(),
        }],
        usage: None,
        extra: Map::new(),
    };
    out.usage = r.get("usage").filter(|u| u.is_object()).map(usage_from);
    out
}

/// A Responses event stream as chat chunks.
#[derive(Default)]
pub struct StreamToChat {
    id: String,
    model: String,
    /// Function call items by output index → the tool call's index among the calls.
    calls: Vec<(u64, u32)>,
    include_usage: bool,
}

impl StreamToChat {
    pub fn new(include_usage: bool) -> Self {
        Self {
            include_usage,
            ..Self::default()
        }
    }

    fn chunk(&self, delta: Delta, finish: Option<&str>) -> ChatChunk {
        ChatChunk::of(&self.id, &self.model, 0, delta, finish)
    }

    fn call_delta(call: ToolCall) -> Delta {
        Delta {
            tool_calls: Some(vec![call]),
            ..Delta::default()
        }
    }

    /// The chunks one event makes, and whether the stream is over. An `error` event or a
    /// failed response is an error.
    pub fn on_event(&mut self, kind: &str, data: &Value) -> Result<(Vec<ChatChunk>, bool)> {
        let failed = |message: &Value| Error::UpstreamUnavailable {
            provider: "openai".into(),
            message: message.as_str().unwrap_or("the response failed").to_owned(),
        };
        let kind = data["type"].as_str().unwrap_or(kind);
        Ok(match kind {
            "response.created" => {
                self.id = data["response"]["id"].as_str().unwrap_or("").to_owned();
                self.model = data["response"]["model"].as_str().unwrap_or("").to_owned();
                let delta = Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    ..Delta::default()
                };
                (vec![self.chunk(delta, None)], false)
            }
            "response.output_text.delta" => {
                let delta = Delta {
                    content: data["delta"].as_str().map(str::to_owned),
                    ..Delta::default()
                };
                (vec![self.chunk(delta, None)], false)
            }
            "response.output_item.added" if data["item"]["type"] == "function_call" => {
                let index = self.calls.len() as u32;
                self.calls
                    .push((data["output_index"].as_u64().unwrap_or(0), index));
                let mut call = function_call(&data["item"]);
                call.index = Some(index);
                if let Some(f) = &mut call.function {
                    f.arguments = Some(String::new());
                }
                (vec![self.chunk(Self::call_delta(call), None)], false)
            }
            "response.function_call_arguments.delta" => {
                let at = data["output_index"].as_u64().unwrap_or(0);
                let index = self
                    .calls
                    .iter()
                    .find(|(o, _)| *o == at)
                    .map_or(0, |(_, i)| *i);
                let call = ToolCall {
                    id: None,
                    kind: None,
                    function: Some(FunctionCall {
                        name: None,
                        arguments: data["delta"].as_str().map(str::to_owned),
                    }),
                    index: Some(index),
                };
                (vec![self.chunk(Self::call_delta(call), None)], false)
            }
            "response.completed" | "response.incomplete" => {
                let r = &data["response"];
                let finish = finish_of(r, !self.calls.is_empty());
                let mut out = vec![self.chunk(Delta::default(), Some(finish))];
                if self.include_usage && r["usage"].is_object() {
                    let mut last = self.chunk(Delta::default(), None);
                    last.choices.clear();
                    last.usage = Some(usage_from(&r["usage"]));
                    out.push(last);
                }
                (out, true)
            }
            "response.failed" => return Err(failed(&data["response"]["error"]["message"])),
            "error" => return Err(failed(&data["message"])),
            _ => (Vec::new(), false),
        })
    }
}
