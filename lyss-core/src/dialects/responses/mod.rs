//! OpenAI's Responses API (`POST /v1/responses`): its request, answer and event shapes, and
//! their translation to and from chat completions; the conversations lyss keeps for it
//! (`conversation.rs`). A Responses call runs through the pipeline
//! as a chat request (keys, allow-lists, budgets, limits, memory, cache, ledger) and so reaches
//! every upstream kind; `previous_response_id` is served from the conversations lyss stores
//! itself ([`crate::policy::Conversations::save_response`]), whatever the upstream.

mod answer;
mod conversation;
mod stream;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use self::answer::{Echo, from_chat};
pub use self::conversation::{Conversation, Keep};
pub use self::stream::{Events, StreamToResponses};
use crate::error::{Error, Result};
pub use crate::wire::responses::{chat_name, function_call, output_message};
use crate::wire::{
    ChatRequest, Content, ContentPart, FunctionDef, ImageUrl, KnownPart, Message, ResponseFormat,
    Role, StreamOptions, Tool,
};

/// `POST /v1/responses` request body (the fields lyss translates; the rest are kept).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    /// A string (one user message) or a list of input items.
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    /// Whether lyss keeps the conversation for a later `previous_response_id` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", …}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// `{"effort": "low" | "medium" | "high"}`: chat's `reasoning_effort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<String>,
    /// Everything else (`include`, `truncation`, `service_tier`, …): accepted, not translated.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ResponsesRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the conversation is kept for `previous_response_id`.
    pub fn stores(&self) -> bool {
        self.store.unwrap_or(true)
    }
}

/// A new response id (`resp_…`), message id (`msg_…`) or call item id (`fc_…`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

fn invalid(message: impl Into<String>, param: &str) -> Error {
    Error::invalid_param(message, param)
}

/// The request's input as chat messages (what it adds to the conversation).
pub fn input_messages(req: &ResponsesRequest) -> Result<Vec<Message>> {
    let items = match &req.input {
        None | Some(Value::Null) => return Err(invalid("`input` is required", "input")),
        Some(Value::String(text)) => return Ok(vec![Message::text(Role::User, text.clone())]),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("`input` must be a string or a list", "input")),
    };
    let mut out: Vec<Message> = Vec::new();
    for item in items {
        let kind = item["type"].as_str().unwrap_or("message");
        match kind {
            "message" => {
                let role = match item["role"].as_str() {
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some("system") => Role::System,
                    Some("developer") => Role::Developer,
                    other => {
                        return Err(invalid(
                            format!(
                                "input message role {other:?} is not one of user, assistant, system, developer"
                            ),
                            "input",
                        ));
                    }
                };
                out.push(Message {
                    content: Some(content(&item["content"])?),
                    ..Message::text(role, "")
                });
            }
            "function_call" | "custom_tool_call" => {
                let call = function_call(item);
                // Calls made together are one assistant turn, with any text it said.
                match out.last_mut() {
                    Some(m) if m.role == Role::Assistant => {
                        m.tool_calls.get_or_insert_with(Vec::new).push(call);
                    }
                    _ => out.push(Message {
                        content: None,
                        tool_calls: Some(vec![call]),
                        ..Message::text(Role::Assistant, "")
                    }),
                }
            }
            "function_call_output" | "custom_tool_call_output" => {
                let output = match &item["output"] {
                    Value::String(s) => s.clone(),
                    other => content(other)?.text(),
                };
                out.push(Message {
                    tool_call_id: item["call_id"].as_str().map(str::to_owned),
                    ..Message::text(Role::Tool, output)
                });
            }
            // Tools offered as an input item (Codex sends every tool this way): they join the
            // request's tools ([`offered_tools`]); they are no turn.
            "additional_tools" => {}
            // Reasoning a model did earlier is the upstream's own business, and the calls of
            // tools that ran inside OpenAI (web search, tool search …) left only their
            // results in the turns that followed.
            kind if SKIPPED_ITEMS.contains(&kind) => {}
            other => {
                return Err(invalid(
                    format!(
                        "input items of type `{other}` are not supported: lyss serves messages, function and custom tool calls and their outputs"
                    ),
                    "input",
                ));
            }
        }
    }
    Ok(out)
}

