//! The `Policy` seam: who is calling, what they may use, and what they spent.
//!
//! Failure mode: a policy store that cannot be reached refuses requests
//! ([`Error::Unavailable`], 503) — it never lets a request through unchecked.

pub mod budget;
pub(crate) mod counters;
pub mod keys;
#[cfg(feature = "postgres")]
mod postgres;
pub(crate) mod settle;
pub(crate) mod sql;
mod sqlite;
pub(crate) mod store;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use self::budget::{Ask, Budget, BudgetStatus, FirstShare, NewBudget, Period, Scope, Unit};
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresPolicy;
pub use self::sqlite::SqlitePolicy;
use crate::config::WorkspaceCache;
pub use crate::error::BudgetRefusal;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::price::{NanoUsd, Price};

/// The model list that means "every configured model".
pub const ALL_MODELS: &str = "*";

/// An authenticated caller: the key and the user and workspace it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Principal {
    pub key_id: String,
    pub key_name: Option<String>,
    pub user_id: String,
    pub user_name: String,
    pub workspace_id: String,
    pub workspace_name: String,
    /// The workspace's allow-list.
    pub workspace_models: Vec<String>,
    /// The key's narrower allow-list, if any.
    pub key_models: Option<Vec<String>>,
    #[serde(with = "time::serde::timestamp::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Whether any budget is attached to the workspace, the user or the key.
    pub budgeted: bool,
    /// Rate limits of the workspace, user and key, where set.
    pub rate_limits: Vec<RateLimit>,
    /// The workspace's stored cache settings.
    #[serde(default)]
    pub workspace_cache: WorkspaceCache,
}

/// Requests and tokens per minute allowed to one workspace, user or key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub scope: Scope,
    /// The workspace, user or key id.
    pub id: String,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
}

/// Who pays for a call: the workspace, user and key its ledger row is recorded under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payer<'a> {
    pub workspace_id: &'a str,
    pub user_id: &'a str,
    pub key_id: &'a str,
}

impl Principal {
    /// The caller as the payer of its calls.
    pub fn payer(&self) -> Payer<'_> {
        Payer {
            workspace_id: &self.workspace_id,
            user_id: &self.user_id,
            key_id: &self.key_id,
        }
    }

    /// Whether both the workspace's and the key's allow-lists include the model (by its
    /// canonical name or any alias). Deny by default: an empty list allows nothing.
    pub fn allows(&self, model: &Model) -> bool {
        let listed = |list: &[String]| {
            list.iter().any(|m| {
                m == ALL_MODELS || *m == model.name || model.aliases.iter().any(|a| a == m)
            })
        };
        listed(&self.workspace_models) && self.key_models.as_deref().is_none_or(listed)
    }

    /// Whether the key has expired at `now`.
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// A workspace (a team): its allowed models and its stored settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub models: Vec<String>,
    /// Cache settings stored for this workspace (they override the config's).
    #[serde(default)]
    pub cache: WorkspaceCache,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A change to a workspace: each field set replaces the stored one, the rest stay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceUpdate {
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub cache: WorkspaceCache,
}

