//! The `MemoryStore` seam: a user's long-term memories, scoped, searchable, with history.
//!
//! Scope comes from the caller's key (workspace and user), optionally narrowed by the app's
//! end-user (OpenAI's `user` field) and an agent tag — never from anything else in a request.
//!
//! Conversation turns (user, assistant and tool messages a client sent) are memories too, each
//! remembered once per scope by a hash of its role and text ([`turn_hash`]), so a client that
//! resends the whole history on every request costs a lookup, not a store, per turn.

pub(crate) mod compress;
pub mod extract;
pub mod index;
mod loaded;
mod outbox;
mod passages;
#[cfg(feature = "postgres")]
mod postgres;
pub mod profile;
mod queries;
mod sql;
mod sql_rows;
mod sqlite;
pub mod traffic;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use self::extract::Extractor;
pub use self::outbox::{Outbox, Queued};
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresMemoryStore;
pub use self::sqlite::SqliteMemoryStore;
use crate::error::Result;

/// How long a claimed turn stays with its claimer before another may take it: longer than
/// any ingestion of a turn (one extraction call, with its retries), short enough that a
/// crashed worker's turns are not kept waiting long.
pub const INGEST_LEASE: Duration = Duration::from_secs(600);

/// The longest end-user id the memory APIs take.
pub const END_USER_CHARS: usize = 256;

/// An end-user id as every path takes it (a chat's `user`, the memory APIs, MCP's header):
/// trimmed, and none when empty — so that each names the same scope.
pub fn end_user(raw: Option<&str>) -> Option<String> {
    raw.map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
}

// What the memory APIs (HTTP, `/me`, MCP, the CLI) take from a person or a tool.

/// The longest memory a person, a tool or the API gives (characters): a memory is a sentence or two, and a
/// client's model pasting a document into `remember` should hear so rather than store it.
pub const TEXT_CHARS: usize = 2_000;
/// A search's vector matches below this similarity are left out (keyword matches stay): the
/// default of `/v1/memories?q=`, and what `/me`, MCP and `lyss memory search` use.
pub const MIN_SIMILARITY: f32 = 0.3;

/// A memory's text as a person or a tool gave it: one line, not empty, not too long.
pub fn one_memory(text: &str) -> Result<String> {
    let text = one_line(text);
    if text.is_empty() {
        return Err(crate::Error::invalid_param("text is empty", "text"));
    }
    text_fits(&text)?;
    Ok(text)
}

/// Refuses a memory's text over [`TEXT_CHARS`]: a memory is not a document, and one of
/// megabytes would be indexed and recalled whole.
pub fn text_fits(text: &str) -> Result<()> {
    if text.chars().count() > TEXT_CHARS {
        return Err(crate::Error::invalid_param(
            format!("text is longer than {TEXT_CHARS} characters: remember one fact at a time"),
            "text",
        ));
    }
    Ok(())
}

/// Text on one line: every run of whitespace one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A search's text, at most [`TEXT_CHARS`] of it (a query is a question, not a document).
pub fn clip_query(q: &str) -> String {
    q.chars().take(TEXT_CHARS).collect()
}

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

/// Who said a conversation turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnRole {
    User,
    Assistant,
    /// A tool's result, or an assistant's tool calls, summarised as text.
    Tool,
}

impl TurnRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }

    /// The role stored as [`TurnRole::as_str`]; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "assistant" => Some(Self::Assistant),
            "tool" => Some(Self::Tool),
            _ => None,
        }
    }
}

/// The identity of a conversation turn within a scope: a 128-bit hash of its role and text.
/// Not a security boundary (a user can only collide with their own turns); chosen because a
/// long history is hashed on every request (xxh3: microseconds for 100 KiB).
pub fn turn_hash(role: TurnRole, text: &str) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(role.as_str().as_bytes());
    h.update(b"\n");
    h.update(text.as_bytes());
    h.digest128()
}