/// Input items of tools that run inside OpenAI, or that lyss does not resolve: skipped.
const SKIPPED_ITEMS: &[&str] = &[
    "reasoning",
    "web_search_call",
    "tool_search_call",
    "tool_search_output",
    "file_search_call",
    "image_generation_call",
    "code_interpreter_call",
    "mcp_list_tools",
    "item_reference",
];

/// What a chat tool offered upstream stands for in the Responses API: a function or a custom
/// (free-form input) tool, maybe a member of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRef {
    pub namespace: Option<String>,
    pub name: String,
    pub custom: bool,
}

/// The tools of a Responses request as offered to a chat upstream, by chat name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolMap(HashMap<String, ToolRef>);

impl ToolMap {
    /// The Responses tool a chat tool call names (a plain function when lyss offered no such
    /// tool: the call goes back as the upstream made it).
    pub fn resolve(&self, chat_name: &str) -> ToolRef {
        self.0.get(chat_name).cloned().unwrap_or_else(|| ToolRef {
            namespace: None,
            name: chat_name.to_owned(),
            custom: false,
        })
    }
}

/// Hosted tools that run inside OpenAI and that lyss cannot run or offer to another upstream:
/// left out of the request, and named in `x-lyss-dropped`.
const HOSTED_TOOLS: &[&str] = &[
    "tool_search",
    "file_search",
    "code_interpreter",
    "image_generation",
    "computer_use_preview",
    "computer_use",
    "mcp",
    "local_shell",
];

/// A request's tools as offered upstream: chat tools, built-in ones kept aside, the map back,
/// and what was dropped.
struct Offered {
    tools: Vec<Tool>,
    builtin: Vec<Value>,
    map: ToolMap,
    dropped: Vec<String>,
}

/// The tools a Responses request offers — its `tools` and those of its `additional_tools`
/// input items — as chat tools, the built-in ones (web search) kept aside, the map back,
/// and what was dropped.
fn offered_tools(req: &ResponsesRequest) -> Result<Offered> {
    let mut listed: Vec<&Value> = req.tools.iter().flatten().collect();
    if let Some(Value::Array(items)) = &req.input {
        for item in items {
            if item["type"].as_str() == Some("additional_tools") {
                listed.extend(item["tools"].as_array().into_iter().flatten());
            }
        }
    }
    let (mut tools, mut builtin, mut map, mut dropped) =
        (Vec::new(), Vec::new(), ToolMap::default(), Vec::new());
    let mut add = |t: &Value, namespace: Option<&str>, tools: &mut Vec<Tool>| -> Result<()> {
        let name = t["name"]
            .as_str()
            .ok_or_else(|| invalid("a tool needs a `name`", "tools"))?;
        let custom = t["type"].as_str() == Some("custom");
        let chat = chat_name(namespace, name);
        tools.push(if custom {
            custom_tool(&chat, t)
        } else {
            tool(&chat, t)
        });
        map.0.insert(
            chat,
            ToolRef {
                namespace: namespace.map(str::to_owned),
                name: name.to_owned(),
                custom,
            },
        );
        Ok(())
    };
    for t in listed {
        match t["type"].as_str().unwrap_or("") {
            "function" | "custom" => add(t, None, &mut tools)?,
            "namespace" => {
                let ns = t["name"].as_str().unwrap_or("");
                for member in t["tools"].as_array().into_iter().flatten() {
                    match member["type"].as_str().unwrap_or("") {
                        "function" | "custom" => add(member, Some(ns), &mut tools)?,
                        other => dropped.push(format!("tools[{ns}.{other}]")),
                    }
                }
            }
            kind if BUILTIN_TOOLS.contains(&kind) => builtin.push(t.clone()),
            kind if HOSTED_TOOLS.contains(&kind) => dropped.push(format!("tools[{kind}]")),
            other => {
                return Err(invalid(
                    format!(
                        "tools of type {other:?} are not supported: lyss serves function, custom and namespace tools and web search"
                    ),
                    "tools",
                ));
            }
        }
    }
    Ok(Offered {
        tools,
        builtin,
        map,
        dropped,
    })
}

