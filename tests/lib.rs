//! Helpers for the end-to-end tests in `tests/`: they start the built `lyss-server` and `lyss`
//! binaries (cargo builds them beside the test executables with `cargo test --workspace`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `target/<profile>/NAME`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (it builds the binaries)",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A command without the caller's lyss or provider environment.
pub fn command(name: &str) -> Command {
    let mut cmd = Command::new(binary(name));
    for var in [
        "LYSS_CONFIG",
        "LYSS_DATA_DIR",
        "LYSS_DATABASE_URL",
        "LYSS_REDIS_URL",
        "LYSS_ADMIN_TOKEN",
        "LYSS_BIND",
        "LYSS_MASTER_KEY",
        "OPENAI_API_KEY",
        "OLLAMA_BASE_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A running `lyss-server`; killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// Holds the server's stderr, read back when it fails to start.
    _logs: tempfile::TempDir,
}

impl Server {
    /// Starts `lyss-server ARGS --bind 127.0.0.1:<free port>` and waits for `/readyz`. A server
    /// that exits fails the test with its stderr; one that lost its port to another test (the
    /// port is free when picked, not when bound) is started again on another.
    pub async fn start(args: &[&str]) -> Server {
        for _ in 0..3 {
            let logs = tempfile::tempdir().unwrap();
            let stderr = logs.path().join("stderr");
            let bind = format!("127.0.0.1:{}", free_port());
            let mut child = command("lyss-server")
                .args(args)
                .args(["--bind", &bind])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr).unwrap())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
                    if log.contains("cannot listen on") {
                        break;
                    }
                    panic!("lyss-server exited ({status}) before it was ready:\n{log}");
                }
                if let Ok(r) = reqwest::get(format!("http://{bind}/readyz")).await
                    && r.status().is_success()
                {
                    return Server {
                        child,
                        base: format!("http://{bind}"),
                        _logs: logs,
                    };
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
                    panic!("lyss-server was not ready within 30 s:\n{log}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("lyss-server lost its port three times running");
    }

    /// `kill -9`: no chance to settle anything.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_hard();
    }
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
