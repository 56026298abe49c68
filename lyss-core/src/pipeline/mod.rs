//! The one request path (DESIGN §1). Each stage is a plain call, in order:
//!
//! 1. authenticate the key → [`Principal`]
//! 2. authorize the model against the workspace's and key's allow-lists
//! 3. memory (`memory.rs`): store the turns a long prompt drops, compress it, recall the user's
//!    memories into it (before limits and budgets, so they charge what is actually sent)
//! 4. cache lookup on the final request — exact, then by meaning in semantic workspaces; a hit
//!    is answered at once (one request against RPM limits, no tokens, no reservation)
//! 5. rate limits (requests and tokens per minute on workspace, user and key)
//! 6. reserve the worst case on every applicable budget (and cap `max_tokens` to what fits)
//! 7. call the provider — the model's router: targets, retries, fallbacks, circuit breakers
//! 8. settle: turn the reservation into actual spend and append the ledger row, durably,
//!    before the response completes
//! 9. store the answer in the cache (streams once complete); queue the turn for memory
//!
//! Streams take the same path; settlement happens when the upstream stream ends, before the
//! final `[DONE]` reaches the client, or — if the client goes away — from a guard that bills
//! what flowed and cancels the upstream request by dropping it. A reservation whose request
//! died without either is released by the reaper ([`Lyss::reap_expired`]) after its deadline.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};
use time::OffsetDateTime;

use crate::cache::answer::{Collector, replay};
use crate::cache::{Cache, CacheStats, exact_key, semantic_partition};
use crate::clock::{Clock, SystemClock};
use crate::config::{CacheConfig, CacheScope, MemoryConfig};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::memory::{Extractor, MemoryScope, MemoryStore};
use crate::models::{Model, ModelRegistry};
use crate::openai::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, EncodingFormat,
    ModelList, ModelObject, StreamOptions, Usage,
};
use crate::policy::budget::DEFAULT_OUTPUT_CAP;
use crate::policy::ratelimit::Charge;
use crate::policy::{
    Ask, BudgetLeft, InMemoryRateLimiter, KeyCache, LedgerEntry, Policy, Principal, RateLimiter,
    Reservation,
};
use crate::provider::ChunkStream;
use crate::tokens;

mod memory;
mod prompt_cache;

use self::memory::Compressed;
use self::prompt_cache::{SentWhole, conversation_key};

/// Queued turns [`Lyss::ingest_pending`] takes at most per call.
pub const INGEST_BATCH: usize = 64;

/// The response header that tells a caller what is left of its tightest budget.
pub const BUDGET_REMAINING_HEADER: &str = "x-lyss-budget-remaining";

/// Who is calling and how to name the request in logs and the ledger.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// The bearer key as presented (without `Bearer `).
    pub api_key: String,
    pub request_id: String,
    /// The caller opted out of memory for this request (`x-lyss-memory: off`).
    pub no_memory: bool,
    /// The caller's cache instructions (`x-lyss-cache`).
    pub cache: CacheControl,
    /// The similarity a semantic hit needs, if the caller asks for more than its workspace
    /// (`x-lyss-cache-threshold`); a lower value changes nothing.
    pub cache_threshold: Option<f32>,
}

/// What a request asks of the cache (`x-lyss-cache: no-cache | no-store | refresh`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheControl {
    /// Serve from the cache when possible; store the answer otherwise.
    #[default]
    Default,
    /// Neither read nor store: the cache is skipped.
    NoCache,
    /// Serve from the cache when possible, but do not store a new answer.
    NoStore,
    /// Do not serve from the cache; store the fresh answer (replacing the cached one).
    Refresh,
}

impl CacheControl {
    /// Parses the header value; anything else is the default.
    pub fn parse(value: &str) -> Self {
        match value.trim().to_ascii_lowercase().as_str() {
            "no-cache" => Self::NoCache,
            "no-store" => Self::NoStore,
            "refresh" => Self::Refresh,
            _ => Self::Default,
        }
    }
}

/// The response header that says how the cache answered: `hit`, `semantic-hit` or `miss`.
pub const CACHE_HEADER: &str = "x-lyss-cache";
/// The response header with a semantic hit's similarity to the question asked.
pub const CACHE_SIMILARITY_HEADER: &str = "x-lyss-cache-similarity";
/// The request header that raises the similarity a semantic hit needs.
pub const CACHE_THRESHOLD_HEADER: &str = "x-lyss-cache-threshold";

/// Loads the embedder the first time one is needed (a semantic cache turned on at run time).
pub type EmbedderLoader =
    Box<dyn Fn() -> futures::future::BoxFuture<'static, Option<Arc<dyn Embedder>>> + Send + Sync>;

