//! Outbound, for the Anthropic provider: an OpenAI chat request as a Messages request (with
//! prompt-cache breakpoints), and the answer and its event stream back as OpenAI's.

use serde_json::{Map, Value, json};

use super::wire::*;
use crate::error::Result;
use crate::wire::{ChatRequest, Content, ContentPart, KnownPart, Role};

/// An OpenAI chat request as a Messages request. `max_tokens` is required by Anthropic:
/// the request's own cap, else `default_max_tokens`.
pub fn request_from_openai(req: &ChatRequest, default_max_tokens: u32) -> Result<MessagesRequest> {
    let mut system: Vec<(String, Vec<Block>)> = Vec::new();
    let mut messages: Vec<AnthropicMessage> = Vec::new();
    let mut push = |role: &str, blocks: Vec<Block>| {
        if blocks.is_empty() {
            return;
        }
        // Anthropic wants turns to alternate: consecutive turns of one role are merged.
        match messages.last_mut() {
            Some(AnthropicMessage {
                role: last,
                content: AnthropicContent::Blocks(existing),
            }) if last == role => existing.extend(blocks),
            _ => messages.push(AnthropicMessage {
                role: role.to_owned(),
                content: AnthropicContent::Blocks(blocks),
            }),
        }
    };
    let lead = req.leading_instructions();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            // Leading instructions are Anthropic's `system`. One given mid-conversation (lyss's
            // memory block is one) stays where it was said, as text of the user turn it falls
            // in: hoisted into `system` it would change the start of the prompt on every
            // request, and with it the provider's cached prefix.
            Role::System | Role::Developer if i < lead => {
                if let Some(c) = &m.content {
                    system.push((c.text(), text_blocks(c)));
                }
            }
            Role::System | Role::Developer => push("user", content_blocks(m.content.as_ref())?),
            Role::User => push("user", content_blocks(m.content.as_ref())?),
            Role::Assistant => {
                let mut blocks = content_blocks(m.content.as_ref())?;
                for call in m.tool_calls.iter().flatten() {
                    let f = call.function.as_ref();
                    let args = f.and_then(|f| f.arguments.as_deref()).unwrap_or("{}");
                    blocks.push(Block::Known(KnownBlock::ToolUse {
                        id: call.id.clone().unwrap_or_default(),
                        name: f.and_then(|f| f.name.clone()).unwrap_or_default(),
                        input: serde_json::from_str(args).unwrap_or_else(|_| json!({})),
                    }));
                }
                push("assistant", blocks);
            }
            Role::Tool | Role::Function => push(
                "user",
                vec![Block::Known(KnownBlock::ToolResult {
                    tool_use_id: m.tool_call_id.clone().unwrap_or_default(),
                    content: Some(AnthropicContent::Text(
                        m.content.as_ref().map(Content::text).unwrap_or_default(),
                    )),
                    is_error: None,
                })],
            ),
        }
    }
    let extra = &req.extra;
    let number = |k: &str| extra.get(k).and_then(Value::as_f64);
    let stop_sequences = match extra.get("stop") {
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    };
    let tools = req.tools.as_ref().map(|tools| {
        tools
            .iter()
            .filter_map(|t| t.function.as_ref())
            .map(|f| AnthropicTool {
                name: f.name.clone(),
                description: f.description.clone(),
                input_schema: Some(
                    f.parameters
                        .clone()
                        .unwrap_or_else(|| json!({"type": "object"})),
                ),
                extra: Map::new(),
            })
            .collect::<Vec<_>>()
    });
    let mut tool_choice = match &req.tool_choice {
        Some(Value::String(s)) if s == "required" => Some(json!({"type": "any"})),
        Some(Value::String(s)) if s == "none" => Some(json!({"type": "none"})),
        Some(Value::String(_)) => Some(json!({"type": "auto"})),
        Some(Value::Object(o)) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .map(|name| json!({"type": "tool", "name": name})),
        _ => None,
    };
    if extra.get("parallel_tool_calls") == Some(&Value::Bool(false)) && tools.is_some() {
        let choice = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        choice["disable_parallel_tool_use"] = Value::Bool(true);
    }
    Ok(MessagesRequest {
        model: req.model.clone(),
        max_tokens: req
            .max_completion_tokens
            .or(req.max_tokens)
            .unwrap_or(default_max_tokens),
        messages,
        system: system_content(system),
        stop_sequences,
        stream: req.stream,
        // OpenAI's range is 0–2, Anthropic's 0–1.
        temperature: number("temperature").map(|t| t.clamp(0.0, 1.0)),
        top_p: number("top_p"),
        top_k: None,
        tools,
        tool_choice,
        metadata: req.user.as_ref().map(|u| json!({"user_id": u})),
        extra: Map::new(),
    })
}

