//! How each [`ProviderKind`] (the registry, in config) becomes a provider.

use std::sync::Arc;

use super::{AnthropicProvider, GeminiProvider, OpenAiProvider, Provider};
use crate::config::{ProviderConfig, ProviderKind};
use crate::error::Result;

impl ProviderKind {
    /// Builds a provider of this kind.
    pub fn build(self, cfg: &ProviderConfig) -> Result<Arc<dyn Provider>> {
        Ok(match self {
            Self::Openai | Self::Azure => Arc::new(OpenAiProvider::from_config(cfg)?),
            Self::Anthropic => Arc::new(AnthropicProvider::from_config(cfg)?),
            Self::Gemini => Arc::new(GeminiProvider::from_config(cfg)?),
        })
    }
}
