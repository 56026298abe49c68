//! `[embedder]`: the embedding model memory and the semantic cache use.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which embedding model to use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedderConfig {
    /// `local` (default): all-MiniLM-L6-v2 in process with ONNX Runtime, from `models_dir`;
    /// `openai`: a configured provider's `/v1/embeddings`; `none`: keyword retrieval only.
    pub kind: EmbedderKind,
    /// Where `scripts/fetch-models.sh` put the model and ONNX Runtime. Default:
    /// `$LYSS_MODELS_DIR`, else the user's data directory + `lyss/models`.
    pub models_dir: Option<PathBuf>,
    /// For `openai`: the provider name, its embedding model and the vector dimension.
    pub provider: Option<String>,
    pub model: Option<String>,
    pub dimension: Option<usize>,
}

/// The kind of embedder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedderKind {
    #[default]
    Local,
    Openai,
    None,
}