/// A provider an admin stored with `lyss provider add`: its API key sealed with the master key
/// ([`crate::secrets`]), or the name of the environment variable that holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredProvider {
    pub name: String,
    pub kind: crate::config::ProviderKind,
    pub base_url: String,
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Never serialized: listings say only whether a key is stored.
    #[serde(skip)]
    pub sealed_key: Option<Vec<u8>>,
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub discover_models: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A user: belongs to one workspace. No email, no password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub workspace: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What is needed to mint a key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewKey {
    /// User name or id.
    pub user: String,
    pub name: Option<String>,
    /// Narrower model list; `None` inherits the workspace's.
    pub models: Option<Vec<String>>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// A key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub id: String,
    pub name: Option<String>,
    pub user: String,
    pub workspace: String,
    pub models: Option<Vec<String>>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A newly minted key. `key` is the only time the full key exists outside the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedKey {
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

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

    /// What `model`'s upstream answered with, and what it cost at the model's price.
    pub fn with_usage(self, model: &Model, usage: &crate::wire::Usage) -> Self {
        Self {
            provider: model.provider.name().to_owned(),
            upstream_model: model.upstream.clone(),
            prompt_tokens: usage.prompt_tokens,
            prompt_tokens_original: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens(),
            cost_nusd: model.price.cost(usage),
            cache_write_tokens: usage.cache_write_tokens(),
            prompt_cache_saved_nusd: model.price.prompt_cache_saving(usage),
            ..self
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

/// Money or tokens held on one budget for one request in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub budget_id: String,
    pub unit: Unit,
    /// The period the reservation was made in; it settles there even after a rollover.
    pub period_start: i64,
    pub amount: i64,
    /// The budget's limit when the hold was made (for the remaining-budget header).
    pub limit: i64,
}

/// A request's reservation on every budget that applies (none: an empty reservation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: String,
    pub holds: Vec<Hold>,
    /// Set `max_tokens` to this upstream: the request had none and the budgets allow less
    /// than the model's cap.
    pub set_max_tokens: Option<u32>,
    /// Output tokens reserved for; below `ceiling` when the answer is topped up as it grows.
    pub output: u32,
    /// The most output tokens the answer may grow to.
    pub ceiling: u32,
    /// What is left after this reservation.
    pub left: BudgetLeft,
}

impl Reservation {
    /// Whether the answer must be counted as it flows and the reservation topped up.
    pub fn grows(&self) -> bool {
        !self.holds.is_empty() && self.output < self.ceiling
    }
}

/// The least left on any applicable budget, per unit (for `x-lyss-budget-remaining`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetLeft {
    /// Nano-USD.
    pub usd: Option<i64>,
    pub tokens: Option<i64>,
}

impl BudgetLeft {
    pub(crate) fn note(&mut self, unit: Unit, left: i64) {
        let slot = match unit {
            Unit::Usd => &mut self.usd,
            Unit::Tokens => &mut self.tokens,
        };
        *slot = Some(slot.map_or(left, |v| v.min(left)));
    }

    /// `usd=0.812345, tokens=1200`, or `None` when no budget applies.
    pub fn header_value(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(u) = self.usd {
            parts.push(format!("usd={:.6}", crate::price::nano_to_usd(u.max(0))));
        }
        if let Some(t) = self.tokens {
            parts.push(format!("tokens={}", t.max(0)));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
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

/// Governance: who may call (the directory), what they may spend (budgets), what they spent
/// (the ledger) and the upstreams stored for them (providers) — four traits by meaning, one
/// store implementing them all. `Arc<dyn Policy>` is how the pipeline and the apps hold it;
/// `use lyss_core::policy::prelude::*` brings every part's methods into scope.
///
/// # Contract
/// - Each part's contract is on its trait: [`Directory`], [`Budgets`], [`Ledger`],
///   [`ProviderStore`]; the conformance suite checks each (`testing::policy`).
/// - Any store failure is [`Error::Unavailable`]: callers refuse the request (fail closed).
#[async_trait]
pub trait Policy: Directory + Budgets + Ledger + ProviderStore + Send + Sync {
    /// Checks that the store answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;
}

/// Every part of the policy, for `use lyss_core::policy::prelude::*`.
pub mod prelude {
    pub use super::{Budgets as _, Directory as _, Ledger as _, Policy as _, ProviderStore as _};
}

/// The directory: workspaces, users, keys and their limits, and who a key belongs to.
///
/// # Contract
/// - `authenticate` returns the principal of a valid key. Unknown, malformed, revoked and
///   expired keys are all [`Error::Unauthenticated`], with the same message for unknown and
///   wrong secrets. Secrets are compared in constant time and only their hash is stored.
/// - Names of workspaces and users are unique; creating a duplicate is [`Error::Conflict`].
///   Methods that take a workspace or user accept its name or its id; an unknown one is
///   [`Error::NotFound`].
/// - `create_key` returns the full key exactly once; it cannot be read back.
/// - `revoke_key` is immediate in the store; callers that cache principals must bound the
///   cache's lifetime (the pipeline keeps them at most `key_cache_ms`).
/// - Any store failure is [`Error::Unavailable`].
#[async_trait]
pub trait Directory: Send + Sync {
    /// The principal of a presented key.
    async fn authenticate(&self, key: &str) -> Result<Principal>;

    async fn create_workspace(&self, name: &str, models: &[String]) -> Result<Workspace>;
    async fn list_workspaces(&self) -> Result<Vec<Workspace>>;
    /// Changes a workspace (name or id); callers see the change within the key cache's time
    /// to live.
    async fn update_workspace(
        &self,
        workspace: &str,
        update: &WorkspaceUpdate,
    ) -> Result<Workspace>;

    /// Creates a user in a workspace (name or id).
    async fn create_user(&self, name: &str, workspace: &str) -> Result<User>;
    /// Lists users, optionally of one workspace.
    async fn list_users(&self, workspace: Option<&str>) -> Result<Vec<User>>;

    async fn create_key(&self, new: &NewKey) -> Result<CreatedKey>;
    /// Lists keys, optionally of one user.
    async fn list_keys(&self, user: Option<&str>) -> Result<Vec<KeyInfo>>;
    /// Revokes a key by public id. Revoking twice is not an error.
    async fn revoke_key(&self, id: &str) -> Result<KeyInfo>;

    /// Sets (or with `None`, clears) the rate limits of a workspace, user (name or id) or key.
    async fn set_rate_limit(
        &self,
        scope: Scope,
        target: &str,
        rpm: Option<u32>,
        tpm: Option<u32>,
    ) -> Result<()>;

    /// Opens an admin sign-in session (the dashboard's) until `expires`. `id` is a random
    /// secret; only its hash is kept.
    async fn open_session(&self, id: &str, expires: OffsetDateTime) -> Result<()>;
    /// Whether session `id` was opened, has not ended and has not expired at `now`.
    async fn session_open(&self, id: &str, now: OffsetDateTime) -> Result<bool>;
    /// Ends session `id` for every process sharing the store (signing out). Ending an unknown
    /// or ended session is not an error.
    async fn end_session(&self, id: &str) -> Result<()>;
}

/// Budgets and the reservations that keep them: the budget invariant lives here.
///
/// # Contract
/// - For every budget, at every instant, `spent + reserved ≤ limit`. `reserve` admits a
///   request's worst case on *every* applicable budget or on none ([`Error::BudgetExceeded`]
///   names the refusing budget, its limit and when it resets); it is durable when it returns.
///   A reservation belongs to the period it was made in and settles there.
/// - `top_up` grows an open reservation by up to `want` output tokens, as many as *every*
///   budget it holds can still take (the same invariant); it returns the tokens granted — 0
///   when none fit or the reservation was already settled or released — and is durable when
///   it returns.
/// - `settle` turns a reservation into the spend the ledger entry reports, releases the rest
///   and appends the ledger row, atomically; it returns only once that is durable (commits
///   may be grouped with concurrent requests). An empty reservation just appends the row.
/// - `release_expired` releases reservations older than their deadline (their request died);
///   it is safe to run from every replica at once.
/// - Any store failure is [`Error::Unavailable`]: callers refuse the request (fail closed).
#[async_trait]
pub trait Budgets: Send + Sync {
    /// Reserves the worst case of a request on every budget that applies to `who`.
    async fn reserve(
        &self,
        who: &Principal,
        ask: &Ask,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<Reservation>;

    /// Grows a reservation by up to `want` output tokens at `price`; returns those granted.
    async fn top_up(&self, reservation: &Reservation, price: Price, want: u32) -> Result<u32>;

    /// Settles a reservation with what the request used and appends its ledger row.
    async fn settle(&self, reservation: &Reservation, entry: &LedgerEntry) -> Result<BudgetLeft>;

    /// Releases reservations whose deadline passed; returns how many holds were released.
    async fn release_expired(&self, now: OffsetDateTime) -> Result<u64>;

    /// Creates or replaces the budget of (scope, target, unit, period).
    async fn set_budget(&self, new: &NewBudget) -> Result<Budget>;
    /// Deletes a budget by id.
    async fn delete_budget(&self, id: &str) -> Result<()>;
    /// Every budget with its usage in the period containing `now`.
    async fn budgets(&self, now: OffsetDateTime) -> Result<Vec<BudgetStatus>>;
}

/// The ledger: every request's row (appended by [`Budgets::settle`]), its sums, and the
/// conversations Responses API answers ended, for their `previous_response_id`.
///
/// # Contract
/// - `ledger` reads rows newest first, exactly as settled; `usage` sums them, and its sums
///   equal the rows'.
/// - `load_response`, `get_response` and `delete_response` find a response only for the user
///   who saved it; another user's id and an unknown one are the same [`Error::NotFound`]. A
///   deleted response is gone for all three.
/// - Any store failure is [`Error::Unavailable`].
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Sums the ledger by workspace, user, key, model or day.
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>>;

    /// Reads ledger rows, newest first.
    async fn ledger(&self, query: &LedgerQuery) -> Result<Vec<LedgerEntry>>;

    /// Keeps the conversation a Responses API answer ended (`messages`: JSON chat messages) under
    /// its id, for the user's later `previous_response_id`, with the response object itself
    /// (`response`: JSON) for `GET /v1/responses/{id}`.
    async fn save_response(
        &self,
        id: &str,
        user_id: &str,
        messages: &str,
        response: &str,
    ) -> Result<()>;
    /// The conversation saved under `id`; [`Error::NotFound`] when there is none or it is
    /// another user's (the two look the same).
    async fn load_response(&self, id: &str, user_id: &str) -> Result<String>;
    /// The response object saved under `id` (JSON); [`Error::NotFound`] as for `load_response`,
    /// and for responses kept before lyss kept their objects.
    async fn get_response(&self, id: &str, user_id: &str) -> Result<String>;
    /// Deletes the response saved under `id`; [`Error::NotFound`] as for `load_response`.
    async fn delete_response(&self, id: &str, user_id: &str) -> Result<()>;
}

/// Upstream providers stored in the database (`lyss provider …`), their keys sealed.
///
/// # Contract
/// - `put_provider` replaces a provider of the same name (a key rotation); the sealed key is
///   stored as given and never decrypted by the store.
/// - `delete_provider` of an unknown name is [`Error::NotFound`].
/// - Any store failure is [`Error::Unavailable`].
#[async_trait]
pub trait ProviderStore: Send + Sync {
    /// Stores a provider, replacing one of the same name (a key rotation).
    async fn put_provider(&self, provider: &StoredProvider) -> Result<()>;
    /// Stored providers by name.
    async fn list_providers(&self) -> Result<Vec<StoredProvider>>;
    /// Removes a stored provider.
    async fn delete_provider(&self, name: &str) -> Result<()>;
}

/// Remembers verified keys for a short time so that a request does not read the store.
///
/// Keyed by the SHA-256 of the whole presented key, so a hit proves the same secret was
/// verified before. Only successes are kept; expiry is re-checked on every hit; the lifetime
/// bounds how long a revocation takes to reach this process.
pub struct KeyCache {
    cache: moka::sync::Cache<[u8; 32], Arc<Principal>>,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Authenticates through the cache.
    pub async fn authenticate(&self, policy: &dyn Policy, key: &str) -> Result<Arc<Principal>> {
        let digest = keys::hash_secret(key);
        let now = OffsetDateTime::now_utc();
        if let Some(p) = self.cache.get(&digest) {
            if p.expired(now) {
                self.cache.invalidate(&digest);
                return Err(Error::Unauthenticated("This API key has expired.".into()));
            }
            return Ok(p);
        }
        let p = Arc::new(policy.authenticate(key).await?);
        self.cache.insert(digest, p.clone());
        Ok(p)
    }
}
