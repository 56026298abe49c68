//! The `Embedder` seam: text → fixed-size vectors, for memory recall and the semantic cache.

mod cached;
mod hash;
mod lazy;
#[cfg(feature = "local-embeddings")]
mod local;
mod openai;

use std::path::PathBuf;

use async_trait::async_trait;

pub use self::cached::CachedEmbedder;
pub use self::hash::HashEmbedder;
pub use self::lazy::{LazyEmbedder, Load};
#[cfg(feature = "local-embeddings")]
pub use self::local::LocalEmbedder;
pub use self::openai::OpenAiEmbedder;
use crate::error::Result;

/// The model's folder under the models directory; also the embedder's name stored beside every
/// vector, so that vectors of another model are embedded again.
pub const LOCAL_MODEL_DIR: &str = "all-minilm-l6-v2-q8";
/// ONNX Runtime under the models directory.
pub const ORT_LIBRARY: &str = "onnxruntime/libonnxruntime.so.1.31.0";

/// Where `scripts/fetch-models.sh` puts models with no argument: `$LYSS_MODELS_DIR`, else
/// the user's data directory + `lyss/models`.
pub fn default_models_dir() -> PathBuf {
    std::env::var_os("LYSS_MODELS_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::data_dir().map(|d| d.join("lyss").join("models")))
        .unwrap_or_else(|| PathBuf::from("models"))
}

/// Turns texts into vectors of one fixed dimension.
///
/// # Contract
/// - `embed` returns one vector per input, in input order; an empty input gives an empty output.
/// - Every vector has exactly `dimension()` components and unit L2 norm, so cosine similarity
///   is a dot product (a text with nothing to embed may give the zero vector).
/// - The same text gives the same vector (up to float noise) for the life of the embedder.
/// - CPU-heavy implementations run off the async executor (`spawn_blocking`).
/// - Failures are [`crate::Error::Unavailable`] (local model) or the provider's errors (remote).
#[async_trait]
pub trait Embedder: Send + Sync {
    /// A stable name for the model (stored beside vectors, so a model change is noticed).
    fn name(&self) -> &str;

    /// The vector dimension.
    fn dimension(&self) -> usize;

    /// Embeds a batch of texts.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;

    /// Whether `embed` would answer without first loading a model (a search on the request
    /// path ranks by keywords alone rather than wait for one). Default: always.
    fn ready(&self) -> bool {
        true
    }
}

/// Scales a vector to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity of two unit vectors. Eight running sums let the compiler use SIMD: it is
/// the inner loop of every vector search.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0.0f32; 8];
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}