/// One remembered fact or conversation turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub id: String,
    pub text: String,
    /// Where it came from (the request id that brought it, an import, "api").
    pub source: Option<String>,
    /// When the remembered thing happened (e.g. the chat session's date).
    #[serde(with = "time::serde::rfc3339::option")]
    pub occurred_at: Option<OffsetDateTime>,
    /// Who said it, when the memory is a conversation turn (a long turn is stored as several
    /// consecutive memories); `None` for facts (extracted, or added through the API).
    #[serde(default)]
    pub role: Option<TurnRole>,
    /// The turn's position in its conversation (its index in the request's messages).
    #[serde(default)]
    pub position: Option<u32>,
    /// Part of the person's profile: something they said about themselves that should shape
    /// every answer ([`profile`]), recalled into every conversation rather than by relevance.
    #[serde(default)]
    pub profile: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A memory to add: a fact, or (with `role`) a conversation turn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewMemory {
    pub text: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub occurred_at: Option<OffsetDateTime>,
    /// Set for a conversation turn: who said it. A turn is remembered once per scope.
    #[serde(default)]
    pub role: Option<TurnRole>,
    /// A turn's position in its conversation.
    #[serde(default)]
    pub position: Option<u32>,
    /// A profile statement (see [`Memory::profile`]).
    #[serde(default)]
    pub profile: bool,
}

impl NewMemory {
    /// A fact (not a conversation turn).
    pub fn fact(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// The turn's identity in its scope, when this is a conversation turn.
    pub fn turn_hash(&self) -> Option<u128> {
        self.role.map(|r| turn_hash(r, &self.text))
    }
}

/// What to look for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchQuery {
    pub text: String,
    /// At most this many results.
    pub limit: usize,
    /// Vector matches below this cosine similarity are dropped (keyword matches still count).
    /// Above 1 no vector can match: the search is by keywords alone, and embeds nothing.
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
    /// How well its words match the query's (BM25; unbounded, higher is better), when they
    /// did.
    #[serde(default)]
    pub keywords: Option<f32>,
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

/// Scoped long-term memories.
///
/// # Contract
/// - Every method works inside one scope. A memory of another scope does not exist for it:
///   `get`, `update`, `delete` and `history` answer [`crate::Error::NotFound`], `list` and
///   `search` never return it.
/// - `add`, `update` and `delete` are durable when they return and recorded in the history.
/// - `search` ranks by vector similarity (when the store has an embedder, once its model is
///   loaded: a search never waits for the load) and keywords
///   (BM25), fused; it never ranks memories of other scopes. Each hit carries its cosine
///   similarity and its keyword score when it matched on them.
/// - Conversation turns (a [`NewMemory`] with a `role`) are remembered at most once per scope,
///   by [`turn_hash`]: `add_turns` stores the ones the scope does not remember yet, all in one
///   batch (a near-copy of a memory of the same speaker — every passage at cosine ≥ 0.97 — is
///   remembered without a new memory), and they are durable and searchable when it returns;
///   `remembered` says which of
///   some hashes the scope remembers. A turn stays remembered when its memory is deleted (a
///   deleted memory does not come back because a client resends its conversation).
/// - `forget` deletes every memory of the scope's workspace user — all end-users and agents —
///   their history and their remembered turns ("forget me"); it returns how many memories went.
/// - The outbox's contract is on [`Outbox`], which every memory store is.
/// - `profile` returns exactly the scope's live memories added with `profile` set, each with
///   its current text.
/// - `forget_scope` deletes exactly one scope's memories, their history, its remembered turns
///   and its queued turns; every other scope, of the same user too, keeps its own.
/// - `scopes` lists the scopes of a workspace user that hold memories — the user's own, each
///   end-user's and agent's — with how many each holds, the user's own first, then by
///   end-user and agent.
/// - Memories and search results survive a restart.
/// - Store failures are [`crate::Error::Unavailable`].
#[async_trait]
pub trait MemoryStore: Outbox + Send + Sync {
    async fn add(&self, scope: &MemoryScope, new: &NewMemory) -> Result<Memory>;
    async fn update(&self, scope: &MemoryScope, id: &str, text: &str) -> Result<Memory>;
    async fn delete(&self, scope: &MemoryScope, id: &str) -> Result<()>;
    async fn get(&self, scope: &MemoryScope, id: &str) -> Result<Memory>;
    /// Newest first.
    async fn list(&self, scope: &MemoryScope, limit: usize) -> Result<Vec<Memory>>;
    /// The scope's profile statements ([`Memory::profile`]), oldest first.
    async fn profile(&self, scope: &MemoryScope) -> Result<Vec<Memory>>;
    async fn search(&self, scope: &MemoryScope, query: &SearchQuery) -> Result<Vec<Hit>>;
    /// Readies a search for `text` ahead of it (while the request does other work): loads the
    /// scope and embeds what the search will embed, so that `search` finds its vector cached.
    /// Never waits for a model still loading. By default nothing: `search` embeds itself.
    async fn prepare_search(&self, _scope: &MemoryScope, _text: &str) -> Result<()> {
        Ok(())
    }
    /// Oldest first.
    async fn history(&self, scope: &MemoryScope, id: &str) -> Result<Vec<HistoryEntry>>;
    async fn forget(&self, scope: &MemoryScope) -> Result<u64>;
    /// Forgets one scope (one end-user of a shared key, say), not the whole user; returns how
    /// many memories went.
    async fn forget_scope(&self, scope: &MemoryScope) -> Result<u64>;
    /// The scopes of a workspace user that hold memories, with their counts.
    async fn scopes(&self, workspace_id: &str, user_id: &str) -> Result<Vec<(MemoryScope, u64)>>;
    /// Which of these turn hashes the scope remembers.
    async fn remembered(&self, scope: &MemoryScope, hashes: &[u128]) -> Result<HashSet<u128>>;
    /// Stores conversation turns (each with a `role`; others are refused) that the scope does
    /// not remember yet, embedded in one batch; a turn longer than a passage becomes several
    /// consecutive memories. Durable and searchable when it returns. Returns what it added.
    async fn add_turns(&self, scope: &MemoryScope, turns: &[NewMemory]) -> Result<Vec<Memory>>;

