//! [`LyssBuilder`]: the pipeline composed from its seams, each with its default.

use std::sync::Arc;
use std::time::Duration;

use super::{EmbedderLoader, Lyss, SentWhole};
use crate::cache::Cache;
use crate::clock::{Clock, SystemClock};
use crate::config::{BuiltinTools, CacheConfig, MemoryConfig};
use crate::embed::Embedder;
use crate::memory::MemoryStore;
use crate::models::ModelRegistry;
use crate::policy::{FirstShare, KeyCache, Policy};
use crate::ratelimit::{InMemoryRateLimiter, RateLimiter};

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
    first_share: FirstShare,
    builtin_tools: BuiltinTools,
}

impl LyssBuilder {
    /// What a request with built-in tools (web search) gets from a model whose upstream cannot
    /// run them (default: an answer without them, said in `x-lyss-dropped`).
    pub fn builtin_tools(mut self, what: BuiltinTools) -> Self {
        self.builtin_tools = what;
        self
    }

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

    /// How much of an answer without `max_tokens` is reserved before it starts; the rest is
    /// reserved as it streams (default: 512 tokens, at most 5% of what a budget has left).
    pub fn first_output_share(mut self, first: FirstShare) -> Self {
        self.first_share = first;
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
            clock: self.clock,
            reservation_ttl: self.reservation_ttl,
            first_share: self.first_share,
            turns_queued: tokio::sync::Notify::new(),
            sent_whole: SentWhole::default(),
            builtin_tools: self.builtin_tools,
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
            first_share: FirstShare::default(),
            builtin_tools: BuiltinTools::default(),
        }
    }
}