/// Response headers that report what memory compression saved.
pub const PROMPT_TOKENS_ORIGINAL_HEADER: &str = "x-lyss-prompt-tokens-original";
pub const PROMPT_TOKENS_SENT_HEADER: &str = "x-lyss-prompt-tokens-sent";

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
    limiter: Arc<dyn RateLimiter>,
    memory: Option<Arc<dyn MemoryStore>>,
    memory_config: MemoryConfig,
    cache: Option<Arc<dyn Cache>>,
    cache_config: CacheConfig,
    embedder: tokio::sync::OnceCell<Option<Arc<dyn Embedder>>>,
    embedder_loader: Option<EmbedderLoader>,
    models: ModelRegistry,
    keys: KeyCache,
    clock: Arc<dyn Clock>,
    reservation_ttl: Duration,
    started: u64,
    /// Poked when turns are queued, so they are ingested at once rather than at the next tick
    /// (a turn remembered before it drops out of the prompt is not stored on the request path).
    turns_queued: tokio::sync::Notify,
    /// Conversations lately sent upstream whole, whose prefix the provider's cache may hold.
    sent_whole: SentWhole,
}

/// Builds a [`Lyss`] from its seams.
pub struct LyssBuilder {
    policy: Arc<dyn Policy>,
    limiter: Arc<dyn RateLimiter>,
    memory: Option<Arc<dyn MemoryStore>>,
    memory_config: MemoryConfig,
    cache: Option<Arc<dyn Cache>>,
    cache_config: CacheConfig,
    embedder: Option<Arc<dyn Embedder>>,
    embedder_loader: Option<EmbedderLoader>,
    models: ModelRegistry,
    key_cache_ttl: Duration,
    clock: Arc<dyn Clock>,
    reservation_ttl: Duration,
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

    /// Where rate-limit counters live (default: in this process).
    pub fn rate_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// Long-term memory: the store and how recall and compression behave (default: none).
    pub fn memory(mut self, store: Arc<dyn MemoryStore>, config: MemoryConfig) -> Self {
        self.memory = Some(store);
        self.memory_config = config;
        self
    }

    /// Response caching: where answers live and which workspaces cache (default: none).
    pub fn cache(mut self, cache: Arc<dyn Cache>, config: CacheConfig) -> Self {
        self.cache = Some(cache);
        self.cache_config = config;
        self
    }

    /// The embedder of the semantic cache (default: none, so semantic workspaces cache exactly).
    pub fn embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }

    /// Loads the semantic cache's embedder when first needed, if none was given.
    pub fn embedder_loader(mut self, loader: EmbedderLoader) -> Self {
        self.embedder_loader = Some(loader);
        self
    }

    /// The clock budgets and periods are judged by (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long a reservation may stay open before the reaper releases it (default 15 min,
    /// longer than any upstream timeout).
    pub fn reservation_ttl(mut self, ttl: Duration) -> Self {
        self.reservation_ttl = ttl;
        self
    }

    pub fn build(self) -> Lyss {
        Lyss {
            policy: self.policy,
            limiter: self.limiter,
            memory: self.memory,
            memory_config: self.memory_config,
            cache: self.cache,
            cache_config: self.cache_config,
            embedder: match self.embedder {
                Some(e) => tokio::sync::OnceCell::new_with(Some(Some(e))),
                None => tokio::sync::OnceCell::new(),
            },
            embedder_loader: self.embedder_loader,
            models: self.models,
            keys: KeyCache::new(self.key_cache_ttl),
            started: self.clock.now().unix_timestamp().max(0) as u64,
            clock: self.clock,
            reservation_ttl: self.reservation_ttl,
            turns_queued: tokio::sync::Notify::new(),
            sent_whole: SentWhole::default(),
        }
    }
}

impl Lyss {
    /// Starts a builder around a policy store.
    pub fn builder(policy: Arc<dyn Policy>) -> LyssBuilder {
        LyssBuilder {
            policy,
            limiter: Arc::new(InMemoryRateLimiter::new()),
            memory: None,
            memory_config: MemoryConfig::default(),
            cache: None,
            cache_config: CacheConfig::default(),
            embedder: None,
            embedder_loader: None,
            models: ModelRegistry::default(),
            key_cache_ttl: Duration::from_millis(500),
            clock: Arc::new(SystemClock),
            reservation_ttl: Duration::from_secs(900),
        }
    }

    /// Turns queued conversation turns into memories; run it periodically (the server does).
    pub async fn ingest_pending(&self) -> Result<usize> {
        let Some(store) = &self.memory else {
            return Ok(0);
        };
        let dedupe = self.memory_config.dedupe_similarity;
        match self.extractor()? {
            Some(x) => x.ingest_pending(store.as_ref(), INGEST_BATCH).await,
            None => store.ingest_pending(INGEST_BATCH, dedupe).await,
        }
    }

    /// Returns when a request has queued turns since the last call (at once if one has).
    pub async fn turns_queued(&self) {
        self.turns_queued.notified().await
    }

    /// The extraction model's ingester, when `memory.extraction_model` is set.
    fn extractor(&self) -> Result<Option<Extractor>> {
        let Some(name) = &self.memory_config.extraction_model else {
            return Ok(None);
        };
        let model = self.models.get(name).ok_or_else(|| {
            Error::Config(format!(
                "memory.extraction_model: no model named `{name}` is configured"
            ))
        })?;
        Ok(Some(
            Extractor::new(model.clone(), self.memory_config.dedupe_similarity)
                .ledger(self.policy.clone(), self.reservation_ttl),
        ))
    }