/// The field of a content block that makes it a prompt-cache breakpoint.
pub(crate) const CACHE_CONTROL: &str = "cache_control";

/// The shortest prefix Anthropic caches (Sonnet and Opus; Haiku needs 2,048), in tokens: a
/// breakpoint on a shorter one would do nothing.
pub(crate) const MIN_CACHEABLE_TOKENS: usize = 1_024;

/// Whether a block is a cache breakpoint.
pub(crate) fn has_breakpoint(block: &Block) -> bool {
    match block {
        Block::Known(KnownBlock::Text { extra, .. } | KnownBlock::Image { extra, .. }) => {
            extra.contains_key(CACHE_CONTROL)
        }
        Block::Other(v) => v.get(CACHE_CONTROL).is_some(),
        Block::Known(_) => false,
    }
}

/// Marks the last text or image block of `content` as a breakpoint; `false` when it has none.
pub(crate) fn mark_last(content: &mut AnthropicContent) -> bool {
    if let AnthropicContent::Text(t) = content {
        *content = AnthropicContent::Blocks(vec![text_block(t, None)]);
    }
    let AnthropicContent::Blocks(blocks) = content else {
        return false;
    };
    let last = blocks.iter_mut().rev().find_map(|b| match b {
        Block::Known(KnownBlock::Text { extra, .. } | KnownBlock::Image { extra, .. }) => {
            Some(extra)
        }
        _ => None,
    });
    match last {
        Some(extra) => {
            extra.insert(CACHE_CONTROL.into(), json!({"type": "ephemeral"}));
            true
        }
        None => false,
    }
}

/// Bytes of text in some content (images count nothing: the estimate stays low).
pub(crate) fn text_len(content: &AnthropicContent) -> usize {
    match content {
        AnthropicContent::Text(t) => t.len(),
        AnthropicContent::Blocks(blocks) => blocks
            .iter()
            .map(|b| match b {
                Block::Known(KnownBlock::Text { text, .. }) => text.len(),
                Block::Known(KnownBlock::ToolResult {
                    content: Some(c), ..
                }) => text_len(c),
                Block::Known(KnownBlock::ToolUse { input, .. }) => input.to_string().len(),
                _ => 0,
            })
            .sum(),
    }
}

/// Inserts prompt-cache breakpoints into a Messages request translated from `req`, where the
/// prefix they close is long enough to cache and likely to be sent again:
/// - the end of the system prompt (with the tools before it, the start of every request);
/// - the ends of the conversation's stable part's last two turns: the stable part is the whole
///   prompt (the next turn extends it), or, when context was injected into the last user turn
///   (lyss's memory block, which changes per request), everything before that turn; the
///   turn before its end serves a branch (a regenerated answer, another question on the same
///   history).
///
/// A request that carries breakpoints of its own (the client's) is left as it is. Anthropic
/// bills a cache write at 1.25× input and a read at 0.1×, and reads back a prefix written up
/// to 20 blocks before a breakpoint, so one breakpoint at the end of each request serves the
/// next.
pub fn mark_cache_breakpoints(req: &ChatRequest, body: &mut MessagesRequest) {
    let marked = |c: &AnthropicContent| matches!(c, AnthropicContent::Blocks(b) if b.iter().any(has_breakpoint));
    let tools_marked = body
        .tools
        .iter()
        .flatten()
        .any(|t| t.extra.contains_key(CACHE_CONTROL));
    if tools_marked
        || body.system.as_ref().is_some_and(marked)
        || body.messages.iter().any(|m| marked(&m.content))
    {
        return;
    }
    let long = |bytes: usize| bytes / 4 >= MIN_CACHEABLE_TOKENS;
    let mut prefix = body
        .tools
        .as_ref()
        .map_or(0, |t| serde_json::to_string(t).map_or(0, |s| s.len()));
    if let Some(system) = &mut body.system {
        prefix += text_len(system);
        if long(prefix) {
            mark_last(system);
        }
    }
    let first_turn = req
        .messages
        .iter()
        .position(|m| !matches!(m.role, Role::System | Role::Developer))
        .unwrap_or(req.messages.len());
    let last_answer = req
        .messages
        .iter()
        .rposition(|m| m.role == Role::Assistant)
        .unwrap_or(0);
    // Context injected before the question (lyss's memory block, a `user` message; or a
    // client's mid-conversation instructions): more than one message of the user's side
    // after the last answer.
    let injected = req.messages[first_turn.max(last_answer)..]
        .iter()
        .filter(|m| matches!(m.role, Role::User | Role::System | Role::Developer))
        .count()
        > 1;
    let stable = body.messages.len() - usize::from(injected && !body.messages.is_empty());
    // The stable part's last two turns: the next turn reads the last, a branch from here (a
    // regenerated answer, another question on the same history) the one before.
    let mut ends: Vec<usize> = body.messages[..stable]
        .iter()
        .scan(prefix, |sum, m| {
            *sum += text_len(&m.content);
            Some(*sum)
        })
        .collect();
    let first_marked = stable.saturating_sub(2);
    ends.drain(..first_marked);
    for (m, end) in body.messages[first_marked..stable].iter_mut().zip(ends) {
        // A turn of tool calls or results alone has no block that can carry the mark.
        if long(end) {
            mark_last(&mut m.content);
        }
    }
}

