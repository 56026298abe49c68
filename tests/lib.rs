//! Helpers for the end-to-end tests in `tests/`: they start the built `lyss-server` and `lyss`
//! binaries (cargo builds them beside the test executables with `cargo test --workspace`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub use lyss_testkit::{Server, binary, free_port};

/// The workspace binary `name` without the caller's lyss or provider environment.
pub fn command(name: &str) -> Command {
    lyss_testkit::server::command(&binary(name))
}

/// Runs `lyss --json ARGS` and parses its output (`null` when it prints nothing).
pub fn lyss(args: &[&str]) -> Value {
    let out = command("lyss").arg("--json").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "lyss {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes a `lyss.toml` with one OpenAI-compatible provider at `upstream` (…/v1) serving
/// `gpt-4o-mini` at 1 USD / 2 USD per 1M tokens, plus `extra` lines at the top level.
pub fn write_config(dir: &Path, upstream: &str, extra: &str) -> PathBuf {
    let path = dir.join("lyss.toml");
    std::fs::write(
        &path,
        format!(
            r#"{extra}

[[providers]]
name = "local"
kind = "openai"
base_url = "{upstream}"

[[models]]
name = "gpt-4o-mini"
provider = "local"
aliases = ["gpt-5-mini"]
input_per_mtok = 1.0
output_per_mtok = 2.0

[[models]]
name = "gpt-4o"
provider = "local"

[[models]]
name = "text-embedding-3-small"
provider = "local"
"#
        ),
    )
    .unwrap();
    path
}

/// A data directory with a `lyss.toml` ([`write_config`]) and the real binaries on it: the
/// admin's `lyss` ([`Deployment::lyss`]) and a `lyss-server` ([`Deployment::serve`]).
pub struct Deployment {
    pub dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Deployment {
    /// A new data directory with a config for an OpenAI-compatible `upstream` (…/v1) and `extra`.
    pub fn new(upstream: &str, extra: &str) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), upstream, extra);
        let args = vec![
            "--config".to_owned(),
            config.to_str().unwrap().to_owned(),
            "--data-dir".to_owned(),
            dir.path().join("data").to_str().unwrap().to_owned(),
        ];
        Deployment { dir, args }
    }

    /// `--config … --data-dir …`.
    pub fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    /// `lyss --json ARGS` on this deployment's store.
    pub fn lyss(&self, args: &[&str]) -> Value {
        let mut all = self.args();
        all.extend_from_slice(args);
        lyss(&all)
    }

    /// Starts `lyss-server` on this deployment ([`Server::start`]).
    pub async fn serve(&self) -> Server {
        Server::start(&self.args()).await
    }
}

/// The ledger rows a running server's `/admin/ledger` returns, newest first.
pub async fn ledger(base: &str, admin_token: &str) -> Vec<Value> {
    reqwest::Client::new()
        .get(format!("{base}/admin/ledger"))
        .bearer_auth(admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
