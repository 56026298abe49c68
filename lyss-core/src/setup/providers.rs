//! Providers and the model registry: those in the configuration and those stored with
//! `lyss provider add`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::load::{data_dir, validate};
use crate::config::{Config, ProviderConfig, Secret};
use crate::error::Result;
use crate::models::{Model, ModelRegistry};
use crate::policy::Policy;
use crate::price::builtin_price;
use crate::provider::Provider;

/// The config with the providers stored by `lyss provider add` added (their keys opened
/// with the master key). A provider in the config file wins over a stored one of the same name.
pub async fn with_stored_providers(config: &Config, policy: &dyn Policy) -> Result<Config> {
    let stored = policy.list_providers().await?;
    let mut config = config.clone();
    let mut master = None;
    for p in stored {
        if config.providers.iter().any(|c| c.name == p.name) {
            tracing::warn!(provider = %p.name, "a stored provider has the name of one in the config; the config's is used");
            continue;
        }
        let api_key = match &p.sealed_key {
            Some(sealed) => {
                if master.is_none() {
                    master = Some(crate::secrets::MasterKey::load(&data_dir(&config), false)?);
                }
                let key = master
                    .as_ref()
                    .map(|m| m.open(&p.name, sealed))
                    .transpose()?;
                key.map(Secret::new)
            }
            None => None,
        };
        config.providers.push(ProviderConfig {
            api_key_env: p.api_key_env,
            api_key,
            discover_models: p.discover_models,
            api_version: p.api_version,
            ..ProviderConfig::new(p.name, p.kind, p.base_url)
        });
    }
    validate(&config)?;
    Ok(config)
}

/// Builds the providers of the config by name.
pub fn build_providers(config: &Config) -> Result<HashMap<String, Arc<dyn Provider>>> {
    config
        .providers
        .iter()
        .map(|p| Ok((p.name.clone(), p.kind.build(p)?)))
        .collect()
}

/// Builds the model registry: configured models, then models discovered from providers with
/// `discover_models` (best effort: an unreachable provider is logged and skipped).
pub async fn build_models(
    config: &Config,
    providers: &HashMap<String, Arc<dyn Provider>>,
) -> Result<ModelRegistry> {
    let mut registry =
        ModelRegistry::from_config(&config.models, providers, &config.providers, &config.router)?;
    for p in config.providers.iter().filter(|p| p.discover_models) {
        let Some(provider) = providers.get(&p.name) else {
            continue;
        };
        match tokio::time::timeout(Duration::from_secs(5), provider.list_models()).await {
            Ok(Ok(ids)) => {
                for id in ids {
                    if registry.contains(&id) {
                        continue;
                    }
                    registry.insert(Model {
                        name: id.clone(),
                        aliases: Vec::new(),
                        provider: provider.clone(),
                        price: builtin_price(&id).unwrap_or_default(),
                        upstream: id,
                        max_output_tokens: None,
                    })?;
                }
            }
            Ok(Err(e)) => tracing::warn!(provider = %p.name, error = %e, "model discovery failed"),
            Err(_) => tracing::warn!(provider = %p.name, "model discovery timed out"),
        }
    }
    Ok(registry)
}
