//! The semantic index both cache backends share: per partition (a scope plus a hash of
//! everything in a request but its last user message), the embeddings of cached questions and
//! the keys of their answers.
//!
//! A partition's index lives in this process. [`super::InMemoryCache`] is its only writer;
//! `RedisCache` mirrors a Redis stream into it, so every replica sees every answer.
//! A lookup never blocks on a writer: a partition busy being written is a miss.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;

use crate::vectors::VectorIndex;

/// Candidates looked at per lookup: the best few above the threshold, in case the best one's
/// answer has just expired or been evicted.
pub(crate) const CANDIDATES: usize = 4;
/// Graph search breadth by partition size. A question the search misses costs an upstream
/// call, far more than a few milliseconds: with 100k random 384-d vectors a breadth of 64
/// found 90% of near-duplicates (1.6 ms), 256 found 99.8% (5.4 ms); at 10k, 64 finds them all
/// (0.9 ms). See docs/benchmarks.md.
fn search_ef(vectors: usize) -> usize {
    if vectors <= 20_000 { 64 } else { 256 }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Every partition of one cache.
pub(crate) struct SemanticIndex {
    partitions: moka::sync::Cache<String, Arc<Partition>>,
}

/// A partition is dropped when its newest entry expires.
struct UntilNewestExpires;

impl moka::Expiry<String, Arc<Partition>> for UntilNewestExpires {
    fn expire_after_create(&self, _: &String, p: &Arc<Partition>, _: Instant) -> Option<Duration> {
        Some(p.time_left())
    }

    fn expire_after_read(
        &self,
        _: &String,
        p: &Arc<Partition>,
        _: Instant,
        _: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        Some(p.time_left())
    }

    fn expire_after_update(
        &self,
        _: &String,
        p: &Arc<Partition>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(p.time_left())
    }
}

impl Default for SemanticIndex {
    fn default() -> Self {
        Self {
            partitions: moka::sync::Cache::builder()
                .expire_after(UntilNewestExpires)
                .build(),
        }
    }
}

impl SemanticIndex {
    /// The partition named `name`, created empty if needed; it lives at least `ttl` more.
    pub(crate) fn partition(&self, name: &str, ttl: Duration) -> Arc<Partition> {
        let until = now_ms().saturating_add(duration_ms(ttl));
        let p = self.partitions.get_with_by_ref(name, || {
            Arc::new(Partition {
                inner: RwLock::new(Inner::default()),
                expires_ms: AtomicU64::new(until),
                scheduled_ms: AtomicU64::new(until),
                busy: AtomicBool::new(false),
            })
        });
        p.extend_life(until);
        self.keep(name, &p);
        p
    }

    /// Makes the partition live until its newest entry expires (after entries were added).
    pub(crate) fn keep(&self, name: &str, p: &Arc<Partition>) {
        // A second of slack: reads also push the expiry out (`expire_after_read`).
        if p.expires_ms.load(Ordering::Relaxed) > p.scheduled_ms.load(Ordering::Relaxed) + 1_000 {
            // An update makes moka ask for the expiry again.
            p.scheduled_ms
                .store(p.expires_ms.load(Ordering::Relaxed), Ordering::Relaxed);
            self.partitions.insert(name.to_owned(), p.clone());
        }
    }

    /// The partition named `name`, if it exists.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Partition>> {
        self.partitions.get(name)
    }

    /// Drops every partition whose name starts with `prefix`.
    pub(crate) fn clear(&self, prefix: &str) {
        let doomed: Vec<Arc<String>> = self
            .partitions
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k)
            .collect();
        for k in &doomed {
            self.partitions.invalidate(k.as_str());
        }
    }
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One partition's questions.
pub(crate) struct Partition {
    inner: RwLock<Inner>,
    /// When the newest entry expires (ms since the epoch).
    expires_ms: AtomicU64,
    /// The expiry moka was last told about.
    scheduled_ms: AtomicU64,
    /// A rebuild or a catch-up runs (only one at a time).
    pub(crate) busy: AtomicBool,
}

#[derive(Default)]
struct Inner {
    index: VectorIndex,
    rows: Vec<Row>,
    by_key: HashMap<Arc<str>, usize>,
    /// How far a mirrored stream has been read (Redis stream id).
    cursor: Option<String>,
    /// Adds since expired and missing rows were last swept out.
    since_sweep: usize,
}

