//! The registry of provider kinds: everything that differs by vendor outside its own folder —
//! its name in config files and on the command line, its public API's address. Config, setup,
//! the CLI and `lyss doctor` all read it from here; how each kind is built is the provider
//! layer's ([`crate::provider`]). A new vendor is a new variant, and the compiler points at
//! every match.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible API: OpenAI, Ollama, vLLM, Groq, DeepSeek, OpenRouter, Together …
    #[default]
    Openai,
    /// Azure OpenAI: models are deployment names, `api_version` is required, the key goes in
    /// the `api-key` header. `base_url` is the resource, `https://NAME.openai.azure.com`.
    Azure,
    /// Anthropic's Messages API, `https://api.anthropic.com/v1`.
    Anthropic,
    /// Google's Gemini API, `https://generativelanguage.googleapis.com/v1beta`.
    Gemini,
}

impl ProviderKind {
    /// Every kind, as config files and the CLI list them.
    pub const ALL: [ProviderKind; 4] = [Self::Openai, Self::Azure, Self::Anthropic, Self::Gemini];

    /// The name in config files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Azure => "azure",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|k| k.as_str()).collect();
                Error::invalid_param(
                    format!("unknown provider kind `{name}` ({})", known.join(", ")),
                    "kind",
                )
            })
    }

    /// The vendor's public API, the default `base_url`; `None` where every deployment has
    /// its own (Azure).
    pub fn default_url(self) -> Option<&'static str> {
        match self {
            Self::Openai => Some("https://api.openai.com/v1"),
            Self::Anthropic => Some("https://api.anthropic.com/v1"),
            Self::Gemini => Some("https://generativelanguage.googleapis.com/v1beta"),
            Self::Azure => None,
        }
    }

    /// What a `base_url` of this kind looks like, for messages that ask for a better one.
    pub fn url_example(self) -> &'static str {
        match self {
            Self::Openai => "http://host:port/v1",
            Self::Azure => "https://NAME.openai.azure.com (and check api_version)",
            Self::Anthropic | Self::Gemini => self.default_url().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_named_as_serde_names_it_and_parses_back() {
        for k in ProviderKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
            assert_eq!(ProviderKind::parse(k.as_str()).unwrap(), k);
        }
        assert!(matches!(
            ProviderKind::parse("bedrock"),
            Err(Error::InvalidRequest { .. })
        ));
    }
}
