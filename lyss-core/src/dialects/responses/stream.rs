//! Chat chunks as the Responses API's stream events.

use serde_json::{Value, json};

use super::answer::{message_item, status_of, text_part};
use super::{Echo, new_id};
use crate::wire::{ChatChunk, Usage};

/// One function call being streamed.
struct StreamedCall {
    output_index: usize,
    item_id: String,
    call_id: String,
    name: String,
    arguments: String,
}

/// Chat chunks as the Responses API's stream events, `(event type, data)`.
pub struct StreamToResponses {
    echo: Echo,
    sequence: u64,
    started: bool,
    /// The message item being streamed: (output index, item id, text so far).
    text: Option<(usize, String, String)>,
    calls: Vec<(u32, StreamedCall)>,
    /// Finished output items, in order.
    output: Vec<(usize, Value)>,
    next_index: usize,
    usage: Option<Usage>,
    finish: Option<String>,
}

/// Events of a stream: (type, data).
pub type Events = Vec<(&'static str, Value)>;

impl StreamToResponses {
    pub fn new(echo: Echo) -> Self {
        Self {
            echo,
            sequence: 0,
            started: false,
            text: None,
            calls: Vec::new(),
            output: Vec::new(),
            next_index: 0,
            usage: None,
            finish: None,
        }
    }

    fn emit(&mut self, out: &mut Events, kind: &'static str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        out.push((kind, data));
    }

    fn start(&mut self, out: &mut Events) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self.echo.response("in_progress", Vec::new(), None, None);
        self.emit(out, "response.created", json!({"response": r}));
        self.emit(out, "response.in_progress", json!({"response": r}));
    }

    fn close_text(&mut self, out: &mut Events) {
        let Some((index, id, text)) = self.text.take() else {
            return;
        };
        self.emit(
            out,
            "response.output_text.done",
            json!({"item_id": id, "output_index": index,
            "content_index": 0, "text": text, "logprobs": []}),
        );
        self.emit(
            out,
            "response.content_part.done",
            json!({"item_id": id, "output_index": index,
            "content_index": 0, "part": text_part(&text)}),
        );
        let item = message_item(&id, &text, "completed");
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        self.output.push((index, item));
    }

    /// The events one chunk makes.
    pub fn on_chunk(&mut self, chunk: &ChatChunk) -> Events {
        let mut out = Vec::new();
        self.start(&mut out);
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.choices.first() else {
            return out;
        };
        if let Some(delta) = choice.delta.content.as_deref().filter(|d| !d.is_empty()) {
            if self.text.is_none() {
                let (index, id) = (self.next_index, new_id("msg"));
                self.next_index += 1;
                self.emit(
                    &mut out,
                    "response.output_item.added",
                    json!({"output_index": index,
                    "item": message_item(&id, "", "in_progress")}),
                );
                self.emit(
                    &mut out,
                    "response.content_part.added",
                    json!({"item_id": id,
                    "output_index": index, "content_index": 0, "part": text_part("")}),
                );
                self.text = Some((index, id, String::new()));
            }
            if let Some((index, id, text)) = &mut self.text {
                text.push_str(delta);
                let data = json!({"item_id": id, "output_index": index, "content_index": 0,
                    "delta": delta, "logprobs": []});
                self.emit(&mut out, "response.output_text.delta", data);
            }
        }
        for tc in choice.delta.tool_calls.iter().flatten() {
            let key = tc.index.unwrap_or(0);
            if !self.calls.iter().any(|(k, _)| *k == key) {
                self.close_text(&mut out);
                let call = StreamedCall {
                    output_index: self.next_index,
                    item_id: new_id("fc"),
                    call_id: tc.id.clone().unwrap_or_default(),
                    name: tc
                        .function
                        .as_ref()
                        .and_then(|f| f.name.clone())
                        .unwrap_or_default(),
                    arguments: String::new(),
                };
                self.next_index += 1;
                let item = self.echo.call_item(
                    &call.item_id,
                    &call.call_id,
                    &call.name,
                    "",
                    "in_progress",
                );
                self.emit(
                    &mut out,
                    "response.output_item.added",
                    json!({"output_index": call.output_index, "item": item}),
                );
                self.calls.push((key, call));
            }
            let delta = tc.function.as_ref().and_then(|f| f.arguments.clone());
            if let Some(delta) = delta.filter(|d| !d.is_empty())
                && let Some((_, call)) = self.calls.iter_mut().find(|(k, _)| *k == key)
            {
                call.arguments.push_str(&delta);
                // A custom tool's input is the string inside the arguments' JSON: it goes out
                // whole when the call is done.
                if !self.echo.is_custom(&call.name) {
                    let data = json!({"item_id": call.item_id, "output_index": call.output_index,
                        "delta": delta});
                    self.emit(&mut out, "response.function_call_arguments.delta", data);
                }
            }
        }
        if let Some(f) = &choice.finish_reason {
            self.finish = Some(f.clone());
        }
        out
    }

    /// The closing events: every open item done, then `response.completed` with the whole
    /// response (returned too, for storing).
    pub fn finish(&mut self) -> (Events, Value) {
        let mut out = Vec::new();
        self.start(&mut out);
        self.close_text(&mut out);
        for (_, call) in std::mem::take(&mut self.calls) {
            let item = self.echo.call_item(
                &call.item_id,
                &call.call_id,
                &call.name,
                &call.arguments,
                "completed",
            );
            if item["type"] == "custom_tool_call" {
                self.emit(
                    &mut out,
                    "response.custom_tool_call_input.done",
                    json!({"item_id": call.item_id, "output_index": call.output_index,
                    "input": item["input"]}),
                );
            } else {
                self.emit(
                    &mut out,
                    "response.function_call_arguments.done",
                    json!({
                    "item_id": call.item_id, "output_index": call.output_index,
                    "name": item["name"], "arguments": call.arguments}),
                );
            }
            self.emit(
                &mut out,
                "response.output_item.done",
                json!({"output_index": call.output_index, "item": item}),
            );
            self.output.push((call.output_index, item));
        }
        self.output.sort_by_key(|(i, _)| *i);
        let output = self.output.iter().map(|(_, v)| v.clone()).collect();
        let finish = self.finish.clone();
        let status = status_of(finish.as_deref());
        let response = self
            .echo
            .response(status, output, self.usage.as_ref(), finish.as_deref());
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(&mut out, kind, json!({"response": response}));
        (out, response)
    }

    /// The event that ends a stream that failed after it started.
    pub fn error(&mut self, code: &str, message: &str) -> Events {
        let mut out = Vec::new();
        self.emit(
            &mut out,
            "error",
            json!({"code": code, "message": message, "param": null}),
        );
        out
    }
}
