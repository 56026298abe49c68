//! `GeminiProvider`: Google's Gemini API (`generateContent`, `streamGenerateContent`,
//! `batchEmbedContents`), translated to and from OpenAI's shapes.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::http::{Auth, Http, Step, now};
use super::{ChunkStream, Provider};
use crate::config::ProviderConfig;
use crate::error::{Error, Result};
use crate::wire::{
    ChatChunk, ChatRequest, ChatResponse, Choice, Content, ContentPart, Delta, Embedding,
    EmbeddingInput, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse, FunctionCall,
    KnownPart, Message, PromptTokensDetails, ResponseFormat, Role, ToolCall, Usage,
};

/// Google's Gemini API (`base_url` like `https://generativelanguage.googleapis.com/v1beta`).
#[derive(Debug)]
pub struct GeminiProvider {
    http: Http,
}

impl GeminiProvider {
    pub fn from_config(cfg: &ProviderConfig) -> Result<Self> {
        Ok(Self {
            http: Http::new(cfg, Auth::Header("x-goog-api-key"))?,
        })
    }
}

/// An OpenAI chat request as a `generateContent` body.
pub fn request_from_openai(req: &ChatRequest) -> Result<Value> {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Gemini answers tool results by function name; OpenAI by call id.
    let mut call_names: HashMap<String, String> = HashMap::new();
    let mut push = |role: &str, parts: Vec<Value>| {
        if parts.is_empty() {
            return;
        }
        match contents.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(existing) = last["parts"].as_array_mut() {
                    existing.extend(parts);
                }
            }
            _ => contents.push(json!({"role": role, "parts": parts})),
        }
    };
    for m in &req.messages {
        match m.role {
            Role::System | Role::Developer => {
                if let Some(c) = &m.content {
                    system.push(json!({"text": c.text()}));
                }
            }
            Role::User => push("user", parts(m.content.as_ref())?),
            Role::Assistant => {
                let mut p = parts(m.content.as_ref())?;
                for call in m.tool_calls.iter().flatten() {
                    let f = call.function.as_ref();
                    let name = f.and_then(|f| f.name.clone()).unwrap_or_default();
                    if let Some(id) = &call.id {
                        call_names.insert(id.clone(), name.clone());
                    }
                    let args = f.and_then(|f| f.arguments.as_deref()).unwrap_or("{}");
                    p.push(json!({"functionCall": {"name": name,
                        "args": serde_json::from_str::<Value>(args).unwrap_or_else(|_| json!({}))}}));
                }
                push("model", p);
            }
            Role::Tool | Role::Function => {
                let name = m
                    .tool_call_id
                    .as_ref()
                    .and_then(|id| call_names.get(id).cloned())
                    .or_else(|| m.name.clone())
                    .unwrap_or_default();
                let text = m.content.as_ref().map(Content::text).unwrap_or_default();
                // A JSON object result is passed as is; anything else is wrapped.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"content": text}),
                };
                push(
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
        }
    }
    let extra = &req.extra;
    let mut config = Map::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = extra.get(from) {
            config.insert(to.into(), v.clone());
        }
    }
    if let Some(max) = req.max_completion_tokens.or(req.max_tokens) {
        config.insert("maxOutputTokens".into(), max.into());
    }
    match extra.get("stop") {
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(a @ Value::Array(_)) => {
            config.insert("stopSequences".into(), a.clone());
        }
        _ => {}
    }
    if matches!(
        req.response_format,
        Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })
    ) {
        config.insert("responseMimeType".into(), "application/json".into());
    }
    let mut body = json!({"contents": contents});
    if !system.is_empty() {
        body["systemInstruction"] = json!({"parts": system});
    }
    if !config.is_empty() {
        body["generationConfig"] = Value::Object(config);
    }
    if let Some(tools) = &req.tools {
        let declarations: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.function.as_ref())
            .map(|f| {
                let mut d = json!({"name": f.name});
                if let Some(desc) = &f.description {
                    d["description"] = desc.clone().into();
                }
                if let Some(p) = &f.parameters {
                    d["parameters"] = p.clone();
                }
                d
            })
            .collect();
        if !declarations.is_empty() {
            body["tools"] = json!([{"functionDeclarations": declarations}]);
        }
    }
    let mode = match &req.tool_choice {
        Some(Value::String(s)) if s == "required" => Some(json!({"mode": "ANY"})),
        Some(Value::String(s)) if s == "none" => Some(json!({"mode": "NONE"})),
        Some(Value::Object(o)) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .map(|name| json!({"mode": "ANY", "allowedFunctionNames": [name]})),
        _ => None,
    };
    if let Some(mode) = mode {
        body["toolConfig"] = json!({"functionCallingConfig": mode});
    }
    Ok(body)
}

