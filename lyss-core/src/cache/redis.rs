//! `RedisCache`: a cache shared by every replica that shares one Redis. Values are plain
//! strings with Redis's own expiry (`SET … PX`), under one key prefix per deployment.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;

use super::{Cache, CacheStats};
use crate::error::{Error, Result};

/// A cache in Redis.
#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    crate::redis_conn::unavailable("redis cache", e)
}

impl RedisCache {
    /// Connects to `url`; every key this cache writes starts with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        // A short response timeout: a slow cache must not slow requests (they go upstream).
        let conn =
            crate::redis_conn::connect(url, Duration::from_millis(500), "redis cache").await?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    /// Every key of this cache under `prefix`, by `SCAN` (never `KEYS`, which blocks Redis).
    async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}{}*", escape(&self.prefix), escape(prefix));
        let mut cursor = 0u64;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

/// `s` with Redis glob characters escaped, for a `MATCH` pattern.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        conn.get(format!("{}{key}", self.prefix))
            .await
            .map_err(unavailable)
    }

    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<()> {
        let mut conn = self.conn.clone();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        conn.pset_ex::<_, _, ()>(format!("{}{key}", self.prefix), value, ms)
            .await
            .map_err(unavailable)
    }

    async fn clear(&self, prefix: &str) -> Result<u64> {
        let keys = self.keys(prefix).await?;
        let mut conn = self.conn.clone();
        let mut removed = 0u64;
        for chunk in keys.chunks(500) {
            removed += conn.unlink::<_, u64>(chunk).await.map_err(unavailable)?;
        }
        Ok(removed)
    }

    async fn stats(&self) -> Result<CacheStats> {
        Ok(CacheStats {
            entries: self.keys("").await?.len() as u64,
            bytes: None,
        })
    }
}
