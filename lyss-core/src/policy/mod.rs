//! The `Policy` seam: who is calling, what they may use, and what they spent.
//!
//! Failure mode: a policy store that cannot be reached refuses requests
//! ([`Error::Unavailable`], 503) — it never lets a request through unchecked.

pub mod budget;
pub(crate) mod counters;
pub mod keys;
mod ledger;
#[cfg(feature = "postgres")]
mod postgres;
pub(crate) mod sql;
mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use self::budget::{Ask, Budget, BudgetStatus, FirstShare, NewBudget, Period, Scope, Unit};
pub use self::keys::KeyCache;
pub use self::ledger::{Bucket, GroupBy, LedgerEntry, LedgerQuery, UsageQuery, UsageRow};
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresPolicy;
pub use self::sqlite::SqlitePolicy;
use crate::config::WorkspaceCache;
pub use crate::error::BudgetRefusal;
use crate::error::Result;
use crate::price::Price;

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

/// Who pays for a call: the workspace, user and key whose budgets it is reserved on and whose
/// ledger row records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payer<'a> {
    pub workspace_id: &'a str,
    pub user_id: &'a str,
    pub key_id: &'a str,
    /// The workspace's and user's names, for a refusal's message (their ids will do).
    pub workspace_name: &'a str,
    pub user_name: &'a str,
}

impl Principal {
    /// The caller as the payer of its calls.
    pub fn payer(&self) -> Payer<'_> {
        Payer {
            workspace_id: &self.workspace_id,
            user_id: &self.user_id,
            key_id: &self.key_id,
            workspace_name: &self.workspace_name,
            user_name: &self.user_name,
        }
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

/// Governance: who may call (the directory), what they may spend (budgets), what they spent
/// (the ledger), the Responses API's stored conversations and the upstreams stored for them
/// (providers) — five traits by meaning, one
/// store implementing them all. `Arc<dyn Policy>` is how the pipeline and the apps hold it;
/// `use lyss_core::policy::prelude::*` brings every part's methods into scope.
///
/// # Contract
/// - Each part's contract is on its trait: [`Directory`], [`Budgets`], [`Ledger`],
///   [`Conversations`], [`ProviderStore`]; the conformance suite checks each (`testing::policy`).
/// - Any store failure is [`Error::Unavailable`]: callers refuse the request (fail closed).
#[async_trait]
pub trait Policy:
    Directory + Budgets + Ledger + Conversations + ProviderStore + Send + Sync
{
    /// Checks that the store answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;
}

/// Every part of the policy, for `use lyss_core::policy::prelude::*`.
pub mod prelude {
    pub use super::{
        Budgets as _, Conversations as _, Directory as _, Ledger as _, Policy as _,
        ProviderStore as _,
    };
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
    /// secret; only its hash is kept. Opening an id that is open already is
    /// [`Error::Conflict`]: an id opens once, however many ask at the same time.
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
    /// Reserves the worst case of a request on every budget that applies to `payer`.
    async fn reserve(
        &self,
        payer: Payer<'_>,
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

/// The ledger: every request's row (appended by [`Budgets::settle`]) and its sums.
///
/// # Contract
/// - `ledger` reads rows newest first, exactly as settled; `usage` sums them, and its sums
///   equal the rows'.
/// - Any store failure is [`Error::Unavailable`].
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Sums the ledger by workspace, user, key, model or day.
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>>;

    /// Reads ledger rows, newest first.
    async fn ledger(&self, query: &LedgerQuery) -> Result<Vec<LedgerEntry>>;
}

/// The conversations Responses API answers ended, kept for their `previous_response_id` and
/// `GET /v1/responses/{id}`.
///
/// # Contract
/// - An id is kept once: saving an id again is an error.
/// - `load_response`, `get_response` and `delete_response` find a response only for the user
///   who saved it; another user's id and an unknown one are the same [`Error::NotFound`]. A
///   deleted response is gone for all three.
/// - Any store failure is [`Error::Unavailable`].
#[async_trait]
pub trait Conversations: Send + Sync {
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
