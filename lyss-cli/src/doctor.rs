//! `lyss doctor`: checks the config, the store and its migrations, Redis, every provider (a
//! cheap authenticated call, and whether it serves the configured models) and the embedding
//! model — and says, for whatever is wrong, how to fix it.

use std::time::Duration;

use lyss_core::config::{EmbedderKind, ProviderKind};
use lyss_core::setup;
use serde::Serialize;

use crate::Ctx;
use crate::output::print;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Check {
    check: String,
    status: Status,
    detail: String,
    /// How to fix it (empty when nothing is wrong).
    fix: String,
}

fn ok(check: impl Into<String>, detail: impl Into<String>) -> Check {
    Check {
        check: check.into(),
        status: Status::Ok,
        detail: detail.into(),
        fix: String::new(),
    }
}

fn bad(
    status: Status,
    check: impl Into<String>,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        check: check.into(),
        status,
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// A fix for a provider error, from what the error says.
fn provider_fix(
    kind: ProviderKind,
    base_url: &str,
    key_env: Option<&str>,
    e: &lyss_core::Error,
) -> String {
    use lyss_core::Error;
    match e {
        Error::Upstream { status: 401 | 403, .. } => match key_env {
            Some(var) => format!("the provider refused the key: check that {var} holds a valid key"),
            None => "the provider refused the key: set api_key_env (or store a key with `lyss provider add … --api-key -`)".into(),
        },
        Error::Upstream { status: 404, .. } => {
            let example = kind.url_example();
            format!("nothing answers at {base_url}: base_url needs the API's version path, e.g. {example}")
        }
        Error::UpstreamTimeout { .. } => format!("{base_url} did not answer in time: check the URL, a firewall or a proxy"),
        _ => format!("cannot reach {base_url}: check base_url and that the server is running"),
    }
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let config = &ctx.config;
    let mut checks = vec![ok(
        "config",
        match &config.data_dir {
            Some(d) => format!("loaded; data dir {}", d.display()),
            None => format!("loaded; data dir {}", setup::data_dir(config).display()),
        },
    )];

    // The store: reachable, and its migrations applied (connecting applies them, as the
    // server does on start).
    let url = setup::database_url(config);
    let policy = match tokio::time::timeout(Duration::from_secs(10), setup::open_policy(config))
        .await
    {
        Ok(Ok(p)) => {
            checks.push(ok(
                "store",
                format!(
                    "{} reachable; migrations up to date",
                    setup::redact_url(&url)
                ),
            ));
            Some(p)
        }
        Ok(Err(e)) => {
            let fix = if url.starts_with("postgres") {
                "start PostgreSQL or fix database_url (postgres://user@host:5432/db); check the user may create tables"
            } else {
                "check that the data directory is writable (--data-dir) and the disk has room"
            };
            checks.push(bad(Status::Fail, "store", e.to_string(), fix));
            None
        }
        Err(_) => {
            checks.push(bad(
                Status::Fail,
                "store",
                format!("{} did not answer in 10 s", setup::redact_url(&url)),
                "check database_url, the host and the firewall",
            ));
            None
        }
    };

    if let Some(redis) = &config.redis_url {
        let check = async {
            let client = redis::Client::open(redis.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        checks.push(match tokio::time::timeout(Duration::from_secs(5), check).await {
            Ok(Ok(_)) => ok("redis", format!("{} answers", setup::redact_url(redis))),
            Ok(Err(e)) => bad(Status::Fail, "redis", e.to_string(), "start Redis or fix redis_url (redis://host:6379); rate limits fail closed without it"),
            Err(_) => bad(Status::Fail, "redis", "no answer in 5 s", "check redis_url, the host and the firewall"),
        });
    }

    // Providers, with the ones stored in the database.
    let config = match &policy {
        Some(p) => match setup::with_stored_providers(config, p.as_ref()).await {
            Ok(c) => c,
            Err(e) => {
                checks.push(bad(Status::Fail, "stored providers", e.to_string(), "set LYSS_MASTER_KEY to the key the providers were stored with, or store them again"));
                config.clone()
            }
        },
        None => config.clone(),
    };
    let providers = setup::build_providers(&config)?;
    for p in &config.providers {
        let Some(provider) = providers.get(&p.name) else {
            continue;
        };
        let name = format!("provider {}", p.name);
        match tokio::time::timeout(Duration::from_secs(15), provider.list_models()).await {
            Ok(Ok(listed)) => {
                checks.push(ok(
                    &name,
                    format!("{} answers; {} models", p.base_url, listed.len()),
                ));
                // Models this provider should serve but does not list (Azure lists no deployments).
                if p.kind == ProviderKind::Azure || listed.is_empty() {
                    continue;
                }
                for m in config.models.iter().filter(|m| m.provider == p.name) {
                    let upstream = m.upstream.clone().unwrap_or_else(|| m.name.clone());
                    if !listed.contains(&upstream) {
                        let some: Vec<&str> = listed.iter().take(5).map(String::as_str).collect();
                        checks.push(bad(Status::Warn, format!("model {}", m.name),
                            format!("{} does not list `{upstream}`", p.name),
                            format!("set `upstream` of model {} to a model the provider has (e.g. {}), or pull/deploy `{upstream}` there", m.name, some.join(", "))));
                    }
                }
            }
            Ok(Err(e)) => checks.push(bad(
                Status::Fail,
                &name,
                e.to_string(),
                provider_fix(p.kind, &p.base_url, p.api_key_env.as_deref(), &e),
            )),
            Err(_) => checks.push(bad(
                Status::Fail,
                &name,
                "no answer in 15 s",
                format!("check base_url {} and the network", p.base_url),
            )),
        }
    }
    if config.providers.is_empty() {
        checks.push(bad(Status::Warn, "providers", "none configured", "add [[providers]] to the config, set OPENAI_API_KEY / OLLAMA_BASE_URL, or `lyss provider add`"));
    }

    // The embedding model (memory and the semantic cache).
    if config.embedder.kind == EmbedderKind::Local {
        let dir = config
            .embedder
            .models_dir
            .clone()
            .unwrap_or_else(lyss_core::embed::default_models_dir);
        let loaded = tokio::task::spawn_blocking(move || {
            lyss_core::embed::LocalEmbedder::load(
                &dir.join(lyss_core::embed::LOCAL_MODEL_DIR),
                &dir.join(lyss_core::embed::ORT_LIBRARY),
            )
            .map(|_| dir)
        })
        .await?;
        checks.push(match loaded {
            Ok(dir) => ok("embedding model", format!("all-MiniLM-L6-v2 and ONNX Runtime load from {}", dir.display())),
            Err(e) => bad(
                if config.memory.any_on() || config.cache.any_semantic() { Status::Fail } else { Status::Warn },
                "embedding model",
                e.to_string(),
                "run scripts/fetch-models.sh (or set embedder.models_dir / LYSS_MODELS_DIR); without it memory recall is keyword-only and semantic caching is exact",
            ),
        });
    }

    let failed = checks.iter().any(|c| c.status == Status::Fail);
    print(
        ctx.json,
        &checks,
        &["check", "status", "detail", "fix"],
        || {
            checks
                .iter()
                .map(|c| {
                    vec![
                        c.check.clone(),
                        serde_json::to_value(c.status)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        c.detail.clone(),
                        c.fix.clone(),
                    ]
                })
                .collect()
        },
    )?;
    if failed {
        anyhow::bail!("some checks failed; see the fixes above");
    }
    Ok(())
}
