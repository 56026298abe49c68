//! `OpenAiProvider`: any OpenAI-compatible API (OpenAI, Ollama, vLLM, Groq, DeepSeek, …), and
//! Azure OpenAI, which speaks the same JSON under other paths and another key header.

pub mod responses;

use async_trait::async_trait;
use serde::Deserialize;

use super::http::{Auth, Http, Step, upstream_message};
use super::{ChunkStream, Provider};
use crate::config::{ProviderConfig, ResponsesModels};
use crate::error::{Error, Result};
use crate::wire::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse,
};

/// An OpenAI-compatible upstream reached over HTTP.
#[derive(Debug)]
pub struct OpenAiProvider {
    http: Http,
    /// Azure's `api-version`, when this is Azure OpenAI.
    azure: Option<String>,
    /// Send lyss's `prompt_cache_key` ([`ProviderConfig::prompt_cache`]).
    prompt_cache: bool,
    /// Which models go through `/responses` ([`ProviderConfig::responses_models`]).
    responses_models: ResponsesModels,
}

/// The request without Anthropic's `cache_control` marks on text parts (a client of
/// `/v1/messages` sets them; OpenAI refuses fields it does not know in a part), or `None` when
/// it has none.
fn without_cache_marks(req: &ChatRequest) -> Option<ChatRequest> {
    let marked = |m: &crate::wire::Message| match &m.content {
        Some(crate::wire::Content::Parts(parts)) => parts.iter().any(|p| {
            matches!(p, crate::wire::ContentPart::Known(crate::wire::KnownPart::Text { extra, .. })
                if extra.contains_key("cache_control"))
        }),
        _ => false,
    };
    if !req.messages.iter().any(marked) {
        return None;
    }
    let mut req = req.clone();
    for m in &mut req.messages {
        if let Some(crate::wire::Content::Parts(parts)) = &mut m.content {
            for p in parts {
                if let crate::wire::ContentPart::Known(crate::wire::KnownPart::Text {
                    extra, ..
                }) = p
                {
                    extra.remove("cache_control");
                }
            }
        }
    }
    Some(req)
}

/// A chat request with lyss's `prompt_cache_key` added: the body is serialised once, with no
/// copy of the request.
#[derive(serde::Serialize)]
struct WithCacheKey<'a> {
    #[serde(flatten)]
    req: &'a ChatRequest,
    prompt_cache_key: &'a str,
}

impl OpenAiProvider {
    /// Builds the provider; the API key is resolved from `api_key` or `api_key_env` now.
    pub fn from_config(cfg: &ProviderConfig) -> Result<Self> {
        let azure = match cfg.kind {
            crate::config::ProviderKind::Azure => {
                Some(cfg.api_version.clone().ok_or_else(|| {
                    Error::Config(format!(
                        "providers.{}: kind = \"azure\" needs api_version (e.g. \"2024-10-21\")",
                        cfg.name
                    ))
                })?)
            }
            _ => None,
        };
        let auth = if azure.is_some() {
            Auth::Header("api-key")
        } else {
            Auth::Bearer
        };
        Ok(Self {
            http: Http::new(cfg, auth)?,
            azure,
            prompt_cache: cfg.prompt_cache(),
            responses_models: cfg.responses_models(),
        })
    }

    /// Whether a request goes to the upstream's Responses API: a model served there only, or
    /// built-in tools (web search) that only it runs.
    fn via_responses(&self, req: &ChatRequest) -> bool {
        req.builtin_tools.is_some() || self.responses_models.includes(&req.model)
    }

    /// `POST /responses` with a chat request translated.
    fn responses_request(&self, req: &ChatRequest) -> reqwest::RequestBuilder {
        let mut body = responses::request_from_chat(req);
        if let Some(key) = req.prompt_cache_key.as_ref().filter(|_| self.prompt_cache)
            && body.get("prompt_cache_key").is_none()
        {
            body["prompt_cache_key"] = serde_json::json!(key);
        }
        self.request(reqwest::Method::POST, "/responses", Some(&req.model))
            .json(&body)
    }

    /// `POST /chat/completions` with the request as its body, and lyss's cache key when this
    /// upstream takes it and the client set none.
    fn chat_request(&self, req: &ChatRequest) -> reqwest::RequestBuilder {
        let unmarked = without_cache_marks(req);
        let req = unmarked.as_ref().unwrap_or(req);
        let post = self.request(reqwest::Method::POST, "/chat/completions", Some(&req.model));
        match &req.prompt_cache_key {
            Some(key) if self.prompt_cache && !req.extra.contains_key("prompt_cache_key") => post
                .json(&WithCacheKey {
                    req,
                    prompt_cache_key: key,
                }),
            _ => post.json(req),
        }
    }

