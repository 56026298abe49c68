//! The memory store's SQL, written once for SQLite and Postgres ([`impl_sql_memory!`]).
//!
//! Rows are durable in the database; each process keeps an in-process index per scope
//! ([`super::index::ScopeIndex`]), built from the rows on first use. Every write bumps the
//! scope's version in `memory_scope_versions`; a process that finds a newer version than its
//! index was built at rebuilds it, so replicas sharing one Postgres never answer from a stale
//! index.

use std::collections::HashMap;

use super::index::ScopeIndex;

/// A scope's index and the memory id of each of its rows.
#[derive(Default)]
pub(crate) struct Loaded {
    /// The scope version the index reflects.
    pub(crate) version: i64,
    pub(crate) index: ScopeIndex,
    pub(crate) ids: Vec<String>,
    pub(crate) rows: HashMap<String, usize>,
}

impl Loaded {
    pub(crate) fn add(&mut self, id: &str, text: &str, vector: Option<Vec<f32>>) {
        let row = self.index.add(text, vector);
        self.ids.push(id.to_owned());
        self.rows.insert(id.to_owned(), row);
    }

    /// Adds many rows at once (see [`ScopeIndex::extend`]).
    pub(crate) fn extend(&mut self, entries: Vec<(String, String, Option<Vec<f32>>)>) {
        let first = self.ids.len();
        let mut rows = Vec::with_capacity(entries.len());
        for (i, (id, text, vector)) in entries.into_iter().enumerate() {
            self.rows.insert(id.clone(), first + i);
            self.ids.push(id);
            rows.push((text, vector));
        }
        self.index.extend(rows);
    }

    /// Records that the index now reflects `version` — if it was the next one. Otherwise
    /// another process changed the scope meanwhile and the index stays behind (rebuilt on
    /// next use).
    pub(crate) fn advance(&mut self, version: i64) {
        if self.version + 1 == version {
            self.version = version;
        }
    }

    pub(crate) fn remove(&mut self, id: &str) {
        if let Some(row) = self.rows.remove(id) {
            self.index.remove(row);
        }
    }
}

pub(crate) fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

pub(crate) fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub(crate) const MEMORY_COLUMNS: &str = "id, text, source, occurred_at, created_at, updated_at";