/// OpenAI message content as Gemini parts (images inline from data URLs, or by URL).
fn parts(content: Option<&Content>) -> Result<Vec<Value>> {
    Ok(match content {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![json!({"text": t})],
        Some(Content::Parts(ps)) => ps
            .iter()
            .filter_map(|p| match p {
                ContentPart::Known(KnownPart::Text { text, .. }) => Some(Ok(json!({"text": text}))),
                ContentPart::Known(KnownPart::ImageUrl { image_url, .. }) => {
                    let url = &image_url.url;
                    Some(Ok(
                        match url
                            .strip_prefix("data:")
                            .and_then(|r| r.split_once(";base64,"))
                        {
                            Some((mime, data)) => {
                                json!({"inlineData": {"mimeType": mime, "data": data}})
                            }
                            None => {
                                json!({"fileData": {"mimeType": image_mime(url), "fileUri": url}})
                            }
                        },
                    ))
                }
                ContentPart::Known(KnownPart::Refusal { .. }) => None,
                _ => Some(Err(Error::invalid(
                    "this model's provider (Gemini) takes text and images only",
                ))),
            })
            .collect::<Result<Vec<_>>>()?,
    })
}

fn image_mime(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".webp") {
        "image/webp"
    } else if lower.ends_with(".gif") {
        "image/gif"
    } else {
        "image/jpeg"
    }
}

/// Gemini's finish reason in OpenAI's words.
fn finish_reason(reason: &str, called_tools: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if called_tools => "tool_calls",
        _ => "stop",
    }
}

/// `usageMetadata` as OpenAI usage (thinking tokens are output tokens: they are billed so).
/// Sums saturate: counts that overflow are charged as the most there is, never wrapped to a few.
fn usage(meta: &Value) -> Usage {
    let n = |k: &str| meta[k].as_u64().unwrap_or(0);
    let prompt = n("promptTokenCount");
    let completion = n("candidatesTokenCount").saturating_add(n("thoughtsTokenCount"));
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(n("cachedContentTokenCount")),
            extra: Map::new(),
        }),
        extra: Map::new(),
    }
}

/// A candidate's text and function calls; `next_call` numbers calls across a stream.
fn candidate_parts(candidate: &Value, next_call: &mut u32) -> (String, Vec<ToolCall>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in candidate["content"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        // Thought summaries are not part of the answer.
        if p["thought"] == true {
            continue;
        }
        if let Some(t) = p["text"].as_str() {
            text.push_str(t);
        }
        if let Some(f) = p.get("functionCall") {
            let index = *next_call;
            *next_call += 1;
            calls.push(ToolCall {
                id: Some(
                    f["id"]
                        .as_str()
                        .map_or_else(|| format!("call_{index}"), str::to_owned),
                ),
                kind: Some("function".into()),
                function: Some(FunctionCall {
                    name: f["name"].as_str().map(str::to_owned),
                    arguments: Some(
                        f.get("args")
                            .cloned()
                            .unwrap_or_else(|| json!({}))
                            .to_string(),
                    ),
                }),
                index: Some(index),
            });
        }
    }
    (text, calls)
}