/// A message's content: a string, or input/output text and image parts.
fn content(v: &Value) -> Result<Content> {
    let parts = match v {
        Value::String(s) => return Ok(Content::Text(s.clone())),
        Value::Array(parts) => parts,
        _ => {
            return Err(invalid(
                "message content must be a string or a list",
                "input",
            ));
        }
    };
    let mut out = Vec::new();
    for p in parts {
        match p["type"].as_str() {
            Some("input_text" | "output_text" | "text") => {
                out.push(ContentPart::Known(KnownPart::Text {
                    text: p["text"].as_str().unwrap_or("").to_owned(),
                    extra: Map::new(),
                }));
            }
            Some("input_image") => {
                let url = p["image_url"].as_str().ok_or_else(|| {
                    invalid(
                        "input_image needs an `image_url` (a URL or a data URL); file ids are not supported",
                        "input",
                    )
                })?;
                out.push(ContentPart::Known(KnownPart::ImageUrl {
                    image_url: ImageUrl {
                        url: url.to_owned(),
                        detail: p["detail"].as_str().map(str::to_owned),
                    },
                    extra: Map::new(),
                }));
            }
            Some("refusal") => {}
            other => {
                return Err(invalid(
                    format!(
                        "content parts of type {other:?} are not supported (text and images are)"
                    ),
                    "input",
                ));
            }
        }
    }
    Ok(Content::Parts(out))
}

/// A Responses request as a chat request, with what a response needs to map the answer back
/// and what could not be carried.
#[derive(Debug, Clone)]
pub struct Translated {
    pub chat: ChatRequest,
    /// The request's tools by the names the chat upstream knows them by.
    pub tools: ToolMap,
    /// Fields and tools lyss could not carry (for `x-lyss-dropped` and the log).
    pub dropped: Vec<String>,
}

