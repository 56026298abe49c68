//! The model registry: public model names (and aliases) → provider, upstream name and price
//! ([`crate::price`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ModelConfig, ProviderConfig, RouterConfig, TargetConfig};
use crate::error::{Error, Result};
use crate::price::{Price, builtin_price};
use crate::provider::{Provider, Router, Target};

/// One routable public model.
pub struct Model {
    /// Canonical public name.
    pub name: String,
    pub aliases: Vec<String>,
    pub provider: Arc<dyn Provider>,
    /// Model name sent upstream.
    pub upstream: String,
    pub price: Price,
    pub max_output_tokens: Option<u32>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("provider", &self.provider.name())
            .field("upstream", &self.upstream)
            .field("price", &self.price)
            .finish()
    }
}

/// Public name or alias → model.
#[derive(Debug, Default, Clone)]
pub struct ModelRegistry {
    by_name: HashMap<String, Arc<Model>>,
    /// Canonical models in name order, for listing.
    ordered: BTreeMap<String, Arc<Model>>,
}

impl ModelRegistry {
    /// Builds the registry from config, resolving provider names with `providers`. Every
    /// model is served through a [`Router`] over its targets (one, or more).
    pub fn from_config(
        models: &[ModelConfig],
        providers: &HashMap<String, Arc<dyn Provider>>,
        provider_configs: &[ProviderConfig],
        router: &RouterConfig,
    ) -> Result<Self> {
        let mut reg = Self::default();
        for m in models {
            let upstream = m.upstream.clone().unwrap_or_else(|| m.name.clone());
            let primary = TargetConfig {
                provider: m.provider.clone(),
                upstream: Some(upstream.clone()),
                weight: m.weight,
                timeout_secs: m.timeout_secs,
                first_byte_timeout_secs: m.first_byte_timeout_secs,
            };
            let targets = std::iter::once(&primary)
                .chain(&m.targets)
                .map(|t| {
                    let provider = providers.get(&t.provider).ok_or_else(|| {
                        Error::Config(format!(
                            "models.{}: no provider named `{}` (known: {})",
                            m.name,
                            t.provider,
                            providers.keys().cloned().collect::<Vec<_>>().join(", ")
                        ))
                    })?;
                    let default_timeout = provider_configs
                        .iter()
                        .find(|p| p.name == t.provider)
                        .map_or(600, |p| p.timeout_secs);
                    let timeout = Duration::from_secs(t.timeout_secs.unwrap_or(default_timeout));
                    let first_byte = t
                        .first_byte_timeout_secs
                        .map_or(timeout, Duration::from_secs);
                    Ok(Target::new(
                        provider.clone(),
                        t.upstream.clone().unwrap_or_else(|| upstream.clone()),
                        t.weight.unwrap_or(1),
                    )
                    .with_timeouts(timeout, first_byte))
                })
                .collect::<Result<Vec<_>>>()?;
            let builtin = builtin_price(&upstream).unwrap_or_default();
            let (bi, bo, bc) = builtin.as_per_mtok();
            let input = m.input_per_mtok.unwrap_or(bi);
            // A configured input price makes the built-in cache prices meaningless: they
            // default to it then.
            let own = |set: Option<f64>, builtin: f64| {
                set.unwrap_or(if m.input_per_mtok.is_some() {
                    input
                } else {
                    builtin
                })
            };
            let price = Price::per_mtok(
                input,
                m.output_per_mtok.unwrap_or(bo),
                own(m.cached_input_per_mtok, bc),
            )
            .with_cache_write(own(m.cache_write_per_mtok, builtin.cache_write_per_mtok()));
            reg.insert(Model {
                name: m.name.clone(),
                aliases: m.aliases.clone(),
                provider: Arc::new(Router::new(targets, router.clone())?),
                upstream,
                price,
                max_output_tokens: m.max_output_tokens,
            })?;
        }
        Ok(reg)
    }

    /// Adds a model; a name or alias that is already taken is a configuration error.
    pub fn insert(&mut self, model: Model) -> Result<()> {
        let model = Arc::new(model);
        for n in std::iter::once(&model.name).chain(&model.aliases) {
            if self.by_name.insert(n.clone(), model.clone()).is_some() {
                return Err(Error::Config(format!(
                    "models: the name `{n}` is used twice"
                )));
            }
        }
        self.ordered.insert(model.name.clone(), model);
        Ok(())
    }

    /// Whether a public name or alias is taken.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The model a public name or alias refers to.
    pub fn get(&self, name: &str) -> Option<&Arc<Model>> {
        self.by_name.get(name)
    }

    /// Canonical models in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.ordered.values()
    }

    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }
}

impl crate::policy::Principal {
    /// Whether both the workspace's and the key's allow-lists include the model (by its
    /// canonical name or any alias). Deny by default: an empty list allows nothing.
    pub fn allows(&self, model: &Model) -> bool {
        let listed = |list: &[String]| {
            list.iter().any(|m| {
                m == crate::policy::ALL_MODELS
                    || *m == model.name
                    || model.aliases.iter().any(|a| a == m)
            })
        };
        listed(&self.workspace_models) && self.key_models.as_deref().is_none_or(listed)
    }
}
