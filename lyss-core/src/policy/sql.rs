//! The SQL policy, written once for SQLite and Postgres.
//!
//! Both backends run the same statements (`$N` placeholders, `ON CONFLICT … RETURNING`, which
//! both speak); [`impl_sql_policy!`] instantiates the code below for each backend's concrete
//! sqlx types, so there is one copy of every query and no generic-bound maze.
//!
//! Writes that touch budgets (reserve, settle, reap) go through one writer task per process:
//! it takes every job waiting at that moment and runs them in *one* write transaction (group
//! commit), replying to each only after the commit. Jobs run in order inside the transaction,
//! so each admission sees the holds of the ones before it. Postgres row locks (taken by the
//! usage upsert) serialize replicas; a deadlock between two replicas' batches is retried.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::budget::Ask;
use super::{BudgetLeft, LedgerEntry, Principal, Reservation};
use crate::clock::from_unix;
use crate::error::{Error, Result};

/// Jobs committed together at most.
pub(crate) const MAX_BATCH: usize = 128;

/// A write for the writer task.
pub(crate) enum Job {
    Reserve {
        who: Arc<Principal>,
        ask: Ask,
        now: OffsetDateTime,
        ttl: Duration,
        done: oneshot::Sender<Result<Reservation>>,
    },
    Settle {
        reservation: Box<Reservation>,
        entry: Box<LedgerEntry>,
        done: oneshot::Sender<Result<BudgetLeft>>,
    },
    Reap {
        now: OffsetDateTime,
        done: oneshot::Sender<Result<u64>>,
    },
}

/// What one job produced inside the transaction (sent only after the commit).
pub(crate) enum Outcome {
    Reserved(Result<Reservation>),
    Settled(BudgetLeft),
    Reaped(u64),
}

impl Job {
    pub(crate) fn reply(self, outcome: Result<Outcome>) {
        match (self, outcome) {
            (Job::Reserve { done, .. }, Ok(Outcome::Reserved(r))) => {
                let _ = done.send(r);
            }
            (Job::Settle { done, .. }, Ok(Outcome::Settled(l))) => {
                let _ = done.send(Ok(l));
            }
            (Job::Reap { done, .. }, Ok(Outcome::Reaped(n))) => {
                let _ = done.send(Ok(n));
            }
            (job, outcome) => {
                let e = match outcome {
                    Err(e) => e,
                    Ok(_) => Error::Internal("writer outcome does not match its job".into()),
                };
                let e = Error::Unavailable {
                    backend: "database",
                    message: e.to_string(),
                };
                match job {
                    Job::Reserve { done, .. } => drop(done.send(Err(e))),
                    Job::Settle { done, .. } => drop(done.send(Err(e))),
                    Job::Reap { done, .. } => drop(done.send(Err(e))),
                }
            }
        }
    }
}

/// Sends a job to the writer and waits for its commit.
pub(crate) async fn submit<T>(
    writer: &tokio::sync::mpsc::Sender<Job>,
    make: impl FnOnce(oneshot::Sender<Result<T>>) -> Job,
) -> Result<T> {
    let stopped = || Error::Unavailable {
        backend: "database",
        message: "the writer task stopped".into(),
    };
    let (tx, rx) = oneshot::channel();
    writer.send(make(tx)).await.map_err(|_| stopped())?;
    rx.await.map_err(|_| stopped())?
}

/// Whether a failed batch may simply run again (lock conflicts between replicas).
pub(crate) fn retryable(e: &Error) -> bool {
    matches!(e, Error::Unavailable { message, .. }
        if message.contains("deadlock") || message.contains("could not serialize")
            || message.contains("database is locked"))
}

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

pub(crate) const KEY_INFO_SELECT: &str = "SELECT k.id, k.name, u.name AS user_name, \
     w.name AS ws_name, k.models, k.expires_at, k.revoked_at, k.created_at \
     FROM api_keys k JOIN users u ON u.id = k.user_id JOIN workspaces w ON w.id = u.workspace_id";

pub(crate) const LEDGER_COLUMNS: &str = "at_ms, request_id, workspace_id, user_id, key_id, \
     endpoint, model, provider, upstream_model, stream, prompt_tokens, prompt_tokens_original, \
     completion_tokens, cached_tokens, cost_nusd, latency_ms, status, error, cache, saved_tokens, \
     saved_nusd, memory_saved_nusd, cache_write_tokens, prompt_cache_saved_nusd";