    /// The memory store, if memory is configured.
    pub fn memory(&self) -> Option<&Arc<dyn MemoryStore>> {
        self.memory.as_ref()
    }

    /// The caller's memory scope (from the key; optionally narrowed to an app end-user) and
    /// the store, for the `/v1/memories` API and library use.
    pub async fn memory_scope(
        &self,
        call: &Call,
        end_user: Option<String>,
    ) -> Result<(Arc<dyn MemoryStore>, MemoryScope)> {
        let who = self.authenticate(&call.api_key).await?;
        let store = self
            .memory
            .clone()
            .ok_or_else(|| Error::NotFound("memory on this server (it is off)".into()))?;
        Ok((
            store,
            MemoryScope {
                workspace_id: who.workspace_id.clone(),
                user_id: who.user_id.clone(),
                end_user,
                agent: None,
            },
        ))
    }

    /// Releases reservations whose requests died; run it periodically (the server does).
    /// A hold goes only a grace period after it expired (its lifetime, at most 30 s): the
    /// request's settlement may still be on its way (waiting for a busy database, or retried
    /// in the background), and releasing the hold first would let its late spend overshoot.
    pub async fn reap_expired(&self) -> Result<u64> {
        let grace = self.reservation_ttl.min(Duration::from_secs(30));
        self.policy.release_expired(self.clock.now() - grace).await
    }

    /// When a request that started at `started` must be over: a little before its reservation
    /// can be reaped, so the reaper never releases the hold of a request still running (which
    /// would let its late settlement overspend).
    fn deadline(&self, started: Instant) -> tokio::time::Instant {
        let margin = (self.reservation_ttl / 10).min(Duration::from_secs(5));
        tokio::time::Instant::from_std(started + self.reservation_ttl.saturating_sub(margin))
    }

    /// How often [`Lyss::reap_expired`] should run: a quarter of the reservation lifetime,
    /// at most every 30 s.
    pub fn reap_interval(&self) -> Duration {
        (self.reservation_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
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

    /// Stage 5: charges the request on every rate limit of its workspace, user and key.
    async fn rate_limit(&self, who: &Principal, tokens: u64, now: OffsetDateTime) -> Result<()> {
        if who.rate_limits.is_empty() {
            return Ok(());
        }
        let mut charges = Vec::with_capacity(who.rate_limits.len() * 2);
        for l in &who.rate_limits {
            let name = match l.scope {
                crate::policy::Scope::Workspace => &who.workspace_name,
                crate::policy::Scope::User => &who.user_name,
                crate::policy::Scope::Key => &who.key_id,
            };
            let scope = l.scope.as_str();
            if let Some(rpm) = l.rpm {
                charges.push(Charge {
                    bucket: format!("{scope}:{}:rpm", l.id),
                    label: format!("{scope} `{name}` ({rpm} requests per minute)"),
                    per_minute: rpm,
                    cost: 1,
                });
            }
            if let Some(tpm) = l.tpm {
                charges.push(Charge {
                    bucket: format!("{scope}:{}:tpm", l.id),
                    label: format!("{scope} `{name}` ({tpm} tokens per minute)"),
                    per_minute: tpm,
                    cost: tokens,
                });
            }
        }
        self.limiter.charge(&charges, now).await
    }

    /// Stage 6: reserves the worst case on every budget that applies (none: nothing to do).
    async fn reserve(
        &self,
        who: &Principal,
        model: &Model,
        prompt_tokens: u64,
        requested_output: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<Reservation> {
        if !who.budgeted {
            return Ok(Reservation::default());
        }
        let ask = Ask {
            prompt_tokens,
            requested_output,
            output_cap: model.max_output_tokens.unwrap_or(DEFAULT_OUTPUT_CAP),
            price: model.price,
        };
        self.policy
            .reserve(who, &ask, now, self.reservation_ttl)
            .await
    }

    /// What the answer cache holds (`None` when no workspace caches).
    pub async fn cache_stats(&self) -> Result<Option<CacheStats>> {
        match &self.cache {
            Some(c) => c.stats().await.map(Some),
            None => Ok(None),
        }
    }

    /// Clears the cached answers of one workspace (by id), or all of them; returns how many.
    pub async fn cache_clear(&self, workspace_id: Option<&str>) -> Result<u64> {
        let Some(cache) = &self.cache else {
            return Ok(0);
        };
        cache
            .clear(&workspace_id.map(cache_prefix).unwrap_or_default())
            .await
    }

    /// The semantic cache's embedder, loaded on first use.
    async fn embedder(&self) -> Option<Arc<dyn Embedder>> {
        self.embedder
            .get_or_init(|| async {
                match &self.embedder_loader {
                    Some(load) => load().await,
                    None => None,
                }
            })
            .await
            .clone()
    }

    /// Stage 4: the cache entry this request reads and writes, when its workspace caches and
    /// the caller did not opt out. The key covers the request as it goes upstream.
    async fn cache_plan(
        &self,
        who: &Principal,
        call: &Call,
        req: &ChatRequest,
        model: &Model,
    ) -> Option<CachePlan> {
        let cache = self.cache.as_ref()?;
        let policy = self
            .cache_config
            .policy_for(&who.workspace_name, &who.workspace_cache)?;
        // A web search answers from the web as it is now: never from the cache.
        if call.cache == CacheControl::NoCache || req.builtin_tools.is_some() {
            return None;
        }
        // Every scope but the global one starts with its workspace, so that clearing a
        // workspace clears its users' and keys' entries too.
        let ws = cache_prefix(&who.workspace_id);
        let scope = match policy.scope {
            CacheScope::Workspace => ws,
            CacheScope::User => format!("{ws}u:{}:", who.user_id),
            CacheScope::Key => format!("{ws}k:{}:", who.key_id),
            CacheScope::Global => "g:".to_owned(),
        };
        let key = match exact_key(&scope, &model.upstream, req) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "cache key failed; request not cached");
                return None;
            }
        };
        let mut semantic = None;
        if let Some(threshold) = policy.semantic_threshold
            && let Ok(Some((partition, question))) =
                semantic_partition(&scope, &model.upstream, req)
        {
            match self.embedder().await {
                Some(embedder) => {
                    semantic = Some(SemanticPlan {
                        partition,
                        question,
                        // A request may ask for a closer match, never a looser one.
                        threshold: call.cache_threshold.map_or(threshold, |t| t.max(threshold)),
                        embedder,
                        vector: None,
                    })
                }
                None => tracing::debug!("no embedder: semantic cache works as an exact one"),
            }
        }
        Some(CachePlan {
            cache: cache.clone(),
            key,
            ttl: policy.ttl,
            read: call.cache != CacheControl::Refresh,
            store: call.cache != CacheControl::NoStore,
            semantic,
        })
    }

