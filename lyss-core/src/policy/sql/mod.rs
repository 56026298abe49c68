//! The SQL policy, written once for SQLite and Postgres.
//!
//! Both backends run the same statements (`$N` placeholders, `ON CONFLICT … RETURNING`, which
//! both speak); [`impl_sql_policy!`] instantiates them for each backend's concrete sqlx types,
//! so there is one copy of every query and no generic-bound maze — one macro per part of the
//! policy, each in its file (`directory.rs`, `budgets.rs`, `ledger.rs`, `conversations.rs`,
//! `providers.rs`). The statements themselves are ordinary consts in [`queries`], by part: the
//! macros only glue them to each backend's types (binds, row reads, transactions).
//!
//! Writes that touch budgets (reserve, settle, reap) go through one writer task per process:
//! it takes every job waiting at that moment and runs them in *one* write transaction (group
//! commit), replying to each only after the commit. Jobs run in order inside the transaction,
//! so each admission sees the holds of the ones before it. Postgres row locks (taken by the
//! usage upsert) serialize replicas; a deadlock between two replicas' batches is retried. A
//! SQLite file's server decides reservations in memory and sends only settlements
//! ([`Job::Persist`](super::budget::writer::Job::Persist)) through the writer. The writer's protocol —
//! jobs, outcomes, submission — lives with the loop that runs them ([`super::budget::writer`]).

pub(crate) mod budgets;
pub(crate) mod conversations;
pub(crate) mod directory;
pub(crate) mod ledger;
pub(crate) mod providers;
pub(crate) mod queries;
pub(crate) mod writer;

use time::OffsetDateTime;

use crate::clock::from_unix;
use crate::error::{Error, Result};

pub(crate) fn opt_ts(secs: Option<i64>) -> Result<Option<OffsetDateTime>> {
    secs.map(from_unix).transpose()
}

pub(crate) fn json_list(s: &str) -> Result<Vec<String>> {
    serde_json::from_str(s).map_err(|e| Error::Internal(format!("stored model list: {e}")))
}

/// A workspace's stored cache settings from their columns.
pub(crate) fn workspace_cache(
    mode: Option<String>,
    ttl_secs: Option<i64>,
    scope: Option<String>,
    threshold: Option<f64>,
) -> Result<crate::config::WorkspaceCache> {
    fn parse<T: serde::de::DeserializeOwned>(v: Option<String>) -> Result<Option<T>> {
        v.map(|s| {
            serde_json::from_value(serde_json::Value::String(s))
                .map_err(|e| Error::Internal(format!("stored cache setting: {e}")))
        })
        .transpose()
    }
    Ok(crate::config::WorkspaceCache {
        mode: parse(mode)?,
        ttl_secs: ttl_secs.map(|t| u64::try_from(t).unwrap_or(1)),
        scope: parse(scope)?,
        semantic_threshold: threshold.map(|t| t as f32),
    })
}

/// A cache setting as stored (`"exact"`, `"user"` …).
pub(crate) fn setting_name<T: serde::Serialize>(v: Option<T>) -> Option<String> {
    v.and_then(|v| match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => Some(s),
        _ => None,
    })
}

pub(crate) fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", super::keys::random_token(12).to_lowercase())
}

pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn now_secs() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

/// A sign-in session's id as stored: its SHA-256, hex (the id is a bearer secret).
pub(crate) fn session_hash(id: &str) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Names appear in tables, URLs and flags: keep them to a safe, readable alphabet.
pub(crate) fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_param(
            format!("{what} name must be 1-64 letters, digits, '-', '_', '.' or '@'"),
            "name",
        ))
    }
}

/// `YYYY-MM-DD` of a day number since the epoch.
pub(crate) fn day_label(days: &str) -> String {
    days.parse::<i64>()
        .ok()
        .and_then(|d| OffsetDateTime::from_unix_timestamp(d * 86_400).ok())
        .map(|t| t.date().to_string())
        .unwrap_or_else(|| days.to_owned())
}

/// Implements every part of [`super::Policy`] for a backend: the directory, budgets (with
/// their transaction and writer task), the ledger, conversations and stored providers, one
/// macro per part.
///
/// `$policy` must have fields `pool: $pool` and `writer: mpsc::Sender<Job>`; `$begin` is the
/// statement that opens a write transaction; `$locks_rows` whether other writers can run at the
/// same time (Postgres), so that a batch locks what it reads and writes back in one statement.
macro_rules! impl_sql_policy {
    ($policy:ident, $db:ty, $pool:ty, $conn:ty, $row:ty, $begin:expr, $locks_rows:expr) => {
        $crate::policy::sql::writer::impl_sql_writer!(
            $policy,
            $db,
            $pool,
            $conn,
            $begin,
            $locks_rows
        );
        $crate::policy::sql::budgets::impl_sql_budgets!($policy, $pool, $row);
        $crate::policy::sql::directory::impl_sql_directory!($policy, $row);
        $crate::policy::sql::ledger::impl_sql_ledger!($policy, $row);
        $crate::policy::sql::conversations::impl_sql_conversations!($policy);
        $crate::policy::sql::providers::impl_sql_providers!($policy);

        #[async_trait::async_trait]
        impl $crate::policy::Policy for $policy {
            async fn ping(&self) -> $crate::Result<()> {
                sqlx::query($crate::policy::sql::queries::PING)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }

        fn conflict(e: sqlx::Error, what: impl FnOnce() -> String) -> $crate::Error {
            match $crate::Error::from(e) {
                $crate::Error::Conflict(_) => $crate::Error::Conflict(what()),
                other => other,
            }
        }
    };
}

pub(crate) use impl_sql_policy;
