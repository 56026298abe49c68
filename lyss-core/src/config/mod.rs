//! Configuration structs. Plain serde types with their defaults; no file or environment I/O
//! here (that is [`crate::setup`]). Secrets never appear in `Debug` output.

mod provider_kind;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole configuration: defaults → `lyss.toml` → `LYSS_*` environment → flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the server listens on. Default `127.0.0.1:8080`. Env `LYSS_BIND`.
    pub bind: SocketAddr,
    /// Where the SQLite file and the admin token live. Default: the user's data directory
    /// (`~/.local/share/lyss` on Linux). Env `LYSS_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// The governance store: `sqlite://…` or `postgres://…`. Default
    /// `sqlite://<data_dir>/lyss.db`. Env `LYSS_DATABASE_URL`.
    pub database_url: Option<String>,
    /// Redis for counters shared by replicas: rate limits, and on Postgres the budget counters
    /// (`budget_counters`). Default: none (counters in process, budgets in the database).
    /// Env `LYSS_REDIS_URL`.
    pub redis_url: Option<String>,
    /// Where a Postgres cluster keeps its budget counters.
    pub budget_counters: BudgetCountersConfig,
    /// Seconds a budget reservation may stay open before the reaper releases it (its request
    /// died). Default 900: longer than any upstream timeout. Env `LYSS_RESERVATION_TIMEOUT_SECS`.
    pub reservation_timeout_secs: u64,
    /// Output tokens reserved up front for an answer without `max_tokens`; the rest is
    /// reserved as it streams. Default 512. Env `LYSS_RESERVE_OUTPUT_TOKENS`.
    pub reserve_output_tokens: u32,
    /// …but never more than this share of what the tightest budget has left, so concurrent
    /// requests on a small budget each get a turn. In (0, 1]; default 0.05. Env
    /// `LYSS_RESERVE_OUTPUT_SHARE`.
    pub reserve_output_share: f64,
    /// The admin token. Default: generated on first start and kept in `<data_dir>/admin_token`
    /// (mode 0600). Env `LYSS_ADMIN_TOKEN`.
    #[serde(skip_serializing)]
    pub admin_token: Option<Secret>,
    /// Largest accepted request body in bytes. Default 32 MiB: chat clients resend the whole
    /// history, with images as base64. Env `LYSS_BODY_LIMIT`.
    pub body_limit: usize,
    /// Origins allowed by CORS. Default `["*"]` (any origin, never with credentials).
    pub cors_origins: Vec<String>,
    /// Log format: `text` (default) or `json`. Env `LYSS_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// How long a verified key is trusted before it is read from the store again, in
    /// milliseconds. Default 500: revocation reaches every replica within a second.
    pub key_cache_ms: u64,
    /// The embedding model used by memory and the semantic cache.
    pub embedder: EmbedderConfig,
    /// Long-term memory and prompt compression.
    pub memory: MemoryConfig,
    /// Response caching.
    pub cache: CacheConfig,
    /// Upstream providers.
    pub providers: Vec<ProviderConfig>,
    /// Public models and where they go.
    pub models: Vec<ModelConfig>,
    /// Retries, backoff and circuit breaking for every model's targets.
    pub router: RouterConfig,
    /// Failed key checks (401s) allowed per client address and minute before that address is
    /// slowed for the rest of the minute (one check at a time, a failure answered after a
    /// pause; who authenticates is still served). Default 30; 0 turns the limit off.
    pub auth_failures_per_minute: u32,
    /// Record Prometheus metrics and serve them at `/metrics`. Default true.
    pub metrics: bool,
    /// A bearer token `/metrics` requires, when set. Default none: open, like most exporters
    /// (no tenant data in it; see docs/security.md). Env `LYSS_METRICS_TOKEN`.
    #[serde(skip_serializing)]
    pub metrics_token: Option<Secret>,
    /// Seconds a client has to send a request's headers (against slowloris). Default 20.
    pub header_read_timeout_secs: u64,
    /// Largest request head (request line and headers) in bytes; 431 beyond. Default 64 KiB.
    pub max_header_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: None,
            database_url: None,
            redis_url: None,
            budget_counters: BudgetCountersConfig::default(),
            reservation_timeout_secs: 900,
            reserve_output_tokens: 512,
            reserve_output_share: 0.05,
            admin_token: None,
            body_limit: 32 * 1024 * 1024,
            cors_origins: vec!["*".into()],
            log_format: LogFormat::Text,
            key_cache_ms: 500,
            embedder: EmbedderConfig::default(),
            memory: MemoryConfig::default(),
            cache: CacheConfig::default(),
            providers: Vec::new(),
            models: Vec::new(),
            router: RouterConfig::default(),
            auth_failures_per_minute: 30,
            metrics: true,
            metrics_token: None,
            header_read_timeout_secs: 20,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// How a request reaches a model's targets when one fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Further attempts at one target after a retryable failure (connection, timeout, 429,
    /// 5xx) before falling back to the next target. Default 2.
    pub retries: u32,
    /// First backoff in milliseconds; doubles each attempt, with jitter. Default 100.
    pub backoff_ms: u64,
    /// Longest backoff. A `Retry-After` longer than this moves on to the next target instead
    /// of waiting. Default 2,000.
    pub max_backoff_ms: u64,
    /// Consecutive failures that open a target's circuit (it is skipped). Default 5.
    pub breaker_failures: u32,
    /// Seconds an open circuit waits before one probe request may try the target again.
    /// Default 30.
    pub breaker_cooldown_secs: u64,
    /// What a request with OpenAI's built-in tools (web search) gets from a model whose
    /// upstream cannot run them (anything but OpenAI's Responses API): `"drop"` (default) — an
    /// answer without the tool, the response saying so in `x-lyss-dropped` — or `"refuse"`
    /// (400).
    pub builtin_tools: BuiltinTools,
}

