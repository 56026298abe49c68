//! The embedder memory and the semantic cache share.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, EmbedderKind};
use crate::embed::{CachedEmbedder, Embedder, OpenAiEmbedder};
use crate::error::{Error, Result};
use crate::provider::Provider;

/// Vectors the embedder remembers by text (a user's message is embedded as its request's
/// memory query, then again when the turn is stored): about 10,000 of all-MiniLM's.
pub(super) const EMBEDDING_CACHE_BYTES: u64 = 16 << 20;

/// The configured embedder, or `None` (with a warning that says what is missing and how to
/// fetch it) when it cannot be loaded: lyss then serves without semantic features.
pub async fn open_embedder(
    config: &Config,
    providers: &HashMap<String, Arc<dyn Provider>>,
) -> Result<Option<Arc<dyn Embedder>>> {
    let e = &config.embedder;
    let inner: Arc<dyn Embedder> = match e.kind {
        EmbedderKind::None => return Ok(None),
        EmbedderKind::Openai => {
            let (Some(name), Some(model), Some(dimension)) = (&e.provider, &e.model, e.dimension)
            else {
                return Err(Error::Config(
                    "embedder: kind = \"openai\" needs provider, model and dimension".into(),
                ));
            };
            let provider = providers.get(name).ok_or_else(|| {
                Error::Config(format!("embedder.provider: no provider named `{name}`"))
            })?;
            Arc::new(OpenAiEmbedder::new(
                provider.clone(),
                model.clone(),
                dimension,
            ))
        }
        #[cfg(not(feature = "local-embeddings"))]
        EmbedderKind::Local => {
            tracing::warn!(
                "lyss-core was compiled without its `local-embeddings` feature: semantic features are off (keyword retrieval only)"
            );
            return Ok(None);
        }
        #[cfg(feature = "local-embeddings")]
        EmbedderKind::Local => {
            use crate::embed::{
                LOCAL_MODEL_DIR, LazyEmbedder, LocalEmbedder, ORT_LIBRARY, default_models_dir,
            };
            let dir = e.models_dir.clone().unwrap_or_else(default_models_dir);
            let (model, ort) = (dir.join(LOCAL_MODEL_DIR), dir.join(ORT_LIBRARY));
            if let Err(err) = LocalEmbedder::check(&model, &ort) {
                tracing::warn!(error = %err, "no local embedding model: semantic features are off (keyword retrieval only)");
                return Ok(None);
            }
            // Loaded by the first text to embed (`build` starts that at once when memory is
            // on): the server serves meanwhile.
            Arc::new(LazyEmbedder::new(
                LOCAL_MODEL_DIR,
                LocalEmbedder::DIMENSION,
                Box::new(move || {
                    let (model, ort) = (model.clone(), ort.clone());
                    Box::pin(async move {
                        let loaded =
                            tokio::task::spawn_blocking(move || LocalEmbedder::load(&model, &ort))
                                .await
                                .map_err(|e| {
                                    Error::Internal(format!("embedder load task: {e}"))
                                })??;
                        Ok(Arc::new(loaded) as Arc<dyn Embedder>)
                    })
                }),
            ))
        }
    };
    Ok(Some(Arc::new(CachedEmbedder::new(
        inner,
        EMBEDDING_CACHE_BYTES,
    ))))
}
