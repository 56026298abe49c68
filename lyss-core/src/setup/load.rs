//! Loading the configuration: defaults → `lyss.toml` → `LYSS_*` → flags, with the providers
//! the environment names, checked; where the data and the database are.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};

use crate::config::{Config, ModelConfig, ProviderConfig, ProviderKind};
use crate::error::{Error, Result};

/// Command-line flags shared by `lyss-server` and `lyss`; they override everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE` / `LYSS_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--data-dir DIR` / `LYSS_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--database-url URL` / `LYSS_DATABASE_URL`.
    pub database_url: Option<String>,
    /// `--bind ADDR` / `LYSS_BIND` (server only).
    pub bind: Option<SocketAddr>,
}

/// Every key `LYSS_<KEY>` environment variables may set (`LYSS_MEMORY__ENABLED` for
/// `memory.enabled`: sections joined by `__`), as figment names them: each leaf of the
/// configuration with its defaults, taken from the configuration itself, so that a new key is
/// reachable from the environment without a second list to remember. (Maps keyed by name, such
/// as `memory.workspaces`, and the lists of tables — providers, models — stay file-only.)
pub fn env_keys() -> Vec<String> {
    fn leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(fields) if !fields.is_empty() => {
                for (k, v) in fields {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&key, v, out);
                }
            }
            // An empty object is a map keyed by name (nothing to reach by a fixed name).
            serde_json::Value::Object(_) => {}
            _ => out.push(prefix.to_owned()),
        }
    }
    // Secrets never serialize: named here, reachable all the same.
    let mut out = vec!["admin_token".to_owned(), "metrics_token".to_owned()];
    if let Ok(v) = serde_json::to_value(Config::default()) {
        leaves("", &v, &mut out);
    }
    out
}

/// OpenAI models offered when only `OPENAI_API_KEY` is set.
pub(super) const OPENAI_ENV_MODELS: &[&str] = &[
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "o4-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
];

/// Loads the layered configuration. An explicitly named file that does not exist is an error;
/// without one, `./lyss.toml` is read if present.
pub fn load_config(flags: &Overrides) -> Result<Config> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    let file = flags
        .config
        .clone()
        .or_else(|| std::env::var_os("LYSS_CONFIG").map(PathBuf::from));
    match file {
        Some(path) if !path.exists() => {
            return Err(Error::Config(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        Some(path) => fig = fig.merge(Toml::file_exact(path)),
        None if Path::new("lyss.toml").exists() => fig = fig.merge(Toml::file_exact("lyss.toml")),
        None => {}
    }
    let keys = env_keys();
    fig = fig.merge(
        Env::prefixed("LYSS_")
            .split("__")
            .filter(move |k| keys.iter().any(|known| k == known.as_str())),
    );
    if let Some(d) = &flags.data_dir {
        fig = fig.merge(Serialized::default("data_dir", d));
    }
    if let Some(u) = &flags.database_url {
        fig = fig.merge(Serialized::default("database_url", u));
    }
    if let Some(b) = &flags.bind {
        fig = fig.merge(Serialized::default("bind", b));
    }
    let mut config: Config = fig.extract().map_err(|e| Error::Config(e.to_string()))?;
    add_env_providers(&mut config, |k| {
        std::env::var(k).ok().filter(|v| !v.is_empty())
    });
    validate(&config)?;
    Ok(config)
}

/// Providers from the environment with no file: `OPENAI_API_KEY` (+ `OPENAI_BASE_URL`) and
/// `OLLAMA_BASE_URL`. A provider of the same name in the file wins.
pub(super) fn add_env_providers(config: &mut Config, env: impl Fn(&str) -> Option<String>) {
    let has = |c: &Config, name: &str| c.providers.iter().any(|p| p.name == name);
    if env("OPENAI_API_KEY").is_some() && !has(config, "openai") {
        let base_url = env("OPENAI_BASE_URL")
            .or_else(|| ProviderKind::Openai.default_url().map(str::to_owned))
            .unwrap_or_default();
        config.providers.push(ProviderConfig {
            api_key_env: Some("OPENAI_API_KEY".into()),
            ..ProviderConfig::new("openai", ProviderKind::Openai, base_url)
        });
        for name in OPENAI_ENV_MODELS {
            let taken = config
                .models
                .iter()
                .any(|m| m.name == *name || m.aliases.iter().any(|a| a == name));
            if !taken {
                config.models.push(ModelConfig {
                    name: (*name).into(),
                    provider: "openai".into(),
                    ..ModelConfig::default()
                });
            }
        }
    }
    if let Some(base) = env("OLLAMA_BASE_URL")
        && !has(config, "ollama")
    {
        let base = base.trim_end_matches('/');
        let base_url = if base.ends_with("/v1") {
            base.to_owned()
        } else {
            format!("{base}/v1")
        };
        config.providers.push(ProviderConfig {
            discover_models: true,
            ..ProviderConfig::new("ollama", ProviderKind::Openai, base_url)
        });
    }
}

pub(super) fn validate(config: &Config) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for (i, p) in config.providers.iter().enumerate() {
        if !seen.insert(p.name.as_str()) {
            return Err(Error::Config(format!(
                "providers[{i}].name: `{}` is used twice",
                p.name
            )));
        }
        let url = reqwest::Url::parse(&p.base_url)
            .map_err(|e| Error::Config(format!("providers[{i}].base_url `{}`: {e}", p.base_url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "providers[{i}].base_url must be http or https"
            )));
        }
    }
    let share = config.reserve_output_share;
    if !(share > 0.0 && share <= 1.0) {
        return Err(Error::Config(format!(
            "reserve_output_share must be in (0, 1], not {share}"
        )));
    }
    if config.reserve_output_tokens < crate::policy::budget::MIN_OUTPUT_TOKENS {
        return Err(Error::Config(format!(
            "reserve_output_tokens must be at least {}",
            crate::policy::budget::MIN_OUTPUT_TOKENS
        )));
    }
    if config.body_limit < 1024 {
        return Err(Error::Config(
            "body_limit must be at least 1024 bytes".into(),
        ));
    }
    let c = &config.cache;
    let global = crate::config::WorkspaceCache {
        ttl_secs: Some(c.ttl_secs),
        semantic_threshold: Some(c.semantic_threshold),
        ..Default::default()
    };
    for (name, w) in
        std::iter::once(("", &global)).chain(c.workspaces.iter().map(|(n, w)| (n.as_str(), w)))
    {
        w.validate().map_err(|e| {
            let at = if name.is_empty() {
                "cache".to_owned()
            } else {
                format!("cache.workspaces.{name}")
            };
            Error::Config(format!("{at}: {e}"))
        })?;
    }
    Ok(())
}

/// The data directory: configured, else the user's data directory + `lyss`.
pub fn data_dir(config: &Config) -> PathBuf {
    config.data_dir.clone().unwrap_or_else(|| {
        dirs::data_dir()
            .map(|d| d.join("lyss"))
            .unwrap_or_else(|| PathBuf::from(".lyss"))
    })
}

/// The governance store's URL: configured, else the SQLite file in the data directory.
pub fn database_url(config: &Config) -> String {
    config
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data_dir(config).join("lyss.db").display()))
}
