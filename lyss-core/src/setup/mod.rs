//! Turning configuration into a running pipeline: load and layer the config (defaults →
//! `lyss.toml` → `LYSS_*` → flags), find the data directory, open the stores, build providers
//! and the model registry. Both binaries start here; a Rust app may too, or compose
//! [`crate::Lyss`] by hand.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};

use crate::cache::{Cache, InMemoryCache};
use crate::clock::{Clock, SystemClock};
use crate::config::{
    CacheBackend, Config, EmbedderKind, ModelConfig, ProviderConfig, ProviderKind, Secret,
};
use crate::embed::{CachedEmbedder, Embedder, OpenAiEmbedder};
use crate::error::{Error, Result};
use crate::memory::{MemoryStore, SqliteMemoryStore};
use crate::models::{Model, ModelRegistry};
use crate::pipeline::Lyss;
use crate::policy::{Policy, SqlitePolicy, keys};
use crate::price::builtin_price;
use crate::provider::Provider;
use crate::ratelimit::{InMemoryRateLimiter, RateLimiter};

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
const OPENAI_ENV_MODELS: &[&str] = &[
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
fn add_env_providers(config: &mut Config, env: impl Fn(&str) -> Option<String>) {
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

fn validate(config: &Config) -> Result<()> {
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

/// Opens the policy store named by the config for administration (the `lyss` CLI): on SQLite,
/// beside a server that holds the file's reservations. Creates the data directory if needed.
pub async fn open_policy(config: &Config) -> Result<Arc<dyn Policy>> {
    open_policy_as(config, false).await
}

/// Opens the policy store to serve requests: on SQLite this process becomes the file's only
/// server and holds its reservations in memory ([`SqlitePolicy::serve`]).
pub async fn open_serving_policy(config: &Config) -> Result<Arc<dyn Policy>> {
    open_policy_as(config, true).await
}

async fn open_policy_as(config: &Config, serve: bool) -> Result<Arc<dyn Policy>> {
    let url = database_url(config);
    if url.starts_with("sqlite:") {
        if config.database_url.is_none() {
            let dir = data_dir(config);
            crate::secrets::create_private_dir(&dir).map_err(|e| {
                Error::Config(format!("data_dir {}: cannot create: {e}", dir.display()))
            })?;
            // A read-only directory would only fail at the first request: say so now. The
            // probe is this process's own: a server and an admin's `lyss` may check at once.
            let probe = dir.join(format!(".lyss-write-check-{}", std::process::id()));
            std::fs::write(&probe, b"")
                .and_then(|()| std::fs::remove_file(&probe))
                .map_err(|e| {
                    Error::Config(format!(
                        "data_dir {}: not writable ({e}); lyss keeps its database there",
                        dir.display()
                    ))
                })?;
        }
        return Ok(Arc::new(match serve {
            true => SqlitePolicy::serve(&url).await?,
            false => SqlitePolicy::connect(&url).await?,
        }));
    }
    if is_postgres(&url) {
        #[cfg(not(feature = "postgres"))]
        return Err(not_built_in("database_url: Postgres", "postgres"));
        #[cfg(feature = "postgres")]
        {
            let policy = crate::policy::PostgresPolicy::connect(&url)
                .await
                .map_err(|e| {
                    Error::Config(format!(
                        "database_url: cannot use Postgres at {}: {e}",
                        redact_url(&url)
                    ))
                })?;
            return match serve {
                true => with_budget_counters(config, policy).await,
                // The admin's `lyss` reads and changes budgets in Postgres; replicas pick up
                // changes within a second.
                false => Ok(Arc::new(policy)),
            };
        }
    }
    Err(Error::Config(format!(
        "database_url: unsupported scheme in `{}` (supported: sqlite://, postgres://)",
        url.split("://").next().unwrap_or_default()
    )))
}

/// A serving Postgres policy with its budget counters where the config puts them.
#[cfg(feature = "postgres")]
async fn with_budget_counters(
    config: &Config,
    policy: crate::policy::PostgresPolicy,
) -> Result<Arc<dyn Policy>> {
    use crate::config::CounterStore;
    let c = &config.budget_counters;
    let store = c.store.unwrap_or(match config.redis_url {
        Some(_) => CounterStore::Redis,
        None => CounterStore::Database,
    });
    let redis_url = config.redis_url.as_deref();
    match (store, redis_url) {
        (CounterStore::Database, None) => Ok(Arc::new(policy)),
        (CounterStore::Redis, None) => Err(Error::Config(
            "budget_counters.store = \"redis\" needs redis_url".into(),
        )),
        #[cfg(not(feature = "redis"))]
        (_, Some(_)) => Err(not_built_in("redis_url: Redis", "redis")),
        #[cfg(feature = "redis")]
        (CounterStore::Database, Some(redis)) => {
            // Counters left in Redis by an earlier run would miss what is spent meanwhile:
            // the next run with Redis counters rebuilds them.
            crate::policy::PostgresPolicy::forget_redis_counters(redis, &c.redis_prefix)
                .await
                .map_err(|e| redis_error(redis, e))?;
            Ok(Arc::new(policy))
        }
        #[cfg(feature = "redis")]
        (CounterStore::Redis, Some(redis)) => policy
            .with_redis_counters(redis, &c.redis_prefix)
            .await
            .map(|p| Arc::new(p) as Arc<dyn Policy>)
            .map_err(|e| redis_error(redis, e)),
    }
}

#[cfg(feature = "redis")]
fn redis_error(url: &str, e: Error) -> Error {
    Error::Config(format!(
        "redis_url: cannot use Redis at {}: {e}",
        redact_url(url)
    ))
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A backend the config asks for that this build of lyss-core left out.
#[cfg(not(all(feature = "postgres", feature = "redis")))]
fn not_built_in(what: &str, feature: &str) -> Error {
    Error::Config(format!(
        "{what} is not in this build: lyss-core was compiled without its `{feature}` feature"
    ))
}

/// The rate limiter named by the config: Redis when `redis_url` is set, else in process.
pub async fn open_rate_limiter(config: &Config) -> Result<Arc<dyn RateLimiter>> {
    match &config.redis_url {
        #[cfg(not(feature = "redis"))]
        Some(_) => Err(not_built_in("redis_url: Redis", "redis")),
        #[cfg(feature = "redis")]
        Some(url) => crate::ratelimit::RedisRateLimiter::connect(url, "lyss:rl:")
            .await
            .map(|r| Arc::new(r) as Arc<dyn RateLimiter>)
            .map_err(|e| redis_error(url, e)),
        None => {
            if database_url(config).starts_with("postgres") {
                tracing::warn!(
                    "rate limits are counted per replica: set redis_url to share them across replicas"
                );
            }
            Ok(Arc::new(InMemoryRateLimiter::new()))
        }
    }
}

/// A URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

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

/// Builds the whole pipeline from a config.
pub async fn build(config: &Config) -> Result<Lyss> {
    build_with_clock(config, Arc::new(SystemClock)).await
}

/// [`build`] with another clock (tests move it across period boundaries).
pub async fn build_with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<Lyss> {
    let policy = open_serving_policy(config).await?;
    let config = &with_stored_providers(config, policy.as_ref()).await?;
    let providers = build_providers(config)?;
    let models = build_models(config, &providers).await?;
    if let Some(name) = &config.memory.extraction_model
        && models.get(name).is_none()
    {
        return Err(Error::Config(format!(
            "memory.extraction_model: no model named `{name}`; use a name or alias from `models`"
        )));
    }
    let limiter = open_rate_limiter(config).await?;
    let mut builder = Lyss::builder(policy)
        .models(models)
        .rate_limiter(limiter)
        .key_cache_ttl(Duration::from_millis(config.key_cache_ms))
        .reservation_ttl(Duration::from_secs(config.reservation_timeout_secs))
        .first_output_share(crate::policy::FirstShare {
            tokens: config.reserve_output_tokens,
            share: config.reserve_output_share,
        })
        .builtin_tools(config.router.builtin_tools)
        .clock(clock);
    let memory_on = config.memory.any_enabled();
    // One embedder for memory and the semantic cache: loaded now when the config needs it,
    // else on first use (a workspace switched to semantic caching at run time).
    if memory_on || config.cache.any_semantic() {
        let embedder = open_embedder(config, &providers).await?;
        // Memory works on every conversation: load the model now, in the background, rather
        // than on the first request (searches rank by keywords until it is loaded). A remote
        // embedder is ready already: no call is paid for at start-up.
        if let Some(e) = embedder.clone().filter(|e| memory_on && !e.ready()) {
            tokio::spawn(async move {
                let _ = e.embed(&["warm up".to_owned()]).await;
            });
        }
        if memory_on {
            builder = builder.memory(
                open_memory(config, embedder.clone()).await?,
                config.memory.clone(),
            );
        }
        if let Some(e) = embedder {
            builder = builder.embedder(e);
        }
    } else {
        let (config, providers) = (Arc::new(config.clone()), Arc::new(providers));
        builder = builder.embedder_loader(Box::new(move || {
            let (config, providers) = (config.clone(), providers.clone());
            Box::pin(async move {
                open_embedder(&config, &providers)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "no embedder: semantic caching works as exact caching");
                        None
                    })
            })
        }));
    }
    builder = builder.cache(open_cache(config).await?, config.cache.clone());
    Ok(builder.build())
}

/// The answer cache: in this process (bounded by `cache.max_bytes`) or in Redis
/// (`redis_url`), shared by replicas. Always opened, since a workspace may turn caching on at
/// run time (`lyss workspace update`); an unused in-process cache costs nothing.
pub async fn open_cache(config: &Config) -> Result<Arc<dyn Cache>> {
    let c = &config.cache;
    match c.backend {
        CacheBackend::Memory => Ok(Arc::new(InMemoryCache::new(c.max_bytes))),
        CacheBackend::Redis => {
            let url = config
                .redis_url
                .as_deref()
                .ok_or_else(|| Error::Config("cache.backend = \"redis\" needs redis_url".into()))?;
            #[cfg(not(feature = "redis"))]
            return Err(not_built_in(
                &format!("cache.backend = \"redis\" ({})", redact_url(url)),
                "redis",
            ));
            #[cfg(feature = "redis")]
            Ok(Arc::new(
                crate::cache::RedisCache::connect(url, &c.redis_prefix).await?,
            ))
        }
    }
}

/// The memory store, in the same database as governance (SQLite, or Postgres for clusters).
pub async fn open_memory(
    config: &Config,
    embedder: Option<Arc<dyn Embedder>>,
) -> Result<Arc<dyn MemoryStore>> {
    let url = database_url(config);
    if url.starts_with("sqlite:") {
        return Ok(Arc::new(SqliteMemoryStore::connect(&url, embedder).await?));
    }
    #[cfg(not(feature = "postgres"))]
    return Err(not_built_in("database_url: Postgres", "postgres"));
    #[cfg(feature = "postgres")]
    Ok(Arc::new(
        crate::memory::PostgresMemoryStore::connect(&url, embedder).await?,
    ))
}

/// How long ingestion lets a request that queued turns go first. The request embeds its own
/// message as its memory query at the same moment it queues it: ingesting at once took the
/// embedding model from under it (the query waited for the turn's embedding, then missed the
/// vector cache and embedded the same text again — twice the model's time on the path).
/// Afterwards the turn's vector is cached and the request is waiting on its upstream.
const INGEST_SETTLE: Duration = Duration::from_millis(50);

/// Runs [`Lyss::ingest_pending`] shortly after a request queued turns ([`INGEST_SETTLE`]), and
/// every half second (turns queued by other replicas, retries); again at once after a full
/// batch, so a backlog drains without waiting a tick per batch. Failures are logged and retried.
pub fn spawn_ingest(lyss: Arc<Lyss>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = lyss.turns_queued() => tokio::time::sleep(INGEST_SETTLE).await,
            }
            loop {
                match lyss.ingest_pending().await {
                    Ok(n) if n >= crate::pipeline::INGEST_BATCH => tokio::task::yield_now().await,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "memory ingestion failed; retrying");
                        break;
                    }
                }
            }
        }
    })
}

