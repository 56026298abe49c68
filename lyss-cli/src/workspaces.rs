//! `lyss workspace …`

use clap::{Subcommand, ValueEnum};
use lyss_core::config::{CacheMode, CacheScope, WorkspaceCache};
use lyss_core::policy::{Workspace, WorkspaceUpdate};

use crate::Ctx;
use crate::output::{list, print, when};

/// Cache modes, as flags.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    Off,
    Exact,
    Semantic,
}

/// Cache scopes, as flags.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ShareScope {
    Key,
    User,
    Workspace,
    Global,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a workspace with the models its users may use.
    Create {
        name: String,
        /// Comma-separated public model names; `*` allows every configured model.
        #[arg(long, default_value = "")]
        models: String,
    },
    /// List workspaces.
    List,
    /// Change a workspace's models or cache settings (running servers follow within a second).
    Update {
        /// Workspace name or id.
        workspace: String,
        /// Replace the allowed models (comma-separated; `*` for all).
        #[arg(long)]
        models: Option<String>,
        /// Answer repeated (`exact`) or equivalent (`semantic`) questions from the cache.
        #[arg(long, value_enum)]
        cache: Option<Mode>,
        /// How long answers stay cached, e.g. `1h`, `30m`, `1d`.
        #[arg(long, value_parser = humantime::parse_duration)]
        cache_ttl: Option<std::time::Duration>,
        /// Who shares cached answers.
        #[arg(long, value_enum)]
        cache_scope: Option<ShareScope>,
        /// How similar a question must be to a cached one for a semantic hit, in (0, 1].
        #[arg(long)]
        semantic_threshold: Option<f32>,
    },
}

/// A workspace's stored cache settings, for a table (`-` where the config decides).
fn cache_cell(c: &WorkspaceCache) -> String {
    let name = |v: serde_json::Value| v.as_str().map(str::to_owned);
    let mut parts = Vec::new();
    if let Some(m) = c.mode.and_then(|m| name(serde_json::json!(m))) {
        parts.push(m);
    }
    if let Some(t) = c.ttl_secs {
        parts.push(format!(
            "ttl {}",
            humantime::format_duration(std::time::Duration::from_secs(t))
        ));
    }
    if let Some(s) = c.scope.and_then(|s| name(serde_json::json!(s))) {
        parts.push(format!("per {s}"));
    }
    if let Some(t) = c.semantic_threshold {
        parts.push(format!("≥ {t}"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn row(w: &Workspace) -> Vec<String> {
    vec![
        w.id.clone(),
        w.name.clone(),
        w.models.join(","),
        cache_cell(&w.cache),
        when(Some(w.created_at)),
    ]
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    let policy = ctx.policy().await?;
    match cmd {
        Cmd::Create { name, models } => {
            let models = list(&models);
            if models.is_empty() {
                eprintln!(
                    "note: no models allowed yet (deny by default); pass --models a,b or --models '*'"
                );
            }
            let ws = policy.create_workspace(&name, &models).await?;
            print(ctx.json, &ws, &["id", "name", "models"], || {
                vec![vec![ws.id.clone(), ws.name.clone(), ws.models.join(",")]]
            })
        }
        Cmd::List => {
            let all = policy.list_workspaces().await?;
            print(
                ctx.json,
                &all,
                &["id", "name", "models", "cache", "created"],
                || all.iter().map(row).collect(),
            )
        }
        Cmd::Update {
            workspace,
            models,
            cache,
            cache_ttl,
            cache_scope,
            semantic_threshold,
        } => {
            let update = WorkspaceUpdate {
                models: models.as_deref().map(list),
                cache: WorkspaceCache {
                    mode: cache.map(|m| match m {
                        Mode::Off => CacheMode::Off,
                        Mode::Exact => CacheMode::Exact,
                        Mode::Semantic => CacheMode::Semantic,
                    }),
                    ttl_secs: cache_ttl.map(|d| d.as_secs()),
                    scope: cache_scope.map(|s| match s {
                        ShareScope::Key => CacheScope::Key,
                        ShareScope::User => CacheScope::User,
                        ShareScope::Workspace => CacheScope::Workspace,
                        ShareScope::Global => CacheScope::Global,
                    }),
                    semantic_threshold,
                },
            };
            if update == WorkspaceUpdate::default() {
                anyhow::bail!(
                    "nothing to change: pass --models, --cache, --cache-ttl, --cache-scope or --semantic-threshold"
                );
            }
            let ws = policy.update_workspace(&workspace, &update).await?;
            print(
                ctx.json,
                &ws,
                &["id", "name", "models", "cache", "created"],
                || vec![row(&ws)],
            )
        }
    }
}