    /// Answers from the cache: nothing is reserved or billed; the ledger row records the hit
    /// with the tokens and cost it saved.
    #[allow(clippy::too_many_arguments)]
    async fn serve_hit(
        &self,
        principal: Arc<Principal>,
        call: &Call,
        req: &ChatRequest,
        model: &Arc<Model>,
        hit: Hit,
        started: Instant,
        compressed: Option<Compressed>,
    ) -> Result<ChatReply> {
        let Hit {
            answer: hit,
            similarity,
        } = hit;
        let saved = hit.usage.clone().unwrap_or_default();
        let mut ledger = LedgerDraft {
            principal,
            request_id: call.request_id.clone(),
            endpoint: "chat",
            model: model.clone(),
            public_model: req.model.clone(),
            stream: req.is_stream(),
            started,
            reservation: Reservation::default(),
            prompt_tokens: 0,
            prompt_tokens_original: compressed.map_or(0, |c| c.original),
            policy: self.policy.clone(),
            settled: false,
        };
        ledger
            .record_hit(
                &saved,
                if similarity.is_some() {
                    "semantic"
                } else {
                    "hit"
                },
            )
            .await?;
        crate::telemetry::gateway_time(started.elapsed());
        let headers = match similarity {
            Some(sim) => vec![
                (CACHE_HEADER, "semantic-hit".to_owned()),
                (CACHE_SIMILARITY_HEADER, format!("{sim:.4}")),
            ],
            None => vec![(CACHE_HEADER, "hit".to_owned())],
        };
        let body = if req.is_stream() {
            let chunks = replay(&hit, req.wants_stream_usage());
            ChatBody::Stream(Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))))
        } else {
            ChatBody::Complete(hit)
        };
        Ok(ChatReply { body, headers })
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
    pub async fn chat(&self, call: &Call, req: ChatRequest) -> Result<ChatReply> {
        let reply = self.chat_inner(call, req).await;
        if let Err(e) = &reply {
            refused(e);
        }
        reply
    }

    async fn chat_inner(&self, call: &Call, mut req: ChatRequest) -> Result<ChatReply> {
        let started = Instant::now();
        let principal = self.authenticate(&call.api_key).await?;
        let model = self.authorize(&principal, &req.model)?;
        validate_chat(&req)?;
        if let Some(t) = call.cache_threshold
            && !(t > 0.0 && t <= 1.0)
        {
            return Err(Error::invalid_param(
                format!("{CACHE_THRESHOLD_HEADER} must be a number in (0, 1]"),
                CACHE_THRESHOLD_HEADER,
            ));
        }
        let now = self.clock.now();
        let conversation = conversation_key(&principal, &req);
        // Memory runs before limits and budgets, so that they charge what is actually sent.
        let compressed = self
            .recall_and_compress(&principal, call, &mut req, &model, &conversation, now)
            .await;
        let mut cache = self.cache_plan(&principal, call, &req, &model).await;
        if let Some(plan) = &mut cache
            && let Some(hit) = plan.lookup().await
        {
            // A hit is a request (it counts against requests per minute) but uses no tokens.
            self.rate_limit(&principal, 0, now).await?;
            return self
                .serve_hit(principal, call, &req, &model, hit, started, compressed)
                .await;
        }
        let requested_output = req.max_completion_tokens.or(req.max_tokens);
        let counts = principal.budgeted || principal.rate_limits.iter().any(|l| l.tpm.is_some());
        let prompt_tokens = match compressed {
            Some(c) => c.sent,
            None if counts => tokens::count_request(&model.upstream, &req),
            None => 0,
        };
        self.rate_limit(
            &principal,
            prompt_tokens + u64::from(requested_output.unwrap_or(0)),
            now,
        )
        .await?;
        let reservation = self
            .reserve(&principal, &model, prompt_tokens, requested_output, now)
            .await?;
        if let Some(n) = reservation.set_max_tokens {
            set_output_cap(&mut req, &model.upstream, n);
        }
        // Sent whole to a provider that caches prompts: the next turn may find it there.
        let sent_whole = compressed.is_none()
            && model.provider.caches_prompts()
            && self.weighs_prompt_cache(&principal);
        if !req.extra.contains_key("prompt_cache_key") {
            req.prompt_cache_key = Some(conversation.clone());
        }
        let public_model = std::mem::replace(&mut req.model, model.upstream.clone());
        let mut ledger = LedgerDraft {
            principal,
            request_id: call.request_id.clone(),
            endpoint: "chat",
            model: model.clone(),
            public_model,
            stream: req.is_stream(),
            started,
            reservation,
            prompt_tokens,
            prompt_tokens_original: compressed.map_or(0, |c| c.original),
            policy: self.policy.clone(),
            settled: false,
        };
        let mut headers = compressed.map_or_else(Vec::new, |c| {
            vec![
                (PROMPT_TOKENS_ORIGINAL_HEADER, c.original.to_string()),
                (PROMPT_TOKENS_SENT_HEADER, c.sent.to_string()),
            ]
        });
        if cache.is_some() {
            headers.push((CACHE_HEADER, "miss".into()));
        }
        // An answer cut short by a budget's cap is not the answer to the request as sent.
        let mut cache = cache.filter(|p| p.store && ledger.reservation.set_max_tokens.is_none());

        let deadline = self.deadline(started);
        if !req.is_stream() {
            let asked = Instant::now();
            let answer = tokio::time::timeout_at(deadline, model.provider.chat(&req))
                .await
                .unwrap_or_else(|_| Err(outlived(&model)));
            let upstream_time = asked.elapsed();
            return match answer {
                Ok(resp) => {
                    if sent_whole {
                        self.sent_whole
                            .record(&conversation, &model.upstream, &req.messages, now);
                    }
                    let usage = resp.usage.clone().unwrap_or_else(|| Usage {
                        prompt_tokens: tokens::count_request(&model.upstream, &req),
                        completion_tokens: resp
                            .choices
                            .iter()
                            .filter_map(|c| c.message.content.as_ref())
                            .map(|c| tokens::count_text(&model.upstream, &c.text()))
                            .sum(),
                        ..Usage::default()
                    });
                    let left = ledger.settle(&usage, 200, None).await?;
                    headers.extend(budget_headers(&left));
                    if let Some(plan) = &mut cache {
                        plan.store(&resp).await;
                    }
                    crate::telemetry::gateway_time(started.elapsed().saturating_sub(upstream_time));
                    Ok(ChatReply {
                        body: ChatBody::Complete(resp),
                        headers,
                    })
                }
                Err(e) => Err(ledger.failed(e).await),
            };
        }

        // Always ask upstream for usage; pass the usage chunk on only if the client asked.
        let client_wants_usage = req.wants_stream_usage();
        req.stream_options
            .get_or_insert_with(StreamOptions::default)
            .include_usage = Some(true);
        let upstream = tokio::time::timeout_at(deadline, model.provider.chat_stream(&req))
            .await
            .unwrap_or_else(|_| Err(outlived(&model)));
        let upstream = match upstream {
            Ok(s) => s,
            Err(e) => return Err(ledger.failed(e).await),
        };
        if sent_whole {
            self.sent_whole
                .record(&conversation, &model.upstream, &req.messages, now);
        }
        let prompt_estimate = if counts {
            prompt_tokens
        } else {
            tokens::count_request(&model.upstream, &req)
        };
        ledger.stream = true;
        headers.extend(budget_headers(&ledger.reservation.left));
        let relay = StreamRelay {
            upstream,
            ledger: Some(ledger),
            usage: None,
            prompt_estimate,
            completion_text: String::new(),
            finished: false,
            client_wants_usage,
            deadline,
            cache: cache.map(|plan| (plan, Collector::default())),
        };
        Ok(ChatReply {
            body: ChatBody::Stream(relay.into_stream()),
            headers,
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
        let now = self.clock.now();
        let prompt_tokens = tokens::count_embedding_input(&model.upstream, &req.input);
        self.rate_limit(&principal, prompt_tokens, now).await?;
        let reservation = self
            .reserve(&principal, &model, prompt_tokens, Some(0), now)
            .await?;
        let public_model = std::mem::replace(&mut req.model, model.upstream.clone());
        let want_base64 = req.encoding_format == Some(EncodingFormat::Base64);
        let mut ledger = LedgerDraft {
            principal,
            request_id: call.request_id.clone(),
            endpoint: "embeddings",
            model: model.clone(),
            public_model,
            stream: false,
            started,
            reservation,
            prompt_tokens,
            prompt_tokens_original: 0,
            policy: self.policy.clone(),
            settled: false,
        };
        let mut resp = match model.provider.embeddings(&req).await {
            Ok(r) => r,
            Err(e) => return Err(ledger.failed(e).await),
        };
        let usage = resp.usage.clone().unwrap_or_else(|| Usage {
            prompt_tokens,
            ..Usage::default()
        });
        ledger.settle(&usage, 200, None).await?;
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

/// Caps the completion length. Reasoning families (o-series, GPT-5) only take
/// `max_completion_tokens`; most OpenAI-compatible servers only know `max_tokens`.
fn set_output_cap(req: &mut ChatRequest, upstream: &str, n: u32) {
    let m = upstream.rsplit('/').next().unwrap_or(upstream);
    let reasoning = m.starts_with("gpt-5")
        || (m.starts_with('o') && m[1..].starts_with(|c: char| c.is_ascii_digit()));
    if reasoning {
        req.max_completion_tokens = Some(n);
    } else {
        req.max_tokens = Some(n);
    }
}

/// The error for a request cut at its deadline.
fn outlived(model: &Model) -> Error {
    Error::UpstreamTimeout {
        provider: model.provider.name().to_owned(),
    }
}

fn budget_headers(left: &BudgetLeft) -> Vec<(&'static str, String)> {
    left.header_value()
        .map(|v| vec![(BUDGET_REMAINING_HEADER, v)])
        .unwrap_or_default()
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
    reservation: Reservation,
    /// Prompt tokens as counted before sending (0 when nothing needed the count).
    prompt_tokens: u64,
    /// Prompt tokens before memory compression (0 when it did not run).
    prompt_tokens_original: u64,
    policy: Arc<dyn Policy>,
    /// Set once settlement was attempted; a draft dropped before that settles itself.
    settled: bool,
}

impl LedgerDraft {
    /// Stage 8: settles the reservation with this usage and appends the ledger row.
    async fn settle(
        &mut self,
        usage: &Usage,
        status: u16,
        error: Option<String>,
    ) -> Result<BudgetLeft> {
        self.settled = true;
        let entry = self.entry(usage, status, error);
        crate::telemetry::finished(&entry);
        settle_or_retry(&self.policy, &self.reservation, &entry).await
    }

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
            prompt_tokens_original: if self.prompt_tokens_original > 0 {
                self.prompt_tokens_original
            } else {
                usage.prompt_tokens
            },
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens(),
            cost_nusd: self.model.price.cost(usage),
            latency_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            status,
            error,
            cache: None,
            saved_tokens: 0,
            saved_nusd: 0,
            // Against a plain gateway with the provider's prompt caching: the dropped history
            // is what it would have resent as a cached prefix, so it is priced as cache reads.
            memory_saved_nusd: i64::try_from(
                self.prompt_tokens_original
                    .saturating_sub(usage.prompt_tokens),
            )
            .unwrap_or(i64::MAX)
            .saturating_mul(self.model.price.cached_input),
            cache_write_tokens: usage.cache_write_tokens(),
            prompt_cache_saved_nusd: self.model.price.prompt_cache_saving(usage),
        }
    }

    /// Records an answer served from the cache (`kind`: `hit` or `semantic`): nothing billed,
    /// `saved` the usage it replaced.
    async fn record_hit(&mut self, saved: &Usage, kind: &str) -> Result<BudgetLeft> {
        self.settled = true;
        let mut entry = self.entry(&Usage::default(), 200, None);
        entry.cache = Some(kind.into());
        entry.saved_tokens = saved.prompt_tokens.saturating_add(saved.completion_tokens);
        entry.saved_nusd = self.model.price.cost(saved);
        // Nothing was sent: the hit saved the whole prompt, memory nothing.
        entry.prompt_tokens_original = 0;
        entry.memory_saved_nusd = 0;
        crate::telemetry::finished(&entry);
        settle_or_retry(&self.policy, &self.reservation, &entry).await
    }

    /// Records a failed upstream call (no tokens billed, the reservation released) and hands
    /// the error back.
    async fn failed(&mut self, e: Error) -> Error {
        let (status, usage) = failure(&e, self.prompt_tokens);
        if let Err(le) = self.settle(&usage, status, Some(e.to_string())).await {
            tracing::error!(error = %le, "could not record a failed request in the ledger");
        }
        e
    }
}

/// The ledger status and billed usage of an upstream call that failed with `e`. A call that
/// timed out may have been processed (and billed) upstream: its prompt counts. Refused or
/// unreachable calls cost nothing.
pub(crate) fn failure(e: &Error, prompt_tokens: u64) -> (u16, Usage) {
    match e {
        Error::Upstream { status, .. } => (*status, Usage::default()),
        Error::UpstreamTimeout { .. } => (
            504,
            Usage {
                prompt_tokens,
                ..Usage::default()
            },
        ),
        _ => (502, Usage::default()),
    }
}

/// How long a settlement that found the database down keeps trying in the background.
const SETTLE_RETRY_FOR: Duration = Duration::from_secs(15 * 60);

/// Settles; when the database is unreachable, keeps trying in the background instead of
/// failing the request. The upstream has spent the tokens already: withholding the answer
/// saves nothing, and the row must land to keep the budget true. A late settlement still adds
/// its spend if the reaper released the hold meanwhile. Admission stays closed while the
/// database is down (reservations fail), so nothing new is spent unrecorded.
pub(crate) async fn settle_or_retry(
    policy: &Arc<dyn Policy>,
    reservation: &Reservation,
    entry: &LedgerEntry,
) -> Result<BudgetLeft> {
    match policy.settle(reservation, entry).await {
        Err(e @ Error::Unavailable { .. }) => {
            tracing::warn!(error = %e, request_id = %entry.request_id, "ledger unavailable: settling in the background");
            crate::telemetry::settlement_deferred();
            tokio::spawn(retry_settle(
                policy.clone(),
                reservation.clone(),
                entry.clone(),
            ));
            Ok(BudgetLeft::default())
        }
        other => other,
    }
}

async fn retry_settle(policy: Arc<dyn Policy>, reservation: Reservation, entry: LedgerEntry) {
    let deadline = Instant::now() + SETTLE_RETRY_FOR;
    let mut wait = Duration::from_millis(100);
    loop {
        tokio::time::sleep(wait).await;
        // The failed attempt may have committed with its acknowledgement lost: never twice.
        let settled = match already_recorded(policy.as_ref(), &entry).await {
            Ok(true) => Ok(()),
            Ok(false) => policy.settle(&reservation, &entry).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match settled {
            Ok(()) => {
                tracing::info!(request_id = %entry.request_id, "settled after the database came back");
                return;
            }
            Err(Error::Unavailable { .. }) if Instant::now() < deadline => {
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                let row = serde_json::to_string(&entry).unwrap_or_default();
                tracing::error!(error = %e, row = %row, "gave up settling: the ledger row is lost");
                return;
            }
        }
    }
}

/// Whether the ledger holds this entry (same request, endpoint and millisecond).
async fn already_recorded(policy: &dyn Policy, entry: &LedgerEntry) -> Result<bool> {
    let rows = policy
        .ledger(&crate::policy::LedgerQuery {
            since: Some(entry.at - Duration::from_millis(1)),
            until: Some(entry.at + Duration::from_millis(1)),
            key_id: Some(entry.key_id.clone()),
            limit: Some(10_000),
        })
        .await?;
    let ms = crate::clock::unix_ms;
    Ok(rows.iter().any(|r| {
        r.request_id == entry.request_id && r.endpoint == entry.endpoint && ms(r.at) == ms(entry.at)
    }))
}

impl Drop for LedgerDraft {
    /// The request was abandoned before it settled (the client went away while lyss waited
    /// for the upstream, which is then cancelled): release the reservation now rather than at
    /// the reaper's timeout, and bill the prompt, which the upstream may have processed.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let usage = Usage {
            prompt_tokens: self.prompt_tokens,
            ..Usage::default()
        };
        let entry = self.entry(
            &usage,
            499,
            Some("client disconnected before the answer".into()),
        );
        crate::telemetry::finished(&entry);
        let (policy, reservation) = (self.policy.clone(), std::mem::take(&mut self.reservation));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = settle_or_retry(&policy, &reservation, &entry).await {
                    tracing::error!(error = %e, "could not record an abandoned request");
                }
            });
        }
    }
}