/// Runs [`Lyss::reap_expired`] forever at [`Lyss::reap_interval`]; failures are logged and
/// retried on the next tick.
pub fn spawn_reaper(lyss: Arc<Lyss>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(lyss.reap_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match lyss.reap_expired().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(released = n, "released reservations of requests that died")
                }
                Err(e) => tracing::warn!(error = %e, "reservation reaper failed; retrying"),
            }
        }
    })
}

/// Vectors the embedder remembers by text (a user's message is embedded as its request's
/// memory query, then again when the turn is stored): about 10,000 of all-MiniLM's.
const EMBEDDING_CACHE_BYTES: u64 = 16 << 20;

/// The configured embedder, or `None` (with a warning that says what is missing and how to
/// fetch it) when it cannot be loaded: lyss then serves without semantic features.
pub async fn open_embedder(
    config: &Config,
    providers: &HashMap<String, Arc<dyn Provider>>,
) -> Result<Option<Arc<dyn Embedder>>> {
    let e = &config.embedder;
    let inner: Arc<dyn Embedder> = match e.kind {
        EmbedderKind::None => return Ok(None),
        EmbedderKind::Openai => {
            let (Some(name), Some(model), Some(dimension)) = (&e.provider, &e.model, e.dimension)
            else {
                return Err(Error::Config(
                    "embedder: kind = \"openai\" needs provider, model and dimension".into(),
                ));
            };
            let provider = providers.get(name).ok_or_else(|| {
                Error::Config(format!("embedder.provider: no provider named `{name}`"))
            })?;
            Arc::new(OpenAiEmbedder::new(
                provider.clone(),
                model.clone(),
                dimension,
            ))
        }
        #[cfg(not(feature = "local-embeddings"))]
        EmbedderKind::Local => {
            tracing::warn!(
                "lyss-core was compiled without its `local-embeddings` feature: semantic features are off (keyword retrieval only)"
            );
            return Ok(None);
        }
        #[cfg(feature = "local-embeddings")]
        EmbedderKind::Local => {
            use crate::embed::{
                LOCAL_MODEL_DIR, LazyEmbedder, LocalEmbedder, ORT_LIBRARY, default_models_dir,
            };
            let dir = e.models_dir.clone().unwrap_or_else(default_models_dir);
            let (model, ort) = (dir.join(LOCAL_MODEL_DIR), dir.join(ORT_LIBRARY));
            if let Err(err) = LocalEmbedder::check(&model, &ort) {
                tracing::warn!(error = %err, "no local embedding model: semantic features are off (keyword retrieval only)");
                return Ok(None);
            }
            // Loaded by the first text to embed (`build` starts that at once when memory is
            // on): the server serves meanwhile.
            Arc::new(LazyEmbedder::new(
                LOCAL_MODEL_DIR,
                LocalEmbedder::DIMENSION,
                Box::new(move || {
                    let (model, ort) = (model.clone(), ort.clone());
                    Box::pin(async move {
                        let loaded =
                            tokio::task::spawn_blocking(move || LocalEmbedder::load(&model, &ort))
                                .await
                                .map_err(|e| {
                                    Error::Internal(format!("embedder load task: {e}"))
                                })??;
                        Ok(Arc::new(loaded) as Arc<dyn Embedder>)
                    })
                }),
            ))
        }
    };
    Ok(Some(Arc::new(CachedEmbedder::new(
        inner,
        EMBEDDING_CACHE_BYTES,
    ))))
}

/// Where the admin token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTokenSource {
    Config,
    /// Read from this file.
    File(PathBuf),
    /// Generated now and saved to this file.
    Generated(PathBuf),
}

/// The admin token: from config, else `<data_dir>/admin_token`, else generated and saved there
/// with mode 0600.
pub fn admin_token(config: &Config) -> Result<(Secret, AdminTokenSource)> {
    if let Some(t) = &config.admin_token {
        return Ok((t.clone(), AdminTokenSource::Config));
    }
    let path = data_dir(config).join("admin_token");
    let io = |e: std::io::Error| Error::Config(format!("admin token {}: {e}", path.display()));
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => {
            return Ok((Secret::new(t.trim()), AdminTokenSource::File(path)));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let token = format!("lyss-admin-{}", keys::random_token(40));
    if let Some(dir) = path.parent() {
        crate::secrets::create_private_dir(dir).map_err(io)?;
    }
    crate::secrets::write_private(&path, format!("{token}\n").as_bytes())?;
    Ok((Secret::new(token), AdminTokenSource::Generated(path)))
}

#[cfg(test)]
mod tests;