/// Implements [`super::store::BudgetTx`], the writer task and [`super::Policy`] for a backend.
///
/// `$policy` must have fields `pool: $pool` and `writer: mpsc::Sender<Job>`; `$begin` is the
/// statement that opens a write transaction; `$locks_rows` whether other writers can run at the
/// same time (see [`super::store::BudgetTx::LOCKS_ROWS`]).
macro_rules! impl_sql_policy {
    ($policy:ident, $db:ty, $pool:ty, $conn:ty, $row:ty, $begin:expr, $locks_rows:expr) => {
        struct Tx<'a>(&'a mut $conn);

        impl $crate::policy::store::BudgetTx for Tx<'_> {
            const LOCKS_ROWS: bool = $locks_rows;

            async fn budgets_for(
                &mut self,
                scope_ids: &[&str],
            ) -> $crate::Result<Vec<$crate::policy::Budget>> {
                let mut q = sqlx::query(
                    "SELECT id, scope, scope_id, unit, limit_amount, period, tz, expires_at \
                     FROM budgets WHERE scope_id IN ($1, $2, $3) ORDER BY id",
                );
                for id in scope_ids.iter().chain(std::iter::repeat(&"")).take(3) {
                    q = q.bind(*id);
                }
                let rows = q.fetch_all(&mut *self.0).await?;
                rows.iter().map(budget_from_row).collect()
            }

            async fn usage_row(&mut self, budget_id: &str, period_start: i64) -> $crate::Result<(i64, i64)> {
                // An upsert that changes nothing but locks the row (Postgres) and returns it.
                Ok(sqlx::query_as::<_, (i64, i64)>(
                    "INSERT INTO budget_usage (budget_id, period_start, spent, reserved) \
                     VALUES ($1, $2, 0, 0) ON CONFLICT (budget_id, period_start) \
                     DO UPDATE SET spent = budget_usage.spent RETURNING spent, reserved",
                )
                .bind(budget_id)
                .bind(period_start)
                .fetch_one(&mut *self.0)
                .await?)
            }

            async fn add_usage(
                &mut self,
                budget_id: &str,
                period_start: i64,
                spent: i64,
                reserved: i64,
            ) -> $crate::Result<(i64, i64)> {
                Ok(sqlx::query_as::<_, (i64, i64)>(
                    "INSERT INTO budget_usage (budget_id, period_start, spent, reserved) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (budget_id, period_start) \
                     DO UPDATE SET spent = budget_usage.spent + $3, \
                     reserved = budget_usage.reserved + $4 RETURNING spent, reserved",
                )
                .bind(budget_id)
                .bind(period_start)
                .bind(spent)
                .bind(reserved)
                .fetch_one(&mut *self.0)
                .await?)
            }

            async fn insert_holds(
                &mut self,
                reservation_id: &str,
                holds: &[$crate::policy::Hold],
                expires_at: i64,
            ) -> $crate::Result<()> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO reservations (id, budget_id, period_start, amount, expires_at) ",
                );
                q.push_values(holds, |mut row, h| {
                    row.push_bind(reservation_id)
                        .push_bind(&h.budget_id)
                        .push_bind(h.period_start)
                        .push_bind(h.amount)
                        .push_bind(expires_at);
                });
                q.build().execute(&mut *self.0).await?;
                Ok(())
            }

            async fn take_holds(&mut self, reservation_id: &str) -> $crate::Result<Vec<(String, i64)>> {
                Ok(sqlx::query_as::<_, (String, i64)>(
                    "DELETE FROM reservations WHERE id = $1 RETURNING budget_id, amount",
                )
                .bind(reservation_id)
                .fetch_all(&mut *self.0)
                .await?)
            }

            async fn take_hold(&mut self, reservation_id: &str, budget_id: &str) -> $crate::Result<Option<i64>> {
                Ok(sqlx::query_scalar::<_, i64>(
                    "DELETE FROM reservations WHERE id = $1 AND budget_id = $2 RETURNING amount",
                )
                .bind(reservation_id)
                .bind(budget_id)
                .fetch_optional(&mut *self.0)
                .await?)
            }

            async fn expired_holds(&mut self, now: i64) -> $crate::Result<Vec<(String, String, i64)>> {
                Ok(sqlx::query_as::<_, (String, String, i64)>(
                    "SELECT id, budget_id, period_start FROM reservations WHERE expires_at <= $1 \
                     ORDER BY budget_id, period_start LIMIT 10000",
                )
                .bind(now)
                .fetch_all(&mut *self.0)
                .await?)
            }

            async fn insert_ledger(&mut self, e: &$crate::policy::LedgerEntry) -> $crate::Result<()> {
                ledger_insert(&[e]).build().execute(&mut *self.0).await?;
                Ok(())
            }
        }

        /// One multi-row `INSERT` of ledger rows.
        fn ledger_insert<'a>(entries: &'a [&'a $crate::policy::LedgerEntry]) -> sqlx::QueryBuilder<'a, $db> {
            use $crate::clock::unix_ms;
            use $crate::policy::sql::{LEDGER_COLUMNS, to_i64};
            let mut q = sqlx::QueryBuilder::<$db>::new(format!("INSERT INTO usage_ledger ({LEDGER_COLUMNS}) "));
            q.push_values(entries, |mut row, e| {
                row.push_bind(unix_ms(e.at))
                    .push_bind(&e.request_id)
                    .push_bind(&e.workspace_id)
                    .push_bind(&e.user_id)
                    .push_bind(&e.key_id)
                    .push_bind(&e.endpoint)
                    .push_bind(&e.model)
                    .push_bind(&e.provider)
                    .push_bind(&e.upstream_model)
                    .push_bind(e.stream)
                    .push_bind(to_i64(e.prompt_tokens))
                    .push_bind(to_i64(e.prompt_tokens_original))
                    .push_bind(to_i64(e.completion_tokens))
                    .push_bind(to_i64(e.cached_tokens))
                    .push_bind(e.cost_nusd)
                    .push_bind(e.latency_ms)
                    .push_bind(i64::from(e.status))
                    .push_bind(&e.error)
                    .push_bind(&e.cache)
                    .push_bind(to_i64(e.saved_tokens))
                    .push_bind(e.saved_nusd)
                    .push_bind(e.memory_saved_nusd)
                    .push_bind(to_i64(e.cache_write_tokens))
                    .push_bind(e.prompt_cache_saved_nusd);
            });
            q
        }

        fn budget_from_row(r: &$row) -> $crate::Result<$crate::policy::Budget> {
            use sqlx::Row as _;
            use $crate::policy::budget::{Period, Scope, Unit};
            let scope_id: String = r.try_get("scope_id")?;
            Ok($crate::policy::Budget {
                id: r.try_get("id")?,
                scope: Scope::parse(&r.try_get::<String, _>("scope")?)?,
                scope_name: scope_id.clone(),
                scope_id,
                unit: Unit::parse(&r.try_get::<String, _>("unit")?)?,
                limit: r.try_get("limit_amount")?,
                period: Period::parse(&r.try_get::<String, _>("period")?)?,
                tz: r.try_get("tz")?,
                expires_at: $crate::policy::sql::opt_ts(r.try_get("expires_at")?)?,
            })
        }

        fn key_info_from_row(row: &$row) -> $crate::Result<$crate::policy::KeyInfo> {
            use sqlx::Row as _;
            use $crate::clock::from_unix;
            use $crate::policy::sql::{json_list, opt_ts};
            Ok($crate::policy::KeyInfo {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                user: row.try_get("user_name")?,
                workspace: row.try_get("ws_name")?,
                models: row
                    .try_get::<Option<String>, _>("models")?
                    .as_deref()
                    .map(json_list)
                    .transpose()?,
                expires_at: opt_ts(row.try_get("expires_at")?)?,
                revoked_at: opt_ts(row.try_get("revoked_at")?)?,
                created_at: from_unix(row.try_get("created_at")?)?,
            })
        }

        fn ledger_from_row(r: &$row) -> $crate::Result<$crate::policy::LedgerEntry> {
            use sqlx::Row as _;
            let at_ms: i64 = r.try_get("at_ms")?;
            let n = |c: &str| -> $crate::Result<u64> { Ok(r.try_get::<i64, _>(c)?.max(0) as u64) };
            Ok($crate::policy::LedgerEntry {
                at: $crate::clock::from_unix_ms(at_ms)?,
                request_id: r.try_get("request_id")?,
                workspace_id: r.try_get("workspace_id")?,
                user_id: r.try_get("user_id")?,
                key_id: r.try_get("key_id")?,
                endpoint: r.try_get("endpoint")?,
                model: r.try_get("model")?,
                provider: r.try_get("provider")?,
                upstream_model: r.try_get("upstream_model")?,
                stream: r.try_get("stream")?,
                prompt_tokens: n("prompt_tokens")?,
                prompt_tokens_original: n("prompt_tokens_original")?,
                completion_tokens: n("completion_tokens")?,
                cached_tokens: n("cached_tokens")?,
                cost_nusd: r.try_get("cost_nusd")?,
                latency_ms: r.try_get("latency_ms")?,
                status: u16::try_from(r.try_get::<i64, _>("status")?).unwrap_or(0),
                error: r.try_get("error")?,
                cache: r.try_get("cache")?,
                saved_tokens: n("saved_tokens")?,
                saved_nusd: r.try_get("saved_nusd")?,
                memory_saved_nusd: r.try_get("memory_saved_nusd")?,
                cache_write_tokens: n("cache_write_tokens")?,
                prompt_cache_saved_nusd: r.try_get("prompt_cache_saved_nusd")?,
            })
        }

        /// Runs one batch in one transaction; outcomes are only valid if this returns `Ok`.
        async fn run_batch(
            pool: &$pool,
            jobs: &[$crate::policy::sql::Job],
        ) -> $crate::Result<Vec<$crate::policy::sql::Outcome>> {
            use $crate::policy::sql::{Job, Outcome};
            use $crate::policy::store;
            // Only ledger rows (requests without budgets): one multi-row INSERT, which is its
            // own transaction — no BEGIN/COMMIT round trips.
            let rows_only: Option<Vec<&$crate::policy::LedgerEntry>> = jobs
                .iter()
                .map(|j| match j {
                    Job::Settle { reservation, entry, .. } if reservation.holds.is_empty() => Some(&**entry),
                    _ => None,
                })
                .collect();
            if let Some(entries) = rows_only {
                ledger_insert(&entries).build().execute(pool).await?;
                return Ok(entries.iter().map(|_| Outcome::Settled($crate::policy::BudgetLeft::default())).collect());
            }
            let mut conn = pool.acquire().await?;
            sqlx::query($begin).execute(&mut *conn).await?;
            let result = store::run_jobs(&mut Tx(&mut *conn), jobs).await;
            let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            if let Err(e) = sqlx::query(end).execute(&mut *conn).await {
                // Never hand a connection in an unknown transaction state back to the pool.
                conn.close_on_drop();
                return Err(e.into());
            }
            result
        }

        async fn writer(pool: $pool, mut rx: tokio::sync::mpsc::Receiver<$crate::policy::sql::Job>) {
            use $crate::policy::sql::{MAX_BATCH, retryable};
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let mut attempt = 0;
                let result = loop {
                    match run_batch(&pool, &batch).await {
                        Err(e) if retryable(&e) && attempt < 5 => {
                            attempt += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                        }
                        other => break other,
                    }
                };
                match result {
                    Ok(outcomes) => {
                        for (job, o) in batch.drain(..).zip(outcomes) {
                            job.reply(Ok(o));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, jobs = batch.len(), "policy write failed");
                        let msg = e.to_string();
                        for job in batch.drain(..) {
                            job.reply(Err($crate::Error::Unavailable { backend: "database", message: msg.clone() }));
                        }
                    }
                }
            }
        }

        impl $policy {
            fn spawn_writer(pool: $pool) -> tokio::sync::mpsc::Sender<$crate::policy::sql::Job> {
                let (tx, rx) = tokio::sync::mpsc::channel(4 * $crate::policy::sql::MAX_BATCH);
                tokio::spawn(writer(pool, rx));
                tx
            }

            /// Every workspace, or the one with this id.
            async fn workspaces(&self, id: Option<&str>) -> $crate::Result<Vec<$crate::policy::Workspace>> {
                use $crate::clock::from_unix;
                use $crate::policy::sql::{json_list, workspace_cache};
                let rows = sqlx::query_as::<_, (String, String, String, i64, Option<String>, Option<i64>, Option<String>, Option<f64>)>(
                    "SELECT id, name, models, created_at, cache_mode, cache_ttl_secs, cache_scope, cache_threshold \
                     FROM workspaces WHERE $1 IS NULL OR id = $1 ORDER BY name",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(id, name, models, created, mode, ttl, scope, threshold)| {
                        Ok($crate::policy::Workspace {
                            id,
                            name,
                            models: json_list(&models)?,
                            cache: workspace_cache(mode, ttl, scope, threshold)?,
                            created_at: from_unix(created)?,
                        })
                    })
                    .collect()
            }

            async fn workspace_id(&self, name_or_id: &str) -> $crate::Result<(String, String)> {
                sqlx::query_as::<_, (String, String)>(
                    "SELECT id, name FROM workspaces WHERE name = $1 OR id = $1",
                )
                .bind(name_or_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| $crate::Error::NotFound(format!("workspace `{name_or_id}`")))
            }

            async fn user_id(&self, name_or_id: &str) -> $crate::Result<String> {
                sqlx::query_scalar::<_, String>("SELECT id FROM users WHERE name = $1 OR id = $1")
                    .bind(name_or_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| $crate::Error::NotFound(format!("user `{name_or_id}`")))
            }

            async fn key_info(&self, id: &str) -> $crate::Result<$crate::policy::KeyInfo> {
                let row = sqlx::query(&format!("{} WHERE k.id = $1", $crate::policy::sql::KEY_INFO_SELECT))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| $crate::Error::NotFound(format!("key `{id}`")))?;
                key_info_from_row(&row)
            }

            /// The id behind a scope's target (name or id; a key's public id).
            async fn scope_id(&self, scope: $crate::policy::Scope, target: &str) -> $crate::Result<String> {
                use $crate::policy::Scope;
                match scope {
                    Scope::Workspace => Ok(self.workspace_id(target).await?.0),
                    Scope::User => self.user_id(target).await,
                    Scope::Key => Ok(self.key_info(target).await?.id),
                }
            }
        }

        #[async_trait::async_trait]
        impl $crate::policy::Policy for $policy {
            async fn authenticate(&self, key: &str) -> $crate::Result<$crate::policy::Principal> {
                use sqlx::Row as _;
                use $crate::policy::sql::{json_list, opt_ts};
                use $crate::policy::{RateLimit, Scope, keys};
                let invalid = || $crate::Error::Unauthenticated("Incorrect API key provided.".into());
                let (id, secret) = keys::parse(key).ok_or_else(invalid)?;
                let row = sqlx::query(
                    "SELECT k.id, k.name, k.secret_hash, k.models, k.expires_at, k.revoked_at, \
                     k.rpm AS k_rpm, k.tpm AS k_tpm, u.id AS user_id, u.name AS user_name, \
                     u.rpm AS u_rpm, u.tpm AS u_tpm, w.id AS ws_id, w.name AS ws_name, \
                     w.models AS ws_models, w.rpm AS w_rpm, w.tpm AS w_tpm, \
                     w.cache_mode, w.cache_ttl_secs, w.cache_scope, w.cache_threshold, \
                     EXISTS (SELECT 1 FROM budgets b WHERE b.scope_id IN (k.id, u.id, w.id)) AS budgeted \
                     FROM api_keys k JOIN users u ON u.id = k.user_id \
                     JOIN workspaces w ON w.id = u.workspace_id WHERE k.id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(invalid)?;
                let hash: Vec<u8> = row.try_get("secret_hash")?;
                if !keys::verify(secret, &hash) {
                    return Err(invalid());
                }
                if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
                    return Err($crate::Error::Unauthenticated("This API key has been revoked.".into()));
                }
                let limit = |scope: Scope, id: String, rpm: &str, tpm: &str| -> $crate::Result<Option<RateLimit>> {
                    let n = |c: &str| -> $crate::Result<Option<u32>> {
                        Ok(row.try_get::<Option<i64>, _>(c)?.map(|v| u32::try_from(v.max(0)).unwrap_or(u32::MAX)))
                    };
                    let (rpm, tpm) = (n(rpm)?, n(tpm)?);
                    Ok((rpm.is_some() || tpm.is_some()).then_some(RateLimit { scope, id, rpm, tpm }))
                };
                let key_id: String = row.try_get("id")?;
                let user_id: String = row.try_get("user_id")?;
                let ws_id: String = row.try_get("ws_id")?;
                let rate_limits = [
                    limit(Scope::Workspace, ws_id.clone(), "w_rpm", "w_tpm")?,
                    limit(Scope::User, user_id.clone(), "u_rpm", "u_tpm")?,
                    limit(Scope::Key, key_id.clone(), "k_rpm", "k_tpm")?,
                ]
                .into_iter()
                .flatten()
                .collect();
                let principal = $crate::policy::Principal {
                    key_id,
                    key_name: row.try_get("name")?,
                    user_id,
                    user_name: row.try_get("user_name")?,
                    workspace_id: ws_id,
                    workspace_name: row.try_get("ws_name")?,
                    workspace_models: json_list(&row.try_get::<String, _>("ws_models")?)?,
                    key_models: row
                        .try_get::<Option<String>, _>("models")?
                        .as_deref()
                        .map(json_list)
                        .transpose()?,
                    expires_at: opt_ts(row.try_get("expires_at")?)?,
                    budgeted: row.try_get("budgeted")?,
                    rate_limits,
                    workspace_cache: $crate::policy::sql::workspace_cache(
                        row.try_get("cache_mode")?,
                        row.try_get("cache_ttl_secs")?,
                        row.try_get("cache_scope")?,
                        row.try_get("cache_threshold")?,
                    )?,
                };
                if principal.expired(time::OffsetDateTime::now_utc()) {
                    return Err($crate::Error::Unauthenticated("This API key has expired.".into()));
                }
                Ok(principal)
            }

            async fn reserve(
                &self,
                who: &$crate::policy::Principal,
                ask: &$crate::policy::Ask,
                now: time::OffsetDateTime,
                ttl: std::time::Duration,
            ) -> $crate::Result<$crate::policy::Reservation> {
                let who = std::sync::Arc::new(who.clone());
                let ask = *ask;
                $crate::policy::sql::submit(&self.writer, |done| $crate::policy::sql::Job::Reserve {
                    who,
                    ask,
                    now,
                    ttl,
                    done,
                })
                .await
            }

            async fn settle(
                &self,
                reservation: &$crate::policy::Reservation,
                entry: &$crate::policy::LedgerEntry,
            ) -> $crate::Result<$crate::policy::BudgetLeft> {
                $crate::policy::sql::submit(&self.writer, |done| $crate::policy::sql::Job::Settle {
                    reservation: Box::new(reservation.clone()),
                    entry: Box::new(entry.clone()),
                    done,
                })
                .await
            }

            async fn release_expired(&self, now: time::OffsetDateTime) -> $crate::Result<u64> {
                $crate::policy::sql::submit(&self.writer, |done| $crate::policy::sql::Job::Reap { now, done }).await
            }

            async fn ledger(
                &self,
                query: &$crate::policy::LedgerQuery,
            ) -> $crate::Result<Vec<$crate::policy::LedgerEntry>> {
                use $crate::clock::unix_ms;
                use $crate::policy::sql::LEDGER_COLUMNS;
                let rows = sqlx::query(&format!(
                    "SELECT {LEDGER_COLUMNS} FROM usage_ledger \
                     WHERE ($1 IS NULL OR at_ms >= $1) AND ($2 IS NULL OR key_id = $2) \
                     AND ($4 IS NULL OR at_ms < $4) \
                     ORDER BY id DESC LIMIT $3"
                ))
                .bind(query.since.map(unix_ms))
                .bind(query.key_id.as_deref())
                .bind(i64::from(query.limit.unwrap_or(1000)))
                .bind(query.until.map(unix_ms))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(ledger_from_row).collect()
            }

            async fn usage(
                &self,
                query: &$crate::policy::UsageQuery,
            ) -> $crate::Result<Vec<$crate::policy::UsageRow>> {
                use sqlx::Row as _;
                use $crate::policy::GroupBy;
                use $crate::clock::unix_ms;
                use $crate::policy::sql::day_label;
                let group = match query.by {
                    GroupBy::Workspace => "COALESCE(w.name, l.workspace_id)",
                    GroupBy::User => "COALESCE(u.name, l.user_id)",
                    GroupBy::Key => "l.key_id",
                    GroupBy::Model => "l.model",
                    GroupBy::Day => "CAST(l.at_ms / 86400000 AS TEXT)",
                };
                // A time series groups by bucket too (integer division: the same on both
                // databases; UTC).
                let bucket = match query.bucket {
                    Some(b) => format!("(l.at_ms / {0}) * {0}", b.millis()),
                    // Not a bare `0`: in ORDER BY that names a column position.
                    None => "CAST(0 AS BIGINT)".to_owned(),
                };
                let rows = sqlx::query(&format!(
                    "SELECT {bucket} AS bkt, {group} AS grp, COUNT(*) AS requests, \
                     CAST(SUM(CASE WHEN l.status >= 400 THEN 1 ELSE 0 END) AS BIGINT) AS errors, \
                     CAST(SUM(l.prompt_tokens) AS BIGINT) AS prompt_tokens, \
                     CAST(SUM(l.completion_tokens) AS BIGINT) AS completion_tokens, \
                     CAST(SUM(l.cost_nusd) AS BIGINT) AS cost_nusd, \
                     CAST(SUM(CASE WHEN l.prompt_tokens_original > l.prompt_tokens \
                          THEN l.prompt_tokens_original - l.prompt_tokens ELSE 0 END) AS BIGINT) AS memory_saved, \
                     CAST(SUM(l.memory_saved_nusd) AS BIGINT) AS memory_saved_nusd, \
                     CAST(SUM(CASE WHEN l.cache IS NULL THEN 0 ELSE 1 END) AS BIGINT) AS cache_hits, \
                     CAST(SUM(l.saved_tokens) AS BIGINT) AS cache_saved_tokens, \
                     CAST(SUM(l.saved_nusd) AS BIGINT) AS cache_saved, \
                     CAST(SUM(l.cached_tokens) AS BIGINT) AS cached_tokens, \
                     CAST(SUM(l.cache_write_tokens) AS BIGINT) AS cache_write_tokens, \
                     CAST(SUM(l.prompt_cache_saved_nusd) AS BIGINT) AS prompt_cache_saved \
                     FROM usage_ledger l LEFT JOIN workspaces w ON w.id = l.workspace_id \
                     LEFT JOIN users u ON u.id = l.user_id \
                     WHERE ($1 IS NULL OR l.at_ms >= $1) AND ($2 IS NULL OR l.at_ms < $2) \
                     GROUP BY {bucket}, {group} ORDER BY {bucket}, {group}"
                ))
                .bind(query.since.map(unix_ms))
                .bind(query.until.map(unix_ms))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        let grp: String = r.try_get("grp")?;
                        let bkt: i64 = r.try_get("bkt")?;
                        Ok($crate::policy::UsageRow {
                            bucket: match query.bucket {
                                Some(_) => Some(
                                    $crate::clock::from_unix_ms(bkt)?,
                                ),
                                None => None,
                            },
                            group: if query.by == GroupBy::Day { day_label(&grp) } else { grp },
                            requests: r.try_get("requests")?,
                            errors: r.try_get("errors")?,
                            prompt_tokens: r.try_get("prompt_tokens")?,
                            completion_tokens: r.try_get("completion_tokens")?,
                            cost_nusd: r.try_get("cost_nusd")?,
                            memory_saved_tokens: r.try_get("memory_saved")?,
                            memory_saved_nusd: r.try_get("memory_saved_nusd")?,
                            cache_hits: r.try_get("cache_hits")?,
                            cache_saved_tokens: r.try_get("cache_saved_tokens")?,
                            cache_saved_nusd: r.try_get("cache_saved")?,
                            cached_tokens: r.try_get("cached_tokens")?,
                            cache_write_tokens: r.try_get("cache_write_tokens")?,
                            prompt_cache_saved_nusd: r.try_get("prompt_cache_saved")?,
                        })
                    })
                    .collect()
            }

            async fn set_budget(&self, new: &$crate::policy::NewBudget) -> $crate::Result<$crate::policy::Budget> {
                use $crate::policy::sql::{new_id, now_secs};
                if new.limit < 0 {
                    return Err($crate::Error::invalid_param("a budget's limit cannot be negative", "limit"));
                }
                // Rejects an unknown time zone before anything is stored.
                new.period.bounds(time::OffsetDateTime::now_utc(), new.tz.as_deref())?;
                let scope_id = self.scope_id(new.scope, &new.target).await?;
                let id: String = sqlx::query_scalar(
                    "INSERT INTO budgets (id, scope, scope_id, unit, limit_amount, period, tz, expires_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (scope, scope_id, unit, period) DO UPDATE SET \
                     limit_amount = excluded.limit_amount, tz = excluded.tz, expires_at = excluded.expires_at \
                     RETURNING id",
                )
                .bind(new_id("b"))
                .bind(new.scope.as_str())
                .bind(&scope_id)
                .bind(new.unit.as_str())
                .bind(new.limit)
                .bind(new.period.as_str())
                .bind(&new.tz)
                .bind(new.expires_at.map(|t| t.unix_timestamp()))
                .bind(now_secs().unix_timestamp())
                .fetch_one(&self.pool)
                .await?;
                Ok($crate::policy::Budget {
                    id,
                    scope: new.scope,
                    scope_name: new.target.clone(),
                    scope_id,
                    unit: new.unit,
                    limit: new.limit,
                    period: new.period,
                    tz: new.tz.clone(),
                    expires_at: new.expires_at,
                })
            }

            async fn delete_budget(&self, id: &str) -> $crate::Result<()> {
                let done = sqlx::query("DELETE FROM budgets WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::Error::NotFound(format!("budget `{id}`")));
                }
                Ok(())
            }

            async fn budgets(
                &self,
                now: time::OffsetDateTime,
            ) -> $crate::Result<Vec<$crate::policy::BudgetStatus>> {
                use sqlx::Row as _;
                let rows = sqlx::query(
                    "SELECT b.id, b.scope, b.scope_id, b.unit, b.limit_amount, b.period, b.tz, b.expires_at, \
                     CASE b.scope WHEN 'workspace' THEN (SELECT name FROM workspaces WHERE id = b.scope_id) \
                     WHEN 'user' THEN (SELECT name FROM users WHERE id = b.scope_id) ELSE b.scope_id END AS scope_name \
                     FROM budgets b ORDER BY b.scope, scope_name, b.unit, b.period",
                )
                .fetch_all(&self.pool)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let mut budget = budget_from_row(r)?;
                    if let Some(name) = r.try_get::<Option<String>, _>("scope_name")? {
                        budget.scope_name = name;
                    }
                    let (period_start, resets) = budget.period.bounds(now, budget.tz.as_deref())?;
                    let (spent, reserved) = sqlx::query_as::<_, (i64, i64)>(
                        "SELECT spent, reserved FROM budget_usage WHERE budget_id = $1 AND period_start = $2",
                    )
                    .bind(&budget.id)
                    .bind(period_start)
                    .fetch_optional(&self.pool)
                    .await?
                    .unwrap_or((0, 0));
                    out.push($crate::policy::BudgetStatus {
                        budget,
                        period_start,
                        resets_at: $crate::policy::sql::opt_ts(resets)?,
                        spent,
                        reserved,
                    });
                }
                Ok(out)
            }

            async fn set_rate_limit(
                &self,
                scope: $crate::policy::Scope,
                target: &str,
                rpm: Option<u32>,
                tpm: Option<u32>,
            ) -> $crate::Result<()> {
                use $crate::policy::Scope;
                let id = self.scope_id(scope, target).await?;
                let sql = match scope {
                    Scope::Workspace => "UPDATE workspaces SET rpm = $1, tpm = $2 WHERE id = $3",
                    Scope::User => "UPDATE users SET rpm = $1, tpm = $2 WHERE id = $3",
                    Scope::Key => "UPDATE api_keys SET rpm = $1, tpm = $2 WHERE id = $3",
                };
                sqlx::query(sql)
                    .bind(rpm.map(i64::from))
                    .bind(tpm.map(i64::from))
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn create_workspace(&self, name: &str, models: &[String]) -> $crate::Result<$crate::policy::Workspace> {
                use $crate::policy::sql::{new_id, now_secs, to_json, validate_name};
                validate_name("workspace", name)?;
                let ws = $crate::policy::Workspace {
                    id: new_id("ws"),
                    name: name.to_owned(),
                    models: models.to_vec(),
                    cache: Default::default(),
                    created_at: now_secs(),
                };
                sqlx::query("INSERT INTO workspaces (id, name, models, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&ws.id)
                    .bind(&ws.name)
                    .bind(to_json(&ws.models))
                    .bind(ws.created_at.unix_timestamp())
                    .execute(&self.pool)
                    .await
                    .map_err(|e| conflict(e, || format!("workspace `{name}`")))?;
                Ok(ws)
            }

            async fn list_workspaces(&self) -> $crate::Result<Vec<$crate::policy::Workspace>> {
                self.workspaces(None).await
            }

            async fn update_workspace(
                &self,
                workspace: &str,
                update: &$crate::policy::WorkspaceUpdate,
            ) -> $crate::Result<$crate::policy::Workspace> {
                use $crate::policy::sql::{setting_name, to_json};
                update.cache.validate()?;
                let (id, _) = self.workspace_id(workspace).await?;
                let c = &update.cache;
                sqlx::query(
                    "UPDATE workspaces SET models = COALESCE($1, models), \
                     cache_mode = COALESCE($2, cache_mode), cache_ttl_secs = COALESCE($3, cache_ttl_secs), \
                     cache_scope = COALESCE($4, cache_scope), cache_threshold = COALESCE($5, cache_threshold) \
                     WHERE id = $6",
                )
                .bind(update.models.as_deref().map(to_json))
                .bind(setting_name(c.mode))
                .bind(c.ttl_secs.map($crate::policy::sql::to_i64))
                .bind(setting_name(c.scope))
                .bind(c.semantic_threshold.map(f64::from))
                .bind(&id)
                .execute(&self.pool)
                .await?;
                self.workspaces(Some(&id))
                    .await?
                    .pop()
                    .ok_or_else(|| $crate::Error::NotFound(format!("workspace `{workspace}`")))
            }

            async fn put_provider(&self, p: &$crate::policy::StoredProvider) -> $crate::Result<()> {
                use $crate::policy::sql::{setting_name, validate_name};
                validate_name("provider", &p.name)?;
                sqlx::query(
                    "INSERT INTO providers (name, kind, base_url, api_key_env, api_key_sealed, api_version, discover_models, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (name) DO UPDATE SET kind = $2, base_url = $3, api_key_env = $4, \
                     api_key_sealed = $5, api_version = $6, discover_models = $7",
                )
                .bind(&p.name)
                .bind(setting_name(Some(p.kind)))
                .bind(&p.base_url)
                .bind(&p.api_key_env)
                .bind(p.sealed_key.as_deref())
                .bind(&p.api_version)
                .bind(p.discover_models)
                .bind(p.created_at.unix_timestamp())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_providers(&self) -> $crate::Result<Vec<$crate::policy::StoredProvider>> {
                use sqlx::Row as _;
                let rows = sqlx::query(
                    "SELECT name, kind, base_url, api_key_env, api_key_sealed, api_version, discover_models, created_at \
                     FROM providers ORDER BY name",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        let kind: String = r.try_get("kind")?;
                        Ok($crate::policy::StoredProvider {
                            name: r.try_get("name")?,
                            kind: serde_json::from_value(serde_json::Value::String(kind))
                                .map_err(|e| $crate::Error::Internal(format!("stored provider kind: {e}")))?,
                            base_url: r.try_get("base_url")?,
                            api_key_env: r.try_get("api_key_env")?,
                            sealed_key: r.try_get("api_key_sealed")?,
                            api_version: r.try_get("api_version")?,
                            discover_models: r.try_get("discover_models")?,
                            created_at: $crate::clock::from_unix(r.try_get("created_at")?)?,
                        })
                    })
                    .collect()
            }

            async fn delete_provider(&self, name: &str) -> $crate::Result<()> {
                let done = sqlx::query("DELETE FROM providers WHERE name = $1")
                    .bind(name)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::Error::NotFound(format!("provider `{name}`")));
                }
                Ok(())
            }

            async fn save_response(&self, id: &str, user_id: &str, messages: &str) -> $crate::Result<()> {
                sqlx::query("INSERT INTO responses (id, user_id, messages, created_at_ms) VALUES ($1, $2, $3, $4)")
                    .bind(id)
                    .bind(user_id)
                    .bind(messages)
                    .bind($crate::clock::unix_ms(time::OffsetDateTime::now_utc()))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn load_response(&self, id: &str, user_id: &str) -> $crate::Result<String> {
                use sqlx::Row as _;
                let row = sqlx::query("SELECT messages FROM responses WHERE id = $1 AND user_id = $2")
                    .bind(id)
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?;
                match row {
                    Some(r) => Ok(r.try_get("messages")?),
                    None => Err($crate::Error::NotFound(format!("response `{id}`"))),
                }
            }

            async fn create_user(&self, name: &str, workspace: &str) -> $crate::Result<$crate::policy::User> {
                use $crate::policy::sql::{new_id, now_secs, validate_name};
                validate_name("user", name)?;
                let (ws_id, ws_name) = self.workspace_id(workspace).await?;
                let user = $crate::policy::User {
                    id: new_id("u"),
                    name: name.to_owned(),
                    workspace: ws_name,
                    created_at: now_secs(),
                };
                sqlx::query("INSERT INTO users (id, name, workspace_id, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&user.id)
                    .bind(&user.name)
                    .bind(&ws_id)
                    .bind(user.created_at.unix_timestamp())
                    .execute(&self.pool)
                    .await
                    .map_err(|e| conflict(e, || format!("user `{name}`")))?;
                Ok(user)
            }

            async fn list_users(&self, workspace: Option<&str>) -> $crate::Result<Vec<$crate::policy::User>> {
                use $crate::clock::from_unix;
                let ws = match workspace {
                    Some(w) => Some(self.workspace_id(w).await?.0),
                    None => None,
                };
                let rows = sqlx::query_as::<_, (String, String, String, i64)>(
                    "SELECT u.id, u.name, w.name, u.created_at FROM users u \
                     JOIN workspaces w ON w.id = u.workspace_id \
                     WHERE $1 IS NULL OR u.workspace_id = $1 ORDER BY u.name",
                )
                .bind(ws)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(id, name, workspace, created)| {
                        Ok($crate::policy::User { id, name, workspace, created_at: from_unix(created)? })
                    })
                    .collect()
            }

            async fn create_key(&self, new: &$crate::policy::NewKey) -> $crate::Result<$crate::policy::CreatedKey> {
                use $crate::policy::sql::{now_secs, to_json};
                let user_id = self.user_id(&new.user).await?;
                let material = $crate::policy::keys::generate();
                sqlx::query(
                    "INSERT INTO api_keys (id, user_id, name, secret_hash, models, expires_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&material.id)
                .bind(&user_id)
                .bind(&new.name)
                .bind(&material.secret_hash[..])
                .bind(new.models.as_deref().map(to_json))
                .bind(new.expires_at.map(|t| t.unix_timestamp()))
                .bind(now_secs().unix_timestamp())
                .execute(&self.pool)
                .await?;
                Ok($crate::policy::CreatedKey { key: material.full, info: self.key_info(&material.id).await? })
            }

            async fn list_keys(&self, user: Option<&str>) -> $crate::Result<Vec<$crate::policy::KeyInfo>> {
                let user_id = match user {
                    Some(u) => Some(self.user_id(u).await?),
                    None => None,
                };
                let rows = sqlx::query(&format!(
                    "{} WHERE $1 IS NULL OR k.user_id = $1 ORDER BY k.created_at, k.id",
                    $crate::policy::sql::KEY_INFO_SELECT
                ))
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(key_info_from_row).collect()
            }

            async fn revoke_key(&self, id: &str) -> $crate::Result<$crate::policy::KeyInfo> {
                sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind($crate::policy::sql::now_secs().unix_timestamp())
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                self.key_info(id).await
            }

            async fn ping(&self) -> $crate::Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
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
