//! `RedisCache`: a cache shared by every replica that shares one Redis. Values are plain
//! strings with Redis's own expiry (`SET … PX`), under one key prefix per deployment.
//!
//! Semantic partitions are Redis streams of (answer key, question vector, expiry), trimmed by
//! age. Each replica mirrors the streams it reads into an in-process index and reads only the
//! tail it has not seen on each lookup, so an answer cached through any replica is found
//! through every other.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;

use super::semantic::{Partition, Question, SemanticIndex, duration_ms, now_ms};
use super::{Cache, CacheStats, Similar, is_partition};
use crate::error::{Error, Result};

/// Stream entries a lookup reads itself; a longer tail (a replica that just started, or a
/// burst from other replicas) is read in the background while lookups go on.
const SYNC_INLINE: usize = 64;
/// Stream entries per background read.
const SYNC_BATCH: usize = 1_000;
/// How long a replica keeps a partition it only reads.
const MIRROR_LIFE: Duration = Duration::from_secs(60);

/// A cache in Redis.
#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
    semantic: Arc<SemanticIndex>,
}

/// XRANGE's reply: (id, [field, value, …]) per entry.
type StreamEntries = Vec<(String, Vec<Vec<u8>>)>;

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
            semantic: Arc::default(),
        })
    }

    /// Reads up to `count` entries of a partition's stream after what `part` has seen.
    async fn read_tail(
        &self,
        partition: &str,
        part: &Arc<Partition>,
        count: usize,
    ) -> Result<usize> {
        let mut conn = self.conn.clone();
        let start = part
            .cursor()
            .map_or_else(|| "-".to_owned(), |c| format!("({c}"));
        let entries: StreamEntries = redis::cmd("XRANGE")
            .arg(format!("{}{partition}", self.prefix))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let read = entries.len();
        let Some(last) = entries.last().map(|(id, _)| id.clone()) else {
            return Ok(0);
        };
        let questions: Vec<Question> = entries.into_iter().filter_map(decode).collect();
        // Inserts into a large graph take milliseconds each: off the executor.
        let adding = part.clone();
        tokio::task::spawn_blocking(move || adding.add(questions, |_| true))
            .await
            .map_err(|e| Error::Internal(format!("semantic index task: {e}")))?;
        part.advance(&last);
        Ok(read)
    }

    /// Brings this replica's mirror of a partition up to date: a short tail inline, a long
    /// one in the background (lookups meanwhile search what is mirrored so far).
    async fn sync(&self, partition: &str, part: &Arc<Partition>) -> Result<()> {
        if part.busy.load(Ordering::Acquire) {
            return Ok(());
        }
        let read = self.read_tail(partition, part, SYNC_INLINE).await?;
        self.semantic.keep(partition, part);
        if read < SYNC_INLINE || part.busy.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (this, part, name) = (self.clone(), part.clone(), partition.to_owned());
        tokio::spawn(async move {
            loop {
                match this.read_tail(&name, &part, SYNC_BATCH).await {
                    Ok(n) if n == SYNC_BATCH => continue,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "semantic cache catch-up stopped"),
                }
                break;
            }
            this.semantic.keep(&name, &part);
            part.busy.store(false, Ordering::Release);
        });
        Ok(())
    }

    /// Every key of this cache under `prefix`.
    async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        crate::redis_conn::keys_under(&mut conn, &format!("{}{prefix}", self.prefix), "redis").await
    }
}

/// A stream entry as a question to index; malformed entries are skipped.
fn decode((_, fields): (String, Vec<Vec<u8>>)) -> Option<Question> {
    let (mut key, mut vector, mut expires_ms) = (None, None, None);
    for pair in fields.chunks_exact(2) {
        match pair[0].as_slice() {
            b"k" => key = String::from_utf8(pair[1].clone()).ok(),
            b"v" => {
                vector = Some(
                    pair[1]
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                )
            }
            b"e" => expires_ms = std::str::from_utf8(&pair[1]).ok()?.parse().ok(),
            _ => {}
        }
    }
    Some(Question {
        key: key?,
        vector: vector?,
        expires_ms: expires_ms?,
    })
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

    async fn put_vector(
        &self,
        partition: &str,
        key: &str,
        vector: &[f32],
        ttl: Duration,
    ) -> Result<()> {
        let mut conn = self.conn.clone();
        let ttl_ms = duration_ms(ttl).max(1);
        let now = now_ms();
        let stream = format!("{}{partition}", self.prefix);
        let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(&stream)
            // Entries older than the time to live are trimmed (stream ids are Redis's ms).
            .arg("MINID")
            .arg("~")
            .arg(now.saturating_sub(ttl_ms))
            .arg("*")
            .arg("k")
            .arg(key)
            .arg("v")
            .arg(bytes)
            .arg("e")
            .arg(now.saturating_add(ttl_ms))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&stream)
            .arg(ttl_ms)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn get_similar(
        &self,
        partition: &str,
        vector: &[f32],
        min_similarity: f32,
    ) -> Result<Option<Similar>> {
        let part = self.semantic.partition(partition, MIRROR_LIFE);
        self.sync(partition, &part).await?;
        let candidates = part.candidates(vector, min_similarity).unwrap_or_default();
        if candidates.is_empty() {
            return Ok(None);
        }
        let mut conn = self.conn.clone();
        let keys: Vec<String> = candidates
            .iter()
            .map(|(k, _)| format!("{}{k}", self.prefix))
            .collect();
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        for ((key, similarity), value) in candidates.into_iter().zip(values) {
            match value {
                Some(value) => return Ok(Some(Similar { value, similarity })),
                None => part.forget(&key),
            }
        }
        part.rebuild_in_background();
        Ok(None)
    }

    async fn clear(&self, prefix: &str) -> Result<u64> {
        let keys = self.keys(prefix).await?;
        let mut conn = self.conn.clone();
        for chunk in keys.chunks(500) {
            conn.unlink::<_, u64>(chunk).await.map_err(unavailable)?;
        }
        self.semantic.clear(prefix);
        Ok(keys.iter().filter(|k| !is_partition(k)).count() as u64)
    }

    async fn stats(&self) -> Result<CacheStats> {
        let keys = self.keys("").await?;
        Ok(CacheStats {
            entries: keys.iter().filter(|k| !is_partition(k)).count() as u64,
            bytes: None,
        })
    }
}
