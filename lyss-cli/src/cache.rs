//! `lyss cache …`: the running server's answer cache, through its admin API (an in-process
//! cache lives only in the server), signed with the admin token of the shared data directory.

use clap::Subcommand;
use serde_json::Value;

use crate::Ctx;
use crate::output::print;

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Entries and bytes the cache holds.
    Stats {
        /// The server (default: http:// + the configured `bind`).
        #[arg(long)]
        server: Option<String>,
    },
    /// Drops cached answers: one workspace's (name or id), or all.
    Clear {
        #[arg(long)]
        workspace: Option<String>,
        #[arg(long)]
        server: Option<String>,
    },
}

/// The server's base URL and the admin token.
fn target(ctx: &Ctx, server: Option<String>) -> anyhow::Result<(String, String)> {
    let base = server.unwrap_or_else(|| {
        format!(
            "http://{}",
            ctx.config.bind.to_string().replace("0.0.0.0", "127.0.0.1")
        )
    });
    let (token, _) = lyss_core::setup::admin_token(&ctx.config)?;
    Ok((
        base.trim_end_matches('/').to_owned(),
        token.expose().to_owned(),
    ))
}

/// Sends an admin request; a refusal becomes an error with the server's message.
async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req.send().await.map_err(|e| {
        anyhow::anyhow!("cannot reach lyss-server ({e}); is it running? (--server URL)")
    })?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        anyhow::bail!(
            "lyss-server answered {status}: {}",
            body["error"]["message"]
        );
    }
    Ok(body)
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    match cmd {
        Cmd::Stats { server } => {
            let (base, token) = target(ctx, server)?;
            let body = send(client.get(format!("{base}/admin/cache")).bearer_auth(token)).await?;
            print(ctx.json, &body, &["enabled", "entries", "bytes"], || {
                vec![vec![
                    body["enabled"].to_string(),
                    body["entries"].to_string(),
                    body["bytes"].to_string(),
                ]]
            })
        }
        Cmd::Clear { workspace, server } => {
            let (base, token) = target(ctx, server)?;
            let mut req = client
                .delete(format!("{base}/admin/cache"))
                .bearer_auth(token);
            if let Some(w) = &workspace {
                req = req.query(&[("workspace", w)]);
            }
            let body = send(req).await?;
            print(ctx.json, &body, &["cleared"], || {
                vec![vec![body["cleared"].to_string()]]
            })
        }
    }
}