/// A `generateContent` answer as an OpenAI completion.
pub fn response_to_openai(resp: &Value, created: u64) -> ChatResponse {
    let choices = resp["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let (text, mut calls) = candidate_parts(c, &mut 0);
            calls.iter_mut().for_each(|c| c.index = None);
            let called = !calls.is_empty();
            Choice {
                index: c["index"]
                    .as_u64()
                    .map_or(i as u32, |n| u32::try_from(n).unwrap_or(0)),
                message: Message {
                    role: Role::Assistant,
                    content: (!text.is_empty() || !called).then_some(Content::Text(text)),
                    name: None,
                    tool_calls: called.then_some(calls),
                    tool_call_id: None,
                    extra: Map::new(),
                },
                finish_reason: Some(
                    finish_reason(c["finishReason"].as_str().unwrap_or("STOP"), called).into(),
                ),
                extra: Map::new(),
            }
        })
        .collect();
    ChatResponse {
        id: resp["responseId"].as_str().unwrap_or_default().to_owned(),
        object: "chat.completion".into(),
        created,
        model: resp["modelVersion"].as_str().unwrap_or_default().to_owned(),
        choices,
        usage: resp.get("usageMetadata").map(usage),
        extra: Map::new(),
    }
}

/// Gemini's stream (each event a partial answer) as OpenAI chunks.
#[derive(Debug)]
pub struct StreamToOpenAi {
    created: u64,
    include_usage: bool,
    started: bool,
    next_call: u32,
}

impl StreamToOpenAi {
    pub fn new(created: u64, include_usage: bool) -> Self {
        Self {
            created,
            include_usage,
            started: false,
            next_call: 0,
        }
    }

    /// The chunks one event becomes, and whether the answer is complete (a finish reason).
    pub fn on_event(&mut self, data: &str) -> Result<(Vec<ChatChunk>, bool)> {
        if data.trim().is_empty() {
            return Ok((Vec::new(), false));
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| Error::invalid(format!("malformed Gemini event: {e}")))?;
        if let Some(message) = v["error"]["message"].as_str() {
            return Err(Error::invalid(message.to_owned()));
        }
        let chunk = |delta: Delta, finish: Option<&str>| {
            ChatChunk::of(
                v["responseId"].as_str().unwrap_or_default(),
                v["modelVersion"].as_str().unwrap_or_default(),
                self.created,
                delta,
                finish,
            )
        };
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(chunk(
                Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    ..Delta::default()
                },
                None,
            ));
        }
        let Some(candidate) = v["candidates"].get(0) else {
            return Ok((out, false));
        };
        let first_call = self.next_call;
        let (text, calls) = candidate_parts(candidate, &mut self.next_call);
        if !text.is_empty() {
            out.push(chunk(
                Delta {
                    content: Some(text),
                    ..Delta::default()
                },
                None,
            ));
        }
        if !calls.is_empty() {
            out.push(chunk(
                Delta {
                    tool_calls: Some(calls),
                    ..Delta::default()
                },
                None,
            ));
        }
        let Some(reason) = candidate["finishReason"].as_str() else {
            return Ok((out, false));
        };
        let called = self.next_call > 0 || first_call > 0;
        out.push(chunk(Delta::default(), Some(finish_reason(reason, called))));
        if self.include_usage
            && let Some(meta) = v.get("usageMetadata")
        {
            let mut u = chunk(Delta::default(), None);
            u.choices.clear();
            u.usage = Some(usage(meta));
            out.push(u);
        }
        Ok((out, true))
    }
}

