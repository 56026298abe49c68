//! `lyss user …`

use clap::Subcommand;

use crate::Ctx;
use crate::output::{print, when};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a user (no email, no password) in a workspace.
    Create {
        name: String,
        /// Workspace name or id.
        #[arg(long)]
        workspace: String,
    },
    /// List users.
    List {
        /// Only users of this workspace.
        #[arg(long)]
        workspace: Option<String>,
    },
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    let policy = ctx.policy().await?;
    match cmd {
        Cmd::Create { name, workspace } => {
            let u = policy.create_user(&name, &workspace).await?;
            print(ctx.json, &u, &["id", "name", "workspace"], || {
                vec![vec![u.id.clone(), u.name.clone(), u.workspace.clone()]]
            })
        }
        Cmd::List { workspace } => {
            let all = policy.list_users(workspace.as_deref()).await?;
            print(
                ctx.json,
                &all,
                &["id", "name", "workspace", "created"],
                || {
                    all.iter()
                        .map(|u| {
                            vec![
                                u.id.clone(),
                                u.name.clone(),
                                u.workspace.clone(),
                                when(Some(u.created_at)),
                            ]
                        })
                        .collect()
                },
            )
        }
    }
}