/// Relays an upstream stream to the client and settles the ledger at its end — or, if the
/// client goes away first, on drop.
/// Counts a request refused before the upstream, by reason.
fn refused(e: &Error) {
    let reason = match e {
        Error::BudgetExceeded(_) => "budget",
        Error::RateLimited { .. } => "rate_limit",
        Error::Unauthenticated(_) => "auth",
        Error::ModelNotFound(_) => "model",
        _ => return,
    };
    crate::telemetry::refused(reason);
}

/// The start of every cache key of a workspace.
fn cache_prefix(workspace_id: &str) -> String {
    format!("w:{workspace_id}:")
}

/// One request's entry in the cache.
struct CachePlan {
    cache: Arc<dyn Cache>,
    key: String,
    ttl: Duration,
    read: bool,
    store: bool,
    /// Where and how the question is looked up by meaning (semantic mode).
    semantic: Option<SemanticPlan>,
}

struct SemanticPlan {
    partition: String,
    question: String,
    threshold: f32,
    embedder: Arc<dyn Embedder>,
    /// The question's embedding, once computed.
    vector: Option<Vec<f32>>,
}

impl SemanticPlan {
    /// Embeds the question, once.
    async fn embed(&mut self) -> Result<()> {
        if self.vector.is_none() {
            let mut v = self
                .embedder
                .embed(std::slice::from_ref(&self.question))
                .await?;
            self.vector = Some(
                v.pop()
                    .ok_or_else(|| Error::Internal("the embedder returned nothing".into()))?,
            );
        }
        Ok(())
    }

