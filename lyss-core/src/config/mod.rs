//! Configuration structs. Plain serde types with their defaults; no file or environment I/O
//! here (that is [`crate::setup`]). Secrets never appear in `Debug` output.

mod budget_counters;
mod cache;
mod embedder;
mod memory;
mod provider_kind;
mod providers;
mod router;

pub use self::budget_counters::*;
pub use self::cache::*;
pub use self::embedder::*;
pub use self::memory::*;
pub use self::providers::*;
pub use self::router::*;

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

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

pub use self::provider_kind::ProviderKind;

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
