//! The one request path (DESIGN §1): [`Lyss::chat`] calls each stage in order, one file each.
//!
//! 1. `auth.rs` — authenticate the key → [`crate::policy::Principal`]
//! 2. `auth.rs` — authorize the model against the workspace's and key's allow-lists;
//!    `adapt.rs` — fit the request to the model's upstream
//! 3. `memory.rs` — store the turns a long prompt drops, compress it, recall the user's
//!    memories into it (before limits and budgets, so they charge what is actually sent); in
//!    `auto`, a prompt the provider's cache makes cheaper whole stays whole (`prompt_cache.rs`)
//! 4. `cache.rs` — cache lookup on the final request: exact, then by meaning in semantic
//!    workspaces; a hit is answered at once (one request against RPM limits, no tokens, no
//!    reservation)
//! 5. `limits.rs` — rate limits (requests and tokens per minute on workspace, user and key)
//! 6. `budget.rs` — reserve the worst case on every applicable budget (and cap `max_tokens`)
//! 7. `call.rs` — call the provider: the model's router (targets, retries, fallbacks,
//!    breakers); a stream is relayed by `stream.rs`
//! 8. `settle.rs` — turn the reservation into actual spend and append the ledger row, durably,
//!    before the response completes (through [`crate::settlement`])
//! 9. `cache.rs` — store the answer (streams once complete); memory's queue takes the turn
//!
//! Streams take the same path; settlement happens when the upstream stream ends, before the
//! final `[DONE]` reaches the client, or — if the client goes away — from a guard that bills
//! what flowed and cancels the upstream request by dropping it. A reservation whose request
//! died without either is released by the reaper ([`Lyss::reap_expired`]) after its deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::Cache;
use crate::clock::Clock;
use crate::config::{BuiltinTools, CacheConfig, MemoryConfig};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::memory::{Extractor, MemoryScope, MemoryStore};
use crate::models::{Model, ModelRegistry};
use crate::policy::{FirstShare, KeyCache, Policy, Principal};
use crate::ratelimit::RateLimiter;
use crate::tokens;
use crate::wire::{ChatRequest, ModelList, ModelObject};

mod adapt;
mod auth;
mod budget;
mod builder;
mod cache;
mod call;
mod embeddings;
mod limits;
mod memory;
mod prompt_cache;
mod request;
mod settle;
mod stream;

use self::adapt::validate_chat;
use self::budget::{answer_is_countable, set_output_cap};
pub use self::builder::LyssBuilder;
use self::cache::CachePlan;
use self::call::Outgoing;
use self::memory::Compressed;
use self::prompt_cache::{SentWhole, conversation_key};
pub use self::request::{
    BUDGET_REMAINING_HEADER, CACHE_HEADER, CACHE_SIMILARITY_HEADER, CACHE_THRESHOLD_HEADER,
    CacheControl, Call, ChatBody, ChatReply, ChatStream, DROPPED_HEADER, Endpoint,
    OUTPUT_CAPPED_HEADER, PROMPT_TOKENS_ORIGINAL_HEADER, PROMPT_TOKENS_SENT_HEADER,
};
use self::settle::LedgerDraft;

/// Queued turns [`Lyss::ingest_pending`] takes at most per call.
pub const INGEST_BATCH: usize = 64;

/// Loads the embedder the first time one is needed (a semantic cache turned on at run time).
pub type EmbedderLoader =
    Box<dyn Fn() -> futures::future::BoxFuture<'static, Option<Arc<dyn Embedder>>> + Send + Sync>;

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
    first_share: FirstShare,
    /// Poked when turns are queued, so they are ingested at once rather than at the next tick
    /// (a turn remembered before it drops out of the prompt is not stored on the request path).
    turns_queued: tokio::sync::Notify,
    /// Conversations lately sent upstream whole, whose prefix the provider's cache may hold.
    sent_whole: SentWhole,
    /// What happens to built-in tools a model's upstream cannot run.
    builtin_tools: BuiltinTools,
}

impl Lyss {
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

    /// The memory store, or the error a caller of a memory API gets when memory is off.
    pub fn memory_store(&self) -> Result<Arc<dyn MemoryStore>> {
        self.memory
            .clone()
            .ok_or_else(|| Error::NotFound("memory on this server (it is off)".into()))
    }

    /// How similar a new fact must be to a remembered one to count as known
    /// (`memory.dedupe_similarity`).
    pub fn memory_dedupe_similarity(&self) -> f32 {
        self.memory_config.dedupe_similarity
    }

