//! `lyss workspace …`

use clap::Subcommand;

use crate::Ctx;
use crate::output::{list, print, when};

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
            print(ctx.json, &all, &["id", "name", "models", "created"], || {
                all.iter()
                    .map(|w| {
                        vec![
                            w.id.clone(),
                            w.name.clone(),
                            w.models.join(","),
                            when(Some(w.created_at)),
                        ]
                    })
                    .collect()
            })
        }
    }
}