/// What happens to built-in tools an upstream cannot run ([`RouterConfig::builtin_tools`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuiltinTools {
    /// Answered without them, and said so (a coding agent's default web search should not
    /// fail every turn behind a local model).
    #[default]
    Drop,
    /// Refused with 400.
    Refuse,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            retries: 2,
            backoff_ms: 100,
            max_backoff_ms: 2_000,
            breaker_failures: 5,
            breaker_cooldown_secs: 30,
            builtin_tools: BuiltinTools::Drop,
        }
    }
}

/// Long-term memory: recall into the prompt, compress old history, remember every turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// For every workspace not listed otherwise in `workspaces`: `"auto"` (default), `true`
    /// or `false` — see [`MemoryMode`].
    pub enabled: MemoryMode,
    /// Per-workspace settings by workspace name: `name = true|false|"auto"`, or a table with
    /// any of `enabled`, `history_tokens`, `memory_tokens`, overriding the global ones.
    pub workspaces: std::collections::HashMap<String, WorkspaceMemory>,
    /// Recent conversation kept verbatim, in tokens (the system prompt and the newest
    /// exchange always stay). Default 256.
    pub history_tokens: u64,
    /// Largest block of recalled memories injected, in tokens. Default 1,400.
    pub memory_tokens: u64,
    /// Memories recalled at most (the block is filled by tokens first). Default 64.
    pub top_k: usize,
    /// Vector matches below this cosine similarity are not recalled. Default 0.2.
    pub min_similarity: f32,
    /// An extracted fact this similar to an existing memory is not stored again.
    /// Default 0.92.
    pub dedupe_similarity: f32,
    /// A configured model (name or alias) that extracts facts from each new turn and decides
    /// ADD/UPDATE/DELETE against the existing memories. Unset: turns are stored raw.
    pub extraction_model: Option<String>,
}