    /// The answer to the most similar question above the threshold, with its similarity.
    async fn lookup(&mut self, cache: &dyn Cache) -> Result<Option<crate::cache::Similar>> {
        self.embed().await?;
        let v = self.vector.as_deref().unwrap_or_default();
        cache.get_similar(&self.partition, v, self.threshold).await
    }

    /// Files the question of the answer cached under `key`.
    async fn file(&mut self, cache: &dyn Cache, key: &str, ttl: Duration) -> Result<()> {
        self.embed().await?;
        let v = self.vector.as_deref().unwrap_or_default();
        cache.put_vector(&self.partition, key, v, ttl).await
    }
}

/// An answer from the cache; `similarity` for a semantic hit.
struct Hit {
    answer: ChatResponse,
    similarity: Option<f32>,
}

impl CachePlan {
    /// The cached answer, if any: the same request, else (semantic mode) the same context
    /// with a question close enough. A failing or garbled cache is a miss: the request goes
    /// upstream and the log says why.
    async fn lookup(&mut self) -> Option<Hit> {
        if !self.read {
            return None;
        }
        let exact = self.cache.get(&self.key).await;
        if let Some(answer) = self.decode(exact) {
            return Some(Hit {
                answer,
                similarity: None,
            });
        }
        let found = self.semantic.as_mut()?.lookup(self.cache.as_ref()).await;
        let similarity = found
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .map(|s| s.similarity);
        Some(Hit {
            answer: self.decode(found.map(|s| s.map(|s| s.value)))?,
            similarity,
        })
    }

