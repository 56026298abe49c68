//! `PostgresMemoryStore`: memories durable in Postgres for clusters. Each replica keeps its own
//! in-process index per scope (HNSW + BM25), rebuilt when another replica changed the scope
//! (see [`super::sql`]); pgvector is not needed.

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use sqlx::Row as _;
use time::OffsetDateTime;

use super::loaded::{Loaded, Slot};
use super::outbox::impl_sql_outbox;
use super::passages::passages;
use super::sql::{NEAR_COPY, from_blob, hash_from_text, hash_text, impl_sql_memory, to_blob};
use super::{HistoryEntry, Hit, Memory, MemoryScope, NewMemory, SearchQuery};
use crate::embed::Embedder;
use crate::error::{Error, Result};

/// Memories in Postgres with per-replica HNSW + BM25 search.
pub struct PostgresMemoryStore {
    pool: PgPool,
    embedder: Option<Arc<dyn Embedder>>,
    scopes: tokio::sync::Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for PostgresMemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresMemoryStore")
            .field(
                "embedder",
                &self.embedder.as_ref().map(|e| e.name().to_owned()),
            )
            .finish_non_exhaustive()
    }
}

impl PostgresMemoryStore {
    /// Connects to `url` and applies migrations. Without an embedder, search is by keywords.
    pub async fn connect(url: &str, embedder: Option<Arc<dyn Embedder>>) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("memory database: {e}")))?;
        // Memory's queries are short (its search runs in process): a few connections serve
        // every conversation, and each replica's share of Postgres' connections stays small.
        // A connection not had within half a second means the database is in trouble: memory
        // then stands aside (the request goes as sent) rather than hold the request up.
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_millis(500))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self {
            pool,
            embedder,
            scopes: tokio::sync::Mutex::new(HashMap::new()),
        })
    }
}

impl_sql_memory!(
    PostgresMemoryStore,
    sqlx::Postgres,
    PgPool,
    sqlx::postgres::PgRow
);
impl_sql_outbox!(PostgresMemoryStore);
