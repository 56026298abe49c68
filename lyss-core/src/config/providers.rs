//! `[[providers]]` and `[[models]]`: upstreams, the models they serve, and routes.

use serde::{Deserialize, Serialize};

use super::{ProviderKind, Secret};

/// One upstream provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name models refer to.
    pub name: String,
    /// Wire protocol. Default `openai`.
    #[serde(default)]
    pub kind: ProviderKind,
    /// Base URL including the version path, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Environment variable holding the API key. Optional (local servers need none).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The API key itself. Prefer `api_key_env`; a key in a file is a secret at rest.
    #[serde(default, skip_serializing)]
    pub api_key: Option<Secret>,
    /// Seconds to wait for the upstream to connect. Default 10.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds a whole non-streaming request (or a stream's first byte) may take. Default 600.
    #[serde(default = "default_request_timeout")]
    pub timeout_secs: u64,
    /// Ask the provider for its model list at start-up and serve each under its own name
    /// (used for `OLLAMA_BASE_URL`). Default false.
    #[serde(default)]
    pub discover_models: bool,
    /// Azure OpenAI's `api-version`, e.g. `2024-10-21`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Help the provider's prompt cache: Anthropic upstreams get `cache_control` breakpoints
    /// (when the client set none), OpenAI gets a stable `prompt_cache_key` per caller and
    /// conversation (when the client set none). Default: on for Anthropic and for
    /// `api.openai.com`; off for other OpenAI-compatible servers, which may reject the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache: Option<bool>,
    /// Upstream models this provider serves through its Responses API (`/responses`) instead of
    /// chat completions: OpenAI's models that have no chat completions (`gpt-5-pro`,
    /// `gpt-5-codex`, …). Lyss translates both ways, so chat clients can use them too. Default:
    /// for `api.openai.com`, models whose name ends in `-pro` or contains `codex`; none elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses_models: Option<Vec<String>>,
}

impl ProviderConfig {
    /// A provider as a config file with only these three keys makes it: no key, the default
    /// timeouts, everything else off or default.
    pub fn new(name: impl Into<String>, kind: ProviderKind, base_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind,
            base_url: base_url.into(),
            api_key_env: None,
            api_key: None,
            connect_timeout_secs: default_connect_timeout(),
            timeout_secs: default_request_timeout(),
            discover_models: false,
            api_version: None,
            prompt_cache: None,
            responses_models: None,
        }
    }

    /// Which upstream models go through the Responses API, decided once (the provider asks on
    /// every request).
    pub fn responses_models(&self) -> ResponsesModels {
        match &self.responses_models {
            Some(models) => ResponsesModels::Listed(models.clone()),
            None if self.kind == ProviderKind::Openai && self.is_openai() => {
                ResponsesModels::OpenAiOnly
            }
            None => ResponsesModels::Listed(Vec::new()),
        }
    }

    /// Whether lyss helps this provider's prompt cache (see [`ProviderConfig::prompt_cache`]).
    pub fn prompt_cache(&self) -> bool {
        self.prompt_cache.unwrap_or(match self.kind {
            ProviderKind::Anthropic => true,
            ProviderKind::Openai => self.is_openai(),
            _ => false,
        })
    }

    /// Whether `base_url` is OpenAI's own API.
    fn is_openai(&self) -> bool {
        reqwest::Url::parse(&self.base_url).is_ok_and(|u| u.host_str() == Some("api.openai.com"))
    }
}

/// The upstream models a provider serves through its Responses API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponsesModels {
    /// These, by name (configured; none by default off OpenAI).
    Listed(Vec<String>),
    /// OpenAI's models that have no chat completions: named `…-pro` or `…codex…`.
    OpenAiOnly,
}

impl ResponsesModels {
    pub fn includes(&self, upstream: &str) -> bool {
        match self {
            Self::Listed(models) => models.iter().any(|m| m == upstream),
            Self::OpenAiOnly => {
                upstream.ends_with("-pro")
                    || upstream.contains("-pro-")
                    || upstream.contains("codex")
            }
        }
    }
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_request_timeout() -> u64 {
    600
}

/// One public model.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Public name clients ask for.
    pub name: String,
    /// Provider name (from `[[providers]]`).
    pub provider: String,
    /// Model name upstream. Default: `name`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Other public names for the same model (LobeChat's default is `gpt-5-mini`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// USD per 1M input tokens. Default: the built-in price table, else 0.
    #[serde(default)]
    pub input_per_mtok: Option<f64>,
    /// USD per 1M output tokens. Default: the built-in price table, else 0.
    #[serde(default)]
    pub output_per_mtok: Option<f64>,
    /// USD per 1M cached input tokens. Default: the built-in price table, else the input price.
    #[serde(default)]
    pub cached_input_per_mtok: Option<f64>,
    /// USD per 1M input tokens written to the provider's prompt cache. Default: the built-in
    /// price table (1.25× input for Anthropic models), else the input price.
    #[serde(default)]
    pub cache_write_per_mtok: Option<f64>,
    /// Largest completion the model can produce. Optional.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// This target's share of traffic when there are `targets` too. Default 1; 0 makes a
    /// target a standby, used only when the others fail.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Seconds a whole attempt may take at this target. Default: the provider's `timeout_secs`.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Seconds a stream's first chunk may take at this target. Default: `timeout_secs`.
    #[serde(default)]
    pub first_byte_timeout_secs: Option<u64>,
    /// More places to serve this model from: balanced by weight with the one above, and tried
    /// in this order when it fails.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
}

/// Another place a model is served from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Provider name (from `[[providers]]`).
    pub provider: String,
    /// Model name at that provider (a deployment name for Azure). Default: the model's.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Share of traffic. Default 1; 0: a standby, used only when the others fail.
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub first_byte_timeout_secs: Option<u64>,
}
