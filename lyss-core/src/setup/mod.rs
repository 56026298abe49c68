//! Turning configuration into a running pipeline: load and layer the config (defaults →
//! `lyss.toml` → `LYSS_*` → flags), find the data directory, open the stores, build providers
//! and the model registry. Both binaries start here; a Rust app may too, or compose
//! [`crate::Lyss`] by hand.

mod embedder;
mod load;
mod providers;
mod stores;

pub use self::embedder::*;
pub use self::load::*;
pub use self::providers::*;
pub use self::stores::*;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Secret};
use crate::error::{Error, Result};
use crate::pipeline::Lyss;
use crate::policy::keys;

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
