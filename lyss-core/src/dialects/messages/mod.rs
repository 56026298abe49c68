//! Anthropic's Messages API as clients speak it to lyss (`POST /v1/messages`): a Messages
//! request runs through the pipeline as a chat request; the answer and its chunks go back as
//! Anthropic's message and events. The wire types and the block helpers are the Anthropic
//! provider's ([`crate::provider::anthropic`]), which speaks the same API to the upstream.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::provider::anthropic::*;
/// The Messages API's shapes, shared with the Anthropic provider.
pub use crate::provider::anthropic::{
    AnthropicUsage, MessagesRequest, MessagesResponse, error_body,
};
use crate::wire::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, FunctionCall, FunctionDef,
    ImageUrl, KnownPart, Message, Role, StreamOptions, Tool, ToolCall,
};

/// A text block as an OpenAI text part, its `cache_control` kept (an Anthropic upstream gets
/// it back; an OpenAI one has it removed).
pub(crate) fn marked_part(block: &Block) -> Option<ContentPart> {
    let Block::Known(KnownBlock::Text { text, extra }) = block else {
        return None;
    };
    let mut kept = Map::new();
    if let Some(mark) = extra.get(CACHE_CONTROL) {
        kept.insert(CACHE_CONTROL.into(), mark.clone());
    }
    Some(ContentPart::Known(KnownPart::Text {
        text: text.clone(),
        extra: kept,
    }))
}

