//! The one request path (DESIGN §1). Each stage is a plain call, in order:
//!
//! 1. authenticate the key → [`Principal`]
//! 2. authorize the model against the workspace's and key's allow-lists
//! 3. rate limits, 4. memory recall and compression, 5. cache lookup, 6. budget reservation
//!    — stages added by later work slot in here, in this order
//! 7. call the provider
//! 8. settle: append the request to the usage ledger (durably, before the response completes)
//!
//! Streams take the same path; the ledger row is written when the upstream stream ends, before
//! the final `[DONE]` reaches the client, or — if the client goes away — from a guard that
//! records what flowed and cancels the upstream request by dropping it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::models::{Model, ModelRegistry};
use crate::openai::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, EncodingFormat,
    ModelList, ModelObject, StreamOptions, Usage,
};
use crate::policy::{KeyCache, LedgerEntry, Policy, Principal};
use crate::provider::ChunkStream;
use crate::tokens;

/// Who is calling and how to name the request in logs and the ledger.
#[derive(Debug, Clone)]
pub struct Call {
    /// The bearer key as presented (without `Bearer `).
    pub api_key: String,
    pub request_id: String,
}

/// A chat answer: a whole completion or a stream, plus headers to return to the caller.
pub struct ChatReply {
    pub body: ChatBody,
    /// `x-lyss-*` response headers.
    pub headers: Vec<(&'static str, String)>,
}

/// The body of a chat answer.
pub enum ChatBody {
    Complete(ChatResponse),
    Stream(ChatStream),
}

/// Chunks for the client. Ends after the ledger row is written; a mid-stream failure is
/// yielded once as `Err`, then the stream ends.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatChunk>> + Send>>;

/// The composed pipeline. Cheap to share (`Arc<Lyss>`); build it with [`Lyss::builder`].
pub struct Lyss {
    policy: Arc<dyn Policy>,
    models: ModelRegistry,
    keys: KeyCache,
    started: u64,
}

/// Builds a [`Lyss`] from its seams.
pub struct LyssBuilder {
    policy: Arc<dyn Policy>,
    models: ModelRegistry,
    key_cache_ttl: Duration,
}

impl LyssBuilder {
    /// The model registry (default: empty).
    pub fn models(mut self, models: ModelRegistry) -> Self {
        self.models = models;
        self
    }

    /// How long a verified key is trusted without reading the store (default 500 ms).
    pub fn key_cache_ttl(mut self, ttl: Duration) -> Self {
        self.key_cache_ttl = ttl;
        self
    }

    pub fn build(self) -> Lyss {
        Lyss {
            policy: self.policy,
            models: self.models,
            keys: KeyCache::new(self.key_cache_ttl),
            started: OffsetDateTime::now_utc().unix_timestamp().max(0) as u64,
        }
    }
}

impl Lyss {
    /// Starts a builder around a policy store.
    pub fn builder(policy: Arc<dyn Policy>) -> LyssBuilder {
        LyssBuilder {
            policy,
            models: ModelRegistry::default(),
            key_cache_ttl: Duration::from_millis(500),
        }
    }

    pub fn policy(&self) -> &Arc<dyn Policy> {
        &self.policy
    }

    pub fn models(&self) -> &ModelRegistry {
        &self.models
    }

    /// Stage 1: the principal behind a key.
    pub async fn authenticate(&self, api_key: &str) -> Result<Arc<Principal>> {
        if api_key.is_empty() {
            return Err(Error::Unauthenticated(
                "You didn't provide an API key. Send it as `Authorization: Bearer lyss-sk-…`."
                    .into(),
            ));
        }
        self.keys.authenticate(self.policy.as_ref(), api_key).await
    }

    /// Stage 2: the model, if it exists and the principal may use it.
    pub fn authorize(&self, principal: &Principal, model: &str) -> Result<Arc<Model>> {
        match self.models.get(model) {
            Some(m) if principal.allows(m) => Ok(m.clone()),
            _ => Err(Error::ModelNotFound(model.to_owned())),
        }
    }

    /// `GET /v1/models`: exactly the models (and aliases) the caller may use.
    pub async fn list_models(&self, call: &Call) -> Result<ModelList> {
        let principal = self.authenticate(&call.api_key).await?;
        let data = self
            .models
            .iter()
            .filter(|m| principal.allows(m))
            .flat_map(|m| {
                std::iter::once(&m.name)
                    .chain(&m.aliases)
                    .map(|id| ModelObject {
                        id: id.clone(),
                        object: "model".into(),
                        created: self.started,
                        owned_by: m.provider.name().to_owned(),
                    })
            })
            .collect();
        Ok(ModelList {
            object: "list".into(),
            data,
        })
    }

