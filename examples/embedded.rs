//! Embedding lyss-core in a Rust app: governance in-process, no HTTP server.
//!
//! Creates a workspace, a user and a key in a throwaway SQLite database, then checks what the
//! key may use — the same calls `lyss-server` makes for every request.

use std::sync::Arc;

use lyss_core::policy::NewKey;
use lyss_core::{Lyss, Policy as _, SqlitePolicy};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let policy = Arc::new(SqlitePolicy::connect("sqlite::memory:").await?);
    policy
        .create_workspace("research", &["gpt-4o-mini".into()])
        .await?;
    policy.create_user("ada", "research").await?;
    let key = policy
        .create_key(&NewKey {
            user: "ada".into(),
            ..NewKey::default()
        })
        .await?;
    let lyss = Lyss::builder(policy).build();
    let who = lyss.authenticate(&key.key).await?;
    println!(
        "key {} belongs to {} in workspace {}, allowed models: {:?}",
        who.key_id, who.user_name, who.workspace_name, who.workspace_models
    );
    Ok(())
}
