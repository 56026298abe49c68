//! `lyss model …`

use clap::Subcommand;
use lyss_core::setup;
use serde::Serialize;

use crate::Ctx;
use crate::output::print;

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// The configured models, their providers and prices (USD per 1M tokens).
    List,
}

#[derive(Serialize)]
struct Row {
    name: String,
    aliases: Vec<String>,
    provider: String,
    upstream: String,
    input_per_mtok: f64,
    output_per_mtok: f64,
    cached_input_per_mtok: f64,
    cache_write_per_mtok: f64,
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::List => {
            // With the providers stored by `lyss provider add`, as the server sees them.
            let policy = ctx.policy().await?;
            let config = setup::with_stored_providers(&ctx.config, policy.as_ref()).await?;
            let providers = setup::build_providers(&config)?;
            let registry = setup::build_models(&config, &providers).await?;
            let rows: Vec<Row> = registry
                .iter()
                .map(|m| {
                    let (i, o, c) = m.price.as_per_mtok();
                    Row {
                        name: m.name.clone(),
                        aliases: m.aliases.clone(),
                        provider: m.provider.name().to_owned(),
                        upstream: m.upstream.clone(),
                        input_per_mtok: i,
                        output_per_mtok: o,
                        cached_input_per_mtok: c,
                        cache_write_per_mtok: m.price.cache_write_per_mtok(),
                    }
                })
                .collect();
            if rows.is_empty() && !ctx.json {
                eprintln!(
                    "no models configured: set OPENAI_API_KEY or OLLAMA_BASE_URL, or add [[models]] to lyss.toml"
                );
            }
            print(
                ctx.json,
                &rows,
                &[
                    "name",
                    "aliases",
                    "provider",
                    "upstream",
                    "in $/1M",
                    "out $/1M",
                    "cached $/1M",
                    "cache write $/1M",
                ],
                || {
                    rows.iter()
                        .map(|r| {
                            vec![
                                r.name.clone(),
                                r.aliases.join(","),
                                r.provider.clone(),
                                r.upstream.clone(),
                                format!("{}", r.input_per_mtok),
                                format!("{}", r.output_per_mtok),
                                format!("{}", r.cached_input_per_mtok),
                                format!("{}", r.cache_write_per_mtok),
                            ]
                        })
                        .collect()
                },
            )
        }
    }
}