struct Row {
    key: Arc<str>,
    expires_ms: u64,
    /// Kept to rebuild the index without the dead rows.
    vector: Vec<f32>,
    dead: bool,
}

/// One question to index.
pub(crate) struct Question {
    pub key: String,
    pub vector: Vec<f32>,
    pub expires_ms: u64,
}

impl Partition {
    fn time_left(&self) -> Duration {
        Duration::from_millis(
            self.expires_ms
                .load(Ordering::Relaxed)
                .saturating_sub(now_ms()),
        )
    }

    fn extend_life(&self, until_ms: u64) {
        self.expires_ms.fetch_max(until_ms, Ordering::Relaxed);
    }

    /// Adds questions; a key already indexed only has its expiry moved. `alive` says whether
    /// a key's answer is still cached (rows whose answer went are swept out now and then).
    pub(crate) fn add(&self, questions: Vec<Question>, alive: impl Fn(&str) -> bool) {
        if questions.is_empty() {
            return;
        }
        let mut inner = self.inner.write();
        let mut fresh = Vec::new();
        for q in questions {
            self.extend_life(q.expires_ms);
            if let Some(&row) = inner.by_key.get(q.key.as_str()) {
                let r = &mut inner.rows[row];
                if !r.dead {
                    r.expires_ms = r.expires_ms.max(q.expires_ms);
                    continue;
                }
            }
            let key: Arc<str> = q.key.into();
            let row = inner.rows.len();
            inner.by_key.insert(key.clone(), row);
            fresh.push((row, q.vector.clone()));
            inner.rows.push(Row {
                key,
                expires_ms: q.expires_ms,
                vector: q.vector,
                dead: false,
            });
        }
        inner.since_sweep += fresh.len();
        if fresh.len() == 1 {
            if let Some((row, v)) = fresh.pop() {
                inner.index.add(row, v);
            }
        } else {
            inner.index.extend(fresh);
        }
        if inner.since_sweep >= (inner.rows.len() / 8).max(64) {
            inner.since_sweep = 0;
            let now = now_ms();
            let Inner { rows, index, .. } = &mut *inner;
            for (i, r) in rows.iter_mut().enumerate() {
                if !r.dead && (r.expires_ms <= now || !alive(&r.key)) {
                    r.dead = true;
                    index.remove(i);
                }
            }
        }
    }

    /// Whether dead rows outnumber live ones (time to [`Self::rebuild`]).
    pub(crate) fn needs_rebuild(&self) -> bool {
        let inner = self.inner.read();
        let dead = inner.index.dead();
        dead > 64 && dead > inner.index.len()
    }

    /// Starts a [`Self::rebuild`] off the executor when one is due and none runs.
    pub(crate) fn rebuild_in_background(self: &Arc<Self>) {
        if !self.needs_rebuild() || self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let part = self.clone();
        tokio::task::spawn_blocking(move || {
            part.rebuild();
            part.busy.store(false, Ordering::Release);
        });
    }

    /// Rebuilds the index from its live rows. The new index is built without holding the
    /// lock (a large graph takes seconds); questions added meanwhile are carried over.
    pub(crate) fn rebuild(&self) {
        let (snapshot, seen) = {
            let inner = self.inner.read();
            let live: Vec<(Arc<str>, u64, Vec<f32>)> = inner
                .rows
                .iter()
                .filter(|r| !r.dead)
                .map(|r| (r.key.clone(), r.expires_ms, r.vector.clone()))
                .collect();
            (live, inner.rows.len())
        };
        let mut fresh = Inner::default();
        let mut vectors = Vec::with_capacity(snapshot.len());
        for (row, (key, expires_ms, vector)) in snapshot.into_iter().enumerate() {
            fresh.by_key.insert(key.clone(), row);
            vectors.push((row, vector.clone()));
            fresh.rows.push(Row {
                key,
                expires_ms,
                vector,
                dead: false,
            });
        }
        fresh.index.extend(vectors);
        let mut inner = self.inner.write();
        for r in inner.rows.drain(seen..) {
            let row = fresh.rows.len();
            fresh.by_key.insert(r.key.clone(), row);
            fresh.index.add(row, r.vector.clone());
            fresh.rows.push(r);
        }
        fresh.cursor = inner.cursor.take();
        *inner = fresh;
    }