/// When memory works on a workspace's chat requests.
///
/// `Auto` is the default because it remembers the person in every chat and never makes a
/// prompt pay for nothing: it compresses only what costs more than memory's whole budget, adds
/// to a short prompt only what recall finds relevant (and the person's profile), and leaves
/// alone what is not conversation — a client's housekeeping (titles, summaries, translations)
/// and agents (tools, tool calls, trailing instructions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemoryMode {
    /// Never: requests go upstream as sent and nothing is remembered.
    Off,
    /// Every conversation is remembered (its turns queued, its profile statements kept).
    /// A prompt longer than `history_tokens + memory_tokens` is compressed when that saves
    /// materially and costs less than sending it whole (sent whole, a conversation lyss sent
    /// lately to a provider that caches prompts is read from that cache at a fraction of the
    /// input price, Anthropic a tenth). A shorter one gets the memories recall finds relevant
    /// to its newest message (a question up to 400 tokens, an ordinary turn up to 100) and
    /// the person's profile — or goes exactly as sent when there are none. Housekeeping and
    /// agent traffic go as sent, and nothing of them is remembered.
    #[default]
    Auto,
    /// Every chat request: its turns are remembered and the user's memories recalled into
    /// it, even a short one (a new conversation starts with what lyss knows of the user).
    On,
}

impl Serialize for MemoryMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Off => s.serialize_bool(false),
            Self::On => s.serialize_bool(true),
            Self::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for MemoryMode {
    /// `true`/`false`, or one of the strings `auto`, `on`, `off`, `true`, `false` (as an
    /// environment variable sets it).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Self::On),
            Raw::Bool(false) => Ok(Self::Off),
            Raw::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
                "auto" => Ok(Self::Auto),
                "on" | "true" => Ok(Self::On),
                "off" | "false" => Ok(Self::Off),
                other => Err(serde::de::Error::custom(format!(
                    "memory mode `{other}`: expected true, false or \"auto\""
                ))),
            },
        }
    }
}

/// One workspace's memory settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WorkspaceMemory {
    Switch(MemoryMode),
    Settings(WorkspaceMemorySettings),
}

/// A workspace's overrides of the global memory settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceMemorySettings {
    /// Default: on (a workspace listed with budgets wants memory).
    pub enabled: Option<MemoryMode>,
    pub history_tokens: Option<u64>,
    pub memory_tokens: Option<u64>,
}

/// How memory works for one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudgets {
    /// `Auto` or `On` (a workspace with memory off has no budgets).
    pub mode: MemoryMode,
    pub history_tokens: u64,
    pub memory_tokens: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            enabled: MemoryMode::Auto,
            workspaces: Default::default(),
            history_tokens: 256,
            memory_tokens: 1_400,
            top_k: 64,
            min_similarity: 0.2,
            dedupe_similarity: 0.92,
            extraction_model: None,
        }
    }
}

impl MemoryConfig {
    /// Whether memory may work on some requests of a workspace.
    pub fn enabled_for(&self, workspace: &str) -> bool {
        self.budgets_for(workspace).is_some()
    }

    /// Whether any workspace may use memory (the store is needed).
    pub fn any_enabled(&self) -> bool {
        self.enabled != MemoryMode::Off || self.workspaces.keys().any(|w| self.enabled_for(w))
    }

    /// Whether some workspace has memory on for every request (not just `auto`).
    pub fn any_on(&self) -> bool {
        let on = |w: &str| {
            self.budgets_for(w)
                .is_some_and(|b| b.mode == MemoryMode::On)
        };
        self.enabled == MemoryMode::On || self.workspaces.keys().any(|w| on(w))
    }

    /// A workspace's memory mode and budgets, or `None` when memory is off for it.
    pub fn budgets_for(&self, workspace: &str) -> Option<MemoryBudgets> {
        let with = |mode: MemoryMode, history_tokens, memory_tokens| {
            (mode != MemoryMode::Off).then_some(MemoryBudgets {
                mode,
                history_tokens,
                memory_tokens,
            })
        };
        let (history, memory) = (self.history_tokens, self.memory_tokens);
        match self.workspaces.get(workspace) {
            None => with(self.enabled, history, memory),
            Some(WorkspaceMemory::Switch(mode)) => with(*mode, history, memory),
            Some(WorkspaceMemory::Settings(s)) => with(
                s.enabled.unwrap_or(MemoryMode::On),
                s.history_tokens.unwrap_or(history),
                s.memory_tokens.unwrap_or(memory),
            ),
        }
    }
}