    /// A request for `operation` (`/chat/completions`, `/embeddings`, `/models`) of `model`:
    /// OpenAI's paths, or Azure's deployment paths with `api-version`.
    fn request(
        &self,
        method: reqwest::Method,
        operation: &str,
        model: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let Some(version) = &self.azure else {
            return self.http.request(method, operation);
        };
        let path = match model {
            Some(deployment) => format!("/openai/deployments/{deployment}{operation}"),
            None => format!("/openai{operation}"),
        };
        self.http
            .request(method, &path)
            .query(&[("api-version", version)])
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.http.name
    }

    fn caches_prompts(&self) -> bool {
        self.prompt_cache
    }

    /// OpenAI's own API, or a server configured with `responses_models` (it has `/responses`).
    fn runs_builtin_tools(&self) -> bool {
        !matches!(&self.responses_models, ResponsesModels::Listed(m) if m.is_empty())
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse> {
        if self.via_responses(req) {
            let resp = self.http.send(self.responses_request(req)).await?;
            let answer: serde_json::Value = self.http.json(resp).await?;
            return Ok(responses::chat_from_response(&answer));
        }
        let resp = self.http.send(self.chat_request(req)).await?;
        self.http.json(resp).await
    }

    async fn chat_stream(&self, req: &ChatRequest) -> Result<ChunkStream> {
        if self.via_responses(req) {
            let resp = self
                .http
                .send(
                    self.responses_request(req)
                        .header(reqwest::header::ACCEPT, "text/event-stream"),
                )
                .await?;
            let mut translator = responses::StreamToChat::new(req.wants_stream_usage());
            let provider = self.http.name.clone();
            return Ok(self.http.chunks(resp, move |ev| {
                let malformed = |e: String| Error::UpstreamUnavailable {
                    provider: provider.clone(),
                    message: e,
                };
                let data: serde_json::Value = serde_json::from_str(&ev.data)
                    .map_err(|e| malformed(format!("malformed stream event: {e}")))?;
                let (chunks, done) =
                    translator.on_event(&ev.event, &data).map_err(|e| match e {
                        Error::UpstreamUnavailable { message, .. } => malformed(message),
                        other => other,
                    })?;
                Ok(Step { chunks, done })
            }));
        }
        let resp = self
            .http
            .send(
                self.chat_request(req)
                    .header(reqwest::header::ACCEPT, "text/event-stream"),
            )
            .await?;
        let provider = self.http.name.clone();
        Ok(self.http.chunks(resp, move |ev| {
            if ev.data == "[DONE]" {
                return Ok(Step {
                    chunks: Vec::new(),
                    done: true,
                });
            }
            if ev.data.trim().is_empty() {
                return Ok(Step::none());
            }
            Ok(Step::chunks(vec![parse_chunk(&provider, &ev.data)?]))
        }))
    }

    async fn embeddings(&self, req: &EmbeddingsRequest) -> Result<EmbeddingsResponse> {
        let mut req = req.clone();
        req.encoding_format = None;
        let resp = self
            .http
            .send(
                self.request(reqwest::Method::POST, "/embeddings", Some(&req.model))
                    .json(&req),
            )
            .await?;
        let mut out: EmbeddingsResponse = self.http.json(resp).await?;
        // Some servers answer base64 anyway; decode so callers always get floats.
        for e in &mut out.data {
            if let EmbeddingVector::Base64(_) = e.embedding {
                e.embedding = decode_base64_vector(&e.embedding)
                    .ok_or_else(|| self.http.malformed("base64 embedding"))?;
            }
        }
        Ok(out)
    }

    async fn list_models(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct List {
            data: Vec<Item>,
        }
        #[derive(Deserialize)]
        struct Item {
            id: String,
        }
        let resp = self
            .http
            .send(self.request(reqwest::Method::GET, "/models", None))
            .await?;
        let list: List = self.http.json(resp).await?;
        Ok(list.data.into_iter().map(|m| m.id).collect())
    }
}

fn parse_chunk(provider: &str, data: &str) -> Result<ChatChunk> {
    // An error object in the middle of a stream (OpenAI and vLLM send these).
    if data.starts_with("{\"error\"") {
        return Err(Error::UpstreamUnavailable {
            provider: provider.to_owned(),
            message: upstream_message(data.as_bytes()),
        });
    }
    serde_json::from_str(data).map_err(|e| Error::UpstreamUnavailable {
        provider: provider.to_owned(),
        message: format!("malformed stream chunk: {e}"),
    })
}

fn decode_base64_vector(v: &EmbeddingVector) -> Option<EmbeddingVector> {
    use base64::Engine as _;
    let EmbeddingVector::Base64(s) = v else {
        return Some(v.clone());
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(EmbeddingVector::Float(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    ))
}
