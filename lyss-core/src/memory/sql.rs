//! The memory store's SQL, written once for SQLite and Postgres ([`impl_sql_memory!`]).
//!
//! Rows are durable in the database; each process keeps an in-process index per scope
//! ([`super::index::ScopeIndex`]), built from the rows on first use. Every write bumps the
//! scope's version in `memory_scope_versions`; a process that finds a newer version than its
//! index was built at rebuilds it, so replicas sharing one Postgres never answer from a stale
//! index.
//!
//! The statements are consts in [`super::queries`]; what the store's methods build on (a
//! scope's loaded index, a memory's row and history row) is [`super::sql_rows`]'s macro, which
//! [`impl_sql_memory!`] expands first. The macros only glue statements to sqlx's types.

pub(crate) fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

pub(crate) fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A new turn whose every passage is at least this similar to a memory of the same speaker
/// is a near-copy: remembered as seen, not stored again.
pub(crate) const NEAR_COPY: f32 = 0.97;

/// A turn hash as stored: 32 hex digits.
pub(crate) fn hash_text(h: u128) -> String {
    format!("{h:032x}")
}

pub(crate) fn hash_from_text(s: &str) -> Option<u128> {
    u128::from_str_radix(s, 16).ok()
}

/// Implements the memory store for a backend: `$store` must have fields `pool: $pool`,
/// `embedder: Option<Arc<dyn Embedder>>` and `scopes: tokio::sync::Mutex<HashMap<String,
/// Slot>>` ([`super::loaded::Slot`]).
macro_rules! impl_sql_memory {
    ($store:ident, $db:ty, $pool:ty, $row:ty) => {
        $crate::memory::sql_rows::impl_sql_rows!($store, $db, $row);

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
                    role: new.role,
                    position: new.position,
                    profile: new.profile,
                    created_at: now,
                    updated_at: now,
                };
                self.insert_row(&self.pool, scope, &memory, vector.as_deref())
                    .await?;
                let version = self
                    .history_row(scope, &memory.id, "add", None, Some(&memory.text))
                    .await?;
                loaded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .expect(version);
                let indexed = memory.clone();
                tokio::task::spawn_blocking(move || {
                    let mut l = loaded.lock().unwrap_or_else(|p| p.into_inner());
                    l.add(indexed, vector);
                    l.advance(version);
                })
                .await
                .map_err(|e| Error::Internal(format!("index insert: {e}")))?;
                Ok(memory)
            }

            async fn update(
                &self,
                scope: &MemoryScope,
                id: &str,
                text: &str,
            ) -> $crate::Result<Memory> {
                if text.trim().is_empty() {
                    return Err(Error::invalid_param("a memory needs text", "text"));
                }
                let old = self.get(scope, id).await?;
                let loaded = self.scope(scope).await?;
                let vector = self.embed_one(text).await?;
                let now = OffsetDateTime::now_utc().unix_timestamp();
                sqlx::query($crate::memory::queries::UPDATE_MEMORY)
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
                loaded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .expect(version);
                let updated = Memory {
                    text: text.to_owned(),
                    updated_at: $crate::clock::from_unix(now)?,
                    ..old
                };
                let indexed = updated.clone();
                tokio::task::spawn_blocking(move || {
                    let mut l = loaded.lock().unwrap_or_else(|p| p.into_inner());
                    l.remove(&indexed.id);
                    l.add(indexed, vector);
                    l.advance(version);
                })
                .await
                .map_err(|e| Error::Internal(format!("index update: {e}")))?;
                Ok(updated)
            }

            async fn delete(&self, scope: &MemoryScope, id: &str) -> $crate::Result<()> {
                let old = self.get(scope, id).await?;
                let loaded = self.scope(scope).await?;
                sqlx::query($crate::memory::queries::DELETE_MEMORY)
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
                let row = sqlx::query(&$crate::memory::queries::memory_by_id())
                    .bind(id)
                    .bind(scope.key())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("memory `{id}`")))?;
                memory_from_row(&row)
            }

            async fn list(&self, scope: &MemoryScope, limit: usize) -> $crate::Result<Vec<Memory>> {
                let rows = sqlx::query(&$crate::memory::queries::recent_memories())
                    .bind(scope.key())
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(memory_from_row).collect()
            }

            async fn profile(&self, scope: &MemoryScope) -> $crate::Result<Vec<Memory>> {
                let loaded = self.scope(scope).await?;
                let l = loaded.lock().unwrap_or_else(|p| p.into_inner());
                // An updated memory's earlier row stays, dead: only the row its id points to is
                // live. An update appends its row, so the order is the memories' own, oldest
                // first.
                let mut profile: Vec<Memory> = l
                    .memories
                    .iter()
                    .enumerate()
                    .filter(|(row, m)| m.profile && l.rows.get(&m.id) == Some(row))
                    .map(|(_, m)| m.clone())
                    .collect();
                profile.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
                Ok(profile)
            }

            async fn prepare_search(&self, scope: &MemoryScope, text: &str) -> $crate::Result<()> {
                if !self.embedder.as_ref().is_some_and(|e| e.ready()) {
                    return Ok(());
                }
                // The scope as this process holds it, without asking the database whether it
                // is current (the search does): which words are common barely moves between
                // versions, and a query the search shortens otherwise is embedded again.
                let slot = self.scopes.lock().await.get(&scope.key()).cloned();
                let held = match slot {
                    Some(slot) => slot.lock().await.clone(),
                    None => None,
                };
                let loaded = match held {
                    Some(loaded) => loaded,
                    None => self.scope(scope).await?,
                };
                self.query_vector(&loaded, text).await?;
                Ok(())
            }

            async fn search(
                &self,
                scope: &MemoryScope,
                query: &SearchQuery,
            ) -> $crate::Result<Vec<Hit>> {
                let loaded = self.scope(scope).await?;
                let vector = if query.min_similarity <= 1.0 {
                    self.query_vector(&loaded, &query.text).await?
                } else {
                    None
                };
                let (text, limit, floor) = (query.text.clone(), query.limit, query.min_similarity);
                tokio::task::spawn_blocking(move || {
                    let l = loaded.lock().unwrap_or_else(|p| p.into_inner());
                    l.index
                        .search(&text, vector.as_deref(), limit, floor)
                        .into_iter()
                        .map(|s| Hit {
                            memory: l.memories[s.row].clone(),
                            score: s.score,
                            similarity: s.similarity,
                            keywords: s.keywords,
                        })
                        .collect()
                })
                .await
                .map_err(|e| Error::Internal(format!("index search: {e}")))
            }

            async fn history(
                &self,
                scope: &MemoryScope,
                id: &str,
            ) -> $crate::Result<Vec<HistoryEntry>> {
                let rows = sqlx::query($crate::memory::queries::HISTORY)
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

            async fn scopes(
                &self,
                workspace_id: &str,
                user_id: &str,
            ) -> $crate::Result<Vec<(MemoryScope, u64)>> {
                let rows = sqlx::query($crate::memory::queries::SCOPES_OF_USER)
                    .bind(workspace_id)
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await?;
                let mut scopes = rows
                    .iter()
                    .map(|r| {
                        let key: String = r.try_get("scope")?;
                        let n: i64 = r.try_get("n")?;
                        let (workspace_id, user_id, end_user, agent) =
                            serde_json::from_str(&key)
                                .map_err(|e| Error::Internal(format!("memory scope {key}: {e}")))?;
                        let scope = MemoryScope {
                            workspace_id,
                            user_id,
                            end_user,
                            agent,
                        };
                        Ok((scope, u64::try_from(n).unwrap_or(0)))
                    })
                    .collect::<$crate::Result<Vec<_>>>()?;
                scopes.sort_by(|(a, _), (b, _)| {
                    (&a.end_user, &a.agent).cmp(&(&b.end_user, &b.agent))
                });
                Ok(scopes)
            }

            async fn forget_scope(&self, scope: &MemoryScope) -> $crate::Result<u64> {
                let key = scope.key();
                let mut tx = self.pool.begin().await?;
                sqlx::query($crate::memory::queries::FORGET_SCOPE_HISTORY)
                    .bind(&key)
                    .execute(&mut *tx)
                    .await?;
                let gone = sqlx::query($crate::memory::queries::FORGET_SCOPE_MEMORIES)
                    .bind(&key)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query($crate::memory::queries::FORGET_SCOPE_TURNS)
                    .bind(&key)
                    .execute(&mut *tx)
                    .await?;
                // The queue keeps the scope as an object (what `claim` hands back).
                let queued_scope =
                    serde_json::to_string(scope).map_err(|e| Error::Internal(e.to_string()))?;
                sqlx::query($crate::memory::queries::FORGET_SCOPE_QUEUE)
                    .bind(&queued_scope)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query($crate::memory::queries::TOUCH_SCOPE_VERSION)
                    .bind(&key)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                self.scopes.lock().await.remove(&key);
                Ok(gone)
            }

            async fn forget(&self, scope: &MemoryScope) -> $crate::Result<u64> {
                let mut tx = self.pool.begin().await?;
                let gone = sqlx::query($crate::memory::queries::FORGET_USER_MEMORIES)
                    .bind(&scope.workspace_id)
                    .bind(&scope.user_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                // The history, the remembered turns and the turns still queued go too.
                for sql in $crate::memory::queries::FORGET_USER_REST {
                    sqlx::query(sql)
                        .bind(&scope.workspace_id)
                        .bind(&scope.user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query($crate::memory::queries::TOUCH_USER_VERSIONS)
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

            async fn remembered(
                &self,
                scope: &MemoryScope,
                hashes: &[u128],
            ) -> $crate::Result<std::collections::HashSet<u128>> {
                let loaded = self.scope(scope).await?;
                let (mut found, missing): (std::collections::HashSet<u128>, Vec<u128>) = {
                    let l = loaded.lock().unwrap_or_else(|p| p.into_inner());
                    let (known, missing): (Vec<u128>, Vec<u128>) =
                        hashes.iter().partition(|h| l.turns.contains(h));
                    (known.into_iter().collect(), missing)
                };
                // What this process has not seen remembered may have been by another one.
                for chunk in missing.chunks(500) {
                    let mut q =
                        sqlx::QueryBuilder::<$db>::new($crate::memory::queries::REMEMBERED_TURNS);
                    q.push_bind(scope.key())
                        .push($crate::memory::queries::REMEMBERED_TURNS_IN);
                    let mut list = q.separated(", ");
                    for h in chunk {
                        list.push_bind(hash_text(*h));
                    }
                    q.push(")");
                    let rows: Vec<String> = q.build_query_scalar().fetch_all(&self.pool).await?;
                    let more: Vec<u128> = rows.iter().filter_map(|h| hash_from_text(h)).collect();
                    loaded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .turns
                        .extend(more.iter().copied());
                    found.extend(more);
                }
                Ok(found)
            }

            async fn add_turns(
                &self,
                scope: &MemoryScope,
                turns: &[NewMemory],
            ) -> $crate::Result<Vec<Memory>> {
                let mut hashed = Vec::with_capacity(turns.len());
                let mut seen = std::collections::HashSet::with_capacity(turns.len());
                for t in turns {
                    let Some(hash) = t.turn_hash() else {
                        return Err(Error::invalid_param(
                            "a conversation turn needs a role",
                            "role",
                        ));
                    };
                    if !t.text.trim().is_empty() && seen.insert(hash) {
                        hashed.push((hash, t));
                    }
                }
                let hashes: Vec<u128> = hashed.iter().map(|(h, _)| *h).collect();
                let known = self.remembered(scope, &hashes).await?;
                hashed.retain(|(h, _)| !known.contains(h));
                if hashed.is_empty() {
                    return Ok(Vec::new());
                }
                let loaded = self.scope(scope).await?;
                // Every passage of every new turn, embedded in one batch.
                let pieces: Vec<(usize, String)> = hashed
                    .iter()
                    .enumerate()
                    .flat_map(|(i, (_, t))| {
                        passages(&t.text)
                            .into_iter()
                            .map(move |p| (i, p.to_owned()))
                    })
                    .collect();
                let mut vectors = match &self.embedder {
                    Some(e) => {
                        let texts: Vec<String> = pieces.iter().map(|(_, p)| p.clone()).collect();
                        e.embed(&texts).await?.into_iter().map(Some).collect()
                    }
                    None => vec![None; pieces.len()],
                };
                vectors.resize(pieces.len(), None);
                let now = OffsetDateTime::now_utc()
                    .replace_nanosecond(0)
                    .unwrap_or_else(|_| OffsetDateTime::now_utc());
                let key = scope.key();
                let mut tx = self.pool.begin().await?;
                let mut added: Vec<(Memory, Option<Vec<f32>>)> = Vec::new();
                let mut new_turns = Vec::new();
                let mut pieces = pieces.into_iter().zip(vectors).peekable();
                for (i, (hash, turn)) in hashed.iter().enumerate() {
                    let mine: Vec<(String, Option<Vec<f32>>)> = std::iter::from_fn(|| {
                        pieces
                            .next_if(|((j, _), _)| *j == i)
                            .map(|((_, p), v)| (p, v))
                    })
                    .collect();
                    // Claimed here: a concurrent writer of the same turn (another request, the
                    // ingestion worker, another replica) finds it taken and adds nothing.
                    let claimed = sqlx::query($crate::memory::queries::REMEMBER_TURN)
                        .bind(&key)
                        .bind(hash_text(*hash))
                        .bind(&scope.workspace_id)
                        .bind(&scope.user_id)
                        .bind(now.unix_timestamp())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if claimed == 0 {
                        continue;
                    }
                    new_turns.push(*hash);
                    // A near-copy of what the same speaker said before ("Thanks!", a pasted message
                    // resent with a typo fixed) is remembered as seen, not stored again.
                    let repeats = {
                        let l = loaded.lock().unwrap_or_else(|p| p.into_inner());
                        !mine.is_empty()
                            && mine.iter().all(|(_, v)| {
                                v.as_deref().and_then(|v| l.index.nearest(v)).is_some_and(
                                    |(row, sim)| {
                                        sim >= NEAR_COPY && l.memories[row].role == turn.role
                                    },
                                )
                            })
                    };
                    if repeats {
                        continue;
                    }
                    for (text, vector) in mine {
                        let memory = Memory {
                            id: format!("mem_{}", uuid::Uuid::now_v7().simple()),
                            text,
                            source: turn.source.clone(),
                            occurred_at: turn.occurred_at,
                            role: turn.role,
                            position: turn.position,
                            profile: false,
                            created_at: now,
                            updated_at: now,
                        };
                        self.insert_row(&mut *tx, scope, &memory, vector.as_deref())
                            .await?;
                        sqlx::query($crate::memory::queries::INSERT_TURN_HISTORY)
                            .bind(&memory.id)
                            .bind(&scope.workspace_id)
                            .bind(&scope.user_id)
                            .bind(&memory.text)
                            .bind(now.unix_timestamp())
                            .bind(scope.key())
                            .execute(&mut *tx)
                            .await?;
                        added.push((memory, vector));
                    }
                }
                // One version step for the batch: other processes rebuild their index of this
                // scope.
                let version =
                    sqlx::query_scalar::<_, i64>($crate::memory::queries::BUMP_SCOPE_VERSION)
                        .bind(&key)
                        .bind(&scope.workspace_id)
                        .bind(&scope.user_id)
                        .fetch_one(&mut *tx)
                        .await?;
                tx.commit().await?;
                loaded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .expect(version);
                let memories: Vec<Memory> = added.iter().map(|(m, _)| m.clone()).collect();
                tokio::task::spawn_blocking(move || {
                    let mut l = loaded.lock().unwrap_or_else(|p| p.into_inner());
                    l.turns.extend(new_turns);
                    for (m, vector) in added {
                        l.add(m, vector);
                    }
                    l.advance(version);
                })
                .await
                .map_err(|e| Error::Internal(format!("index insert: {e}")))?;
                Ok(memories)
            }
        }
    };
}

pub(crate) use impl_sql_memory;
