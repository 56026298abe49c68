//! `OpenAiProvider`: any OpenAI-compatible API (OpenAI, Ollama, vLLM, Groq, DeepSeek, …).

use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use serde::Deserialize;

use super::{ChunkStream, Provider};
use crate::config::ProviderConfig;
use crate::error::{Error, Result};
use crate::openai::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse,
};

/// An OpenAI-compatible upstream reached over HTTP.
pub struct OpenAiProvider {
    name: String,
    base_url: String,
    api_key: Option<String>,
    client: reqwest::Client,
    timeout: Duration,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

impl OpenAiProvider {
    /// Builds the provider; the API key is resolved from `api_key` or `api_key_env` now.
    pub fn from_config(cfg: &ProviderConfig) -> Result<Self> {
        let api_key = match (&cfg.api_key, &cfg.api_key_env) {
            (Some(k), _) => Some(k.expose().to_owned()),
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(v),
                _ => {
                    tracing::warn!(provider = %cfg.name, env = %var, "API key variable is not set; calling without a key");
                    None
                }
            },
            (None, None) => None,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Config(format!("providers.{}: {e}", cfg.name)))?;
        Ok(Self {
            name: cfg.name.clone(),
            base_url: cfg.base_url.trim_end_matches('/').to_owned(),
            api_key,
            client,
            timeout: Duration::from_secs(cfg.timeout_secs),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self
            .client
            .request(method, format!("{}{path}", self.base_url));
        match &self.api_key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    /// Sends the request and waits for the response head within the timeout; non-2xx
    /// statuses become [`Error::Upstream`] with the upstream's message.
    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = tokio::time::timeout(self.timeout, rb.send())
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.transport(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        Err(Error::Upstream {
            provider: self.name.clone(),
            status,
            message: upstream_message(&body),
        })
    }

    /// Reads and parses a whole JSON body within the timeout.
    async fn json<T: serde::de::DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T> {
        let body = tokio::time::timeout(self.timeout, resp.bytes())
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.transport(e))?;
        serde_json::from_slice(&body).map_err(|e| Error::UpstreamUnavailable {
            provider: self.name.clone(),
            message: format!("malformed response body: {e}"),
        })
    }

    fn timed_out(&self) -> Error {
        Error::UpstreamTimeout {
            provider: self.name.clone(),
        }
    }

    fn transport(&self, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            return self.timed_out();
        }
        Error::UpstreamUnavailable {
            provider: self.name.clone(),
            message: e.to_string(),
        }
    }
}

/// The `error.message` of an OpenAI-shaped error body, else the body's start.
fn upstream_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Inner {
        Object { message: String },
        Text(String),
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body {
            error: Inner::Object { message } | Inner::Text(message),
        }) => message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse> {
        let resp = self
            .send(
                self.request(reqwest::Method::POST, "/chat/completions")
                    .json(req),
            )
            .await?;
        self.json(resp).await
    }

    async fn chat_stream(&self, req: &ChatRequest) -> Result<ChunkStream> {
        let resp = self
            .send(
                self.request(reqwest::Method::POST, "/chat/completions")
                    .header(reqwest::header::ACCEPT, "text/event-stream")
                    .json(req),
            )
            .await?;
        let provider = self.name.clone();
        let events = resp.bytes_stream().eventsource();
        // No task in between: dropping the stream drops the upstream body at once.
        let stream = futures::stream::unfold(Some(events), move |state| {
            let provider = provider.clone();
            async move {
                let mut events = state?;
                loop {
                    return match events.next().await {
                        // A body that ends without `[DONE]` ends the stream too; callers tell a
                        // finished answer from a cut one by its `finish_reason`.
                        None => None,
                        Some(Ok(ev)) if ev.data == "[DONE]" => None,
                        Some(Ok(ev)) if ev.data.trim().is_empty() => continue,
                        Some(Ok(ev)) => {
                            let item = parse_chunk(&provider, &ev.data);
                            let next = item.is_ok().then_some(events);
                            Some((item, next))
                        }
                        Some(Err(e)) => Some((
                            Err(Error::UpstreamUnavailable {
                                provider: provider.clone(),
                                message: format!("stream broke: {e}"),
                            }),
                            None,
                        )),
                    };
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn embeddings(&self, req: &EmbeddingsRequest) -> Result<EmbeddingsResponse> {
        let mut req = req.clone();
        req.encoding_format = None;
        let resp = self
            .send(
                self.request(reqwest::Method::POST, "/embeddings")
                    .json(&req),
            )
            .await?;
        let mut out: EmbeddingsResponse = self.json(resp).await?;
        // Some servers answer base64 anyway; decode so callers always get floats.
        for e in &mut out.data {
            if let EmbeddingVector::Base64(_) = e.embedding {
                e.embedding = decode_base64_vector(&e.embedding).ok_or_else(|| {
                    Error::UpstreamUnavailable {
                        provider: self.name.clone(),
                        message: "malformed base64 embedding".into(),
                    }
                })?;
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
            .send(self.request(reqwest::Method::GET, "/models"))
            .await?;
        let list: List = self.json(resp).await?;
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