/// The chat request for a Responses request: its instructions, the stored conversation it
/// continues (`history`), then its input.
pub fn to_chat(req: &ResponsesRequest, history: Vec<Message>) -> Result<Translated> {
    let mut messages = Vec::new();
    // Instructions are this request's only: they do not carry over from a previous response.
    if let Some(i) = req.instructions.as_deref().filter(|i| !i.is_empty()) {
        messages.push(Message::text(Role::System, i));
    }
    messages.extend(history);
    messages.extend(input_messages(req)?);
    let Offered {
        tools,
        builtin,
        map,
        mut dropped,
    } = offered_tools(req)?;
    let tool_choice = match &req.tool_choice {
        Some(Value::Object(o))
            if matches!(
                o.get("type").and_then(Value::as_str),
                Some("function" | "custom")
            ) =>
        {
            let name = chat_name(
                o.get("namespace").and_then(Value::as_str),
                o.get("name").and_then(Value::as_str).unwrap_or(""),
            );
            Some(json!({"type": "function", "function": {"name": name}}))
        }
        Some(Value::String(s)) => Some(Value::String(s.clone())),
        Some(Value::Object(o))
            if o.get("type").and_then(Value::as_str) == Some("allowed_tools") =>
        {
            Some(json!(
                o.get("mode").and_then(Value::as_str).unwrap_or("auto")
            ))
        }
        Some(other) => {
            return Err(invalid(
                format!(
                    "tool_choice {other} is not supported (auto, none, required or a function are)"
                ),
                "tool_choice",
            ));
        }
        None => None,
    };
    let format = req.text.as_ref().and_then(|t| t.get("format"));
    let response_format = match format.and_then(|f| f["type"].as_str()) {
        None | Some("text") => None,
        Some("json_object") => Some(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let f = format.unwrap_or(&Value::Null);
            let mut schema = Map::new();
            for k in ["name", "schema", "strict", "description"] {
                if let Some(v) = f.get(k) {
                    schema.insert(k.into(), v.clone());
                }
            }
            Some(ResponseFormat::JsonSchema {
                json_schema: Value::Object(schema),
            })
        }
        Some(other) => {
            return Err(invalid(
                format!("text.format `{other}` is not supported"),
                "text",
            ));
        }
    };
    let reasoning = req.reasoning.as_ref();
    for field in ["summary", "context", "generate_summary"] {
        if reasoning
            .and_then(|r| r.get(field))
            .is_some_and(|v| !v.is_null())
        {
            dropped.push(format!("reasoning.{field}"));
        }
    }
    if req
        .extra
        .get("include")
        .is_some_and(|i| i.as_array().is_some_and(|a| !a.is_empty()))
    {
        dropped.push("include".into());
    }
    let mut extra = Map::new();
    for (k, v) in [
        ("temperature", req.temperature.map(|t| json!(t))),
        ("top_p", req.top_p.map(|t| json!(t))),
        (
            "parallel_tool_calls",
            req.parallel_tool_calls
                .filter(|_| !tools.is_empty())
                .map(Value::Bool),
        ),
        (
            "reasoning_effort",
            reasoning.and_then(|r| r.get("effort")).cloned(),
        ),
        (
            "verbosity",
            req.text.as_ref().and_then(|t| t.get("verbosity")).cloned(),
        ),
        (
            "prompt_cache_key",
            req.prompt_cache_key.clone().map(Value::String),
        ),
    ] {
        if let Some(v) = v {
            extra.insert(k.into(), v);
        }
    }
    let chat = ChatRequest {
        model: req.model.clone(),
        messages,
        stream: req.is_stream().then_some(true),
        // A streamed response ends with its usage: the pipeline passes the usage chunk on.
        stream_options: req.is_stream().then(|| StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        max_completion_tokens: req.max_output_tokens,
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        response_format,
        user: req.user.clone(),
        extra,
        builtin_tools: (!builtin.is_empty()).then_some(builtin),
        ..ChatRequest::default()
    };
    Ok(Translated {
        chat,
        tools: map,
        dropped,
    })
}

/// The built-in tools lyss passes to an OpenAI upstream's Responses API: web search, whose
/// answer is text (with citations) a chat completion can carry.
const BUILTIN_TOOLS: &[&str] = &["web_search", "web_search_preview"];

/// A function tool as a chat tool named `name`.
fn tool(name: &str, t: &Value) -> Tool {
    Tool {
        kind: "function".into(),
        function: Some(FunctionDef {
            name: name.to_owned(),
            description: t["description"].as_str().map(str::to_owned),
            parameters: t.get("parameters").cloned(),
            strict: t["strict"].as_bool(),
        }),
        extra: Map::new(),
    }
}

/// A custom tool (free-form input, maybe constrained by a grammar) as a chat function with one
/// string argument, `input`; its grammar goes into the description, for the model to follow.
fn custom_tool(name: &str, t: &Value) -> Tool {
    let mut description = t["description"].as_str().unwrap_or("").to_owned();
    let format = &t["format"];
    if format["type"].as_str() == Some("grammar") {
        let syntax = format["syntax"].as_str().unwrap_or("lark");
        let definition = format["definition"].as_str().unwrap_or("");
        description.push_str(&format!(
            "\n\nThe `input` argument must match this {syntax} grammar:\n{definition}"
        ));
    }
    Tool {
        kind: "function".into(),
        function: Some(FunctionDef {
            name: name.to_owned(),
            description: Some(description),
            parameters: Some(json!({
                "type": "object",
                "properties": {"input": {"type": "string", "description": "The tool's whole input, as free text."}},
                "required": ["input"],
                "additionalProperties": false
            })),
            strict: None,
        }),
        extra: Map::new(),
    }
}

#[cfg(test)]
mod tests;