    /// The caller's memory scope (from the key; optionally narrowed to an app end-user, as a
    /// chat request's `user` narrows it) and the store, for the `/v1/memories` API, the MCP
    /// tools and library use. The call counts against the key's request rate limits (a search
    /// embeds its query: a flood of them is work like any other request), with no tokens.
    pub async fn memory_scope(
        &self,
        call: &Call,
        end_user: Option<String>,
    ) -> Result<(Arc<dyn MemoryStore>, MemoryScope)> {
        let who = self.authenticate(&call.api_key).await?;
        self.rate_limit(&who, 0, self.clock.now()).await?;
        let end_user = crate::memory::end_user(end_user.as_deref());
        if end_user
            .as_ref()
            .is_some_and(|u| u.chars().count() > crate::memory::END_USER_CHARS)
        {
            return Err(Error::invalid_param(
                format!(
                    "the end-user id is longer than {} characters",
                    crate::memory::END_USER_CHARS
                ),
                "user",
            ));
        }
        Ok((
            self.memory_store()?,
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
                    .map(|id| model_object(id, m))
            })
            .collect();
        Ok(ModelList {
            object: "list".into(),
            data,
        })
    }

    /// `GET /v1/models/{id}`: one model (or alias) the caller may use; any other is
    /// [`Error::ModelNotFound`], exactly as an unknown one.
    pub async fn get_model(&self, call: &Call, id: &str) -> Result<ModelObject> {
        let principal = self.authenticate(&call.api_key).await?;
        let model = self.authorize(&principal, id)?;
        Ok(model_object(id, &model))
    }

    /// `POST /v1/chat/completions`.
    pub async fn chat(&self, call: &Call, req: ChatRequest) -> Result<ChatReply> {
        let started = Instant::now();
        let model = req.model.clone();
        let mut ledgered = false;
        let reply = self.chat_inner(call, req, &mut ledgered).await;
        match &reply {
            // A stream's row is written when it ends.
            Ok(_) => crate::telemetry::ledgered(),
            Err(e) if !ledgered => self.record_refusal(call, &model, e, started).await,
            Err(_) => {}
        }
        reply
    }

    /// The request path, stage by stage; each stage's output is the next one's input.
    /// `ledgered` is set once the request has a ledger row of its own coming (an answer from
    /// the cache, or a reservation): a failure after that is not a refusal.
    async fn chat_inner(
        &self,
        call: &Call,
        mut req: ChatRequest,
        ledgered: &mut bool,
    ) -> Result<ChatReply> {
        let started = Instant::now();
        // 1–2: who calls, the model they may use, the request fitted to it.
        let admitted = self.admit(call, &mut req).await?;
        // 3: memory, before limits and budgets, so that they charge what is actually sent.
        let prepared = self.prepare(call, &mut req, admitted, started).await;
        // 4: the cache; a hit is a request (it counts against requests per minute) but uses
        // no tokens and reserves nothing.
        let mut cache = self
            .cache_plan(&prepared.principal, call, &req, &prepared.model)
            .await;
        if let Some(plan) = &mut cache
            && let Some(hit) = plan.lookup().await
        {
            self.rate_limit(&prepared.principal, 0, prepared.now)
                .await?;
            *ledgered = true;
            return self.serve_hit(prepared, call, &req, hit).await;
        }
        // 5–6: rate limits, then the worst case reserved on every budget.
        let held = self.hold(&prepared, &mut req).await?;
        *ledgered = true;
        // 7–9: the upstream call, settlement, the cache and memory's queue.
        self.send(call, req, prepared, held, cache).await
    }

    /// Stages 1–2: authenticates the key, authorizes the model, and fits the request to it.
    async fn admit(&self, call: &Call, req: &mut ChatRequest) -> Result<Admitted> {
        let principal = self.authenticate(&call.api_key).await?;
        let model = self.authorize(&principal, &req.model)?;
        validate_chat(req)?;
        let notes = self.adapt(call, req, &model)?;
        if let Some(t) = call.cache_threshold
            && !(t > 0.0 && t <= 1.0)
        {
            return Err(Error::invalid_param(
                format!("{CACHE_THRESHOLD_HEADER} must be a number in (0, 1]"),
                CACHE_THRESHOLD_HEADER,
            ));
        }
        Ok(Admitted {
            principal,
            model,
            notes,
        })
    }

    /// Stage 3: memory works on the prompt; what the later stages need of the request.
    async fn prepare(
        &self,
        call: &Call,
        req: &mut ChatRequest,
        admitted: Admitted,
        started: Instant,
    ) -> Prepared {
        let Admitted {
            principal,
            model,
            notes,
        } = admitted;
        let now = self.clock.now();
        let conversation = conversation_key(&principal, req);
        let compressed = self
            .recall_and_compress(&principal, call, req, &model, &conversation, now)
            .await;
        Prepared {
            principal,
            model,
            notes,
            started,
            now,
            conversation,
            compressed,
        }
    }

