//! What the ledger holds: one row per call ([`LedgerEntry`]), and the queries that read and
//! sum its rows ([`LedgerQuery`], [`UsageQuery`] → [`UsageRow`]).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Payer;
use crate::price::NanoUsd;

/// One request as the usage ledger records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub request_id: String,
    pub workspace_id: String,
    pub user_id: String,
    pub key_id: String,
    /// `chat` or `embeddings`.
    pub endpoint: String,
    /// Public model name as requested.
    pub model: String,
    pub provider: String,
    pub upstream_model: String,
    pub stream: bool,
    pub prompt_tokens: u64,
    /// The prompt tokens the client's prompt would have been without memory, in the
    /// upstream's units (equal to `prompt_tokens` when memory left the prompt alone; below it
    /// when memory added more than it dropped).
    #[serde(default)]
    pub prompt_tokens_original: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cost_nusd: NanoUsd,
    pub latency_ms: f64,
    /// HTTP status the caller saw (499 when the client went away mid-stream).
    pub status: u16,
    pub error: Option<String>,
    /// `hit` when the answer came from the cache (billed tokens and cost are then 0).
    #[serde(default)]
    pub cache: Option<String>,
    /// Tokens a cache hit saved: what the upstream call it replaced used.
    #[serde(default)]
    pub saved_tokens: u64,
    /// Cost a cache hit saved.
    #[serde(default)]
    pub saved_nusd: NanoUsd,
    /// What memory saved on this row, net (negative: what it cost): prompt tokens it removed
    /// at the cached-input price (a plain gateway would have resent them as a prefix the
    /// provider caches), tokens it added at the input price, and on an extraction call's own
    /// row that call's cost.
    #[serde(default)]
    pub memory_saved_nusd: NanoUsd,
    /// Prompt tokens written to the provider's prompt cache.
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// What the provider's prompt cache saved against the same prompt uncached (negative when
    /// a cache write cost more than it saved).
    #[serde(default)]
    pub prompt_cache_saved_nusd: NanoUsd,
}

impl LedgerEntry {
    /// The row of a call `payer` made through `endpoint` to `model` (public name), started at
    /// `started` and ending now: answered (200), no tokens, no cost — each caller sets what its
    /// call had ([`LedgerEntry::with_usage`] for an upstream's answer).
    pub fn new(
        payer: Payer<'_>,
        request_id: &str,
        endpoint: &str,
        model: &str,
        started: std::time::Instant,
    ) -> Self {
        Self {
            at: OffsetDateTime::now_utc(),
            request_id: request_id.to_owned(),
            workspace_id: payer.workspace_id.to_owned(),
            user_id: payer.user_id.to_owned(),
            key_id: payer.key_id.to_owned(),
            endpoint: endpoint.to_owned(),
            model: model.to_owned(),
            provider: String::new(),
            upstream_model: String::new(),
            stream: false,
            prompt_tokens: 0,
            prompt_tokens_original: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            cost_nusd: 0,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            status: 200,
            error: None,
            cache: None,
            saved_tokens: 0,
            saved_nusd: 0,
            memory_saved_nusd: 0,
            cache_write_tokens: 0,
            prompt_cache_saved_nusd: 0,
        }
    }
}

/// Which ledger rows to read, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerQuery {
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// Rows before this instant only (as in [`UsageQuery`]).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    pub key_id: Option<String>,
    pub limit: Option<u32>,
}

/// How to group a usage report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    #[default]
    Workspace,
    User,
    Key,
    Model,
    /// One row per UTC day.
    Day,
}

/// Which ledger rows a usage report sums.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageQuery {
    #[serde(default)]
    pub by: GroupBy,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// Rows before this instant only.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    /// A time series: one row per group and UTC hour or day.
    #[serde(default)]
    pub bucket: Option<Bucket>,
    /// This key's rows only: read through the ledger's `(key_id, at_ms)` index, so a person's
    /// page costs their own rows, not a pass over every tenant's.
    #[serde(default)]
    pub key_id: Option<String>,
}

/// The step of a usage time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    pub fn millis(self) -> i64 {
        match self {
            Bucket::Hour => 3_600_000,
            Bucket::Day => 86_400_000,
        }
    }
}

/// One group of a usage report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The start of the hour or day, in a time series.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub bucket: Option<OffsetDateTime>,
    /// Workspace, user or model name, key id, or `YYYY-MM-DD`.
    pub group: String,
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_nusd: i64,
    /// Prompt tokens memory kept from being sent, net of those it added (in the upstreams'
    /// units; negative when memory added more than it dropped).
    #[serde(default)]
    pub memory_saved_tokens: i64,
    /// Requests answered from the cache, and the cost they saved.
    #[serde(default)]
    pub cache_hits: i64,
    #[serde(default)]
    pub cache_saved_nusd: i64,
    #[serde(default)]
    pub cache_saved_tokens: i64,
    /// What memory saved, net: dropped prompt tokens at the models' cached-input prices, minus
    /// tokens it added at their input prices and its extraction calls' cost.
    #[serde(default)]
    pub memory_saved_nusd: i64,
    /// Prompt tokens read from and written to the providers' prompt caches.
    #[serde(default)]
    pub cached_tokens: i64,
    #[serde(default)]
    pub cache_write_tokens: i64,
    /// What the providers' prompt caches saved.
    #[serde(default)]
    pub prompt_cache_saved_nusd: i64,
}