/// Where a Postgres cluster keeps its budget counters (`spent`, `reserved`, open holds).
/// SQLite's server always keeps them in its own memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetCountersConfig {
    /// `redis` (`redis_url`): admission is one Lua script, Postgres keeps the ledger and
    /// rebuilds the counters if Redis loses them; `database`: a Postgres transaction per
    /// admission. Default: `redis` when `redis_url` is set. Every replica of a database must
    /// use the same.
    pub store: Option<CounterStore>,
    /// Where in Redis this deployment's budget counters live (every key starts with it).
    /// Default `lyss:budget:`; deployments sharing one Redis each need their own.
    pub redis_prefix: String,
}

impl Default for BudgetCountersConfig {
    fn default() -> Self {
        Self {
            store: None,
            redis_prefix: "lyss:budget:".into(),
        }
    }
}

/// Where budget counters live; see [`BudgetCountersConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CounterStore {
    Redis,
    Database,
}

/// Response caching: an identical (or, in `semantic` mode, equivalent) request is answered
/// from the cache instead of upstream. A workspace's settings stored with `lyss workspace
/// update` override these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// For every workspace not listed in `workspaces`. Default `off`: a chat client's
    /// "regenerate" button resends the identical request and expects a new answer.
    pub mode: CacheMode,
    /// How long an answer stays cached, in seconds. Default 3,600.
    pub ttl_secs: u64,
    /// Who shares cached answers. Default `workspace`.
    pub scope: CacheScope,
    /// In `semantic` mode, how similar (cosine, 0–1] a question must be to a cached one to be
    /// answered with its answer. Default 0.95; a request may raise it, never lower it.
    pub semantic_threshold: f32,
    /// Where answers live: `memory` (this process) or `redis` (`redis_url`, shared by
    /// replicas). Default `memory`.
    pub backend: CacheBackend,
    /// Bytes the in-process cache holds at most. Default 256 MiB.
    pub max_bytes: u64,
    /// Where in Redis this deployment's answers live (every key starts with it). Default
    /// `lyss:cache:`; deployments sharing one Redis each need their own.
    pub redis_prefix: String,
    /// Per-workspace overrides by workspace name.
    pub workspaces: std::collections::HashMap<String, WorkspaceCache>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            mode: CacheMode::Off,
            ttl_secs: 3_600,
            scope: CacheScope::Workspace,
            semantic_threshold: 0.95,
            backend: CacheBackend::Memory,
            max_bytes: 256 * 1024 * 1024,
            redis_prefix: "lyss:cache:".into(),
            workspaces: Default::default(),
        }
    }
}

/// Whether answers are cached, and how they are found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    #[default]
    Off,
    /// The same request, byte for byte after memory assembly.
    Exact,
    /// The same request, or the same context with a question of the same meaning (by the
    /// embedding of the last user message).
    Semantic,
}

/// Who shares a cached answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    Key,
    User,
    #[default]
    Workspace,
    /// Every workspace: only for deployments whose tenants trust each other.
    Global,
}

/// Where cached answers live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackend {
    #[default]
    Memory,
    Redis,
}

/// A workspace's overrides of the global cache settings (in config, or stored with
/// `lyss workspace update`); an absent field inherits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceCache {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<CacheMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<CacheScope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_threshold: Option<f32>,
}

impl WorkspaceCache {
    /// These overrides, with `over`'s fields replacing those it sets.
    pub fn merged(self, over: &WorkspaceCache) -> WorkspaceCache {
        WorkspaceCache {
            mode: over.mode.or(self.mode),
            ttl_secs: over.ttl_secs.or(self.ttl_secs),
            scope: over.scope.or(self.scope),
            semantic_threshold: over.semantic_threshold.or(self.semantic_threshold),
        }
    }

    /// Refuses a time to live of 0 and a threshold outside (0, 1].
    pub fn validate(&self) -> crate::Result<()> {
        if self.ttl_secs == Some(0) {
            return Err(crate::Error::invalid_param(
                "cache ttl must be at least one second",
                "ttl_secs",
            ));
        }
        if let Some(t) = self.semantic_threshold
            && !(t > 0.0 && t <= 1.0)
        {
            return Err(crate::Error::invalid_param(
                format!("semantic threshold must be in (0, 1], not {t}"),
                "semantic_threshold",
            ));
        }
        Ok(())
    }
}

