//! `VectorIndex`: nearest neighbours among unit vectors by row number, the one vector search
//! memory recall and the semantic cache share.
//!
//! Small indexes are scanned exactly; above [`EXACT_MAX`] vectors, an HNSW graph
//! (`hnsw_rs`). Rows are removed by marking them dead (HNSW graphs do not shrink); owners
//! rebuild when dead rows outnumber the live ones.

use std::collections::HashSet;

use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::hnsw::Hnsw;

use crate::embed::{cosine, normalize};

/// HNSW build breadth: 100 keeps recall of the nearest neighbours near 1 at a fraction of the
/// build time of 200.
const EF_CONSTRUCTION: usize = 100;

/// Indexes with at most this many vectors are searched exactly, by a scan: at this size a scan
/// is as fast as the graph, exact, and the same after a restart. Above it, HNSW.
pub const EXACT_MAX: usize = 4_096;

/// Cosine distance between unit vectors (every vector in the index is normalized): one dot
/// product, where `hnsw_rs`'s `DistCosine` also computes both norms, and never a panic on
/// rounding (its `DistDot` asserts).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - cosine(a, b)).max(0.0)
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    normalize(&mut v);
    v
}

/// Vectors by row number, searched by cosine similarity.
#[derive(Default)]
pub struct VectorIndex {
    /// The graph, once the index outgrew [`EXACT_MAX`].
    hnsw: Option<Hnsw<'static, f32, UnitCosine>>,
    /// The vectors by row while the index is scanned (emptied when the graph is built).
    flat: Vec<(usize, Vec<f32>)>,
    rows: usize,
    dead: HashSet<usize>,
}

impl VectorIndex {
    /// Adds a vector (normalized here) under `row`; rows are the caller's, each used once.
    pub fn add(&mut self, row: usize, vector: Vec<f32>) {
        let v = unit(vector);
        self.rows += 1;
        match &self.hnsw {
            Some(hnsw) => hnsw.insert_slice((v.as_slice(), row)),
            None => {
                self.flat.push((row, v));
                self.grow();
            }
        }
    }

    /// Adds many vectors at once (an index loaded from its store); a graph is built with
    /// parallel inserts, so 100k vectors load in seconds instead of minutes.
    pub fn extend(&mut self, vectors: Vec<(usize, Vec<f32>)>) {
        let vectors: Vec<(usize, Vec<f32>)> =
            vectors.into_iter().map(|(r, v)| (r, unit(v))).collect();
        self.rows += vectors.len();
        match &self.hnsw {
            Some(hnsw) => {
                let batch: Vec<(&[f32], usize)> =
                    vectors.iter().map(|(r, v)| (v.as_slice(), *r)).collect();
                hnsw.parallel_insert_slice(&batch);
            }
            None => {
                self.flat.extend(vectors);
                self.grow();
            }
        }
    }

    /// Moves the scanned vectors into a graph once there are too many to scan.
    fn grow(&mut self) {
        if self.flat.len() <= EXACT_MAX {
            return;
        }
        let hnsw = Hnsw::new(16, 10_000, 16, EF_CONSTRUCTION, UnitCosine);
        let batch: Vec<(&[f32], usize)> =
            self.flat.iter().map(|(r, v)| (v.as_slice(), *r)).collect();
        hnsw.parallel_insert_slice(&batch);
        self.hnsw = Some(hnsw);
        self.flat = Vec::new();
    }

    /// Marks a row dead: searches skip it.
    pub fn remove(&mut self, row: usize) {
        self.dead.insert(row);
    }

    /// Live vectors.
    pub fn len(&self) -> usize {
        self.rows.saturating_sub(self.dead.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Dead rows still held.
    pub fn dead(&self) -> usize {
        self.dead.len()
    }

    /// Whether the index searches a graph (approximate) rather than scanning (exact).
    pub fn is_graph(&self) -> bool {
        self.hnsw.is_some()
    }

    /// The `limit` live rows most similar to `query`, best first, with their cosine
    /// similarity. Exact while the index is scanned; approximate once it is a graph.
    pub fn nearest(&self, query: &[f32], limit: usize) -> Vec<(usize, f32)> {
        self.nearest_with(query, limit, 64)
    }

    /// [`Self::nearest`] with the graph search's breadth at least `ef`: higher finds the true
    /// nearest more often, at some cost in time.
    pub fn nearest_with(&self, query: &[f32], limit: usize, ef: usize) -> Vec<(usize, f32)> {
        if limit == 0 {
            return Vec::new();
        }
        let query = unit(query.to_vec());
        let Some(hnsw) = &self.hnsw else {
            let mut all: Vec<(usize, f32)> = self
                .flat
                .iter()
                .filter(|(row, _)| !self.dead.contains(row))
                .map(|(row, v)| (*row, cosine(&query, v)))
                .collect();
            let by_similarity =
                |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
            if all.len() > limit {
                all.select_nth_unstable_by(limit - 1, by_similarity);
                all.truncate(limit);
            }
            all.sort_by(by_similarity);
            return all;
        };
        let want = limit + self.dead.len();
        hnsw.search(&query, want, (2 * want).max(ef))
            .into_iter()
            .filter(|n| !self.dead.contains(&n.d_id))
            .map(|n| (n.d_id, 1.0 - n.distance))
            .take(limit)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random unit vectors.
    pub(crate) fn random_unit_vectors(n: usize, dim: usize, mut seed: u64) -> Vec<Vec<f32>> {
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / u32::MAX as f32) - 0.25
        };
        (0..n)
            .map(|_| unit((0..dim).map(|_| next()).collect()))
            .collect()
    }

    #[test]
    fn small_indexes_are_scanned_exactly_and_large_ones_move_to_the_graph() {
        let vectors = random_unit_vectors(EXACT_MAX + 50, 8, 7);
        let mut idx = VectorIndex::default();
        idx.extend(vectors[..100].iter().cloned().enumerate().collect());
        assert!(!idx.is_graph());
        let hit = idx.nearest(&vectors[42], 1)[0];
        assert_eq!(hit.0, 42);
        assert!(hit.1 > 0.999);
        for (row, v) in vectors.iter().enumerate().skip(100) {
            idx.add(row, v.clone());
        }
        assert!(idx.is_graph() && idx.flat.is_empty());
        for probe in [42, EXACT_MAX + 10] {
            assert_eq!(idx.nearest(&vectors[probe], 1)[0].0, probe);
        }
        assert_eq!(idx.len(), EXACT_MAX + 50);
    }

    #[test]
    fn dead_rows_are_never_returned_on_either_path() {
        for n in [10, EXACT_MAX + 10] {
            let vectors = random_unit_vectors(n, 8, 11);
            let mut idx = VectorIndex::default();
            idx.extend(vectors.iter().cloned().enumerate().collect());
            idx.remove(3);
            let near = idx.nearest(&vectors[3], 5);
            assert!(near.iter().all(|(r, _)| *r != 3), "{n}");
            assert_eq!(near.len(), 5);
            assert!(near.windows(2).all(|w| w[0].1 >= w[1].1));
            assert_eq!((idx.len(), idx.dead()), (n - 1, 1));
        }
    }
}
