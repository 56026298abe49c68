//! `InMemoryCache`: one process's cache, bounded by bytes (moka's TinyLFU admission and LRU
//! eviction), with a time to live per entry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Cache, CacheStats};
use crate::error::Result;

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    ttl: Duration,
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
                u32::try_from(k.len() + e.value.len()).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        Self { entries }
    }
}

#[async_trait]
impl Cache for InMemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.entries.get(key).map(|e| e.value.clone()))
    }

    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<()> {
        self.entries
            .insert(key.to_owned(), Arc::new(Entry { value, ttl }));
        Ok(())
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
