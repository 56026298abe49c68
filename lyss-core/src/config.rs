//! Configuration structs. Plain serde types with their defaults; no file or environment I/O
//! here (that is [`crate::setup`]). Secrets never appear in `Debug` output.

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
    /// Redis for rate-limit counters shared by replicas. Default: none (counters in process).
    /// Env `LYSS_REDIS_URL`.
    pub redis_url: Option<String>,
    /// Seconds a budget reservation may stay open before the reaper releases it (its request
    /// died). Default 900: longer than any upstream timeout. Env `LYSS_RESERVATION_TIMEOUT_SECS`.
    pub reservation_timeout_secs: u64,
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: None,
            database_url: None,
            redis_url: None,
            reservation_timeout_secs: 900,
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
        }
    }
}

/// Long-term memory: recall into the prompt, compress old history, remember new turns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// On for every workspace not listed otherwise in `workspaces`. Default false: a gateway
    /// must not rewrite the prompts of clients that manage their own context (agents, tools)
    /// until an admin says so.
    pub enabled: bool,
    /// Per-workspace settings by workspace name: `name = true|false`, or a table with any of
    /// `enabled`, `history_tokens`, `memory_tokens`, overriding the global ones.
    pub workspaces: std::collections::HashMap<String, WorkspaceMemory>,
    /// Recent conversation kept verbatim, in tokens (the system prompt is always kept).
    /// Default 2,000.
    pub history_tokens: u64,
    /// Largest block of recalled memories injected, in tokens. Default 1,024.
    pub memory_tokens: u64,
    /// Memories recalled at most. Default 10.
    pub top_k: usize,
    /// Vector matches below this cosine similarity are not recalled. Default 0.3.
    pub min_similarity: f32,
    /// A new turn (or extracted fact) this similar to an existing memory is not stored again.
    /// Default 0.92.
    pub dedupe_similarity: f32,
    /// A configured model (name or alias) that extracts facts from each new turn and decides
    /// ADD/UPDATE/DELETE against the existing memories. Unset: turns are stored raw.
    pub extraction_model: Option<String>,
}

/// One workspace's memory settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WorkspaceMemory {
    Switch(bool),
    Settings(WorkspaceMemorySettings),
}

/// A workspace's overrides of the global memory settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceMemorySettings {
    pub enabled: Option<bool>,
    pub history_tokens: Option<u64>,
    pub memory_tokens: Option<u64>,
}

/// The token budgets memory works within for one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudgets {
    pub history_tokens: u64,
    pub memory_tokens: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            workspaces: Default::default(),
            history_tokens: 2_000,
            memory_tokens: 1_024,
            top_k: 10,
            min_similarity: 0.3,
            dedupe_similarity: 0.92,
            extraction_model: None,
        }
    }
}

impl MemoryConfig {
    /// Whether memory is on for a workspace.
    pub fn enabled_for(&self, workspace: &str) -> bool {
        self.budgets_for(workspace).is_some()
    }

    /// A workspace's memory budgets, or `None` when memory is off for it.
    pub fn budgets_for(&self, workspace: &str) -> Option<MemoryBudgets> {
        let global = MemoryBudgets {
            history_tokens: self.history_tokens,
            memory_tokens: self.memory_tokens,
        };
        match self.workspaces.get(workspace) {
            None => self.enabled.then_some(global),
            Some(WorkspaceMemory::Switch(on)) => on.then_some(global),
            Some(WorkspaceMemory::Settings(s)) => {
                s.enabled.unwrap_or(true).then_some(MemoryBudgets {
                    history_tokens: s.history_tokens.unwrap_or(global.history_tokens),
                    memory_tokens: s.memory_tokens.unwrap_or(global.memory_tokens),
                })
            }
        }
    }
}

/// Response caching: an identical request is answered from the cache instead of upstream.
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
    /// Where answers live: `memory` (this process) or `redis` (`redis_url`, shared by
    /// replicas). Default `memory`.
    pub backend: CacheBackend,
    /// Bytes the in-process cache holds at most. Default 256 MiB.
    pub max_bytes: u64,
    /// Per-workspace overrides by workspace name.
    pub workspaces: std::collections::HashMap<String, WorkspaceCache>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            mode: CacheMode::Off,
            ttl_secs: 3_600,
            scope: CacheScope::Workspace,
            backend: CacheBackend::Memory,
            max_bytes: 256 * 1024 * 1024,
            workspaces: Default::default(),
        }
    }
}

/// Whether answers are cached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    #[default]
    Off,
    Exact,
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

/// A workspace's overrides of the global cache settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceCache {
    pub mode: Option<CacheMode>,
    pub ttl_secs: Option<u64>,
    pub scope: Option<CacheScope>,
}

/// The cache settings in force for one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub ttl: std::time::Duration,
    pub scope: CacheScope,
}

impl CacheConfig {
    /// The cache settings of a workspace, or `None` when its cache is off.
    pub fn policy_for(&self, workspace: &str) -> Option<CachePolicy> {
        let w = self.workspaces.get(workspace).cloned().unwrap_or_default();
        (w.mode.unwrap_or(self.mode) == CacheMode::Exact).then(|| CachePolicy {
            ttl: std::time::Duration::from_secs(w.ttl_secs.unwrap_or(self.ttl_secs)),
            scope: w.scope.unwrap_or(self.scope),
        })
    }

    /// Whether any workspace caches.
    pub fn any_on(&self) -> bool {
        self.mode != CacheMode::Off
            || self
                .workspaces
                .values()
                .any(|w| w.mode.is_some_and(|m| m != CacheMode::Off))
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

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible API: OpenAI, Ollama, vLLM, Groq, DeepSeek, OpenRouter, Together …
    #[default]
    Openai,
}

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
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_request_timeout() -> u64 {
    600
}

/// One public model.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Largest completion the model can produce. Optional.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
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
