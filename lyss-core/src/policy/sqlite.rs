//! `SqlitePolicy`: the embedded default, one SQLite file (WAL mode).
//!
//! Ledger rows go through one writer task that commits whatever rows are waiting in a single
//! statement (group commit): each caller still waits for its own row to be committed, but
//! concurrent requests share one write instead of queueing for the file lock one by one.

use std::str::FromStr as _;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row as _, Sqlite, SqlitePool};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::{
    CreatedKey, KeyInfo, LedgerEntry, LedgerQuery, NewKey, Policy, Principal, User, Workspace, keys,
};
use crate::error::{Error, Result};

/// Rows committed together at most.
const MAX_BATCH: usize = 256;

struct LedgerJob {
    entry: LedgerEntry,
    done: oneshot::Sender<Result<(), String>>,
}

/// Governance in one SQLite file.
#[derive(Clone)]
pub struct SqlitePolicy {
    pool: SqlitePool,
    ledger_tx: mpsc::Sender<LedgerJob>,
}

impl std::fmt::Debug for SqlitePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlitePolicy").finish_non_exhaustive()
    }
}

impl SqlitePolicy {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`)
    /// and applies migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("database_url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL survives a crash of the process; only an OS crash or power
            // loss can drop the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let in_memory = url.contains(":memory:");
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists once per connection: keep exactly one.
            .max_connections(if in_memory { 1 } else { 4 })
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let (ledger_tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(ledger_writer(pool.clone(), rx));
        Ok(Self { pool, ledger_tx })
    }

    async fn workspace_id(&self, name_or_id: &str) -> Result<(String, String)> {
        sqlx::query_as::<_, (String, String)>(
            "SELECT id, name FROM workspaces WHERE name = ?1 OR id = ?1",
        )
        .bind(name_or_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("workspace `{name_or_id}`")))
    }

    async fn user_id(&self, name_or_id: &str) -> Result<String> {
        sqlx::query_scalar::<_, String>("SELECT id FROM users WHERE name = ?1 OR id = ?1")
            .bind(name_or_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user `{name_or_id}`")))
    }

    async fn key_info(&self, id: &str) -> Result<KeyInfo> {
        let row = sqlx::query(KEY_INFO_SELECT_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("key `{id}`")))?;
        key_info_from_row(&row)
    }
}

const KEY_INFO_SELECT: &str = "SELECT k.id, k.name, u.name AS user_name, w.name AS ws_name, \
     k.models, k.expires_at, k.revoked_at, k.created_at \
     FROM api_keys k JOIN users u ON u.id = k.user_id JOIN workspaces w ON w.id = u.workspace_id";
const KEY_INFO_SELECT_BY_ID: &str = "SELECT k.id, k.name, u.name AS user_name, w.name AS ws_name, \
     k.models, k.expires_at, k.revoked_at, k.created_at \
     FROM api_keys k JOIN users u ON u.id = k.user_id JOIN workspaces w ON w.id = u.workspace_id \
     WHERE k.id = ?1";

fn ts(secs: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| Error::Internal(e.to_string()))
}

fn opt_ts(secs: Option<i64>) -> Result<Option<OffsetDateTime>> {
    secs.map(ts).transpose()
}

fn json_list(s: &str) -> Result<Vec<String>> {
    serde_json::from_str(s).map_err(|e| Error::Internal(format!("stored model list: {e}")))
}

fn key_info_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<KeyInfo> {
    Ok(KeyInfo {
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
        created_at: ts(row.try_get("created_at")?)?,
    })
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", keys::random_token(12).to_lowercase())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn ledger_writer(pool: SqlitePool, mut rx: mpsc::Receiver<LedgerJob>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let result = insert_ledger(&pool, &batch).await.map_err(|e| {
            tracing::error!(error = %e, rows = batch.len(), "ledger write failed");
            e.to_string()
        });
        for job in batch.drain(..) {
            let _ = job.done.send(result.clone());
        }
    }
}

async fn insert_ledger(pool: &SqlitePool, batch: &[LedgerJob]) -> Result<()> {
    let mut qb = QueryBuilder::<Sqlite>::new(
        "INSERT INTO usage_ledger (at_ms, request_id, workspace_id, user_id, key_id, endpoint, \
         model, provider, upstream_model, stream, prompt_tokens, completion_tokens, \
         cached_tokens, cost_nusd, latency_ms, status, error) ",
    );
    qb.push_values(batch, |mut b, job| {
        let e = &job.entry;
        b.push_bind((e.at.unix_timestamp_nanos() / 1_000_000) as i64)
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
            .push_bind(to_i64(e.completion_tokens))
            .push_bind(to_i64(e.cached_tokens))
            .push_bind(e.cost_nusd)
            .push_bind(e.latency_ms)
            .push_bind(i64::from(e.status))
            .push_bind(&e.error);
    });
    qb.build().execute(pool).await?;
    Ok(())
}

#[async_trait]
impl Policy for SqlitePolicy {
    async fn authenticate(&self, key: &str) -> Result<Principal> {
        let invalid = || Error::Unauthenticated("Incorrect API key provided.".into());
        let (id, secret) = keys::parse(key).ok_or_else(invalid)?;
        let row = sqlx::query(
            "SELECT k.id, k.name, k.secret_hash, k.models, k.expires_at, k.revoked_at, \
             u.id AS user_id, u.name AS user_name, w.id AS ws_id, w.name AS ws_name, \
             w.models AS ws_models \
             FROM api_keys k JOIN users u ON u.id = k.user_id \
             JOIN workspaces w ON w.id = u.workspace_id WHERE k.id = ?1",
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
            return Err(Error::Unauthenticated(
                "This API key has been revoked.".into(),
            ));
        }
        let principal = Principal {
            key_id: row.try_get("id")?,
            key_name: row.try_get("name")?,
            user_id: row.try_get("user_id")?,
            user_name: row.try_get("user_name")?,
            workspace_id: row.try_get("ws_id")?,
            workspace_name: row.try_get("ws_name")?,
            workspace_models: json_list(&row.try_get::<String, _>("ws_models")?)?,
            key_models: row
                .try_get::<Option<String>, _>("models")?
                .as_deref()
                .map(json_list)
                .transpose()?,
            expires_at: opt_ts(row.try_get("expires_at")?)?,
        };
        if principal.expired(OffsetDateTime::now_utc()) {
            return Err(Error::Unauthenticated("This API key has expired.".into()));
        }
        Ok(principal)
    }

    async fn record(&self, entry: &LedgerEntry) -> Result<()> {
        let unavailable = |message: String| Error::Unavailable {
            backend: "ledger",
            message,
        };
        let (done, rx) = oneshot::channel();
        self.ledger_tx
            .send(LedgerJob {
                entry: entry.clone(),
                done,
            })
            .await
            .map_err(|_| unavailable("ledger writer stopped".into()))?;
        rx.await
            .map_err(|_| unavailable("ledger writer stopped".into()))?
            .map_err(unavailable)
    }

    async fn ledger(&self, query: &LedgerQuery) -> Result<Vec<LedgerEntry>> {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT at_ms, request_id, workspace_id, user_id, key_id, endpoint, model, provider, \
             upstream_model, stream, prompt_tokens, completion_tokens, cached_tokens, cost_nusd, \
             latency_ms, status, error FROM usage_ledger WHERE 1 = 1",
        );
        if let Some(since) = query.since {
            qb.push(" AND at_ms >= ")
                .push_bind((since.unix_timestamp_nanos() / 1_000_000) as i64);
        }
        if let Some(key) = &query.key_id {
            qb.push(" AND key_id = ").push_bind(key);
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(query.limit.unwrap_or(1000)));
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let at_ms: i64 = r.try_get("at_ms")?;
                Ok(LedgerEntry {
                    at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
                        .map_err(|e| Error::Internal(e.to_string()))?,
                    request_id: r.try_get("request_id")?,
                    workspace_id: r.try_get("workspace_id")?,
                    user_id: r.try_get("user_id")?,
                    key_id: r.try_get("key_id")?,
                    endpoint: r.try_get("endpoint")?,
                    model: r.try_get("model")?,
                    provider: r.try_get("provider")?,
                    upstream_model: r.try_get("upstream_model")?,
                    stream: r.try_get("stream")?,
                    prompt_tokens: r.try_get::<i64, _>("prompt_tokens")?.max(0) as u64,
                    completion_tokens: r.try_get::<i64, _>("completion_tokens")?.max(0) as u64,
                    cached_tokens: r.try_get::<i64, _>("cached_tokens")?.max(0) as u64,
                    cost_nusd: r.try_get("cost_nusd")?,
                    latency_ms: r.try_get("latency_ms")?,
                    status: u16::try_from(r.try_get::<i64, _>("status")?).unwrap_or(0),
                    error: r.try_get("error")?,
                })
            })
            .collect()
    }

    async fn create_workspace(&self, name: &str, models: &[String]) -> Result<Workspace> {
        validate_name("workspace", name)?;
        let ws = Workspace {
            id: new_id("ws"),
            name: name.to_owned(),
            models: models.to_vec(),
            created_at: now_secs(),
        };
        sqlx::query("INSERT INTO workspaces (id, name, models, created_at) VALUES (?, ?, ?, ?)")
            .bind(&ws.id)
            .bind(&ws.name)
            .bind(serde_json::to_string(&ws.models).unwrap_or_else(|_| "[]".into()))
            .bind(ws.created_at.unix_timestamp())
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, || format!("workspace `{name}`")))?;
        Ok(ws)
    }

    async fn list_workspaces(&self) -> Result<Vec<Workspace>> {
        let rows = sqlx::query_as::<_, (String, String, String, i64)>(
            "SELECT id, name, models, created_at FROM workspaces ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, name, models, created)| {
                Ok(Workspace {
                    id,
                    name,
                    models: json_list(&models)?,
                    created_at: ts(created)?,
                })
            })
            .collect()
    }

    async fn create_user(&self, name: &str, workspace: &str) -> Result<User> {
        validate_name("user", name)?;
        let (ws_id, ws_name) = self.workspace_id(workspace).await?;
        let user = User {
            id: new_id("u"),
            name: name.to_owned(),
            workspace: ws_name,
            created_at: now_secs(),
        };
        sqlx::query("INSERT INTO users (id, name, workspace_id, created_at) VALUES (?, ?, ?, ?)")
            .bind(&user.id)
            .bind(&user.name)
            .bind(&ws_id)
            .bind(user.created_at.unix_timestamp())
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, || format!("user `{name}`")))?;
        Ok(user)
    }

    async fn list_users(&self, workspace: Option<&str>) -> Result<Vec<User>> {
        let ws = match workspace {
            Some(w) => Some(self.workspace_id(w).await?.0),
            None => None,
        };
        let rows = sqlx::query_as::<_, (String, String, String, i64)>(
            "SELECT u.id, u.name, w.name, u.created_at FROM users u \
             JOIN workspaces w ON w.id = u.workspace_id \
             WHERE ?1 IS NULL OR u.workspace_id = ?1 ORDER BY u.name",
        )
        .bind(ws)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, name, workspace, created)| {
                Ok(User {
                    id,
                    name,
                    workspace,
                    created_at: ts(created)?,
                })
            })
            .collect()
    }

    async fn create_key(&self, new: &NewKey) -> Result<CreatedKey> {
        let user_id = self.user_id(&new.user).await?;
        let material = keys::generate();
        let models = new
            .models
            .as_ref()
            .map(|m| serde_json::to_string(m).unwrap_or_else(|_| "[]".into()));
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, secret_hash, models, expires_at, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&material.id)
        .bind(&user_id)
        .bind(&new.name)
        .bind(&material.secret_hash[..])
        .bind(models)
        .bind(new.expires_at.map(|t| t.unix_timestamp()))
        .bind(now_secs().unix_timestamp())
        .execute(&self.pool)
        .await?;
        Ok(CreatedKey {
            key: material.full,
            info: self.key_info(&material.id).await?,
        })
    }

    async fn list_keys(&self, user: Option<&str>) -> Result<Vec<KeyInfo>> {
        let user_id = match user {
            Some(u) => Some(self.user_id(u).await?),
            None => None,
        };
        let rows = sqlx::query(&format!(
            "{KEY_INFO_SELECT} WHERE ?1 IS NULL OR k.user_id = ?1 ORDER BY k.created_at, k.id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_info_from_row).collect()
    }

    async fn revoke_key(&self, id: &str) -> Result<KeyInfo> {
        sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(now_secs().unix_timestamp())
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.key_info(id).await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

fn now_secs() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

/// Names appear in tables, URLs and flags: keep them to a safe, readable alphabet.
fn validate_name(what: &str, name: &str) -> Result<()> {
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

fn conflict(e: sqlx::Error, what: impl FnOnce() -> String) -> Error {
    match Error::from(e) {
        Error::Conflict(_) => Error::Conflict(what()),
        other => other,
    }
}
