//! A `lyss-server` process on loopback, for tests and benchmarks: started, waited for until
//! `/readyz` answers, killed on drop.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A port free on loopback now (bound by a server a moment later: see [`Server::start`]).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `target/<profile>/NAME`: a workspace binary beside the running test executable (cargo
/// builds them there with `cargo test --workspace`).
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

/// A command for `program` without the caller's lyss or provider environment.
pub fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
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

/// Why a server did not become ready, with what it wrote to stderr.
#[derive(Debug)]
pub enum NotReady {
    Exited { status: ExitStatus, log: String },
    TimedOut { log: String },
}

/// A running `lyss-server`; killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// What must live as long as the server (its data and log directories).
    keep: Vec<Box<dyn Any + Send>>,
}

impl Server {
    /// Starts the workspace's `lyss-server ARGS --bind 127.0.0.1:<free port>` and waits for
    /// `/readyz`. A server that exits fails the test with its stderr; one that lost its port to
    /// another test (the port is free when picked, not when bound) is started again on another.
    pub async fn start(args: &[&str]) -> Server {
        for _ in 0..3 {
            let logs = tempfile::tempdir().unwrap();
            let bind = format!("127.0.0.1:{}", free_port());
            let mut cmd = command(&binary("lyss-server"));
            cmd.args(args).args(["--bind", &bind]);
            let stderr = logs.path().join("stderr");
            match Self::spawn(
                cmd,
                format!("http://{bind}"),
                &stderr,
                Duration::from_secs(30),
            )
            .await
            {
                Ok(server) => return server.keep(logs),
                Err(NotReady::Exited { log, .. }) if log.contains("cannot listen on") => {}
                Err(NotReady::Exited { status, log }) => {
                    panic!("lyss-server exited ({status}) before it was ready:\n{log}")
                }
                Err(NotReady::TimedOut { log }) => {
                    panic!("lyss-server was not ready within 30 s:\n{log}")
                }
            }
        }
        panic!("lyss-server lost its port three times running");
    }

    /// Spawns `cmd` — a server that will answer at `base` — with its stderr in `stderr`, and
    /// waits until its `/readyz` answers, at most `within` (then it is killed).
    pub async fn spawn(
        mut cmd: Command,
        base: String,
        stderr: &Path,
        within: Duration,
    ) -> Result<Server, NotReady> {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .unwrap();
        let log = || std::fs::read_to_string(stderr).unwrap_or_default();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(NotReady::Exited { status, log: log() });
            }
            if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
                && r.status().is_success()
            {
                return Ok(Server {
                    child,
                    base,
                    keep: Vec::new(),
                });
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NotReady::TimedOut { log: log() });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Keeps `thing` (a temporary directory, say) until the server is dropped.
    pub fn keep(mut self, thing: impl Any + Send) -> Self {
        self.keep.push(Box::new(thing));
        self
    }

    /// The server's process id (for its RSS).
    pub fn pid(&self) -> u32 {
        self.child.id()
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