/// A Messages request as an OpenAI chat request, to run through the pipeline, with the fields
/// it could not carry (for `x-lyss-dropped`: never dropped silently).
pub fn request_to_openai(req: MessagesRequest) -> Result<(ChatRequest, Vec<String>)> {
    let mut dropped = Vec::new();
    let mut messages = Vec::new();
    match &req.system {
        // The client's cache breakpoints in its system prompt go on as marked text parts.
        Some(AnthropicContent::Blocks(blocks)) if blocks.iter().any(has_breakpoint) => {
            messages.push(Message {
                content: Some(Content::Parts(
                    blocks.iter().filter_map(marked_part).collect(),
                )),
                ..Message::text(Role::System, "")
            });
        }
        Some(system) => messages.push(Message::text(Role::System, system.text())),
        None => {}
    }
    for m in req.messages {
        let role = match m.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            // Instructions given among the turns (the current Messages API allows them): kept
            // where they were said.
            "system" => Role::System,
            other => {
                return Err(Error::invalid_param(
                    format!("messages: unexpected role `{other}`; use user, assistant or system"),
                    "messages",
                ));
            }
        };
        let blocks = match m.content {
            AnthropicContent::Text(t) => {
                messages.push(Message::text(role, t));
                continue;
            }
            AnthropicContent::Blocks(b) => b,
        };
        let mut parts = Vec::new();
        let mut calls = Vec::new();
        for b in blocks {
            match b {
                b @ Block::Known(KnownBlock::Text { .. }) => parts.extend(marked_part(&b)),
                Block::Known(KnownBlock::Image { source, .. }) => {
                    let url = match source {
                        ImageSource::Base64 { media_type, data } => {
                            format!("data:{media_type};base64,{data}")
                        }
                        ImageSource::Url { url } => url,
                    };
                    parts.push(ContentPart::Known(KnownPart::ImageUrl {
                        image_url: ImageUrl { url, detail: None },
                        extra: Map::new(),
                    }));
                }
                Block::Known(KnownBlock::ToolUse { id, name, input }) => calls.push(ToolCall {
                    id: Some(id),
                    kind: Some("function".into()),
                    function: Some(FunctionCall {
                        name: Some(name),
                        arguments: Some(input.to_string()),
                    }),
                    index: None,
                }),
                // Tool results come first in a user turn: each becomes a `tool` message.
                Block::Known(KnownBlock::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                }) => {
                    let mut text = content.map(|c| c.text()).unwrap_or_default();
                    if is_error == Some(true) {
                        text = format!("Error: {text}");
                    }
                    messages.push(Message {
                        role: Role::Tool,
                        content: Some(Content::Text(text)),
                        name: None,
                        tool_calls: None,
                        tool_call_id: Some(tool_use_id),
                        extra: Map::new(),
                    });
                }
                // Thinking and other blocks have no OpenAI counterpart: dropped.
                Block::Other(_) => {}
            }
        }
        if parts.is_empty() && calls.is_empty() {
            continue;
        }
        // Plain text collapses to a string, unless a part carries a cache breakpoint.
        let all_text = parts.iter().all(
            |p| matches!(p, ContentPart::Known(KnownPart::Text { extra, .. }) if extra.is_empty()),
        );
        let content = if parts.is_empty() {
            None
        } else if all_text {
            Some(Content::Text(Content::Parts(parts).text()))
        } else {
            Some(Content::Parts(parts))
        };
        messages.push(Message {
            role,
            content,
            name: None,
            tool_calls: (!calls.is_empty()).then_some(calls),
            tool_call_id: None,
            extra: Map::new(),
        });
    }
    if req
        .tools
        .iter()
        .flatten()
        .any(|t| t.extra.contains_key("defer_loading"))
    {
        // Every tool is offered up front: a chat upstream has no tool search to defer to.
        dropped.push("tools[].defer_loading".into());
    }
    let tools = req
        .tools
        .map(|tools| {
            tools
                .into_iter()
                .map(|t| match t.input_schema {
                    Some(schema) => Ok(Tool {
                        kind: "function".into(),
                        function: Some(FunctionDef {
                            name: t.name,
                            description: t.description,
                            parameters: Some(schema),
                            strict: None,
                        }),
                        extra: Map::new(),
                    }),
                    None => Err(Error::invalid_param(
                        format!(
                            "tools: `{}` is a server tool, which lyss cannot run",
                            t.name
                        ),
                        "tools",
                    )),
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    let mut extra = Map::new();
    let mut tool_choice = None;
    if let Some(choice) = &req.tool_choice {
        tool_choice = match choice["type"].as_str() {
            Some("any") => Some(json!("required")),
            Some("none") => Some(json!("none")),
            Some("tool") => Some(json!({"type": "function", "function": {"name": choice["name"]}})),
            _ => Some(json!("auto")),
        };
        if choice["disable_parallel_tool_use"] == true {
            extra.insert("parallel_tool_calls".into(), false.into());
        }
    }
    if let Some(t) = req.temperature {
        extra.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        extra.insert("top_p".into(), json!(p));
    }
    if let Some(stop) = req.stop_sequences.filter(|s| !s.is_empty()) {
        extra.insert("stop".into(), json!(stop));
    }
    // Thinking and its effort: the chat API's reasoning effort (the pipeline drops it, saying
    // so, for a model that has none).
    if let Some(effort) = reasoning_effort(&req.extra) {
        extra.insert("reasoning_effort".into(), json!(effort));
    }
    for (field, value) in &req.extra {
        match field.as_str() {
            "thinking" => {}
            "output_config" if only_effort(value) => {}
            // Anthropic's own bookkeeping, with no meaning upstream of another kind.
            "service_tier" | "container" => {}
            other => dropped.push(other.to_owned()),
        }
    }
    if req.top_k.is_some() {
        dropped.push("top_k".into());
    }
    let stream = req.stream.unwrap_or(false);
    Ok((
        ChatRequest {
            model: req.model,
            messages,
            stream: stream.then_some(true),
            // Usage is needed for Anthropic's final `message_delta`.
            stream_options: stream.then(|| StreamOptions {
                include_usage: Some(true),
                extra: Map::new(),
            }),
            max_tokens: Some(req.max_tokens),
            max_completion_tokens: None,
            tools,
            tool_choice,
            response_format: None,
            user: req
                .metadata
                .as_ref()
                .and_then(|m| m["user_id"].as_str())
                .map(str::to_owned),
            extra,
            prompt_cache_key: None,
            builtin_tools: None,
        },
        dropped,
    ))
}

/// The reasoning effort a Messages request asks for: `output_config.effort`, else what its
/// `thinking` implies (an explicit budget by size; adaptive thinking: medium).
fn reasoning_effort(extra: &Map<String, Value>) -> Option<&'static str> {
    let effort = extra
        .get("output_config")
        .and_then(|c| c["effort"].as_str());
    let thinking = extra.get("thinking");
    let kind = thinking.and_then(|t| t["type"].as_str());
    if kind == Some("disabled") {
        return None;
    }
    match effort {
        Some("low" | "minimal") => Some("low"),
        Some("medium") => Some("medium"),
        Some("high" | "max" | "xhigh") => Some("high"),
        _ => match kind {
            Some("enabled") => match thinking.and_then(|t| t["budget_tokens"].as_u64()) {
                Some(b) if b < 4_096 => Some("low"),
                Some(b) if b < 16_384 => Some("medium"),
                _ => Some("high"),
            },
            Some("adaptive") => Some("medium"),
            _ => None,
        },
    }
}

/// Whether an `output_config` says nothing but the effort.
fn only_effort(config: &Value) -> bool {
    config
        .as_object()
        .is_some_and(|o| o.keys().all(|k| k == "effort"))
}

/// An OpenAI completion as a Messages answer, under the model name the caller asked for.
pub fn response_from_openai(resp: &ChatResponse, model: &str) -> MessagesResponse {
    let choice = resp.choices.first();
    let mut content = Vec::new();
    if let Some(text) = choice
        .and_then(|c| c.message.content.as_ref())
        .map(Content::text)
        .filter(|t| !t.is_empty())
    {
        content.push(Block::Known(KnownBlock::Text {
            text,
            extra: Map::new(),
        }));
    }
    for call in choice
        .and_then(|c| c.message.tool_calls.as_ref())
        .into_iter()
        .flatten()
    {
        let f = call.function.as_ref();
        content.push(Block::Known(KnownBlock::ToolUse {
            id: call.id.clone().unwrap_or_default(),
            name: f.and_then(|f| f.name.clone()).unwrap_or_default(),
            input: f
                .and_then(|f| f.arguments.as_deref())
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or_else(|| json!({})),
        }));
    }
    MessagesResponse {
        id: message_id(&resp.id),
        kind: message_type(),
        role: assistant(),
        model: model.to_owned(),
        content,
        stop_reason: Some(
            stop_reason(
                choice
                    .and_then(|c| c.finish_reason.as_deref())
                    .unwrap_or("stop"),
            )
            .into(),
        ),
        stop_sequence: None,
        usage: resp
            .usage
            .as_ref()
            .map(usage_from_openai)
            .unwrap_or_default(),
    }
}

pub(crate) fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{}", id.trim_start_matches("chatcmpl-"))
    }
}

