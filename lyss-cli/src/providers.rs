//! `lyss provider …`: upstream providers stored in the database, their API keys sealed with the
//! master key (`LYSS_MASTER_KEY`, else `master.key` in the data directory). Keys are read from
//! standard input or named by environment variable — never from the command line, where they
//! would land in shell history — and never printed.

use std::io::Read as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use lyss_core::config::ProviderKind;
use lyss_core::policy::StoredProvider;
use lyss_core::secrets::MasterKey;
use lyss_core::setup;

use crate::Ctx;
use crate::output::{print, when};

/// `--kind`: a name from lyss-core's registry of provider kinds.
fn kind_arg() -> impl clap::builder::TypedValueParser<Value = ProviderKind> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(ProviderKind::ALL.map(ProviderKind::as_str))
        .try_map(|name| ProviderKind::parse(&name))
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Store a provider (replacing one of the same name). Servers pick it up when they start.
    Add {
        name: String,
        #[arg(long, value_parser = kind_arg())]
        kind: ProviderKind,
        /// Default: the vendor's public API (required for Azure and self-hosted servers).
        #[arg(long)]
        base_url: Option<String>,
        /// Read the API key from this environment variable when servers start.
        #[arg(long, conflicts_with = "api_key")]
        api_key_env: Option<String>,
        /// `-`: read the API key from standard input and store it encrypted.
        #[arg(long, value_parser = only_stdin)]
        api_key: Option<String>,
        /// Azure OpenAI's `api-version`, e.g. 2024-10-21.
        #[arg(long)]
        api_version: Option<String>,
        /// Serve every model the provider lists under its own name.
        #[arg(long)]
        discover: bool,
    },
    /// Stored and configured providers (never their keys).
    List,
    /// A cheap authenticated call (the model list) to check URL and key.
    Test { name: String },
    /// Forget a stored provider.
    Remove { name: String },
}

fn only_stdin(v: &str) -> Result<String, String> {
    if v == "-" {
        Ok(v.to_owned())
    } else {
        Err("pass `-` and the key on standard input (a key on the command line lands in shell history)".into())
    }
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    let policy = ctx.policy().await?;
    match cmd {
        Cmd::Add {
            name,
            kind,
            base_url,
            api_key_env,
            api_key,
            api_version,
            discover,
        } => {
            let base_url = base_url
                .or_else(|| kind.default_url().map(str::to_owned))
                .context("--base-url is required for this kind")?;
            let sealed_key = match api_key {
                Some(_) => {
                    let mut key = String::new();
                    std::io::stdin()
                        .read_to_string(&mut key)
                        .context("reading the API key from standard input")?;
                    let key = key.trim();
                    anyhow::ensure!(!key.is_empty(), "no API key on standard input");
                    let master = MasterKey::load(&setup::data_dir(&ctx.config), true)?;
                    Some(master.seal(&name, key)?)
                }
                None => None,
            };
            let stored = StoredProvider {
                name,
                kind,
                base_url,
                api_key_env,
                sealed_key,
                api_version,
                discover_models: discover,
                created_at: time::OffsetDateTime::now_utc(),
            };
            // Check it builds (an Azure provider needs its api-version) before storing.
            let mut probe = ctx.config.clone();
            probe.providers.retain(|p| p.name != stored.name);
            policy.put_provider(&stored).await?;
            if let Err(e) = setup::with_stored_providers(&probe, policy.as_ref())
                .await
                .and_then(|c| setup::build_providers(&c))
            {
                policy.delete_provider(&stored.name).await?;
                return Err(e.into());
            }
            eprintln!(
                "stored; restart lyss-server to use it, then `lyss provider test {}`",
                stored.name
            );
            print(
                ctx.json,
                &stored,
                &["name", "kind", "base_url", "key"],
                || vec![row(&stored)],
            )
        }
        Cmd::List => {
            let stored = policy.list_providers().await?;
            let mut rows: Vec<Vec<String>> = ctx
                .config
                .providers
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.kind.as_str().to_owned(),
                        p.base_url.clone(),
                        match (&p.api_key, &p.api_key_env) {
                            (Some(_), _) => "in config file".into(),
                            (None, Some(var)) => format!("env {var}"),
                            (None, None) => "none".into(),
                        },
                        "config".into(),
                    ]
                })
                .collect();
            rows.extend(stored.iter().map(|p| {
                let mut r = row(p);
                r.push(format!("stored {}", when(Some(p.created_at))));
                r
            }));
            print(
                ctx.json,
                &stored,
                &["name", "kind", "base_url", "key", "source"],
                || rows.clone(),
            )
        }
        Cmd::Test { name } => {
            let config = setup::with_stored_providers(&ctx.config, policy.as_ref()).await?;
            let providers = setup::build_providers(&config)?;
            let provider = providers
                .get(&name)
                .with_context(|| format!("no provider named `{name}`"))?;
            let started = std::time::Instant::now();
            let models = tokio::time::timeout(Duration::from_secs(15), provider.list_models())
                .await
                .map_err(|_| anyhow::anyhow!("`{name}` did not answer within 15 s"))?
                .with_context(|| format!("`{name}` failed the check"))?;
            let out = serde_json::json!({"provider": name, "ok": true, "models": models.len(),
                "latency_ms": started.elapsed().as_millis() as u64});
            print(
                ctx.json,
                &out,
                &["provider", "ok", "models", "latency"],
                || {
                    vec![vec![
                        name.clone(),
                        "ok".into(),
                        models.len().to_string(),
                        format!("{} ms", started.elapsed().as_millis()),
                    ]]
                },
            )
        }
        Cmd::Remove { name } => {
            policy.delete_provider(&name).await?;
            let out = serde_json::json!({"removed": name});
            print(ctx.json, &out, &["removed"], || vec![vec![name.clone()]])
        }
    }
}

fn row(p: &StoredProvider) -> Vec<String> {
    vec![
        p.name.clone(),
        p.kind.as_str().to_owned(),
        p.base_url.clone(),
        match (&p.sealed_key, &p.api_key_env) {
            (Some(_), _) => "stored (encrypted)".into(),
            (None, Some(var)) => format!("env {var}"),
            (None, None) => "none".into(),
        },
    ]
}
