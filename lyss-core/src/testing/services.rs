//! Real Postgres and Redis for tests, from `LYSS_TEST_POSTGRES_URL` and `LYSS_TEST_REDIS_URL`.
//!
//! Unset locally: the test is skipped with a printed reason. With `CI=true`, an unset or
//! unreachable service fails the test — CI never passes by skipping.

#[cfg(feature = "postgres")]
use sqlx::Connection as _;

#[cfg_attr(
    not(any(feature = "postgres", feature = "redis", feature = "local-embeddings")),
    allow(dead_code)
)]
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

#[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if in_ci() => {
            panic!("CI=true but {var} is not set: integration tests must not be skipped")
        }
        _ => {
            eprintln!("skipped: set {var} to run this test against a real server");
            None
        }
    }
}

#[cfg(feature = "postgres")]
/// A fresh, empty Postgres schema for one test: the returned URL selects it with
/// `search_path`. Schemas are named `lyss_t_…` (`scripts/test.sh` drops old ones).
pub async fn postgres() -> Option<String> {
    let base = service_url("LYSS_TEST_POSTGRES_URL")?;
    let schema = format!("lyss_t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("LYSS_TEST_POSTGRES_URL={base} is unreachable: {e}"));
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create schema {schema}: {e}"));
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

#[cfg(feature = "redis")]
/// The Redis URL and a unique key prefix for one test (never `FLUSHDB`).
pub async fn redis() -> Option<(String, String)> {
    let url = service_url("LYSS_TEST_REDIS_URL")?;
    let client = redis::Client::open(url.as_str())
        .unwrap_or_else(|e| panic!("LYSS_TEST_REDIS_URL={url}: {e}"));
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("LYSS_TEST_REDIS_URL={url} is unreachable: {e}"));
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("LYSS_TEST_REDIS_URL={url} does not answer PING: {e}"));
    Some((url, format!("lyss-test:{}:", uuid::Uuid::new_v4().simple())))
}

#[cfg(feature = "local-embeddings")]
/// The local embedding model from the default models directory (`scripts/fetch-models.sh`).
pub async fn local_embedder() -> Option<std::sync::Arc<dyn crate::embed::Embedder>> {
    let loaded = tokio::task::spawn_blocking(crate::embed::LocalEmbedder::load_default)
        .await
        .expect("load task");
    match loaded {
        Ok(e) => Some(std::sync::Arc::new(e)),
        Err(e) if in_ci() => panic!("CI=true but the local embedding model is unavailable: {e}"),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// A `redis-server` of one test's own on a free loopback port, to kill and start again
/// (fault tests must not touch the shared Redis). Killed on drop.
pub struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    /// Starts one and waits until it accepts connections.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("its address")
            .port();
        let mut redis = Self { port, child: None };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`PrivateRedis::kill`]).
    pub async fn restart(&mut self) {
        self.kill();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed for this test");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("private redis-server did not start");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL server of one test's own (a fresh cluster in a temporary directory, on a free
/// loopback port, trust auth), to stop and start again mid-test without touching the shared
/// server. Needs PostgreSQL's server binaries (`/usr/lib/postgresql/*/bin`, or
/// `LYSS_TEST_PG_BINDIR`); as root they run as the `postgres` user (initdb refuses root).
/// Stopped and removed on drop.
pub struct PrivatePostgres {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// Creates the cluster and starts it.
    pub async fn start() -> Self {
        let bin = std::env::var_os("LYSS_TEST_PG_BINDIR")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
                    .ok()?
                    .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                    .filter(|p| p.join("initdb").exists())
                    .collect();
                found.sort();
                found.pop()
            })
            .expect("PostgreSQL server binaries (initdb, pg_ctl) are needed for this test");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("its address")
            .port();
        let dir = std::env::temp_dir().join(format!("lyss-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).expect("a directory for the cluster");
        let pg = Self { dir, bin, port };
        if Self::as_root() {
            pg.run("chown", &["postgres:", &pg.dir.to_string_lossy()], false);
        }
        let data = pg.data();
        pg.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
            true,
        );
        pg.start_again().await;
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: no clean shutdown, as in a crash;
    /// every connection is cut).
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
            true,
        );
    }

    /// Starts the server (again) on the same port and waits until it accepts connections.
    pub async fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &opts,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "start",
            ],
            true,
        );
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("private PostgreSQL did not start");
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    fn as_root() -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
    }

    /// `program` (from the server binaries when `server`), run as `postgres` when root.
    fn command(&self, program: &str, server: bool) -> std::process::Command {
        let program = if server {
            self.bin.join(program).to_string_lossy().into_owned()
        } else {
            program.to_owned()
        };
        if server && Self::as_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", &program]);
            c
        } else {
            std::process::Command::new(&program)
        }
    }

    fn run(&self, program: &str, args: &[&str], server: bool) {
        let out = self
            .command(program, server)
            .args(args)
            .output()
            .expect("a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl", true)
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