/// OpenAI chunks turned into Anthropic's events (name, data), one chunk at a time.
#[derive(Debug)]
pub struct StreamFromOpenAi {
    model: String,
    /// What `message_start` reports as the prompt, before the upstream's count.
    input_tokens: u64,
    started: bool,
    /// The open content block: its index and whether it is text.
    open: Option<(u64, bool)>,
    next_index: u64,
    /// Tool call index → content block index.
    tools: HashMap<u32, u64>,
    stop_reason: Option<&'static str>,
    usage: AnthropicUsage,
}

impl StreamFromOpenAi {
    /// The prompt's size as lyss counted it, for `message_start` (Anthropic reports it there;
    /// clients show it before the answer).
    pub fn input_tokens(mut self, n: u64) -> Self {
        self.input_tokens = n;
        self
    }

    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            input_tokens: 0,
            started: false,
            open: None,
            next_index: 0,
            tools: HashMap::new(),
            stop_reason: None,
            usage: AnthropicUsage::default(),
        }
    }

    fn start(&mut self, id: &str, out: &mut Vec<(&'static str, Value)>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push((
            "message_start",
            json!({"type": "message_start", "message": {
                "id": message_id(id), "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.input_tokens, "output_tokens": 0}}}),
        ));
    }

    fn close(&mut self, out: &mut Vec<(&'static str, Value)>) {
        if let Some((index, _)) = self.open.take() {
            out.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn open(&mut self, text: bool, block: Value, out: &mut Vec<(&'static str, Value)>) -> u64 {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, text));
        out.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    /// The events one chunk becomes.
    pub fn on_chunk(&mut self, chunk: &ChatChunk) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        self.start(&chunk.id, &mut out);
        if let Some(u) = &chunk.usage {
            self.usage = usage_from_openai(u);
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return out;
        };
        if let Some(text) = choice.delta.content.as_deref().filter(|t| !t.is_empty()) {
            let index = match self.open {
                Some((i, true)) => i,
                _ => self.open(true, json!({"type": "text", "text": ""}), &mut out),
            };
            out.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "text_delta", "text": text}}),
            ));
        }
        for call in choice.delta.tool_calls.iter().flatten() {
            let tool = call.index.unwrap_or(0);
            let f = call.function.as_ref();
            let index = match self.tools.get(&tool) {
                Some(&i) => i,
                None => {
                    let block = json!({"type": "tool_use", "id": call.id.clone().unwrap_or_default(),
                        "name": f.and_then(|f| f.name.clone()).unwrap_or_default(), "input": {}});
                    let i = self.open(false, block, &mut out);
                    self.tools.insert(tool, i);
                    i
                }
            };
            if let Some(args) = f
                .and_then(|f| f.arguments.as_deref())
                .filter(|a| !a.is_empty())
            {
                out.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": args}}),
                ));
            }
        }
        if let Some(reason) = &choice.finish_reason {
            self.stop_reason = Some(stop_reason(reason));
        }
        out
    }

    /// The closing events, once the chunks have ended.
    pub fn finish(&mut self) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        self.start("", &mut out);
        self.close(&mut out);
        out.push((
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                   "usage": self.usage}),
        ));
        out.push(("message_stop", json!({"type": "message_stop"})));
        out
    }
}

#[cfg(test)]
mod tests;
