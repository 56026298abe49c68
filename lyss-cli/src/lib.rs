//! `lyss`: the admin CLI. It works directly on the same store as the server (same config and
//! data directory), prints human tables by default and JSON with `--json`.

mod budgets;
mod cache;
mod doctor;
mod keys;
mod memory;
mod models;
mod output;
mod providers;
mod usage;
mod users;
mod workspaces;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use lyss_core::Policy;
use lyss_core::config::Config;
use lyss_core::setup::{self, Overrides};

/// Lyss admin CLI: workspaces, users, keys and models — no email anywhere.
#[derive(Debug, Parser)]
#[command(name = "lyss", version)]
pub struct Cli {
    /// Configuration file (TOML). Default: ./lyss.toml if present.
    #[arg(long, global = true, env = "LYSS_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory shared with lyss-server.
    #[arg(long, global = true, env = "LYSS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Governance store URL (default: sqlite://<data-dir>/lyss.db).
    #[arg(long, global = true, env = "LYSS_DATABASE_URL")]
    database_url: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Workspaces (teams) and their allowed models.
    #[command(subcommand)]
    Workspace(workspaces::Cmd),
    /// Users of a workspace.
    #[command(subcommand)]
    User(users::Cmd),
    /// Virtual API keys.
    #[command(subcommand)]
    Key(keys::Cmd),
    /// Configured models and prices.
    #[command(subcommand)]
    Model(models::Cmd),
    /// Hard budgets (USD or tokens) on workspaces, users and keys.
    #[command(subcommand)]
    Budget(budgets::Cmd),
    /// Rate limits (requests and tokens per minute).
    #[command(subcommand)]
    Limit(budgets::LimitCmd),
    /// Spend and tokens from the ledger, grouped.
    Usage(usage::Cmd),
    /// Users' long-term memories.
    #[command(subcommand)]
    Memory(memory::Cmd),
    /// The running server's answer cache.
    #[command(subcommand)]
    Cache(cache::Cmd),
    /// Upstream providers and their (encrypted) API keys.
    #[command(subcommand)]
    Provider(providers::Cmd),
    /// Check config, store, Redis, providers and the embedding model; say how to fix what is wrong.
    Doctor,
}

/// What a command needs: the loaded config and, opened on demand, the store.
pub(crate) struct Ctx {
    config: Config,
    json: bool,
}

impl Ctx {
    async fn policy(&self) -> lyss_core::Result<Arc<dyn Policy>> {
        setup::open_policy(&self.config).await
    }
}

/// Runs one command; errors are printed to stderr with exit code 1.
pub async fn run(cli: Cli) -> ExitCode {
    match execute(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: Cli) -> anyhow::Result<()> {
    let config = setup::load_config(&Overrides {
        config: cli.config,
        data_dir: cli.data_dir,
        database_url: cli.database_url,
        bind: None,
    })?;
    let ctx = Ctx {
        config,
        json: cli.json,
    };
    match cli.command {
        Command::Workspace(c) => workspaces::run(&ctx, c).await,
        Command::User(c) => users::run(&ctx, c).await,
        Command::Key(c) => keys::run(&ctx, c).await,
        Command::Model(c) => models::run(&ctx, c).await,
        Command::Budget(c) => budgets::run(&ctx, c).await,
        Command::Limit(c) => budgets::run_limit(&ctx, c).await,
        Command::Usage(c) => usage::run(&ctx, c).await,
        Command::Memory(c) => memory::run(&ctx, c).await,
        Command::Cache(c) => cache::run(&ctx, c).await,
        Command::Provider(c) => providers::run(&ctx, c).await,
        Command::Doctor => doctor::run(&ctx).await,
    }
}
