//! `InMemoryCache`: one process's cache, bounded by bytes (moka's TinyLFU admission and LRU
//! eviction), with a time to live per entry, and its semantic index.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::semantic::{Question, SemanticIndex, duration_ms, now_ms};
use super::{Cache, CacheStats, Similar};
use crate::error::{Error, Result};

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    ttl: Duration,
    /// Bytes held elsewhere for this entry (its question's vectors in the semantic index), so
    /// that they count against the bound too.
    extra: usize,
}

struct PerEntryTtl;

impl moka::Expiry<String, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, e: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(e.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        e: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(e.ttl)
    }
}

/// A cache in this process's memory.
#[derive(Clone)]
pub struct InMemoryCache {
    entries: moka::sync::Cache<String, Arc<Entry>>,
    semantic: Arc<SemanticIndex>,
}

impl std::fmt::Debug for InMemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl InMemoryCache {
    /// A cache holding at most `max_bytes` of keys and values.
    pub fn new(max_bytes: u64) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, e: &Arc<Entry>| {
                u32::try_from(k.len() + e.value.len() + e.extra).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        Self {
            entries,
            semantic: Arc::default(),
        }
    }
}

#[async_trait]
impl Cache for InMemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.entries.get(key).map(|e| e.value.clone()))
    }

    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<()> {
        self.entries.insert(
            key.to_owned(),
            Arc::new(Entry {
                value,
                ttl,
                extra: 0,
            }),
        );
        Ok(())
    }

    async fn put_vector(
        &self,
        partition: &str,
        key: &str,
        vector: &[f32],
        ttl: Duration,
    ) -> Result<()> {
        let Some(e) = self.entries.get(key) else {
            return Ok(());
        };
        // The index keeps two copies of a vector (the search structure and the rebuild
        // source); they weigh on the entry.
        let extra = 2 * std::mem::size_of_val(vector);
        self.entries.insert(
            key.to_owned(),
            Arc::new(Entry {
                value: e.value.clone(),
                ttl: e.ttl,
                extra,
            }),
        );
        let part = self.semantic.partition(partition, ttl);
        let entries = self.entries.clone();
        let question = Question {
            key: key.to_owned(),
            vector: vector.to_vec(),
            expires_ms: now_ms().saturating_add(duration_ms(ttl)),
        };
        // An insert into a large graph takes a millisecond or more: off the executor.
        let added = part.clone();
        tokio::task::spawn_blocking(move || added.add(vec![question], |k| entries.contains_key(k)))
            .await
            .map_err(|e| Error::Internal(format!("semantic index task: {e}")))?;
        self.semantic.keep(partition, &part);
        part.rebuild_in_background();
        Ok(())
    }

    async fn get_similar(
        &self,
        partition: &str,
        vector: &[f32],
        min_similarity: f32,
    ) -> Result<Option<Similar>> {
        let Some(part) = self.semantic.get(partition) else {
            return Ok(None);
        };
        for (key, similarity) in part.candidates(vector, min_similarity).unwrap_or_default() {
            match self.entries.get(&*key) {
                Some(e) => {
                    return Ok(Some(Similar {
                        value: e.value.clone(),
                        similarity,
                    }));
                }
                None => part.forget(&key),
            }
        }
        Ok(None)
    }

    async fn clear(&self, prefix: &str) -> Result<u64> {
        let doomed: Vec<Arc<String>> = self
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k)
            .collect();
        for k in &doomed {
            self.entries.invalidate(k.as_str());
        }
        self.semantic.clear(prefix);
        Ok(doomed.len() as u64)
    }

    async fn stats(&self) -> Result<CacheStats> {
        self.entries.run_pending_tasks();
        Ok(CacheStats {
            entries: self.entries.entry_count(),
            bytes: Some(self.entries.weighted_size()),
        })
    }
}
