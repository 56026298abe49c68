//! `LazyEmbedder`: an embedder whose model is loaded by the first text it embeds.
//!
//! The local model and ONNX Runtime take about 70 MiB and a fraction of a second to load: a
//! server starts serving at once and loads them in the background (memory is on by default);
//! until they are loaded, [`Embedder::ready`] says so and searches rank by keywords alone.

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;

use super::Embedder;
use crate::error::{Error, Result};

/// Loads the embedder.
pub type Load = Box<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn Embedder>>> + Send + Sync>;

/// An [`Embedder`] loaded on first use. Its name and dimension are known before it loads
/// (they are stored beside vectors); a load that fails is reported by every call.
pub struct LazyEmbedder {
    name: String,
    dimension: usize,
    load: Load,
    loaded: tokio::sync::OnceCell<std::result::Result<Arc<dyn Embedder>, String>>,
}

impl LazyEmbedder {
    pub fn new(name: impl Into<String>, dimension: usize, load: Load) -> Self {
        Self {
            name: name.into(),
            dimension,
            load,
            loaded: tokio::sync::OnceCell::new(),
        }
    }

    async fn get(&self) -> Result<&Arc<dyn Embedder>> {
        let loaded = self
            .loaded
            .get_or_init(|| async {
                let loaded = (self.load)().await.map_err(|e| e.to_string());
                match &loaded {
                    Ok(_) => tracing::info!(model = %self.name, "embedding model loaded"),
                    Err(e) => tracing::error!(model = %self.name, error = %e, "embedding model failed to load"),
                }
                loaded
            })
            .await;
        loaded.as_ref().map_err(|message| Error::Unavailable {
            backend: "embedding model",
            message: message.clone(),
            contended: false,
        })
    }
}

#[async_trait]
impl Embedder for LazyEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.get().await?.embed(texts).await
    }

    /// Once the load finished (a failed one too: every call then reports it at once).
    fn ready(&self) -> bool {
        self.loaded.initialized()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::embed::HashEmbedder;

    #[tokio::test]
    async fn the_model_loads_once_on_first_use_and_a_failed_load_is_reported() {
        let loads = Arc::new(AtomicUsize::new(0));
        let counted = loads.clone();
        let lazy = LazyEmbedder::new(
            "hash",
            16,
            Box::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                Box::pin(async { Ok(Arc::new(HashEmbedder::new(16)) as Arc<dyn Embedder>) })
            }),
        );
        assert_eq!((lazy.name(), lazy.dimension()), ("hash", 16));
        assert_eq!(
            loads.load(Ordering::SeqCst),
            0,
            "nothing loads before a text"
        );
        let v = lazy.embed(&["a".into()]).await.unwrap();
        lazy.embed(&["b".into()]).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(v, HashEmbedder::new(16).embed(&["a".into()]).await.unwrap());

        let broken = LazyEmbedder::new(
            "broken",
            16,
            Box::new(|| {
                Box::pin(async {
                    Err(Error::Unavailable {
                        backend: "embedding model",
                        message: "model.onnx is corrupt".into(),
                        contended: false,
                    })
                })
            }),
        );
        for _ in 0..2 {
            let err = broken.embed(&["a".into()]).await.unwrap_err();
            assert!(err.to_string().contains("corrupt"), "{err}");
        }
    }
}
