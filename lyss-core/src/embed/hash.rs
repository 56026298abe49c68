//! `HashEmbedder`: deterministic feature hashing of words. No model, no meaning beyond shared
//! words — for tests of code that needs *an* embedder, and as a last resort.

use async_trait::async_trait;

use super::{Embedder, normalize};
use crate::error::Result;

/// Bag-of-words vectors by hashing lower-cased words into `dimension` buckets.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dimension: usize,
}

impl HashEmbedder {
    pub fn new(dimension: usize) -> Self {
        Self {
            dimension: dimension.max(1),
        }
    }

    fn one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0; self.dimension];
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let h = xxhash_rust::xxh3::xxh3_64(word.to_lowercase().as_bytes());
            let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
            v[(h % self.dimension as u64) as usize] += sign;
        }
        normalize(&mut v);
        v
    }
}

#[async_trait]
impl Embedder for HashEmbedder {
    fn name(&self) -> &str {
        "hash"
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| self.one(t)).collect())
    }
}