    fn decode(&self, found: Result<Option<Vec<u8>>>) -> Option<ChatResponse> {
        match found {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(resp) => Some(resp),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable cache entry; asking upstream");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cache unavailable; asking upstream");
                None
            }
        }
    }

    /// Stores an answer (and files its question by meaning); a failure is logged, never the
    /// request's problem.
    async fn store(&mut self, answer: &ChatResponse) {
        let stored = match serde_json::to_vec(answer) {
            Ok(bytes) => self.cache.put(&self.key, bytes, self.ttl).await,
            Err(e) => Err(Error::Internal(e.to_string())),
        };
        let filed = match (&stored, self.semantic.as_mut()) {
            (Ok(()), Some(sem)) => sem.file(self.cache.as_ref(), &self.key, self.ttl).await,
            _ => Ok(()),
        };
        if let Err(e) = stored.and(filed) {
            tracing::warn!(error = %e, "could not cache an answer");
        }
    }
}

struct StreamRelay {
    upstream: ChunkStream,
    /// `None` once settled.
    ledger: Option<LedgerDraft>,
    usage: Option<Usage>,
    prompt_estimate: u64,
    completion_text: String,
    /// Whether a choice reported its `finish_reason`: a stream that ends without one was cut.
    finished: bool,
    client_wants_usage: bool,
    /// The stream is cut here, before its reservation could be reaped.
    deadline: tokio::time::Instant,
    /// Where the complete answer is cached, and the answer so far.
    cache: Option<(CachePlan, Collector)>,
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
                let model = relay.ledger.as_ref()?.model.clone();
                let next = tokio::time::timeout_at(relay.deadline, relay.upstream.next())
                    .await
                    .unwrap_or_else(|_| Some(Err(outlived(&model))));
                match next {
                    Some(Ok(mut chunk)) => {
                        if let Some((_, collected)) = &mut relay.cache {
                            collected.push(&chunk);
                        }
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
                        let status = if matches!(e, Error::UpstreamTimeout { .. }) {
                            504
                        } else {
                            502
                        };
                        relay.settle(status, Some(e.to_string())).await.ok();
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
                        if let Some((mut plan, collected)) = relay.cache.take()
                            && let Some(answer) = collected.finish()
                        {
                            plan.store(&answer).await;
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
        let Some(mut ledger) = self.ledger.take() else {
            return Ok(());
        };
        ledger.settle(&usage, status, error).await.map(|_| ())
    }
}

impl Drop for StreamRelay {
    fn drop(&mut self) {
        // The client went away mid-stream: bill what flowed (499, nginx's "client closed").
        let usage = self.usage();
        if let Some(mut ledger) = self.ledger.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let settled = ledger
                    .settle(&usage, 499, Some("client disconnected".into()))
                    .await;
                if let Err(e) = settled {
                    tracing::error!(error = %e, "could not record a cancelled stream");
                }
            });
        }
    }
}