/// The cache settings in force for one workspace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CachePolicy {
    pub ttl: std::time::Duration,
    pub scope: CacheScope,
    /// The similarity a semantic hit needs, or `None` in exact mode.
    pub semantic_threshold: Option<f32>,
}

impl CacheConfig {
    /// The cache settings of a workspace — this config, its entry in `workspaces`, then
    /// `stored` (the settings kept in the database) — or `None` when its cache is off.
    pub fn policy_for(&self, workspace: &str, stored: &WorkspaceCache) -> Option<CachePolicy> {
        let w = self
            .workspaces
            .get(workspace)
            .copied()
            .unwrap_or_default()
            .merged(stored);
        let mode = w.mode.unwrap_or(self.mode);
        (mode != CacheMode::Off).then(|| CachePolicy {
            ttl: std::time::Duration::from_secs(w.ttl_secs.unwrap_or(self.ttl_secs).max(1)),
            scope: w.scope.unwrap_or(self.scope),
            semantic_threshold: (mode == CacheMode::Semantic)
                .then(|| w.semantic_threshold.unwrap_or(self.semantic_threshold)),
        })
    }

    /// Whether the config turns semantic caching on for any workspace.
    pub fn any_semantic(&self) -> bool {
        self.mode == CacheMode::Semantic
            || self
                .workspaces
                .values()
                .any(|w| w.mode == Some(CacheMode::Semantic))
    }
}

/// Which embedding model to use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedderConfig {
    /// `local` (default): all-MiniLM-L6-v2 in process with ONNX Runtime, from `models_dir`;
    /// `openai`: a configured provider's `/v1/embeddings`; `none`: keyword retrieval only.
    pub kind: EmbedderKind,
    /// Where `scripts/fetch-models.sh` put the model and ONNX Runtime. Default:
    /// `$LYSS_MODELS_DIR`, else the user's data directory + `lyss/models`.
    pub models_dir: Option<PathBuf>,
    /// For `openai`: the provider name, its embedding model and the vector dimension.
    pub provider: Option<String>,
    pub model: Option<String>,
    pub dimension: Option<usize>,
}

/// The kind of embedder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedderKind {
    #[default]
    Local,
    Openai,
    None,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

pub use self::provider_kind::ProviderKind;

/// One upstream provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name models refer to.
    pub name: String,
    /// Wire protocol. Default `openai`.
    #[serde(default)]
    pub kind: ProviderKind,
    /// Base URL including the version path, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Environment variable holding the API key. Optional (local servers need none).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The API key itself. Prefer `api_key_env`; a key in a file is a secret at rest.
    #[serde(default, skip_serializing)]
    pub api_key: Option<Secret>,
    /// Seconds to wait for the upstream to connect. Default 10.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds a whole non-streaming request (or a stream's first byte) may take. Default 600.
    #[serde(default = "default_request_timeout")]
    pub timeout_secs: u64,
    /// Ask the provider for its model list at start-up and serve each under its own name
    /// (used for `OLLAMA_BASE_URL`). Default false.
    #[serde(default)]
    pub discover_models: bool,
    /// Azure OpenAI's `api-version`, e.g. `2024-10-21`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Help the provider's prompt cache: Anthropic upstreams get `cache_control` breakpoints
    /// (when the client set none), OpenAI gets a stable `prompt_cache_key` per caller and
    /// conversation (when the client set none). Default: on for Anthropic and for
    /// `api.openai.com`; off for other OpenAI-compatible servers, which may reject the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache: Option<bool>,
    /// Upstream models this provider serves through its Responses API (`/responses`) instead of
    /// chat completions: OpenAI's models that have no chat completions (`gpt-5-pro`,
    /// `gpt-5-codex`, …). Lyss translates both ways, so chat clients can use them too. Default:
    /// for `api.openai.com`, models whose name ends in `-pro` or contains `codex`; none elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses_models: Option<Vec<String>>,
}