    /// Stages 5–6: charges the rate limits and reserves the worst case, capping `max_tokens`
    /// where the budgets allow less than asked.
    async fn hold(&self, p: &Prepared, req: &mut ChatRequest) -> Result<Held> {
        let (principal, model) = (&p.principal, &p.model);
        let requested_output = req.max_completion_tokens.or(req.max_tokens);
        let counts = principal.budgeted || principal.rate_limits.iter().any(|l| l.tpm.is_some());
        let prompt_tokens = match p.compressed {
            Some(c) => c.sent,
            None if counts => tokens::count_request(&model.upstream, req),
            None => 0,
        };
        self.rate_limit(
            principal,
            prompt_tokens + u64::from(requested_output.unwrap_or(0)),
            p.now,
        )
        .await?;
        let grows = principal.budgeted
            && requested_output.is_none()
            && answer_is_countable(&model.upstream, req);
        let reservation = self
            .reserve(
                principal,
                model,
                prompt_tokens,
                requested_output,
                grows,
                p.now,
            )
            .await?;
        if let Some(n) = reservation.set_max_tokens {
            set_output_cap(req, &model.upstream, n);
        }
        Ok(Held {
            prompt_tokens,
            counted: counts,
            reservation,
        })
    }

    /// Stages 7–9: sends the request upstream — streamed, gathered or whole — and settles,
    /// caches and remembers what comes back.
    async fn send(
        &self,
        call: &Call,
        mut req: ChatRequest,
        p: Prepared,
        held: Held,
        cache: Option<CachePlan>,
    ) -> Result<ChatReply> {
        let Prepared {
            principal,
            model,
            mut notes,
            started,
            now,
            conversation,
            compressed,
        } = p;
        let sent_whole = compressed.is_none()
            && model.provider.caches_prompts()
            && self.weighs_prompt_cache(&principal);
        if !req.extra.contains_key("prompt_cache_key") {
            req.prompt_cache_key = Some(conversation.clone());
        }
        let public_model = std::mem::replace(&mut req.model, model.upstream.clone());
        let ledger = LedgerDraft {
            principal,
            request_id: call.request_id.clone(),
            endpoint: call.endpoint.as_str(),
            model: model.clone(),
            public_model,
            stream: req.is_stream(),
            started,
            reservation: held.reservation,
            prompt_tokens: held.prompt_tokens,
            memory: compressed,
            policy: self.policy.clone(),
            settled: false,
        };
        let mut headers = compressed.map_or_else(Vec::new, |c| {
            vec![
                (PROMPT_TOKENS_ORIGINAL_HEADER, c.original.to_string()),
                (PROMPT_TOKENS_SENT_HEADER, c.sent.to_string()),
            ]
        });
        headers.append(&mut notes);
        if cache.is_some() {
            headers.push((CACHE_HEADER, "miss".into()));
        }
        // An answer cut short by a budget's cap is not the answer to the request as sent.
        let cache = cache.filter(|p| p.store && ledger.reservation.set_max_tokens.is_none());
        let outgoing = Outgoing {
            deadline: self.deadline(started),
            prompt_estimate: held.counted.then_some(held.prompt_tokens),
            req,
            model,
            ledger,
            headers,
            cache,
            started,
        };
        // Sent whole to a provider that caches prompts: the next turn may find it there.
        let sent = |req: &ChatRequest| {
            if sent_whole {
                self.sent_whole
                    .record(&conversation, &req.model, &req.messages, now);
            }
        };
        if outgoing.req.is_stream() {
            self.stream(outgoing, sent).await
        } else if outgoing.ledger.reservation.grows() {
            self.answer_gathered(outgoing, sent).await
        } else {
            self.answer(outgoing, sent).await
        }
    }
}

/// A model as `/v1/models` shows it. `created` is the same on every start and replica (a
/// client such as LobeChat shows it as the model's release date): a fixed date, since lyss
/// cannot know when a configured model was released.
fn model_object(id: &str, m: &Model) -> ModelObject {
    ModelObject {
        id: id.to_owned(),
        object: "model".into(),
        created: MODELS_CREATED,
        owned_by: m.provider.name().to_owned(),
    }
}

/// Stages 1–2's output: the caller, the model it may use, and the response headers saying
/// what fitting the request to the model changed.
struct Admitted {
    principal: Arc<Principal>,
    model: Arc<Model>,
    notes: Vec<(&'static str, String)>,
}

/// A request through stage 3: what the later stages and its ledger row need of it.
struct Prepared {
    principal: Arc<Principal>,
    model: Arc<Model>,
    notes: Vec<(&'static str, String)>,
    started: Instant,
    /// The request's instant for limits, budgets and memory.
    now: time::OffsetDateTime,
    /// The conversation it continues ([`conversation_key`]).
    conversation: String,
    /// What memory made of the prompt, when it changed it.
    compressed: Option<Compressed>,
}

/// Stages 5–6's output: the prompt's tokens and the reservation.
struct Held {
    /// What memory sent, or what limits and budgets counted (0 when nothing counted).
    prompt_tokens: u64,
    /// Whether limits or budgets counted the prompt.
    counted: bool,
    reservation: crate::policy::Reservation,
}

/// `created` of every model: 2024-01-01T00:00:00Z.
pub const MODELS_CREATED: u64 = 1_704_067_200;

fn outlived(model: &Model) -> Error {
    Error::UpstreamTimeout {
        provider: model.provider.name().to_owned(),
    }
}
