//! `SqlitePolicy`: the embedded default, one SQLite file (WAL mode).
//!
//! Budget writes and ledger rows go through one writer task that commits whatever is waiting
//! in a single `BEGIN IMMEDIATE` transaction (group commit, see [`super::sql`]): each caller
//! still waits for its own commit, but concurrent requests share one write. WAL checkpoints
//! run in a background task so that no request pays for one.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::mpsc;

use super::sql::{Job, impl_sql_policy};
use crate::error::{Error, Result};

/// Governance in one SQLite file.
#[derive(Clone)]
pub struct SqlitePolicy {
    pool: SqlitePool,
    writer: mpsc::Sender<Job>,
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
            .foreign_keys(true)
            // Checkpoints run in the background (below), not inside a request's commit.
            .pragma("wal_autocheckpoint", "0");
        let in_memory = url.contains(":memory:");
        if !in_memory {
            crate::sqlite::prepare(&opts).await?;
        }
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists once per connection: keep exactly one.
            .max_connections(if in_memory { 1 } else { 4 })
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(5))
            // A local file does not drop connections: skip the ping sqlx sends before each
            // checkout (one more round trip to SQLite's worker thread on every write).
            .test_before_acquire(false)
            .connect_with(opts)
            .await?;
        if in_memory {
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        }
        let writer = Self::spawn_writer(pool.clone());
        if !in_memory {
            tokio::spawn(checkpoints(pool.clone()));
        }
        Ok(Self { pool, writer })
    }
}

/// Copies the WAL back into the database file every half second without blocking writers
/// (`PASSIVE`); SQLite would otherwise do it inside whichever commit crossed 1,000 pages,
/// adding milliseconds to that request. Stops when the pool is closed.
async fn checkpoints(pool: SqlitePool) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while !pool.is_closed() {
        tick.tick().await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "background checkpoint failed; retrying");
        }
    }
}

impl_sql_policy!(
    SqlitePolicy,
    sqlx::Sqlite,
    SqlitePool,
    sqlx::SqliteConnection,
    sqlx::sqlite::SqliteRow,
    "BEGIN IMMEDIATE",
    false
);
