//! `lyss memory …`: a user's long-term memories, on the same store as the server.

use std::sync::Arc;

use clap::Subcommand;
use lyss_core::memory::{MemoryScope, MemoryStore, NewMemory, SearchQuery};
use lyss_core::setup;
use serde_json::Value;

use crate::Ctx;
use crate::output::{print, when};

/// Whose memories: a user, optionally narrowed to one of their end-users (the `user` field a
/// client such as LobeChat sends with each chat, or the MCP server's `x-lyss-user`).
#[derive(Debug, clap::Args)]
pub struct Who {
    /// User name or id.
    #[arg(long)]
    user: String,
    /// The end-user scope (see `lyss memory scopes`); without it, the user's own.
    #[arg(long)]
    end_user: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// The scopes a user's memories are kept in (their own and each end-user's), with counts.
    Scopes {
        /// User name or id.
        #[arg(long)]
        user: String,
    },
    /// A user's memories, newest first.
    List {
        #[command(flatten)]
        who: Who,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Search a user's memories.
    Search {
        #[command(flatten)]
        who: Who,
        query: String,
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Add a memory to a user.
    Add {
        #[command(flatten)]
        who: Who,
        text: String,
    },
    /// Delete one memory.
    Delete {
        #[command(flatten)]
        who: Who,
        id: String,
    },
    /// One memory's changes: added, updated (old and new text), deleted.
    History {
        #[command(flatten)]
        who: Who,
        id: String,
    },
    /// Delete everything remembered about a user — every end-user scope too — with its history.
    Forget {
        /// User name or id.
        #[arg(long)]
        user: String,
    },
    /// Import the user turns of a conversation export as memories: a JSON array of OpenAI
    /// messages, an object with `messages`, or one message per line (JSONL).
    Import {
        #[command(flatten)]
        who: Who,
        file: std::path::PathBuf,
    },
}

async fn open(
    ctx: &Ctx,
    user: &str,
    end_user: Option<String>,
) -> anyhow::Result<(Arc<dyn MemoryStore>, MemoryScope)> {
    let policy = ctx.policy().await?;
    let users = policy.list_users(None).await?;
    let u = users
        .iter()
        .find(|u| u.name == user || u.id == user)
        .ok_or_else(|| anyhow::anyhow!("user `{user}` not found"))?;
    let ws = policy
        .list_workspaces()
        .await?
        .into_iter()
        .find(|w| w.name == u.workspace)
        .ok_or_else(|| anyhow::anyhow!("workspace of `{user}` not found"))?;
    // An embedder may use a provider stored with `lyss provider add`.
    let config = setup::with_stored_providers(&ctx.config, policy.as_ref()).await?;
    let providers = setup::build_providers(&config)?;
    let embedder = setup::open_embedder(&config, &providers).await?;
    let store: Arc<dyn MemoryStore> = setup::open_memory(&config, embedder).await?;
    // Trimmed, none when empty: the scope the chat and the memory APIs name.
    let scope = MemoryScope {
        end_user: lyss_core::memory::end_user(end_user.as_deref()),
        ..MemoryScope::user(ws.id, u.id.clone())
    };
    Ok((store, scope))
}

/// The user turns of an export.
fn user_turns(raw: &str) -> anyhow::Result<Vec<String>> {
    let messages: Vec<Value> = match serde_json::from_str::<Value>(raw) {
        Ok(Value::Array(a)) => a,
        Ok(Value::Object(o)) => o
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("expected `messages` in the object"))?,
        _ => raw
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?,
    };
    Ok(messages
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| match &m["content"] {
            Value::String(s) => Some(s.clone()),
            Value::Array(parts) => Some(
                parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => None,
        })
        .filter(|t| !t.trim().is_empty())
        .collect())
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    let header = &[
        "id", "text", "said by", "profile", "source", "said", "created",
    ];
    let row = |m: &lyss_core::memory::Memory| {
        vec![
            m.id.clone(),
            m.text.clone(),
            m.role.map(|r| r.as_str()).unwrap_or("-").to_owned(),
            if m.profile { "yes" } else { "" }.to_owned(),
            m.source.clone().unwrap_or_default(),
            when(m.occurred_at),
            when(Some(m.created_at)),
        ]
    };
    match cmd {
        Cmd::Scopes { user } => {
            let (store, scope) = open(ctx, &user, None).await?;
            let scopes = store.scopes(&scope.workspace_id, &scope.user_id).await?;
            let listed: Vec<Value> = scopes
                .iter()
                .map(|(s, n)| {
                    serde_json::json!({"end_user": s.end_user, "agent": s.agent, "memories": n})
                })
                .collect();
            print(
                ctx.json,
                &listed,
                &["end-user", "agent", "memories"],
                || {
                    scopes
                        .iter()
                        .map(|(s, n)| {
                            vec![
                                s.end_user.clone().unwrap_or_else(|| "(own)".into()),
                                s.agent.clone().unwrap_or_default(),
                                n.to_string(),
                            ]
                        })
                        .collect()
                },
            )
        }
        Cmd::List { who, limit } => {
            let (store, scope) = open(ctx, &who.user, who.end_user).await?;
            let all = store.list(&scope, limit).await?;
            print(ctx.json, &all, header, || all.iter().map(row).collect())
        }
        Cmd::Search { who, query, limit } => {
            let (store, scope) = open(ctx, &who.user, who.end_user).await?;
            let hits = store
                .search(
                    &scope,
                    &SearchQuery {
                        text: query,
                        limit,
                        min_similarity: lyss_core::memory::MIN_SIMILARITY,
                    },
                )
                .await?;
            print(
                ctx.json,
                &hits,
                &["id", "text", "score", "similarity"],
                || {
                    hits.iter()
                        .map(|h| {
                            vec![
                                h.memory.id.clone(),
                                h.memory.text.clone(),
                                format!("{:.4}", h.score),
                                h.similarity.map(|s| format!("{s:.3}")).unwrap_or_default(),
                            ]
                        })
                        .collect()
                },
            )
        }
        Cmd::Add { who, text } => {
            let (store, scope) = open(ctx, &who.user, who.end_user).await?;
            let m = store
                .add(
                    &scope,
                    &NewMemory {
                        text,
                        source: Some("cli".into()),
                        occurred_at: None,
                        ..NewMemory::default()
                    },
                )
                .await?;
            print(ctx.json, &m, header, || vec![row(&m)])
        }
        Cmd::Delete { who, id } => {
            let (store, scope) = open(ctx, &who.user, who.end_user).await?;
            store.delete(&scope, &id).await?;
            eprintln!("memory {id} deleted");
            Ok(())
        }
        Cmd::History { who, id } => {
            let (store, scope) = open(ctx, &who.user, who.end_user).await?;
            let events = store.history(&scope, &id).await?;
            print(
                ctx.json,
                &events,
                &["event", "old text", "new text", "at"],
                || {
                    events
                        .iter()
                        .map(|h| {
                            vec![
                                h.event.clone(),
                                h.old_text.clone().unwrap_or_default(),
                                h.new_text.clone().unwrap_or_default(),
                                when(Some(h.at)),
                            ]
                        })
                        .collect()
                },
            )
        }
        Cmd::Forget { user } => {
            let (store, scope) = open(ctx, &user, None).await?;
            let n = store.forget(&scope).await?;
            eprintln!("forgot {n} memories of {user}");
            Ok(())
        }
        Cmd::Import { who, file } => {
            let turns = user_turns(&std::fs::read_to_string(&file)?)?;
            let user = who.user.clone();
            let (store, scope) = open(ctx, &who.user, who.end_user).await?;
            let bar = indicatif::ProgressBar::new(turns.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} turns {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            if ctx.json {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let source = format!("import:{}", file.display());
            let queued: Vec<NewMemory> = turns
                .iter()
                .map(|text| NewMemory {
                    text: text.clone(),
                    source: Some(source.clone()),
                    ..NewMemory::default()
                })
                .collect();
            store.enqueue(&scope, &queued, None).await?;
            // The same path as live turns: de-duplicated by similarity.
            let mut done = 0;
            while done < turns.len() {
                let n = store
                    .ingest_pending(16, ctx.config.memory.dedupe_similarity)
                    .await?;
                if n == 0 {
                    break;
                }
                done += n;
                bar.set_position(done as u64);
            }
            bar.finish_and_clear();
            let kept = store.list(&scope, usize::MAX / 2).await?.len();
            if ctx.json {
                println!(
                    "{}",
                    serde_json::json!({"turns": turns.len(), "memories": kept})
                );
            } else {
                eprintln!(
                    "imported {} user turns; {user} now has {kept} memories",
                    turns.len()
                );
            }
            Ok(())
        }
    }
}