/// The system prompt: the messages' text joined, or their text blocks when the client marked
/// a cache breakpoint in one.
pub(crate) fn system_content(system: Vec<(String, Vec<Block>)>) -> Option<AnthropicContent> {
    if system.is_empty() {
        return None;
    }
    if system.iter().flat_map(|(_, b)| b).any(has_breakpoint) {
        return Some(AnthropicContent::Blocks(
            system.into_iter().flat_map(|(_, b)| b).collect(),
        ));
    }
    Some(AnthropicContent::Text(
        system
            .into_iter()
            .map(|(t, _)| t)
            .collect::<Vec<_>>()
            .join("\n\n"),
    ))
}

/// The text of OpenAI content as text blocks, each text part's `cache_control` kept.
pub(crate) fn text_blocks(content: &Content) -> Vec<Block> {
    match content {
        Content::Text(t) if t.is_empty() => Vec::new(),
        Content::Text(t) => vec![text_block(t, None)],
        Content::Parts(parts) => parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Known(KnownPart::Text { text, extra }) => {
                    Some(text_block(text, Some(extra)))
                }
                _ => None,
            })
            .collect(),
    }
}

/// A text block; `from` is the OpenAI part's other fields, of which `cache_control` is kept.
pub(crate) fn text_block(text: &str, from: Option<&Map<String, Value>>) -> Block {
    let mut extra = Map::new();
    if let Some(mark) = from.and_then(|e| e.get(CACHE_CONTROL)) {
        extra.insert(CACHE_CONTROL.into(), mark.clone());
    }
    Block::Known(KnownBlock::Text {
        text: text.to_owned(),
        extra,
    })
}

/// OpenAI message content as Anthropic blocks (images by data URL or by URL). A text part's
/// `cache_control` (the client's own cache breakpoint) is kept.
pub(crate) fn content_blocks(content: Option<&Content>) -> Result<Vec<Block>> {
    Ok(match content {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![text_block(t, None)],
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|p| match p {
                ContentPart::Known(KnownPart::Text { text: t, extra }) => {
                    Ok(Some(text_block(t, Some(extra))))
                }
                ContentPart::Known(KnownPart::ImageUrl { image_url, .. }) => {
                    Ok(Some(image_block(&image_url.url)))
                }
                ContentPart::Known(KnownPart::Refusal { .. }) => Ok(None),
                _ => Err(invalid(
                    "this model's provider (Anthropic) takes text and images only",
                )),
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect(),
    })
}

pub(crate) fn image_block(url: &str) -> Block {
    let source = match url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
    {
        Some((media_type, data)) => ImageSource::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        },
        None => ImageSource::Url {
            url: url.to_owned(),
        },
    };
    Block::Known(KnownBlock::Image {
        source,
        extra: Map::new(),
    })
}
