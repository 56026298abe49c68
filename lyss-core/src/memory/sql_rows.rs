//! A SQL memory store's rows ([`impl_sql_rows!`], part of [`super::sql::impl_sql_memory!`]):
//! a scope's index loaded from them, a memory's row and its history row written, a row read.

/// Implements, for a backend, what the memory store's methods build on: embedding one text, a
/// scope's loaded index (built from the rows), a new memory's row, a history row (bumping the
/// scope's version) and reading a memory from its row. `$store` has the fields
/// [`super::sql::impl_sql_memory!`] names.
macro_rules! impl_sql_rows {
    ($store:ident, $db:ty, $row:ty) => {
        impl $store {
            async fn embed_one(&self, text: &str) -> $crate::Result<Option<Vec<f32>>> {
                match &self.embedder {
                    Some(e) => Ok(e.embed(&[text.to_owned()]).await?.into_iter().next()),
                    None => Ok(None),
                }
            }

            /// The vector a search of `loaded` for `text` ranks by: the embedding of what the
            /// index says to embed of it ([`crate::memory::index::ScopeIndex::meaning_query`]).
            /// A model still loading is not waited for: keywords alone rank until it is.
            async fn query_vector(
                &self,
                loaded: &Mutex<Loaded>,
                text: &str,
            ) -> $crate::Result<Option<Vec<f32>>> {
                if !self.embedder.as_ref().is_some_and(|e| e.ready()) {
                    return Ok(None);
                }
                let meaning = loaded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .index
                    .meaning_query(text);
                self.embed_one(meaning.as_deref().unwrap_or(text)).await
            }

            fn embedder_name(&self) -> Option<&str> {
                self.embedder.as_ref().map(|e| e.name())
            }

            /// The loaded index of a scope, building it from the rows on first use (and when
            /// dead rows outnumber live ones). The map of scopes is locked only to find the
            /// scope's slot: building one scope's index (seconds for a large one) never holds up
            /// another scope.
            async fn scope(&self, scope: &MemoryScope) -> $crate::Result<Arc<Mutex<Loaded>>> {
                let key = scope.key();
                let slot = self
                    .scopes
                    .lock()
                    .await
                    .entry(key.clone())
                    .or_default()
                    .clone();
                let mut slot = slot.lock().await;
                // Read before the rows: a change in between shows as a newer version next time.
                let version = sqlx::query_scalar::<_, i64>($crate::memory::queries::SCOPE_VERSION)
                    .bind(&key)
                    .fetch_optional(&self.pool)
                    .await?
                    .unwrap_or(0);
                if let Some(l) = slot.as_ref() {
                    let fresh = {
                        let g = l.lock().unwrap_or_else(|p| p.into_inner());
                        g.current(version) && !g.index.needs_rebuild()
                    };
                    if fresh {
                        return Ok(l.clone());
                    }
                }
                // In conversation order: the index's neighbours are turns said together.
                let rows = sqlx::query(&$crate::memory::queries::scope_rows())
                    .bind(&key)
                    .fetch_all(&self.pool)
                    .await?;
                let mut entries = Vec::with_capacity(rows.len());
                let mut missing = Vec::new();
                for r in &rows {
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
                    entries.push((memory_from_row(r)?, vector));
                }
                // Rows embedded by another model (or none): embed them again and keep the result.
                if let (Some(e), false) = (&self.embedder, missing.is_empty()) {
                    let texts: Vec<String> =
                        missing.iter().map(|&i| entries[i].0.text.clone()).collect();
                    let vectors = e.embed(&texts).await?;
                    for (&i, v) in missing.iter().zip(vectors) {
                        sqlx::query($crate::memory::queries::SET_EMBEDDING)
                            .bind(to_blob(&v))
                            .bind(e.name())
                            .bind(&entries[i].0.id)
                            .execute(&self.pool)
                            .await?;
                        entries[i].1 = Some(v);
                    }
                }
                let turns: Vec<String> = sqlx::query_scalar($crate::memory::queries::SCOPE_TURNS)
                    .bind(&key)
                    .fetch_all(&self.pool)
                    .await?;
                let loaded = tokio::task::spawn_blocking(move || {
                    let mut l = Loaded::default();
                    l.extend(entries);
                    l.turns = turns.iter().filter_map(|h| hash_from_text(h)).collect();
                    l
                })
                .await
                .map_err(|e| Error::Internal(format!("index build: {e}")))?;
                let loaded = Arc::new(Mutex::new(Loaded { version, ..loaded }));
                *slot = Some(loaded.clone());
                Ok(loaded)
            }

            /// Writes a new memory's row (its history row is the caller's).
            async fn insert_row<'c, E: sqlx::Executor<'c, Database = $db>>(
                &self,
                exec: E,
                scope: &MemoryScope,
                memory: &Memory,
                vector: Option<&[f32]>,
            ) -> $crate::Result<()> {
                sqlx::query($crate::memory::queries::INSERT_MEMORY)
                    .bind(&memory.id)
                    .bind(&scope.workspace_id)
                    .bind(&scope.user_id)
                    .bind(scope.key())
                    .bind(&memory.text)
                    .bind(vector.map(to_blob))
                    .bind(self.embedder_name())
                    .bind(&memory.source)
                    .bind(memory.occurred_at.map(|t| t.unix_timestamp()))
                    .bind(memory.created_at.unix_timestamp())
                    .bind(memory.role.map(|r| r.as_str()))
                    .bind(memory.position.map(i64::from))
                    .bind(memory.profile)
                    .execute(exec)
                    .await?;
                Ok(())
            }

            async fn history_row(
                &self,
                scope: &MemoryScope,
                id: &str,
                event: &str,
                old: Option<&str>,
                new: Option<&str>,
            ) -> $crate::Result<i64> {
                sqlx::query($crate::memory::queries::INSERT_HISTORY)
                    .bind(id)
                    .bind(&scope.workspace_id)
                    .bind(&scope.user_id)
                    .bind(event)
                    .bind(old)
                    .bind(new)
                    .bind(OffsetDateTime::now_utc().unix_timestamp())
                    .bind(scope.key())
                    .execute(&self.pool)
                    .await?;
                // Every change bumps the scope's version: other processes rebuild their index.
                Ok(
                    sqlx::query_scalar::<_, i64>($crate::memory::queries::BUMP_SCOPE_VERSION)
                        .bind(scope.key())
                        .bind(&scope.workspace_id)
                        .bind(&scope.user_id)
                        .fetch_one(&self.pool)
                        .await?,
                )
            }
        }

        /// A memory's or a queued turn's own fields: what was said, by whom, when.
        fn said_from_row(r: &$row) -> $crate::Result<$crate::memory::NewMemory> {
            Ok($crate::memory::NewMemory {
                text: r.try_get("text")?,
                source: r.try_get("source")?,
                occurred_at: r
                    .try_get::<Option<i64>, _>("occurred_at")?
                    .map($crate::clock::from_unix)
                    .transpose()?,
                role: r
                    .try_get::<Option<String>, _>("role")?
                    .and_then(|s| $crate::memory::TurnRole::parse(&s)),
                position: r
                    .try_get::<Option<i64>, _>("position")?
                    .and_then(|p| u32::try_from(p).ok()),
                profile: r.try_get("profile")?,
            })
        }

        fn memory_from_row(r: &$row) -> $crate::Result<Memory> {
            let said = said_from_row(r)?;
            Ok(Memory {
                id: r.try_get("id")?,
                text: said.text,
                source: said.source,
                occurred_at: said.occurred_at,
                role: said.role,
                position: said.position,
                profile: said.profile,
                created_at: $crate::clock::from_unix(r.try_get("created_at")?)?,
                updated_at: $crate::clock::from_unix(r.try_get("updated_at")?)?,
            })
        }
    };
}

pub(crate) use impl_sql_rows;
