//! The answer back, for the Anthropic provider: a Messages answer and its event stream as
//! OpenAI's completion and chunks, and usage both ways.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::wire::*;
use crate::error::{Error, Result};
use crate::wire::{
    ChatChunk, ChatResponse, Choice, Content, Delta, FunctionCall, Message, PromptTokensDetails,
    Role, ToolCall, Usage,
};

/// Anthropic usage as OpenAI usage: the prompt counts cache reads and writes too; reads are
/// `cached_tokens` (billed at the cached price), writes are kept in `cache_creation_tokens`.
/// Sums saturate: counts that overflow are charged as the most there is, never wrapped to a few.
pub fn usage_to_openai(u: &AnthropicUsage) -> Usage {
    let read = u.cache_read_input_tokens.unwrap_or(0);
    let written = u.cache_creation_input_tokens.unwrap_or(0);
    let prompt = u.input_tokens.saturating_add(read).saturating_add(written);
    let mut details = PromptTokensDetails {
        cached_tokens: Some(read),
        ..Default::default()
    };
    if written > 0 {
        details
            .extra
            .insert("cache_creation_tokens".into(), written.into());
    }
    Usage {
        prompt_tokens: prompt,
        completion_tokens: u.output_tokens,
        total_tokens: prompt.saturating_add(u.output_tokens),
        prompt_tokens_details: Some(details),
        extra: Map::new(),
    }
}

/// OpenAI usage as Anthropic usage (cached prompt tokens are cache reads, and the cache writes
/// an Anthropic upstream reported are writes again).
pub fn usage_from_openai(u: &Usage) -> AnthropicUsage {
    let cached = u.cached_tokens();
    let written = u.cache_write_tokens();
    AnthropicUsage {
        input_tokens: u
            .prompt_tokens
            .saturating_sub(cached)
            .saturating_sub(written),
        output_tokens: u.completion_tokens,
        cache_creation_input_tokens: (written > 0).then_some(written),
        cache_read_input_tokens: (cached > 0).then_some(cached),
    }
}

/// A Messages answer as an OpenAI completion.
pub fn response_to_openai(resp: MessagesResponse, created: u64) -> ChatResponse {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in &resp.content {
        match b {
            Block::Known(KnownBlock::Text { text: t, .. }) => text.push_str(t),
            Block::Known(KnownBlock::ToolUse { id, name, input }) => calls.push(ToolCall {
                id: Some(id.clone()),
                kind: Some("function".into()),
                function: Some(FunctionCall {
                    name: Some(name.clone()),
                    arguments: Some(input.to_string()),
                }),
                index: None,
            }),
            _ => {}
        }
    }
    let message = Message {
        role: Role::Assistant,
        content: (!text.is_empty() || calls.is_empty()).then_some(Content::Text(text)),
        name: None,
        tool_calls: (!calls.is_empty()).then_some(calls),
        tool_call_id: None,
        extra: Map::new(),
    };
    ChatResponse {
        id: resp.id,
        object: "chat.completion".into(),
        created,
        model: resp.model,
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(
                finish_reason(resp.stop_reason.as_deref().unwrap_or("end_turn")).into(),
            ),
            extra: Map::new(),
        }],
        usage: Some(usage_to_openai(&resp.usage)),
        extra: Map::new(),
    }
}

/// Anthropic's event stream, turned into OpenAI chunks one event at a time.
#[derive(Debug)]
pub struct StreamToOpenAi {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    usage: AnthropicUsage,
    /// Content block index → tool call index, for tool-use blocks.
    tools: HashMap<u64, u32>,
}

impl StreamToOpenAi {
    pub fn new(created: u64, include_usage: bool) -> Self {
        Self {
            id: String::new(),
            model: String::new(),
            created,
            include_usage,
            usage: AnthropicUsage::default(),
            tools: HashMap::new(),
        }
    }

    fn chunk(&self, delta: Delta, finish: Option<&str>) -> ChatChunk {
        ChatChunk::of(&self.id, &self.model, self.created, delta, finish)
    }

