//! Benchmarks: `cargo bench -p lyss-benches`; the gateway load benchmark is `scripts/bench-gateway.sh`.
//!
//! What the benchmarks that drive a real `lyss-server` share: starting it, and its admin API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A port free on loopback now (bound by the server a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `lyss-server` a benchmark started, with its config and data in a temporary directory;
/// killed on drop.
pub struct Server {
    child: Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The server's process id (for its RSS).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `binary --config DIR/lyss.toml --data-dir DIR/data` — the config binds `port` —
    /// with its stderr in `log` (or nowhere), and waits until `/readyz` answers (at most 60 s;
    /// then panics with the log).
    pub async fn start(
        binary: &Path,
        dir: tempfile::TempDir,
        port: u16,
        log: Option<&Path>,
    ) -> Self {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        };
        let child = Command::new(binary)
            .arg("--config")
            .arg(dir.path().join("lyss.toml"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while reqwest::get(format!("{}/readyz", server.base))
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
        {
            let log = || log.map(|l| std::fs::read_to_string(l).unwrap_or_default());
            assert!(
                Instant::now() < deadline,
                "lyss-server did not start: {:?}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs `body` to the admin API with `token`; panics unless it succeeds.
pub async fn admin(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: Value,
) -> Value {
    let resp = http
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}
