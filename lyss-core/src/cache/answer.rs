//! Cached answers in both directions: a stored completion replayed as stream chunks, and a
//! streamed answer assembled into a completion to store.

use serde_json::Map;

use crate::openai::{
    ChatChunk, ChatResponse, Choice, ChunkChoice, Content, Delta, Message, Role, Usage,
};

/// The chunks a stream of `resp` would have had: per choice, the whole message in one delta
/// and then its finish reason; the usage chunk last when asked for.
pub fn replay(resp: &ChatResponse, with_usage: bool) -> Vec<ChatChunk> {
    let chunk = |choices: Vec<ChunkChoice>, usage: Option<Usage>| ChatChunk {
        id: resp.id.clone(),
        object: "chat.completion.chunk".into(),
        created: resp.created,
        model: resp.model.clone(),
        choices,
        usage,
        extra: Map::new(),
    };
    let mut chunks = Vec::with_capacity(resp.choices.len() * 2 + 1);
    for c in &resp.choices {
        let tool_calls = c.message.tool_calls.clone().map(|calls| {
            calls
                .into_iter()
                .enumerate()
                .map(|(i, mut t)| {
                    t.index = Some(u32::try_from(i).unwrap_or(u32::MAX));
                    t
                })
                .collect()
        });
        let delta = Delta {
            role: Some(Role::Assistant),
            content: c.message.content.as_ref().map(Content::text),
            tool_calls,
            extra: Map::new(),
        };
        chunks.push(chunk(
            vec![ChunkChoice {
                index: c.index,
                delta,
                finish_reason: None,
                extra: Map::new(),
            }],
            None,
        ));
        chunks.push(chunk(
            vec![ChunkChoice {
                index: c.index,
                delta: Delta::default(),
                finish_reason: c.finish_reason.clone(),
                extra: Map::new(),
            }],
            None,
        ));
    }
    if with_usage {
        chunks.push(chunk(Vec::new(), resp.usage.clone()));
    }
    chunks
}

/// Gathers a streamed answer. Only plain single-choice text answers are assembled: a stream
/// with tool calls or several choices is not stored (its deltas would need merging by index).
#[derive(Debug, Default)]
pub struct Collector {
    id: String,
    created: u64,
    model: String,
    text: String,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    unsupported: bool,
}

impl Collector {
    pub fn push(&mut self, chunk: &ChatChunk) {
        if self.id.is_empty() {
            self.id = chunk.id.clone();
            self.created = chunk.created;
            self.model = chunk.model.clone();
        }
        for c in &chunk.choices {
            if c.index != 0 || c.delta.tool_calls.is_some() {
                self.unsupported = true;
            }
            if let Some(t) = &c.delta.content {
                self.text.push_str(t);
            }
            if c.finish_reason.is_some() {
                self.finish_reason = c.finish_reason.clone();
            }
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage.clone();
        }
    }

    /// The completion, if the stream finished and its shape can be stored.
    pub fn finish(self) -> Option<ChatResponse> {
        if self.unsupported || self.finish_reason.is_none() {
            return None;
        }
        Some(ChatResponse {
            id: self.id,
            object: "chat.completion".into(),
            created: self.created,
            model: self.model,
            choices: vec![Choice {
                index: 0,
                message: Message::text(Role::Assistant, self.text),
                finish_reason: self.finish_reason,
                extra: Map::new(),
            }],
            usage: self.usage,
            extra: Map::new(),
        })
    }
}
