//! Cached answers in both directions: a stored completion replayed as stream chunks, and a
//! streamed answer assembled into a completion to store.

use std::collections::BTreeMap;

use serde_json::Map;

use crate::wire::{
    ChatChunk, ChatResponse, Choice, ChunkChoice, Content, Delta, FunctionCall, Message, Role,
    ToolCall, Usage,
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

/// One choice of a streamed answer, as far as it came.
#[derive(Debug, Default)]
struct Gathered {
    text: String,
    saw_text: bool,
    tool_calls: Vec<ToolCall>,
    finish_reason: Option<String>,
}

/// Gathers a streamed answer into the completion it amounts to: text concatenated, tool-call
/// deltas merged by their index (arguments arrive in pieces), per choice.
#[derive(Debug, Default)]
pub struct Collector {
    id: String,
    created: u64,
    model: String,
    choices: BTreeMap<u32, Gathered>,
    usage: Option<Usage>,
}

impl Collector {
    pub fn push(&mut self, chunk: &ChatChunk) {
        if self.id.is_empty() {
            self.id = chunk.id.clone();
            self.created = chunk.created;
            self.model = chunk.model.clone();
        }
        for c in &chunk.choices {
            let g = self.choices.entry(c.index).or_default();
            if let Some(t) = &c.delta.content {
                g.text.push_str(t);
                g.saw_text = true;
            }
            for call in c.delta.tool_calls.iter().flatten() {
                let at = call.index.map_or(g.tool_calls.len(), |i| i as usize);
                if at >= g.tool_calls.len() {
                    g.tool_calls.resize_with(at + 1, || ToolCall {
                        id: None,
                        kind: None,
                        function: None,
                        index: None,
                    });
                }
                let slot = &mut g.tool_calls[at];
                slot.id = slot.id.take().or_else(|| call.id.clone());
                slot.kind = slot.kind.take().or_else(|| call.kind.clone());
                if let Some(f) = &call.function {
                    let into = slot.function.get_or_insert(FunctionCall {
                        name: None,
                        arguments: None,
                    });
                    into.name = into.name.take().or_else(|| f.name.clone());
                    if let Some(piece) = &f.arguments {
                        into.arguments
                            .get_or_insert_with(String::new)
                            .push_str(piece);
                    }
                }
            }
            if c.finish_reason.is_some() {
                g.finish_reason = c.finish_reason.clone();
            }
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage.clone();
        }
    }

    /// The completion, if every choice finished.
    pub fn finish(self) -> Option<ChatResponse> {
        if self.choices.is_empty() || self.choices.values().any(|g| g.finish_reason.is_none()) {
            return None;
        }
        let choices = self
            .choices
            .into_iter()
            .map(|(index, g)| {
                let mut message = Message::text(Role::Assistant, g.text);
                if !g.saw_text && !g.tool_calls.is_empty() {
                    message.content = None;
                }
                if !g.tool_calls.is_empty() {
                    message.tool_calls = Some(g.tool_calls);
                }
                Choice {
                    index,
                    message,
                    finish_reason: g.finish_reason,
                    extra: Map::new(),
                }
            })
            .collect();
        Some(ChatResponse {
            id: self.id,
            object: "chat.completion".into(),
            created: self.created,
            model: self.model,
            choices,
            usage: self.usage,
            extra: Map::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(v: serde_json::Value) -> ChatChunk {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_tool_call_stream_is_gathered_and_replays_to_the_same_completion() {
        let mut c = Collector::default();
        for v in [
            serde_json::json!({"id": "c", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]}}]}),
            serde_json::json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}}]}),
            serde_json::json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"Lyon\"}"}}]}}]}),
            serde_json::json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        ] {
            c.push(&chunk(v));
        }
        let done = c.finish().unwrap();
        let call = &done.choices[0].message.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.id.as_deref(), Some("call_1"));
        let f = call.function.as_ref().unwrap();
        assert_eq!(f.name.as_deref(), Some("weather"));
        assert_eq!(f.arguments.as_deref(), Some("{\"city\":\"Lyon\"}"));
        assert_eq!(done.choices[0].message.content, None);
        assert_eq!(done.choices[0].finish_reason.as_deref(), Some("tool_calls"));

        // Replayed and gathered again: the same completion.
        let mut again = Collector::default();
        for ch in replay(&done, false) {
            again.push(&ch);
        }
        assert_eq!(again.finish().unwrap(), done);
    }

    #[test]
    fn an_unfinished_choice_is_not_an_answer() {
        let mut c = Collector::default();
        c.push(&chunk(serde_json::json!({"id": "c", "choices": [
            {"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"},
            {"index": 1, "delta": {"content": "b"}}]})));
        assert!(c.finish().is_none());
    }
}
