//! The memory outbox: turns queued durably on the request path, ingested later by a worker
//! (or several, across processes) — its own seam beside the memories it feeds.

use std::time::Duration;

use async_trait::async_trait;

use super::{MemoryScope, NewMemory};
use crate::error::Result;

/// A conversation turn waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub id: i64,
    pub scope: MemoryScope,
    pub turn: NewMemory,
    /// The key it was said with (none for imports): its extraction is charged there too.
    pub key_id: Option<String>,
}

/// Turns waiting to be remembered.
///
/// # Contract
/// - `enqueue` durably queues new turns (they survive a crash); a conversation turn already in
///   the queue for its scope is not queued twice.
/// - `claim` hands out unclaimed turns fairly across workspace users — each user's oldest
///   first, then each one's second, and so on (a user with many waiting turns delays only their
///   own) — in queue order within a user, each to one caller only, across processes sharing the
///   store, until `complete` removes it (a conversation turn is then remembered by the memory
///   store), `release` returns it, or the claim's lease runs out (its claimer died). A turn is
///   completed only after its memories are written, so a crash in between ingests it again
///   (after the lease), never loses it.
/// - `waiting` counts the queued turns (claimed or not) of a scope's workspace user, across
///   their end-users.
/// - Store failures are [`crate::Error::Unavailable`].
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Queues new turns for ingestion (durable when it returns), said with `key_id` when they
    /// came through a key.
    async fn enqueue(
        &self,
        scope: &MemoryScope,
        turns: &[NewMemory],
        key_id: Option<&str>,
    ) -> Result<()>;
    /// Claims up to `max` unclaimed queued turns for `lease`, users taking turns.
    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Queued>>;
    /// Removes a claimed turn once it is ingested; a conversation turn is then remembered.
    async fn complete(&self, id: i64) -> Result<()>;
    /// How many turns of the scope's workspace user wait in the queue.
    async fn waiting(&self, scope: &MemoryScope) -> Result<u64>;
    /// Returns a claimed turn to the queue now (its ingestion failed; another run retries it).
    async fn release(&self, id: i64) -> Result<()>;
}

/// Implements [`Outbox`] for a SQL memory store (`memory_outbox`; a completed conversation
/// turn joins `memory_turns` and the scope's loaded index). `$store` has the fields
/// [`super::sql::impl_sql_memory!`] names, and its module the row reader
/// `impl_sql_rows!` defines (`said_from_row`).
macro_rules! impl_sql_outbox {
    ($store:ident) => {
        #[async_trait::async_trait]
        impl $crate::memory::Outbox for $store {
            async fn enqueue(
                &self,
                scope: &$crate::memory::MemoryScope,
                turns: &[$crate::memory::NewMemory],
                key_id: Option<&str>,
            ) -> $crate::Result<()> {
                if turns.is_empty() {
                    return Ok(());
                }
                let queued_scope = serde_json::to_string(scope)
                    .map_err(|e| $crate::Error::Internal(e.to_string()))?;
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let mut tx = self.pool.begin().await?;
                for turn in turns {
                    // A conversation turn already waiting in the queue is not queued again.
                    sqlx::query($crate::memory::queries::ENQUEUE)
                        .bind(&scope.workspace_id)
                        .bind(&scope.user_id)
                        .bind(&queued_scope)
                        .bind(&turn.text)
                        .bind(&turn.source)
                        .bind(turn.occurred_at.map(|t| t.unix_timestamp()))
                        .bind(now)
                        .bind(key_id)
                        .bind(turn.role.map(|r| r.as_str()))
                        .bind(turn.position.map(i64::from))
                        .bind(turn.turn_hash().map($crate::memory::sql::hash_text))
                        .bind(turn.profile)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn claim(
                &self,
                max: usize,
                lease: std::time::Duration,
            ) -> $crate::Result<Vec<$crate::memory::Queued>> {
                let now = time::OffsetDateTime::now_utc();
                // Users take turns (see the statement), each turn to one claimer only.
                let mut rows = sqlx::query($crate::memory::queries::CLAIM)
                    .bind($crate::clock::unix_ms(now + lease))
                    .bind($crate::clock::unix_ms(now))
                    .bind(i64::try_from(max).unwrap_or(i64::MAX))
                    .fetch_all(&self.pool)
                    .await?;
                rows.sort_by_key(|r| r.try_get::<i64, _>("id").unwrap_or_default());
                rows.iter()
                    .map(|r| {
                        Ok($crate::memory::Queued {
                            id: r.try_get("id")?,
                            scope: serde_json::from_str(&r.try_get::<String, _>("scope")?)
                                .map_err(|e| {
                                    $crate::Error::Internal(format!("queued scope: {e}"))
                                })?,
                            turn: said_from_row(r)?,
                            key_id: r.try_get("key_id")?,
                        })
                    })
                    .collect()
            }

            async fn complete(&self, id: i64) -> $crate::Result<()> {
                let mut tx = self.pool.begin().await?;
                // Writing first: a SQLite transaction that read before writing cannot wait for the
                // lock (its snapshot may be stale), so it would fail with "database is locked".
                let row = sqlx::query($crate::memory::queries::COMPLETE)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let mut remembered = None;
                if let Some(r) = row
                    && let Some(hash) = r.try_get::<Option<String>, _>("turn_hash")?
                {
                    let scope: $crate::memory::MemoryScope =
                        serde_json::from_str(&r.try_get::<String, _>("scope")?)
                            .map_err(|e| $crate::Error::Internal(format!("queued scope: {e}")))?;
                    sqlx::query($crate::memory::queries::REMEMBER_TURN)
                        .bind(scope.key())
                        .bind(&hash)
                        .bind(&scope.workspace_id)
                        .bind(&scope.user_id)
                        .bind(time::OffsetDateTime::now_utc().unix_timestamp())
                        .execute(&mut *tx)
                        .await?;
                    remembered =
                        $crate::memory::sql::hash_from_text(&hash).map(|h| (scope.key(), h));
                }
                tx.commit().await?;
                if let Some((key, hash)) = remembered {
                    let slot = self.scopes.lock().await.get(&key).cloned();
                    if let Some(slot) = slot
                        && let Some(l) = slot.lock().await.as_ref()
                    {
                        l.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .turns
                            .insert(hash);
                    }
                }
                Ok(())
            }

            async fn waiting(&self, scope: &$crate::memory::MemoryScope) -> $crate::Result<u64> {
                let n: i64 = sqlx::query_scalar($crate::memory::queries::WAITING)
                    .bind(&scope.workspace_id)
                    .bind(&scope.user_id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn release(&self, id: i64) -> $crate::Result<()> {
                sqlx::query($crate::memory::queries::RELEASE)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use impl_sql_outbox;