    /// Raw ingestion: stores up to `max` queued turns as memories. Conversation turns go
    /// through `add_turns` (one batch per scope; a turn remembered meanwhile is skipped);
    /// other text is skipped when identical or at least `dedupe_similarity` similar to a
    /// memory of its scope (which also makes a replay after a crash harmless). Returns how
    /// many turns it took.
    async fn ingest_pending(&self, max: usize, dedupe_similarity: f32) -> Result<usize> {
        let queued = self.claim(max, INGEST_LEASE).await?;
        let ingested = async {
            let mut turns: Vec<(&MemoryScope, Vec<NewMemory>)> = Vec::new();
            for q in &queued {
                if q.turn.role.is_some() {
                    match turns.iter_mut().find(|(s, _)| **s == q.scope) {
                        Some((_, batch)) => batch.push(q.turn.clone()),
                        None => turns.push((&q.scope, vec![q.turn.clone()])),
                    }
                } else if !is_known_as(self, &q.scope, &q.turn, dedupe_similarity).await? {
                    self.add(&q.scope, &q.turn).await?;
                }
            }
            for (scope, batch) in turns {
                self.add_turns(scope, &batch).await?;
            }
            for q in &queued {
                self.complete(q.id).await?;
            }
            Ok(())
        };
        if let Err(e) = ingested.await {
            // Best effort: what is not released comes back when the lease runs out; what was
            // stored already is skipped (remembered, or known) when it comes back.
            for q in &queued {
                let _ = self.release(q.id).await;
            }
            return Err(e);
        }
        Ok(queued.len())
    }
}

/// Whether a scope already holds what a new fact says: for a profile statement, among its
/// profile (the same words said in a conversation turn do not make it profile); otherwise
/// among all its memories ([`is_known`]).
pub async fn is_known_as<S: MemoryStore + ?Sized>(
    store: &S,
    scope: &MemoryScope,
    new: &NewMemory,
    similarity: f32,
) -> Result<bool> {
    if !new.profile {
        return is_known(store, scope, &new.text, similarity).await;
    }
    let words = |t: &str| {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
    };
    let said = words(&new.text);
    if store
        .profile(scope)
        .await?
        .iter()
        .any(|m| words(&m.text) == said)
    {
        return Ok(true);
    }
    let query = SearchQuery {
        text: new.text.clone(),
        limit: 8,
        min_similarity: similarity,
    };
    Ok(store
        .search(scope, &query)
        .await?
        .into_iter()
        .any(|h| h.memory.profile && h.similarity.is_some_and(|s| s >= similarity)))
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