impl ProviderConfig {
    /// A provider as a config file with only these three keys makes it: no key, the default
    /// timeouts, everything else off or default.
    pub fn new(name: impl Into<String>, kind: ProviderKind, base_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind,
            base_url: base_url.into(),
            api_key_env: None,
            api_key: None,
            connect_timeout_secs: default_connect_timeout(),
            timeout_secs: default_request_timeout(),
            discover_models: false,
            api_version: None,
            prompt_cache: None,
            responses_models: None,
        }
    }

    /// Which upstream models go through the Responses API, decided once (the provider asks on
    /// every request).
    pub fn responses_models(&self) -> ResponsesModels {
        match &self.responses_models {
            Some(models) => ResponsesModels::Listed(models.clone()),
            None if self.kind == ProviderKind::Openai && self.is_openai() => {
                ResponsesModels::OpenAiOnly
            }
            None => ResponsesModels::Listed(Vec::new()),
        }
    }

    /// Whether lyss helps this provider's prompt cache (see [`ProviderConfig::prompt_cache`]).
    pub fn prompt_cache(&self) -> bool {
        self.prompt_cache.unwrap_or(match self.kind {
            ProviderKind::Anthropic => true,
            ProviderKind::Openai => self.is_openai(),
            _ => false,
        })
    }

    /// Whether `base_url` is OpenAI's own API.
    fn is_openai(&self) -> bool {
        reqwest::Url::parse(&self.base_url).is_ok_and(|u| u.host_str() == Some("api.openai.com"))
    }
}

/// The upstream models a provider serves through its Responses API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponsesModels {
    /// These, by name (configured; none by default off OpenAI).
    Listed(Vec<String>),
    /// OpenAI's models that have no chat completions: named `…-pro` or `…codex…`.
    OpenAiOnly,
}

impl ResponsesModels {
    pub fn includes(&self, upstream: &str) -> bool {
        match self {
            Self::Listed(models) => models.iter().any(|m| m == upstream),
            Self::OpenAiOnly => {
                upstream.ends_with("-pro")
                    || upstream.contains("-pro-")
                    || upstream.contains("codex")
            }
        }
    }
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_request_timeout() -> u64 {
    600
}

/// One public model.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Public name clients ask for.
    pub name: String,
    /// Provider name (from `[[providers]]`).
    pub provider: String,
    /// Model name upstream. Default: `name`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Other public names for the same model (LobeChat's default is `gpt-5-mini`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// USD per 1M input tokens. Default: the built-in price table, else 0.
    #[serde(default)]
    pub input_per_mtok: Option<f64>,
    /// USD per 1M output tokens. Default: the built-in price table, else 0.
    #[serde(default)]
    pub output_per_mtok: Option<f64>,
    /// USD per 1M cached input tokens. Default: the built-in price table, else the input price.
    #[serde(default)]
    pub cached_input_per_mtok: Option<f64>,
    /// USD per 1M input tokens written to the provider's prompt cache. Default: the built-in
    /// price table (1.25× input for Anthropic models), else the input price.
    #[serde(default)]
    pub cache_write_per_mtok: Option<f64>,
    /// Largest completion the model can produce. Optional.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// This target's share of traffic when there are `targets` too. Default 1; 0 makes a
    /// target a standby, used only when the others fail.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Seconds a whole attempt may take at this target. Default: the provider's `timeout_secs`.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Seconds a stream's first chunk may take at this target. Default: `timeout_secs`.
    #[serde(default)]
    pub first_byte_timeout_secs: Option<u64>,
    /// More places to serve this model from: balanced by weight with the one above, and tried
    /// in this order when it fails.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
}

/// Another place a model is served from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Provider name (from `[[providers]]`).
    pub provider: String,
    /// Model name at that provider (a deployment name for Azure). Default: the model's.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Share of traffic. Default 1; 0: a standby, used only when the others fail.
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub first_byte_timeout_secs: Option<u64>,
}

/// A secret string: compared and used, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests;