/// Implements the memory store for a backend: `$store` must have fields `pool: $pool`,
/// `embedder: Option<Arc<dyn Embedder>>` and `scopes: tokio::sync::Mutex<HashMap<String,
/// Arc<Mutex<Loaded>>>>`.
macro_rules! impl_sql_memory {
    ($store:ident, $db:ty, $pool:ty, $row:ty) => {
impl $store {
    async fn embed_one(&self, text: &str) -> $crate::Result<Option<Vec<f32>>> {
        match &self.embedder {
            Some(e) => Ok(e.embed(&[text.to_owned()]).await?.into_iter().next()),
            None => Ok(None),
        }
    }

    fn embedder_name(&self) -> Option<&str> {
        self.embedder.as_ref().map(|e| e.name())
    }

    /// The loaded index of a scope, building it from the rows on first use (and when dead
    /// rows outnumber live ones).
    async fn scope(&self, scope: &MemoryScope) -> $crate::Result<Arc<Mutex<Loaded>>> {
        let key = scope.key();
        let mut scopes = self.scopes.lock().await;
        // Read before the rows: a change in between shows as a newer version next time.
        let version = sqlx::query_scalar::<_, i64>(
            "SELECT version FROM memory_scope_versions WHERE scope = $1",
        )
        .bind(&key)
        .fetch_optional(&self.pool)
        .await?
        .unwrap_or(0);
        if let Some(l) = scopes.get(&key) {
            let fresh = {
                let g = l.lock().unwrap_or_else(|p| p.into_inner());
                g.version == version && !g.index.needs_rebuild()
            };
            if fresh {
                return Ok(l.clone());
            }
        }
        let rows = sqlx::query("SELECT id, text, embedding, embedder FROM memories WHERE scope = $1 ORDER BY created_at, id")
            .bind(&key)
            .fetch_all(&self.pool)
            .await?;
        let mut entries = Vec::with_capacity(rows.len());
        let mut missing = Vec::new();
        for r in &rows {
            let id: String = r.try_get("id")?;
            let text: String = r.try_get("text")?;
            let stored: Option<Vec<u8>> = r.try_get("embedding")?;
            let by: Option<String> = r.try_get("embedder")?;
            let vector = match (stored, self.embedder_name()) {
                (Some(b), Some(name)) if by.as_deref() == Some(name) => Some(from_blob(&b)),
                (_, Some(_)) => {
                    missing.push(entries.len());
                    None
                }
                (_, None) => None,
            };
            entries.push((id, text, vector));
        }
        // Rows embedded by another model (or none): embed them again and keep the result.
        if let (Some(e), false) = (&self.embedder, missing.is_empty()) {
            let texts: Vec<String> = missing.iter().map(|&i| entries[i].1.clone()).collect();
            let vectors = e.embed(&texts).await?;
            for (&i, v) in missing.iter().zip(vectors) {
                sqlx::query("UPDATE memories SET embedding = $1, embedder = $2 WHERE id = $3")
                    .bind(to_blob(&v))
                    .bind(e.name())
                    .bind(&entries[i].0)
                    .execute(&self.pool)
                    .await?;
                entries[i].2 = Some(v);
            }
        }
        let loaded = tokio::task::spawn_blocking(move || {
            let mut l = Loaded::default();
            l.extend(entries);
            l
        })
        .await
        .map_err(|e| Error::Internal(format!("index build: {e}")))?;
        let loaded = Arc::new(Mutex::new(Loaded { version, ..loaded }));
        scopes.insert(key, loaded.clone());
        Ok(loaded)
    }

    async fn history_row(
        &self,
        scope: &MemoryScope,
        id: &str,
        event: &str,
        old: Option<&str>,
        new: Option<&str>,
    ) -> $crate::Result<i64> {
        sqlx::query(
            "INSERT INTO memory_history (memory_id, workspace_id, user_id, event, old_text, new_text, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(&scope.workspace_id)
        .bind(&scope.user_id)
        .bind(event)
        .bind(old)
        .bind(new)
        .bind(OffsetDateTime::now_utc().unix_timestamp())
        .execute(&self.pool)
        .await?;
        // Every change bumps the scope's version: other processes rebuild their index.
        Ok(sqlx::query_scalar::<_, i64>(
            "INSERT INTO memory_scope_versions (scope, workspace_id, user_id, version) \
             VALUES ($1, $2, $3, 1) ON CONFLICT (scope) \
             DO UPDATE SET version = memory_scope_versions.version + 1 RETURNING version",
        )
        .bind(scope.key())
        .bind(&scope.workspace_id)
        .bind(&scope.user_id)
        .fetch_one(&self.pool)
        .await?)
    }
}

#[async_trait::async_trait]
impl $crate::memory::MemoryStore for $store {
    async fn add(&self, scope: &MemoryScope, new: &NewMemory) -> $crate::Result<Memory> {
        if new.text.trim().is_empty() {
            return Err(Error::invalid_param("a memory needs text", "text"));
        }
        let loaded = self.scope(scope).await?;
        let vector = self.embed_one(&new.text).await?;
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
        let memory = Memory {
            id: format!("mem_{}", uuid::Uuid::now_v7().simple()),
            text: new.text.clone(),
            source: new.source.clone(),
            occurred_at: new.occurred_at,
            created_at: now,
            updated_at: now,
        };
        sqlx::query(
            "INSERT INTO memories (id, workspace_id, user_id, scope, text, embedding, embedder, source, occurred_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(&memory.id)
        .bind(&scope.workspace_id)
        .bind(&scope.user_id)
        .bind(scope.key())
        .bind(&memory.text)
        .bind(vector.as_deref().map(to_blob))
        .bind(self.embedder_name())
        .bind(&memory.source)
        .bind(memory.occurred_at.map(|t| t.unix_timestamp()))
        .bind(now.unix_timestamp())
        .execute(&self.pool)
        .await?;
        let version = self
            .history_row(scope, &memory.id, "add", None, Some(&memory.text))
            .await?;
        let (id, text) = (memory.id.clone(), memory.text.clone());
        tokio::task::spawn_blocking(move || {
            let mut l = loaded.lock().unwrap_or_else(|p| p.into_inner());
            l.add(&id, &text, vector);
            l.advance(version);
        })
        .await
        .map_err(|e| Error::Internal(format!("index insert: {e}")))?;
        Ok(memory)
    }

    async fn update(&self, scope: &MemoryScope, id: &str, text: &str) -> $crate::Result<Memory> {
        if text.trim().is_empty() {
            return Err(Error::invalid_param("a memory needs text", "text"));
        }
        let old = self.get(scope, id).await?;
        let loaded = self.scope(scope).await?;
        let vector = self.embed_one(text).await?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        sqlx::query("UPDATE memories SET text = $1, embedding = $2, embedder = $3, updated_at = $4 WHERE id = $5 AND scope = $6")
            .bind(text)
            .bind(vector.as_deref().map(to_blob))
            .bind(self.embedder_name())
            .bind(now)
            .bind(id)
            .bind(scope.key())
            .execute(&self.pool)
            .await?;
        let version = self
            .history_row(scope, id, "update", Some(&old.text), Some(text))
            .await?;
        let (id_owned, text_owned) = (id.to_owned(), text.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut l = loaded.lock().unwrap_or_else(|p| p.into_inner());
            l.remove(&id_owned);
            l.add(&id_owned, &text_owned, vector);
            l.advance(version);
        })
        .await
        .map_err(|e| Error::Internal(format!("index update: {e}")))?;
        self.get(scope, id).await
    }

    async fn delete(&self, scope: &MemoryScope, id: &str) -> $crate::Result<()> {
        let old = self.get(scope, id).await?;
        let loaded = self.scope(scope).await?;
        sqlx::query("DELETE FROM memories WHERE id = $1 AND scope = $2")
            .bind(id)
            .bind(scope.key())
            .execute(&self.pool)
            .await?;
        let version = self
            .history_row(scope, id, "delete", Some(&old.text), None)
            .await?;
        let mut l = loaded.lock().unwrap_or_else(|p| p.into_inner());
        l.remove(id);
        l.advance(version);
        Ok(())
    }

    async fn get(&self, scope: &MemoryScope, id: &str) -> $crate::Result<Memory> {
        let row = sqlx::query(&format!(
            "SELECT {MEMORY_COLUMNS} FROM memories WHERE id = $1 AND scope = $2"
        ))
        .bind(id)
        .bind(scope.key())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("memory `{id}`")))?;
        memory_from_row(&row)
    }

    async fn list(&self, scope: &MemoryScope, limit: usize) -> $crate::Result<Vec<Memory>> {
        let rows = sqlx::query(&format!(
            "SELECT {MEMORY_COLUMNS} FROM memories WHERE scope = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(scope.key())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(memory_from_row).collect()
    }

    async fn search(&self, scope: &MemoryScope, query: &SearchQuery) -> $crate::Result<Vec<Hit>> {
        let loaded = self.scope(scope).await?;
        let vector = self.embed_one(&query.text).await?;
        let (text, limit, floor) = (query.text.clone(), query.limit, query.min_similarity);
        let found = tokio::task::spawn_blocking(move || {
            let l = loaded.lock().unwrap_or_else(|p| p.into_inner());
            l.index
                .search(&text, vector.as_deref(), limit, floor)
                .into_iter()
                .map(|s| (l.ids[s.row].clone(), s.score, s.similarity))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::Internal(format!("index search: {e}")))?;
        if found.is_empty() {
            return Ok(Vec::new());
        }
        // One query for all hits; rows deleted by another connection since are skipped.
        let mut q = sqlx::QueryBuilder::<$db>::new(format!(
            "SELECT {MEMORY_COLUMNS} FROM memories WHERE scope = "
        ));
        q.push_bind(scope.key()).push(" AND id IN (");
        let mut ids = q.separated(", ");
        for (id, ..) in &found {
            ids.push_bind(id);
        }
        q.push(")");
        let rows = q.build().fetch_all(&self.pool).await?;
        let mut by_id = HashMap::with_capacity(rows.len());
        for r in &rows {
            let m = memory_from_row(r)?;
            by_id.insert(m.id.clone(), m);
        }
        Ok(found
            .into_iter()
            .filter_map(|(id, score, similarity)| {
                by_id.remove(&id).map(|memory| Hit {
                    memory,
                    score,
                    similarity,
                })
            })
            .collect())
    }

    async fn history(&self, scope: &MemoryScope, id: &str) -> $crate::Result<Vec<HistoryEntry>> {
        // The memory's rows must belong to this scope's user; deleted memories keep history.
        let rows = sqlx::query(
            "SELECT h.memory_id, h.event, h.old_text, h.new_text, h.at FROM memory_history h \
             WHERE h.memory_id = $1 AND h.workspace_id = $2 AND h.user_id = $3 \
             AND (NOT EXISTS (SELECT 1 FROM memories m WHERE m.id = h.memory_id) \
                  OR EXISTS (SELECT 1 FROM memories m WHERE m.id = h.memory_id AND m.scope = $4)) \
             ORDER BY h.id",
        )
        .bind(id)
        .bind(&scope.workspace_id)
        .bind(&scope.user_id)
        .bind(scope.key())
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Err(Error::NotFound(format!("memory `{id}`")));
        }
        rows.iter()
            .map(|r| {
                Ok(HistoryEntry {
                    memory_id: r.try_get("memory_id")?,
                    event: r.try_get("event")?,
                    old_text: r.try_get("old_text")?,
                    new_text: r.try_get("new_text")?,
                    at: $crate::clock::from_unix(r.try_get("at")?)?,
                })
            })
            .collect()
    }

    async fn forget(&self, scope: &MemoryScope) -> $crate::Result<u64> {
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query("DELETE FROM memories WHERE workspace_id = $1 AND user_id = $2")
            .bind(&scope.workspace_id)
            .bind(&scope.user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM memory_history WHERE workspace_id = $1 AND user_id = $2")
            .bind(&scope.workspace_id)
            .bind(&scope.user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE memory_scope_versions SET version = version + 1 \
             WHERE workspace_id = $1 AND user_id = $2",
        )
        .bind(&scope.workspace_id)
        .bind(&scope.user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        // Every narrowed scope of this user is gone too: drop their indexes.
        let prefix = serde_json::json!([scope.workspace_id, scope.user_id]).to_string();
        let prefix = &prefix[..prefix.len() - 1];
        self.scopes
            .lock()
            .await
            .retain(|k, _| !k.starts_with(prefix));
        Ok(gone)
    }

    async fn enqueue(
        &self,
        scope: &MemoryScope,
        turn: &NewMemory,
        key_id: Option<&str>,
    ) -> $crate::Result<()> {
        sqlx::query(
            "INSERT INTO memory_outbox (workspace_id, user_id, scope, text, source, occurred_at, queued_at, key_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&scope.workspace_id)
        .bind(&scope.user_id)
        .bind(serde_json::to_string(scope).map_err(|e| Error::Internal(e.to_string()))?)
        .bind(&turn.text)
        .bind(&turn.source)
        .bind(turn.occurred_at.map(|t| t.unix_timestamp()))
        .bind(OffsetDateTime::now_utc().unix_timestamp())
        .bind(key_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim(&self, max: usize, lease: std::time::Duration) -> $crate::Result<Vec<Queued>> {
        let now = OffsetDateTime::now_utc();
        // The outer condition is checked again on a row another claimer changed meanwhile
        // (Postgres re-reads it after the lock; SQLite has one writer): taken once only.
        let mut rows = sqlx::query(
            "UPDATE memory_outbox SET claimed_until = $1 \
             WHERE claimed_until <= $2 AND id IN \
             (SELECT id FROM memory_outbox WHERE claimed_until <= $2 ORDER BY id LIMIT $3) \
             RETURNING id, scope, text, source, occurred_at, key_id",
        )
        .bind($crate::clock::unix_ms(now + lease))
        .bind($crate::clock::unix_ms(now))
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.sort_by_key(|r| r.try_get::<i64, _>("id").unwrap_or_default());
        rows.iter()
            .map(|r| {
                Ok(Queued {
                    id: r.try_get("id")?,
                    scope: serde_json::from_str(&r.try_get::<String, _>("scope")?)
                        .map_err(|e| Error::Internal(format!("queued scope: {e}")))?,
                    turn: NewMemory {
                        text: r.try_get("text")?,
                        source: r.try_get("source")?,
                        occurred_at: r
                            .try_get::<Option<i64>, _>("occurred_at")?
                            .map($crate::clock::from_unix)
                            .transpose()?,
                    },
                    key_id: r.try_get("key_id")?,
                })
            })
            .collect()
    }

    async fn complete(&self, id: i64) -> $crate::Result<()> {
        sqlx::query("DELETE FROM memory_outbox WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn release(&self, id: i64) -> $crate::Result<()> {
        sqlx::query("UPDATE memory_outbox SET claimed_until = 0 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn memory_from_row(r: &$row) -> $crate::Result<Memory> {
    Ok(Memory {
        id: r.try_get("id")?,
        text: r.try_get("text")?,
        source: r.try_get("source")?,
        occurred_at: r
            .try_get::<Option<i64>, _>("occurred_at")?
            .map($crate::clock::from_unix)
            .transpose()?,
        created_at: $crate::clock::from_unix(r.try_get("created_at")?)?,
        updated_at: $crate::clock::from_unix(r.try_get("updated_at")?)?,
    })
}


    };
}

pub(crate) use impl_sql_memory;
