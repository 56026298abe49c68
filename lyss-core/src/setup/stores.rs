//! Opening the stores a configuration names: the policy (with its budget counters), the
//! rate limiter, the answer cache and the memory store — each refused at start, naming its
//! feature, when it was left out of the build.

use std::sync::Arc;

use super::load::{data_dir, database_url};
use crate::cache::{Cache, InMemoryCache};
use crate::config::{CacheBackend, Config};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::memory::{MemoryStore, SqliteMemoryStore};
use crate::policy::{Policy, SqlitePolicy};
use crate::ratelimit::{InMemoryRateLimiter, RateLimiter};

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

pub(super) async fn open_policy_as(config: &Config, serve: bool) -> Result<Arc<dyn Policy>> {
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
pub(super) async fn with_budget_counters(
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
pub(super) fn redis_error(url: &str, e: Error) -> Error {
    Error::Config(format!(
        "redis_url: cannot use Redis at {}: {e}",
        redact_url(url)
    ))
}

pub(super) fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A backend the config asks for that this build of lyss-core left out.
#[cfg(not(all(feature = "postgres", feature = "redis")))]
pub(super) fn not_built_in(what: &str, feature: &str) -> Error {
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