    /// The chunks one event becomes, and whether the stream is over (`message_stop`). An
    /// `error` event is an error.
    pub fn on_event(&mut self, event: &str, data: &str) -> Result<(Vec<ChatChunk>, bool)> {
        if matches!(event, "ping" | "") && data.trim().is_empty() {
            return Ok((Vec::new(), false));
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| invalid(format!("malformed Anthropic event: {e}")))?;
        let kind = v["type"].as_str().unwrap_or(event);
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let m = &v["message"];
                self.id = m["id"].as_str().unwrap_or_default().to_owned();
                self.model = m["model"].as_str().unwrap_or_default().to_owned();
                if let Ok(u) = serde_json::from_value::<AnthropicUsage>(m["usage"].clone()) {
                    self.usage = u;
                }
                out.push(self.chunk(
                    Delta {
                        role: Some(Role::Assistant),
                        content: Some(String::new()),
                        ..Delta::default()
                    },
                    None,
                ));
            }
            "content_block_start" => {
                let block = &v["content_block"];
                if block["type"] == "tool_use" {
                    let index = v["index"].as_u64().unwrap_or(0);
                    let tool = u32::try_from(self.tools.len()).unwrap_or(u32::MAX);
                    self.tools.insert(index, tool);
                    out.push(self.chunk(
                        Delta {
                            tool_calls: Some(vec![ToolCall {
                                id: block["id"].as_str().map(str::to_owned),
                                kind: Some("function".into()),
                                function: Some(FunctionCall {
                                    name: block["name"].as_str().map(str::to_owned),
                                    arguments: Some(String::new()),
                                }),
                                index: Some(tool),
                            }]),
                            ..Delta::default()
                        },
                        None,
                    ));
                } else if let Some(t) = block["text"].as_str().filter(|t| !t.is_empty()) {
                    out.push(self.chunk(
                        Delta {
                            content: Some(t.to_owned()),
                            ..Delta::default()
                        },
                        None,
                    ));
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => out.push(self.chunk(
                        Delta {
                            content: d["text"].as_str().map(str::to_owned),
                            ..Delta::default()
                        },
                        None,
                    )),
                    Some("input_json_delta") => {
                        let tool = v["index"]
                            .as_u64()
                            .and_then(|i| self.tools.get(&i))
                            .copied()
                            .unwrap_or(0);
                        out.push(self.chunk(
                            Delta {
                                tool_calls: Some(vec![ToolCall {
                                    id: None,
                                    kind: None,
                                    function: Some(FunctionCall {
                                        name: None,
                                        arguments: d["partial_json"].as_str().map(str::to_owned),
                                    }),
                                    index: Some(tool),
                                }]),
                                ..Delta::default()
                            },
                            None,
                        ));
                    }
                    // Thinking and signature deltas have no OpenAI counterpart.
                    _ => {}
                }
            }
            "message_delta" => {
                let u = &v["usage"];
                if let Some(n) = u["output_tokens"].as_u64() {
                    self.usage.output_tokens = n;
                }
                if let Some(n) = u["input_tokens"].as_u64() {
                    self.usage.input_tokens = n;
                }
                for (field, slot) in [
                    (
                        "cache_read_input_tokens",
                        &mut self.usage.cache_read_input_tokens,
                    ),
                    (
                        "cache_creation_input_tokens",
                        &mut self.usage.cache_creation_input_tokens,
                    ),
                ] {
                    if let Some(n) = u[field].as_u64() {
                        *slot = Some(n);
                    }
                }
                if let Some(reason) = v["delta"]["stop_reason"].as_str() {
                    out.push(self.chunk(Delta::default(), Some(finish_reason(reason))));
                }
            }
            "message_stop" => {
                if self.include_usage {
                    let mut c = self.chunk(Delta::default(), None);
                    c.choices.clear();
                    c.usage = Some(usage_to_openai(&self.usage));
                    out.push(c);
                }
                return Ok((out, true));
            }
            "error" => {
                return Err(Error::UpstreamUnavailable {
                    provider: "anthropic".into(),
                    message: v["error"]["message"]
                        .as_str()
                        .unwrap_or("stream error")
                        .to_owned(),
                });
            }
            // content_block_stop, ping, and event types added later.
            _ => {}
        }
        Ok((out, false))
    }
}

/// Anthropic's stop reason in OpenAI's words.
pub(crate) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's finish reason in Anthropic's words.
pub(crate) fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}
