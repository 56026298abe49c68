//! `CachedEmbedder`: remembers the vectors of texts it embedded, bounded in bytes.
//!
//! The same text is embedded again and again on a gateway: a user's message is embedded as
//! the request's memory query, then again when the turn is stored; a semantic-cache question
//! is asked twice. A remote embedder charges for each call, a local one spends a core.

use std::sync::Arc;

use async_trait::async_trait;

use super::Embedder;
use crate::error::Result;

/// An [`Embedder`] in front of another, with a bounded cache of its vectors by text.
pub struct CachedEmbedder {
    inner: Arc<dyn Embedder>,
    vectors: moka::sync::Cache<u128, Arc<[f32]>>,
}

impl CachedEmbedder {
    /// Caches up to about `max_bytes` of vectors.
    pub fn new(inner: Arc<dyn Embedder>, max_bytes: u64) -> Self {
        Self {
            inner,
            vectors: moka::sync::Cache::builder()
                .weigher(|_, v: &Arc<[f32]>| u32::try_from(v.len() * 4 + 64).unwrap_or(u32::MAX))
                .max_capacity(max_bytes)
                .build(),
        }
    }
}

#[async_trait]
impl Embedder for CachedEmbedder {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn dimension(&self) -> usize {
        self.inner.dimension()
    }

    fn ready(&self) -> bool {
        self.inner.ready()
    }

    /// Embeds only the texts it has not seen (in one call to the inner embedder).
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let keys: Vec<u128> = texts
            .iter()
            .map(|t| xxhash_rust::xxh3::xxh3_128(t.as_bytes()))
            .collect();
        let mut out: Vec<Option<Vec<f32>>> = keys
            .iter()
            .map(|k| self.vectors.get(k).map(|v| v.to_vec()))
            .collect();
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        if !missing.is_empty() {
            let asked: Vec<String> = missing.iter().map(|&i| texts[i].clone()).collect();
            let fresh = self.inner.embed(&asked).await?;
            for (&i, v) in missing.iter().zip(fresh) {
                self.vectors.insert(keys[i], Arc::from(v.as_slice()));
                out[i] = Some(v);
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::embed::HashEmbedder;

    /// Counts the texts it is asked to embed.
    struct Counting(HashEmbedder, AtomicUsize);

    #[async_trait]
    impl Embedder for Counting {
        fn name(&self) -> &str {
            self.0.name()
        }
        fn dimension(&self) -> usize {
            self.0.dimension()
        }
        async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
            self.1.fetch_add(texts.len(), Ordering::SeqCst);
            self.0.embed(texts).await
        }
    }

    #[tokio::test]
    async fn a_text_is_embedded_once_and_answers_keep_their_order() {
        let inner = Arc::new(Counting(HashEmbedder::new(32), AtomicUsize::new(0)));
        let cached = CachedEmbedder::new(inner.clone(), 1 << 20);
        let texts = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let first = cached.embed(&texts(&["a", "b"])).await.unwrap();
        let again = cached.embed(&texts(&["c", "b", "a"])).await.unwrap();
        assert_eq!(inner.1.load(Ordering::SeqCst), 3, "only `c` was new");
        assert_eq!(again[1], first[1]);
        assert_eq!(again[2], first[0]);
        assert_eq!(
            again,
            inner.0.embed(&texts(&["c", "b", "a"])).await.unwrap(),
            "the same vectors as the embedder's own"
        );
        assert_eq!(cached.name(), inner.name());
    }
}