    /// Up to [`CANDIDATES`] unexpired keys whose questions are at least `min_similarity`
    /// similar to `vector`, best first. `None` when a writer holds the partition.
    pub(crate) fn candidates(
        &self,
        vector: &[f32],
        min_similarity: f32,
    ) -> Option<Vec<(Arc<str>, f32)>> {
        let inner = self.inner.try_read()?;
        let now = now_ms();
        Some(
            inner
                .index
                .nearest_with(vector, CANDIDATES, search_ef(inner.index.len()))
                .into_iter()
                .filter(|(_, sim)| *sim >= min_similarity)
                .filter_map(|(row, sim)| {
                    let r = inner.rows.get(row)?;
                    (!r.dead && r.expires_ms > now).then(|| (r.key.clone(), sim))
                })
                .collect(),
        )
    }

    /// Marks a key's row dead (its answer is gone), unless a writer holds the partition.
    pub(crate) fn forget(&self, key: &str) {
        if let Some(mut inner) = self.inner.try_write()
            && let Some(&row) = inner.by_key.get(key)
        {
            inner.rows[row].dead = true;
            inner.index.remove(row);
        }
    }

    /// How far a mirrored stream has been read.
    #[cfg(feature = "redis")]
    pub(crate) fn cursor(&self) -> Option<String> {
        self.inner.read().cursor.clone()
    }

    /// Moves the cursor forward (never back: two readers may race).
    #[cfg(feature = "redis")]
    pub(crate) fn advance(&self, to: &str) {
        let mut inner = self.inner.write();
        if inner
            .cursor
            .as_deref()
            .is_none_or(|c| stream_id(to) > stream_id(c))
        {
            inner.cursor = Some(to.to_owned());
        }
    }
}

/// A Redis stream id (`ms-seq`) as numbers, for ordering.
#[cfg(feature = "redis")]
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(key: &str, vector: &[f32], ttl_ms: u64) -> Question {
        Question {
            key: key.into(),
            vector: vector.to_vec(),
            expires_ms: now_ms() + ttl_ms,
        }
    }

    #[test]
    fn candidates_are_the_closest_live_unexpired_keys_above_the_threshold() {
        let idx = SemanticIndex::default();
        let p = idx.partition("w:1:s:a", Duration::from_secs(60));
        p.add(
            vec![
                q("near", &[1.0, 0.05, 0.0], 60_000),
                q("far", &[0.0, 1.0, 0.0], 60_000),
                q("expired", &[1.0, 0.0, 0.0], 0),
            ],
            |_| true,
        );
        let got = p.candidates(&[1.0, 0.0, 0.0], 0.9).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(&*got[0].0, "near");
        assert!(got[0].1 > 0.99);
        p.forget("near");
        assert!(p.candidates(&[1.0, 0.0, 0.0], 0.9).unwrap().is_empty());
        // Re-adding a forgotten key indexes it again.
        p.add(vec![q("near", &[1.0, 0.05, 0.0], 60_000)], |_| true);
        assert_eq!(p.candidates(&[1.0, 0.0, 0.0], 0.9).unwrap().len(), 1);
        idx.clear("w:1:");
        assert!(idx.get("w:1:s:a").is_none());
    }

    #[test]
    fn a_rebuild_keeps_live_rows_and_drops_dead_ones() {
        let idx = SemanticIndex::default();
        let p = idx.partition("p", Duration::from_secs(60));
        let vectors: Vec<Vec<f32>> = (0..300)
            .map(|i| {
                let a = i as f32 * 0.01;
                vec![a.cos(), a.sin(), 0.0]
            })
            .collect();
        p.add(
            vectors
                .iter()
                .enumerate()
                .map(|(i, v)| q(&format!("k{i}"), v, 60_000))
                .collect(),
            |_| true,
        );
        for i in 0..200 {
            p.forget(&format!("k{i}"));
        }
        assert!(p.needs_rebuild());
        p.rebuild();
        assert!(!p.needs_rebuild());
        let got = p.candidates(&vectors[250], 0.99).unwrap();
        assert_eq!(&*got[0].0, "k250");
        assert!(p.candidates(&vectors[10], 0.9999).unwrap().is_empty());
    }

    #[test]
    #[cfg(feature = "redis")]
    fn the_cursor_only_moves_forward() {
        let idx = SemanticIndex::default();
        let p = idx.partition("p", Duration::from_secs(1));
        p.advance("10-2");
        p.advance("9-9");
        p.advance("10-1");
        assert_eq!(p.cursor().as_deref(), Some("10-2"));
        p.advance("11-0");
        assert_eq!(p.cursor().as_deref(), Some("11-0"));
    }
}
