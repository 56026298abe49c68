//! `SqlitePolicy`: the embedded default, one SQLite file (WAL mode).
//!
//! Two ways to open it: [`SqlitePolicy::connect`] keeps reservations in the file, so any number
//! of processes may reserve on it (the admin's `lyss`, embedders); [`SqlitePolicy::serve`]
//! makes this process the file's only server and holds reservations in memory ([`books`]),
//! so governance costs no database round trip until settlement.
//!
//! Budget writes and ledger rows go through one writer task that commits whatever is waiting
//! in a single `BEGIN IMMEDIATE` transaction (group commit, see [`super::sql`]): each caller
//! still waits for its own commit, but concurrent requests share one write. WAL checkpoints
//! run in a background task so that no request pays for one.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use tokio::sync::mpsc;

use super::budget::writer::Job;
use super::sql::impl_sql_policy;
use crate::error::{Error, Result};

use super::counters::in_process::{self, Books, Claim};

/// Governance in one SQLite file.
#[derive(Clone)]
pub struct SqlitePolicy {
    pool: SqlitePool,
    writer: mpsc::Sender<Job>,
    /// Reservations held in this process ([`SqlitePolicy::serve`]).
    books: Option<Arc<Books>>,
    /// Reservations kept in a file ([`SqlitePolicy::connect`]): the right to make them.
    claim: Option<Arc<Claim>>,
}

impl std::fmt::Debug for SqlitePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlitePolicy").finish_non_exhaustive()
    }
}

impl SqlitePolicy {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`)
    /// and applies migrations. Reservations are kept in the file: slower than [`Self::serve`],
    /// but any number of processes may open it this way.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::open(url, false).await
    }

    /// Opens the database at `url` as its only server: reservations are held in this
    /// process's memory and only settlements (spend and ledger row) are written, durable
    /// before they return. Fails if another process serves the file (an exclusive lock on
    /// `<file>.server.lock`, held until this policy and its clones are dropped). Opening with
    /// [`Self::connect`] meanwhile is fine for everything but reserving.
    pub async fn serve(url: &str) -> Result<Self> {
        Self::open(url, true).await
    }

    async fn open(url: &str, serve: bool) -> Result<Self> {
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
        // Locked before anything is read: a second server must not even reset the holds.
        let lock = match (serve, in_memory) {
            (true, false) => Some(in_process::lock(opts.get_filename())?),
            _ => None,
        };
        let claim = (!serve && !in_memory).then(|| Arc::new(Claim::new(opts.get_filename())));
        let pool_of = |connections: u32| {
            crate::sqlite::pool_options(in_memory)
                .max_connections(connections)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(Duration::from_secs(5))
                // A local file does not drop connections: skip the ping sqlx sends before each
                // checkout (one more round trip to SQLite's worker thread on every write).
                .test_before_acquire(false)
        };
        // An in-memory database exists once per connection: keep exactly one.
        let pool = pool_of(if in_memory { 1 } else { 4 })
            .connect_with(opts.clone())
            .await?;
        if in_memory {
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        }
        // The writer keeps a connection of its own: SQLite drops a connection's page cache
        // whenever another one wrote, so a writer taking turns through the pool would read its
        // pages again for every batch.
        let writer_pool = match in_memory {
            true => pool.clone(),
            false => pool_of(1).connect_with(opts).await?,
        };
        let writer = Self::spawn_writer(writer_pool);
        let books = match serve {
            true => Some(Arc::new(
                Books::open(pool.clone(), writer.clone(), lock).await?,
            )),
            false => None,
        };
        if !in_memory {
            tokio::spawn(checkpoints(pool.clone()));
        }
        Ok(Self {
            pool,
            writer,
            books,
            claim,
        })
    }

    /// The reservations this process holds, when it serves the file.
    fn counters(&self) -> Option<&dyn super::counters::Counters> {
        self.books.as_deref().map(|b| b as _)
    }

    /// Whether this process may keep reservations in the file: no server holds it.
    fn may_reserve(&self) -> Result<()> {
        self.claim.as_ref().map_or(Ok(()), |c| c.take())
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
