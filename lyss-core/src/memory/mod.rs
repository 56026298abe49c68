//! The `MemoryStore` seam: a user's long-term memories, scoped, searchable, with history.
//!
//! Scope comes from the caller's key (workspace and user), optionally narrowed by the app's
//! end-user (OpenAI's `user` field) and an agent tag — never from anything else in a request.

pub mod extract;
pub mod index;
mod postgres;
mod sql;
mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use self::extract::Extractor;
pub use self::postgres::PostgresMemoryStore;
pub use self::sqlite::HnswMemoryStore;
use crate::error::Result;

/// How long a claimed turn stays with its claimer before another may take it: longer than
/// any ingestion of a turn (one extraction call, with its retries), short enough that a
/// crashed worker's turns are not kept waiting long.
pub const INGEST_LEASE: Duration = Duration::from_secs(600);

/// Whose memories: a workspace's user, optionally narrowed to an end-user and an agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemoryScope {
    pub workspace_id: String,
    pub user_id: String,
    #[serde(default)]
    pub end_user: Option<String>,
    #[serde(default)]
    pub agent: Option<String>,
}

impl MemoryScope {
    /// A user's own scope, not narrowed.
    pub fn user(workspace_id: impl Into<String>, user_id: impl Into<String>) -> Self {
        Self {
            workspace_id: workspace_id.into(),
            user_id: user_id.into(),
            end_user: None,
            agent: None,
        }
    }

    /// The scope as one unambiguous string (a JSON array), for storage and index lookup.
    pub fn key(&self) -> String {
        serde_json::json!([self.workspace_id, self.user_id, self.end_user, self.agent]).to_string()
    }
}

/// One remembered fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub id: String,
    pub text: String,
    /// Where it came from (source message ids, an import, "api").
    pub source: Option<String>,
    /// When the remembered thing happened (e.g. the chat session's date).
    #[serde(with = "time::serde::rfc3339::option")]
    pub occurred_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A memory to add.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewMemory {
    pub text: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub occurred_at: Option<OffsetDateTime>,
}

/// What to look for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchQuery {
    pub text: String,
    /// At most this many results.
    pub limit: usize,
    /// Vector matches below this cosine similarity are dropped (keyword matches still count).
    pub min_similarity: f32,
}

/// A search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub memory: Memory,
    /// Fused rank score: higher is better; comparable within one search only.
    pub score: f32,
    /// Cosine similarity to the query, when it was a vector match.
    pub similarity: Option<f32>,
}

/// One change to a memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub memory_id: String,
    /// `add`, `update` or `delete`.
    pub event: String,
    pub old_text: Option<String>,
    pub new_text: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A conversation turn waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub id: i64,
    pub scope: MemoryScope,
    pub turn: NewMemory,
    /// The key it was said with (none for imports): its extraction is charged there too.
    pub key_id: Option<String>,
}

/// Scoped long-term memories.
///
/// # Contract
/// - Every method works inside one scope. A memory of another scope does not exist for it:
///   `get`, `update`, `delete` and `history` answer [`crate::Error::NotFound`], `list` and
///   `search` never return it.
/// - `add`, `update` and `delete` are durable when they return and recorded in the history.
/// - `search` ranks by vector similarity (when the store has an embedder) and keywords
///   (BM25), fused; it never ranks memories of other scopes.
/// - `forget` deletes every memory of the scope's workspace user — all end-users and agents —
///   and their history ("forget me"); it returns how many memories went.
/// - `enqueue` durably queues a new turn (it survives a crash). `claim` hands out the oldest
///   unclaimed turns, in order, each to one caller only — across processes sharing the store —
///   until `complete` removes it, `release` returns it, or the claim's lease runs out (its
///   claimer died). A turn is completed only after its memories are written, so a crash in
///   between ingests it again (after the lease), never loses it.
/// - Memories and search results survive a restart.
/// - Store failures are [`crate::Error::Unavailable`].
#[async_trait]
pub trait MemoryStore: Send + Sync {
    async fn add(&self, scope: &MemoryScope, new: &NewMemory) -> Result<Memory>;
    async fn update(&self, scope: &MemoryScope, id: &str, text: &str) -> Result<Memory>;
    async fn delete(&self, scope: &MemoryScope, id: &str) -> Result<()>;
    async fn get(&self, scope: &MemoryScope, id: &str) -> Result<Memory>;
    /// Newest first.
    async fn list(&self, scope: &MemoryScope, limit: usize) -> Result<Vec<Memory>>;
    async fn search(&self, scope: &MemoryScope, query: &SearchQuery) -> Result<Vec<Hit>>;
    /// Oldest first.
    async fn history(&self, scope: &MemoryScope, id: &str) -> Result<Vec<HistoryEntry>>;
    async fn forget(&self, scope: &MemoryScope) -> Result<u64>;
    /// Queues a new conversation turn for ingestion (durable when it returns), said with
    /// `key_id` when it came through a key.
    async fn enqueue(
        &self,
        scope: &MemoryScope,
        turn: &NewMemory,
        key_id: Option<&str>,
    ) -> Result<()>;
    /// Claims up to `max` unclaimed queued turns, oldest first, for `lease`.
    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Queued>>;
    /// Removes a claimed turn once it is ingested.
    async fn complete(&self, id: i64) -> Result<()>;
    /// Returns a claimed turn to the queue now (its ingestion failed; another run retries it).
    async fn release(&self, id: i64) -> Result<()>;

    /// Raw ingestion: stores up to `max` queued turns as memories, skipping a turn identical
    /// in text or at least `dedupe_similarity` similar to a memory of its scope (which also
    /// makes a replay after a crash harmless). Returns how many turns it took.
    async fn ingest_pending(&self, max: usize, dedupe_similarity: f32) -> Result<usize> {
        let queued = self.claim(max, INGEST_LEASE).await?;
        for (i, q) in queued.iter().enumerate() {
            let ingested = async {
                if !is_known(self, &q.scope, &q.turn.text, dedupe_similarity).await? {
                    self.add(&q.scope, &q.turn).await?;
                }
                self.complete(q.id).await
            };
            if let Err(e) = ingested.await {
                // Best effort: what is not released comes back when the lease runs out.
                for rest in &queued[i..] {
                    let _ = self.release(rest.id).await;
                }
                return Err(e);
            }
        }
        Ok(queued.len())
    }
}

/// Whether a scope already holds `text`, or a memory at least `similarity` close to it.
pub async fn is_known<S: MemoryStore + ?Sized>(
    store: &S,
    scope: &MemoryScope,
    text: &str,
    similarity: f32,
) -> Result<bool> {
    let query = SearchQuery {
        text: text.to_owned(),
        limit: 1,
        min_similarity: similarity,
    };
    Ok(store
        .search(scope, &query)
        .await?
        .into_iter()
        .any(|h| h.memory.text == text || h.similarity.is_some_and(|s| s >= similarity)))
}
