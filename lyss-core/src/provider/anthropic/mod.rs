//! Anthropic: the provider (`AnthropicProvider`), its Messages API on the wire (`wire.rs`), and
//! OpenAI's shapes translated to it for this provider (`outbound.rs`) and its answers back
//! (`answer.rs`). The other direction —
//! clients speaking the Messages API to lyss — is a dialect: [`crate::dialects::messages`].

mod answer;
mod outbound;
mod wire;

pub use self::answer::*;
pub use self::outbound::*;
pub use self::wire::*;

use async_trait::async_trait;
use serde::Deserialize;

use super::http::{Auth, Http, Step, now};
use super::{ChunkStream, Provider};
use crate::config::ProviderConfig;
use crate::error::{Error, Result};
use crate::wire::{ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse};

/// Output cap sent when the request sets none (Anthropic requires one).
const DEFAULT_MAX_TOKENS: u32 = 4_096;

/// Anthropic's API (`base_url` like `https://api.anthropic.com/v1`).
#[derive(Debug)]
pub struct AnthropicProvider {
    http: Http,
    /// Insert prompt-cache breakpoints ([`ProviderConfig::prompt_cache`]).
    prompt_cache: bool,
}

impl AnthropicProvider {
    pub fn from_config(cfg: &ProviderConfig) -> Result<Self> {
        Ok(Self {
            http: Http::new(cfg, Auth::Header("x-api-key"))?,
            prompt_cache: cfg.prompt_cache(),
        })
    }

    /// The Messages request for `req`, with cache breakpoints when configured.
    fn body(&self, req: &ChatRequest, stream: bool) -> Result<MessagesRequest> {
        let mut body = request_from_openai(req, DEFAULT_MAX_TOKENS)?;
        body.stream = stream.then_some(true);
        if self.prompt_cache {
            mark_cache_breakpoints(req, &mut body);
        }
        Ok(body)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, path)
            .header("anthropic-version", API_VERSION)
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.http.name
    }

    fn caches_prompts(&self) -> bool {
        self.prompt_cache
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse> {
        super::no_builtin_tools(req)?;
        let body = self.body(req, false)?;
        let resp = self
            .http
            .send(self.request(reqwest::Method::POST, "/messages").json(&body))
            .await?;
        let answer: MessagesResponse = self.http.json(resp).await?;
        Ok(response_to_openai(answer, now()))
    }

    async fn chat_stream(&self, req: &ChatRequest) -> Result<ChunkStream> {
        super::no_builtin_tools(req)?;
        let body = self.body(req, true)?;
        let resp = self
            .http
            .send(
                self.request(reqwest::Method::POST, "/messages")
                    .header(reqwest::header::ACCEPT, "text/event-stream")
                    .json(&body),
            )
            .await?;
        let mut translator = StreamToOpenAi::new(now(), req.wants_stream_usage());
        let provider = self.http.name.clone();
        Ok(self.http.chunks(resp, move |ev| {
            let (chunks, done) = translator.on_event(&ev.event, &ev.data).map_err(|e| {
                Error::UpstreamUnavailable {
                    provider: provider.clone(),
                    message: match e {
                        Error::UpstreamUnavailable { message, .. } => message,
                        other => other.to_string(),
                    },
                }
            })?;
            Ok(Step { chunks, done })
        }))
    }

    async fn embeddings(&self, _: &EmbeddingsRequest) -> Result<EmbeddingsResponse> {
        Err(Error::invalid(format!(
            "provider `{}` (Anthropic) has no embeddings API",
            self.http.name
        )))
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
            .send(self.request(reqwest::Method::GET, "/models"))
            .await?;
        let list: List = self.http.json(resp).await?;
        Ok(list.data.into_iter().map(|m| m.id).collect())
    }
}

#[cfg(test)]
mod tests;
