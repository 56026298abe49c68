//! `lyss key …`

use clap::Subcommand;
use lyss_core::policy::{KeyInfo, NewKey};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, macros::format_description};

use crate::Ctx;
use crate::output::{list, print, when};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Mint a key for a user. The key is printed once and cannot be shown again.
    Create {
        /// User name or id.
        #[arg(long)]
        user: String,
        /// Narrow the workspace's models for this key (comma-separated).
        #[arg(long)]
        models: Option<String>,
        /// Expiry: a date (YYYY-MM-DD, the key stops working at 00:00 UTC that day) or an
        /// RFC 3339 time.
        #[arg(long, value_parser = parse_expiry)]
        expires: Option<OffsetDateTime>,
        /// A label, e.g. the device or app that uses the key.
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        /// Only keys of this user.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a key by id; running servers refuse it within a second.
    Revoke { id: String },
}

pub fn parse_expiry(s: &str) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    Date::parse(s, format_description!("[year]-[month]-[day]"))
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD) or an RFC 3339 time"))
}

fn row(k: &KeyInfo) -> Vec<String> {
    let status = if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|e| e <= OffsetDateTime::now_utc()) {
        "expired"
    } else {
        "active"
    };
    vec![
        k.id.clone(),
        k.name.clone().unwrap_or_default(),
        k.user.clone(),
        k.workspace.clone(),
        k.models
            .as_ref()
            .map(|m| m.join(","))
            .unwrap_or_else(|| "(workspace)".into()),
        when(k.expires_at),
        status.into(),
    ]
}

const HEADER: &[&str] = &[
    "id",
    "name",
    "user",
    "workspace",
    "models",
    "expires",
    "status",
];

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    let policy = ctx.policy().await?;
    match cmd {
        Cmd::Create {
            user,
            models,
            expires,
            name,
        } => {
            let created = policy
                .create_key(&NewKey {
                    user,
                    name,
                    models: models.as_deref().map(list),
                    expires_at: expires,
                })
                .await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "key": created.key,
                        "id": created.info.id,
                        "user": created.info.user,
                        "workspace": created.info.workspace,
                        "expires_at": created.info.expires_at.and_then(|t| t.format(&Rfc3339).ok()),
                    }))?
                );
            } else {
                println!("{}", created.key);
                eprintln!(
                    "key {} for {} ({}). Store it now: it will not be shown again.",
                    created.info.id, created.info.user, created.info.workspace
                );
            }
            Ok(())
        }
        Cmd::List { user } => {
            let all = policy.list_keys(user.as_deref()).await?;
            print(ctx.json, &all, HEADER, || all.iter().map(row).collect())
        }
        Cmd::Revoke { id } => {
            let k = policy.revoke_key(&id).await?;
            print(ctx.json, &k, HEADER, || vec![row(&k)])
        }
    }
}
