//! `OpenAiEmbedder`: any OpenAI-compatible `/v1/embeddings` endpoint, through a configured
//! provider.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Embedder, normalize};
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::wire::{EmbeddingInput, EmbeddingVector, EmbeddingsRequest};

/// Embeddings from a provider's model (e.g. `text-embedding-3-small`, or `nomic-embed-text` on
/// Ollama).
pub struct OpenAiEmbedder {
    provider: Arc<dyn Provider>,
    model: String,
    dimension: usize,
    name: String,
}

impl OpenAiEmbedder {
    /// `dimension` must be what the model returns; it is checked on every call.
    pub fn new(provider: Arc<dyn Provider>, model: impl Into<String>, dimension: usize) -> Self {
        let model = model.into();
        Self {
            name: format!("{}/{model}", provider.name()),
            provider,
            model,
            dimension,
        }
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
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
        let resp = self
            .provider
            .embeddings(&EmbeddingsRequest {
                model: self.model.clone(),
                input: EmbeddingInput::Many(texts.to_vec()),
                encoding_format: None,
                dimensions: None,
                user: None,
                extra: Default::default(),
            })
            .await?;
        let mut data = resp.data;
        data.sort_by_key(|e| e.index);
        if data.len() != texts.len() {
            return Err(Error::UpstreamUnavailable {
                provider: self.provider.name().to_owned(),
                message: format!("{} embeddings for {} inputs", data.len(), texts.len()),
            });
        }
        data.into_iter()
            .map(|e| match e.embedding {
                EmbeddingVector::Float(mut v) if v.len() == self.dimension => {
                    normalize(&mut v);
                    Ok(v)
                }
                other => Err(Error::UpstreamUnavailable {
                    provider: self.provider.name().to_owned(),
                    message: format!(
                        "expected {}-d float vectors, got {}",
                        self.dimension,
                        match other {
                            EmbeddingVector::Float(v) => format!("{}-d", v.len()),
                            EmbeddingVector::Base64(_) => "base64".into(),
                        }
                    ),
                }),
            })
            .collect()
    }
}
