//! `SqliteMemoryStore`: the embedded default — memories durable in SQLite, searched through an
//! in-process index per scope (HNSW + BM25, see [`super::index`]). The SQL is shared with
//! Postgres ([`super::sql`]).

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use sqlx::Row as _;
use time::OffsetDateTime;

use super::loaded::{Loaded, Slot};
use super::outbox::impl_sql_outbox;
use super::passages::passages;
use super::sql::{NEAR_COPY, from_blob, hash_from_text, hash_text, impl_sql_memory, to_blob};
use super::{HistoryEntry, Hit, Memory, MemoryScope, NewMemory, SearchQuery};
use crate::embed::Embedder;
use crate::error::{Error, Result};

/// Memories in SQLite with in-process HNSW + BM25 search.
pub struct SqliteMemoryStore {
    pool: SqlitePool,
    embedder: Option<Arc<dyn Embedder>>,
    scopes: tokio::sync::Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for SqliteMemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteMemoryStore")
            .field(
                "embedder",
                &self.embedder.as_ref().map(|e| e.name().to_owned()),
            )
            .finish_non_exhaustive()
    }
}

impl SqliteMemoryStore {
    /// Opens (creating if needed) the database at `url` and applies migrations. Without an
    /// embedder, search is by keywords only.
    pub async fn connect(url: &str, embedder: Option<Arc<dyn Embedder>>) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("memory database: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let in_memory = url.contains(":memory:");
        if !in_memory {
            crate::sqlite::prepare(&opts).await?;
        }
        let pool = crate::sqlite::pool_options(in_memory)
            .max_connections(if in_memory { 1 } else { 4 })
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await?;
        if in_memory {
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        }
        Ok(Self {
            pool,
            embedder,
            scopes: tokio::sync::Mutex::new(HashMap::new()),
        })
    }
}

impl_sql_memory!(
    SqliteMemoryStore,
    sqlx::Sqlite,
    SqlitePool,
    sqlx::sqlite::SqliteRow
);
impl_sql_outbox!(SqliteMemoryStore);