#[async_trait]
impl Provider for GeminiProvider {
    fn name(&self) -> &str {
        &self.http.name
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse> {
        super::no_builtin_tools(req)?;
        let body = request_from_openai(req)?;
        let resp = self
            .http
            .send(
                self.http
                    .request(
                        reqwest::Method::POST,
                        &format!("/models/{}:generateContent", req.model),
                    )
                    .json(&body),
            )
            .await?;
        let answer: Value = self.http.json(resp).await?;
        Ok(response_to_openai(&answer, now()))
    }

    async fn chat_stream(&self, req: &ChatRequest) -> Result<ChunkStream> {
        super::no_builtin_tools(req)?;
        let body = request_from_openai(req)?;
        let resp = self
            .http
            .send(
                self.http
                    .request(
                        reqwest::Method::POST,
                        &format!("/models/{}:streamGenerateContent?alt=sse", req.model),
                    )
                    .header(reqwest::header::ACCEPT, "text/event-stream")
                    .json(&body),
            )
            .await?;
        let mut translator = StreamToOpenAi::new(now(), req.wants_stream_usage());
        let provider = self.http.name.clone();
        Ok(self.http.chunks(resp, move |ev| {
            let (chunks, done) =
                translator
                    .on_event(&ev.data)
                    .map_err(|e| Error::UpstreamUnavailable {
                        provider: provider.clone(),
                        message: e.to_string(),
                    })?;
            Ok(Step { chunks, done })
        }))
    }

    async fn embeddings(&self, req: &EmbeddingsRequest) -> Result<EmbeddingsResponse> {
        let texts: Vec<String> = match &req.input {
            EmbeddingInput::One(t) => vec![t.clone()],
            EmbeddingInput::Many(ts) => ts.clone(),
            _ => {
                return Err(Error::invalid(
                    "Gemini embeddings take text input, not token arrays",
                ));
            }
        };
        let model = format!("models/{}", req.model);
        let requests: Vec<Value> = texts
            .iter()
            .map(|t| {
                let mut r = json!({"model": model, "content": {"parts": [{"text": t}]}});
                if let Some(d) = req.dimensions {
                    r["outputDimensionality"] = d.into();
                }
                r
            })
            .collect();
        let resp = self
            .http
            .send(
                self.http
                    .request(
                        reqwest::Method::POST,
                        &format!("/models/{}:batchEmbedContents", req.model),
                    )
                    .json(&json!({"requests": requests})),
            )
            .await?;
        let answer: Value = self.http.json(resp).await?;
        let data = answer["embeddings"]
            .as_array()
            .ok_or_else(|| self.http.malformed("embeddings: no `embeddings`"))?
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let values = e["values"]
                    .as_array()
                    .ok_or_else(|| self.http.malformed("embedding: no `values`"))?
                    .iter()
                    .map(|x| x.as_f64().unwrap_or(0.0) as f32)
                    .collect();
                Ok(Embedding {
                    object: "embedding".into(),
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    embedding: EmbeddingVector::Float(values),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EmbeddingsResponse {
            object: "list".into(),
            data,
            model: req.model.clone(),
            usage: None,
        })
    }

    async fn list_models(&self) -> Result<Vec<String>> {
        let resp = self
            .http
            .send(self.http.request(reqwest::Method::GET, "/models"))
            .await?;
        let list: Value = self.http.json(resp).await?;
        Ok(list["models"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["name"].as_str())
            .map(|n| n.trim_start_matches("models/").to_owned())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// Found by fuzzing: answer and thinking counts whose sum overflows saturate (and so cost
    /// the most there is) instead of wrapping to a handful of tokens.
    #[test]
    fn usage_that_overflows_saturates_rather_than_wrapping() {
        let answer = json!({
            "candidates": [{"content": {"parts": [{"text": "hi"}]}}],
            "usageMetadata": {
                "promptTokenCount": 3,
                "candidatesTokenCount": u64::MAX,
                "thoughtsTokenCount": 7
            }
        });
        let usage = super::response_to_openai(&answer, 1).usage.unwrap();
        assert_eq!(usage.completion_tokens, u64::MAX);
        assert_eq!(usage.total_tokens, u64::MAX);
        assert_eq!(usage.prompt_tokens, 3);
    }
}
