//! The `Policy` seam: who is calling, what they may use, and what they spent.
//!
//! Failure mode: a policy store that cannot be reached refuses requests
//! ([`Error::Unavailable`], 503) — it never lets a request through unchecked.

pub mod keys;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use self::sqlite::SqlitePolicy;
use crate::error::{Error, Result};
use crate::models::{Model, NanoUsd};

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
}

impl Principal {
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

/// A workspace (a team): its allowed models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub models: Vec<String>,
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
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cost_nusd: NanoUsd,
    pub latency_ms: f64,
    /// HTTP status the caller saw (499 when the client went away mid-stream).
    pub status: u16,
    pub error: Option<String>,
}

/// Which ledger rows to read, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerQuery {
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    pub key_id: Option<String>,
    pub limit: Option<u32>,
}

/// Governance: keys, workspaces and users, allow-lists, and the usage ledger.
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
/// - `record` returns only once the row is durable (commits may be grouped with concurrent
///   requests). It fails with [`Error::Unavailable`] when the store cannot take the write.
/// - Any store failure is [`Error::Unavailable`]: callers refuse the request (fail closed).
#[async_trait]
pub trait Policy: Send + Sync {
    /// The principal of a presented key.
    async fn authenticate(&self, key: &str) -> Result<Principal>;

    /// Appends one row to the usage ledger, durably.
    async fn record(&self, entry: &LedgerEntry) -> Result<()>;

    /// Reads ledger rows, newest first.
    async fn ledger(&self, query: &LedgerQuery) -> Result<Vec<LedgerEntry>>;

    async fn create_workspace(&self, name: &str, models: &[String]) -> Result<Workspace>;
    async fn list_workspaces(&self) -> Result<Vec<Workspace>>;

    /// Creates a user in a workspace (name or id).
    async fn create_user(&self, name: &str, workspace: &str) -> Result<User>;
    /// Lists users, optionally of one workspace.
    async fn list_users(&self, workspace: Option<&str>) -> Result<Vec<User>>;

    async fn create_key(&self, new: &NewKey) -> Result<CreatedKey>;
    /// Lists keys, optionally of one user.
    async fn list_keys(&self, user: Option<&str>) -> Result<Vec<KeyInfo>>;
    /// Revokes a key by public id. Revoking twice is not an error.
    async fn revoke_key(&self, id: &str) -> Result<KeyInfo>;

    /// Checks that the store answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;
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