    /// `POST /v1/chat/completions`.
    pub async fn chat(&self, call: &Call, mut req: ChatRequest) -> Result<ChatReply> {
        let started = Instant::now();
        let principal = self.authenticate(&call.api_key).await?;
        let model = self.authorize(&principal, &req.model)?;
        validate_chat(&req)?;
        let public_model = std::mem::replace(&mut req.model, model.upstream.clone());
        let mut ledger = LedgerDraft {
            principal,
            request_id: call.request_id.clone(),
            endpoint: "chat",
            model: model.clone(),
            public_model,
            stream: req.is_stream(),
            started,
        };

        if !req.is_stream() {
            return match model.provider.chat(&req).await {
                Ok(resp) => {
                    let usage = resp.usage.clone().unwrap_or_else(|| Usage {
                        prompt_tokens: tokens::count_messages(&model.upstream, &req.messages),
                        completion_tokens: resp
                            .choices
                            .iter()
                            .filter_map(|c| c.message.content.as_ref())
                            .map(|c| tokens::count_text(&model.upstream, &c.text()))
                            .sum(),
                        ..Usage::default()
                    });
                    self.policy.record(&ledger.entry(&usage, 200, None)).await?;
                    Ok(ChatReply {
                        body: ChatBody::Complete(resp),
                        headers: Vec::new(),
                    })
                }
                Err(e) => Err(ledger.failed(self.policy.as_ref(), e).await),
            };
        }

        // Always ask upstream for usage; pass the usage chunk on only if the client asked.
        let client_wants_usage = req.wants_stream_usage();
        req.stream_options
            .get_or_insert_with(StreamOptions::default)
            .include_usage = Some(true);
        let upstream = match model.provider.chat_stream(&req).await {
            Ok(s) => s,
            Err(e) => return Err(ledger.failed(self.policy.as_ref(), e).await),
        };
        let prompt_estimate = tokens::count_messages(&model.upstream, &req.messages);
        ledger.stream = true;
        let relay = StreamRelay {
            upstream,
            policy: self.policy.clone(),
            ledger: Some(ledger),
            usage: None,
            prompt_estimate,
            completion_text: String::new(),
            finished: false,
            client_wants_usage,
        };
        Ok(ChatReply {
            body: ChatBody::Stream(relay.into_stream()),
            headers: Vec::new(),
        })
    }

    /// `POST /v1/embeddings`.
    pub async fn embeddings(
        &self,
        call: &Call,
        mut req: EmbeddingsRequest,
    ) -> Result<EmbeddingsResponse> {
        let started = Instant::now();
        let principal = self.authenticate(&call.api_key).await?;
        let model = self.authorize(&principal, &req.model)?;
        let public_model = std::mem::replace(&mut req.model, model.upstream.clone());
        let want_base64 = req.encoding_format == Some(EncodingFormat::Base64);
        let ledger = LedgerDraft {
            principal,
            request_id: call.request_id.clone(),
            endpoint: "embeddings",
            model: model.clone(),
            public_model,
            stream: false,
            started,
        };
        let mut resp = match model.provider.embeddings(&req).await {
            Ok(r) => r,
            Err(e) => return Err(ledger.failed(self.policy.as_ref(), e).await),
        };
        let usage = resp.usage.clone().unwrap_or_default();
        self.policy.record(&ledger.entry(&usage, 200, None)).await?;
        if want_base64 {
            for e in &mut resp.data {
                e.embedding = std::mem::replace(
                    &mut e.embedding,
                    crate::openai::EmbeddingVector::Float(Vec::new()),
                )
                .into_base64();
            }
        }
        Ok(resp)
    }
}

fn validate_chat(req: &ChatRequest) -> Result<()> {
    if req.messages.is_empty() {
        return Err(Error::invalid_param(
            "`messages` must contain at least one message.",
            "messages",
        ));
    }
    Ok(())
}

/// What the ledger needs to know about a request in flight.
struct LedgerDraft {
    principal: Arc<Principal>,
    request_id: String,
    endpoint: &'static str,
    model: Arc<Model>,
    public_model: String,
    stream: bool,
    started: Instant,
}

impl LedgerDraft {
    fn entry(&self, usage: &Usage, status: u16, error: Option<String>) -> LedgerEntry {
        LedgerEntry {
            at: OffsetDateTime::now_utc(),
            request_id: self.request_id.clone(),
            workspace_id: self.principal.workspace_id.clone(),
            user_id: self.principal.user_id.clone(),
            key_id: self.principal.key_id.clone(),
            endpoint: self.endpoint.into(),
            model: self.public_model.clone(),
            provider: self.model.provider.name().to_owned(),
            upstream_model: self.model.upstream.clone(),
            stream: self.stream,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens(),
            cost_nusd: self.model.price.cost(usage),
            latency_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            status,
            error,
        }
    }

    /// Records a failed upstream call (no tokens billed) and hands the error back.
    async fn failed(&self, policy: &dyn Policy, e: Error) -> Error {
        let status = match &e {
            Error::Upstream { status, .. } => *status,
            Error::UpstreamTimeout { .. } => 504,
            _ => 502,
        };
        if let Err(le) = policy
            .record(&self.entry(&Usage::default(), status, Some(e.to_string())))
            .await
        {
            tracing::error!(error = %le, "could not record a failed request in the ledger");
        }
        e
    }
}

/// Relays an upstream stream to the client and settles the ledger at its end — or, if the
/// client goes away first, on drop.
struct StreamRelay {
    upstream: ChunkStream,
    policy: Arc<dyn Policy>,
    /// `None` once settled.
    ledger: Option<LedgerDraft>,
    usage: Option<Usage>,
    prompt_estimate: u64,
    completion_text: String,
    /// Whether a choice reported its `finish_reason`: a stream that ends without one was cut.
    finished: bool,
    client_wants_usage: bool,
}

impl StreamRelay {
    fn provider_name(&self) -> String {
        self.ledger
            .as_ref()
            .map(|l| l.model.provider.name().to_owned())
            .unwrap_or_default()
    }

    fn into_stream(self) -> ChatStream {
        Box::pin(futures::stream::unfold(self, |mut relay| async move {
            loop {
                relay.ledger.as_ref()?;
                match relay.upstream.next().await {
                    Some(Ok(mut chunk)) => {
                        for c in &chunk.choices {
                            if let Some(t) = &c.delta.content {
                                relay.completion_text.push_str(t);
                            }
                            relay.finished |= c.finish_reason.is_some();
                        }
                        if let Some(u) = &chunk.usage {
                            relay.usage = Some(u.clone());
                            if !relay.client_wants_usage {
                                if chunk.choices.is_empty() {
                                    continue;
                                }
                                chunk.usage = None;
                            }
                        }
                        return Some((Ok(chunk), relay));
                    }
                    Some(Err(e)) => {
                        relay.settle(502, Some(e.to_string())).await.ok();
                        return Some((Err(e), relay));
                    }
                    None if !relay.finished => {
                        let e = Error::UpstreamUnavailable {
                            provider: relay.provider_name(),
                            message: "stream ended before the answer finished".into(),
                        };
                        relay.settle(502, Some(e.to_string())).await.ok();
                        return Some((Err(e), relay));
                    }
                    None => {
                        if let Err(e) = relay.settle(200, None).await {
                            return Some((Err(e), relay));
                        }
                        return None;
                    }
                }
            }
        }))
    }

    /// The usage to bill: upstream's if it reported one, else counted with the tokenizer.
    fn usage(&self) -> Usage {
        self.usage.clone().unwrap_or_else(|| {
            let model = self
                .ledger
                .as_ref()
                .map(|l| l.model.upstream.as_str())
                .unwrap_or_default();
            Usage {
                prompt_tokens: self.prompt_estimate,
                completion_tokens: tokens::count_text(model, &self.completion_text),
                ..Usage::default()
            }
        })
    }

    async fn settle(&mut self, status: u16, error: Option<String>) -> Result<()> {
        let usage = self.usage();
        let Some(ledger) = self.ledger.take() else {
            return Ok(());
        };
        self.policy
            .record(&ledger.entry(&usage, status, error))
            .await
    }
}

impl Drop for StreamRelay {
    fn drop(&mut self) {
        // The client went away mid-stream: bill what flowed (499, nginx's "client closed").
        let usage = self.usage();
        if let Some(ledger) = self.ledger.take() {
            let entry = ledger.entry(&usage, 499, Some("client disconnected".into()));
            let policy = self.policy.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if let Err(e) = policy.record(&entry).await {
                        tracing::error!(error = %e, "could not record a cancelled stream");
                    }
                });
            }
        }
    }
}
