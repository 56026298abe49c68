//! Fault injection against the real `lyss-server` binary (docs/reliability.md). Each test
//! breaks one thing — the upstream (slow, hung, reset, garbage, a stream cut mid-way), the
//! client (gone mid-stream), Postgres (stopped and started mid-load), Redis (killed and
//! restarted mid-load), the SQLite disk (full) — and checks what the client saw (an answer or
//! a clean error in OpenAI's shape), what the ledger shows (one row per request, nothing lost,
//! nothing twice), that budgets hold (spend equals the ledger, nothing left reserved), and that
//! lyss serves again once the fault is gone, without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use lyss_testkit::openai::chunk;
use lyss_tests::Server;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const ADMIN: &str = "faults-admin";
/// Reservations of requests that died are released after this long.
const RESERVATION_TIMEOUT_SECS: u64 = 10;

/// What the fake upstream does with the next requests.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Healthy,
    /// Answers after this long (within lyss's timeouts).
    Slow(Duration),
    /// Reads the request and never answers.
    Hang,
    /// Resets the connection (RST) once the request is read.
    Reset,
    /// `200 OK` with a body that is not the JSON it claims to be.
    Garbage,
    /// Sends the headers and part of the body, then resets the connection.
    Cut,
    /// A stream of 100 chunks, one every 50 ms (to leave mid-way).
    SlowStream,
}

/// An OpenAI-compatible upstream written at the socket level, so that it can misbehave the
/// ways real networks do. Usage: prompt 5 tokens, completion 10 (healthy).
#[derive(Clone)]
struct Upstream {
    url: String,
    fault: Arc<Mutex<Fault>>,
    requests: Arc<AtomicU64>,
    /// Set when lyss closed a stream the upstream was still writing.
    cancelled: Arc<AtomicBool>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = Upstream {
            url: format!("http://{}/v1", listener.local_addr().unwrap()),
            fault: Arc::new(Mutex::new(Fault::Healthy)),
            requests: Arc::default(),
            cancelled: Arc::default(),
        };
        let server = up.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let up = server.clone();
                tokio::spawn(async move { up.serve(sock).await });
            }
        });
        up
    }

    fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    async fn serve(&self, mut sock: TcpStream) {
        let Some(body) = read_request(&mut sock).await else {
            return;
        };
        self.requests.fetch_add(1, Ordering::SeqCst);
        let stream = body["stream"] == json!(true);
        let fault = *self.fault.lock().unwrap();
        match fault {
            Fault::Healthy | Fault::SlowStream => {}
            Fault::Slow(d) => tokio::time::sleep(d).await,
            Fault::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Fault::Reset => return reset(sock),
            Fault::Garbage => {
                let body = "{\"id\": \"x\", \"choices\": [{\"message\": <html>oops";
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(format!("{head}{body}").as_bytes()).await;
                return;
            }
            Fault::Cut if !stream => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"id\": \"chatcmpl-1\", \"object\": ";
                let _ = sock.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                return reset(sock);
            }
            Fault::Cut => {}
        }
        if !stream {
            let body = json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, friend"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15}
            })
            .to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(format!("{head}{body}").as_bytes()).await;
            return;
        }
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        if sock.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let (pieces, pause) = match fault {
            Fault::SlowStream => (100, Duration::from_millis(50)),
            _ => (10, Duration::ZERO),
        };
        for i in 0..pieces {
            if fault == Fault::Cut && i == 3 {
                return reset(sock);
            }
            let event = format!(
                "data: {}\n\n",
                chunk("gpt-4o-mini", json!({"content": "tok "}), Value::Null)
            );
            if write_chunk(&mut sock, &event).await.is_err() {
                self.cancelled.store(true, Ordering::SeqCst);
                return;
            }
            tokio::time::sleep(pause).await;
        }
        let usage = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-4o-mini", "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": pieces, "total_tokens": 5 + pieces}});
        for event in [
            format!(
                "data: {}\n\n",
                chunk("gpt-4o-mini", json!({}), json!("stop"))
            ),
            format!("data: {usage}\n\n"),
            "data: [DONE]\n\n".to_owned(),
        ] {
            if write_chunk(&mut sock, &event).await.is_err() {
                return;
            }
        }
        let _ = sock.write_all(b"0\r\n\r\n").await;
    }
}

async fn write_chunk(sock: &mut TcpStream, data: &str) -> std::io::Result<()> {
    sock.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .await?;
    sock.flush().await
}

/// Closes with RST instead of FIN.
fn reset(sock: TcpStream) {
    let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
    drop(sock);
}

/// Reads one HTTP/1.1 request (headers, then `content-length` bytes); returns its JSON body.
async fn read_request(sock: &mut TcpStream) -> Option<Value> {
    let mut buf = Vec::new();
    let mut piece = [0u8; 8192];
    let head_end = loop {
        let n = sock.read(&mut piece).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&piece[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut piece).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&piece[..n]);
    }
    serde_json::from_slice(&buf[head_end..head_end + len]).ok()
}

/// `lyss.toml` for the fault tests: short timeouts, one quick retry, a breaker that closes
/// after a second, and `extra` at the top level.
fn config(dir: &Path, upstream: &str, extra: &str) -> String {
    let path = dir.join("lyss.toml");
    std::fs::write(
        &path,
        format!(
            r#"admin_token = "{ADMIN}"
reservation_timeout_secs = {RESERVATION_TIMEOUT_SECS}
{extra}

[router]
retries = 1
backoff_ms = 10
breaker_cooldown_secs = 1

[[providers]]
name = "local"
kind = "openai"
base_url = "{upstream}"

[[models]]
name = "gpt-4o-mini"
provider = "local"
input_per_mtok = 1.0
output_per_mtok = 2.0
first_byte_timeout_secs = 3
timeout_secs = 5
"#
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// The admin API of one server.
struct Admin {
    base: String,
    http: reqwest::Client,
}

impl Admin {
    fn of(server: &Server) -> Admin {
        Admin {
            base: server.base.clone(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Workspace `team` with a USD budget of $1 (never reached here), one user and key.
    async fn tenant(&self) -> String {
        use reqwest::Method;
        self.call(
            Method::POST,
            "/admin/workspaces",
            Some(json!({"name": "team", "models": ["gpt-4o-mini"]})),
        )
        .await;
        self.call(
            Method::POST,
            "/admin/users",
            Some(json!({"name": "ann", "workspace": "team"})),
        )
        .await;
        self.call(
            Method::POST,
            "/admin/budgets",
            Some(
                json!({"scope": "workspace", "target": "team", "unit": "usd",
                        "limit": 1_000_000_000, "period": "monthly"}),
            ),
        )
        .await;
        let key = self
            .call(Method::POST, "/admin/keys", Some(json!({"user": "ann"})))
            .await;
        key["key"].as_str().unwrap().to_owned()
    }

    async fn ledger(&self) -> Vec<Value> {
        let rows = self
            .call(reqwest::Method::GET, "/admin/ledger?limit=100000", None)
            .await;
        rows.as_array().unwrap().clone()
    }

    /// Waits until nothing is reserved, then checks that every budget's spend equals the
    /// ledger's cost ([`lyss_testkit::assert_books_balance`]). Returns the ledger.
    async fn check_books(&self) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(RESERVATION_TIMEOUT_SECS * 4 + 5);
        loop {
            let budgets = self
                .call(reqwest::Method::GET, "/admin/budgets", None)
                .await;
            let reserved: i64 = budgets
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["reserved"].as_i64().unwrap())
                .sum();
            if reserved == 0 {
                let ledger = self.ledger().await;
                let cost: i64 = ledger
                    .iter()
                    .map(|r| r["cost_nusd"].as_i64().unwrap())
                    .sum();
                lyss_testkit::assert_books_balance(&budgets, |_| cost);
                return ledger;
            }
            assert!(Instant::now() < deadline, "{reserved} left reserved");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A running `lyss-server` on [`config`], with the `team` tenant and its key.
struct Lyss {
    server: Server,
    admin: Admin,
    key: String,
    config: String,
    data: String,
    _dir: tempfile::TempDir,
}

impl Lyss {
    /// `extra`: top-level config lines; the data directory is `data/` under `disk`, else
    /// under a temporary directory.
    async fn start(upstream: &Upstream, extra: &str, disk: Option<&Path>) -> Lyss {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), &upstream.url, extra);
        let data = disk.unwrap_or(dir.path()).join("data");
        let data = data.to_str().unwrap().to_owned();
        let server = Server::start(&["--config", &config, "--data-dir", &data]).await;
        let admin = Admin::of(&server);
        let key = admin.tenant().await;
        Lyss {
            server,
            admin,
            key,
            config,
            data,
            _dir: dir,
        }
    }
}

fn chat(stream: bool, i: u64) -> Value {
    let mut body = json!({"model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": format!("question number {i}, please answer")}]});
    if stream {
        body["stream"] = json!(true);
    }
    body
}

/// What the client saw: the status, and for a stream whether it ended with `[DONE]` (or
/// with an error event); the error body for a non-2xx answer.
#[derive(Debug)]
struct Seen {
    status: u16,
    done: bool,
    error_event: bool,
    body: Value,
}

async fn send(client: &reqwest::Client, base: &str, key: &str, body: &Value) -> Seen {
    let resp = match client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => panic!("lyss itself failed to answer: {e}"),
    };
    let status = resp.status().as_u16();
    let sse = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let text = resp.text().await.unwrap_or_default();
    if sse {
        return Seen {
            status,
            done: text.contains("data: [DONE]"),
            error_event: text.contains("\"error\""),
            body: Value::Null,
        };
    }
    Seen {
        status,
        done: false,
        error_event: false,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// An error in OpenAI's shape with the code its status stands for.
fn assert_openai_error(seen: &Seen) {
    let code = match seen.status {
        502 => "upstream_error",
        503 => "service_unavailable",
        504 => "upstream_timeout",
        other => panic!("unexpected status {other}: {seen:?}"),
    };
    lyss_testkit::assert_openai_error(&seen.body, "api_error", Some(code));
}

/// Sends healthy requests until one is served (the breaker may hold the target for a second).
async fn resumes(client: &reqwest::Client, base: &str, key: &str) -> Duration {
    let start = Instant::now();
    loop {
        let seen = send(client, base, key, &chat(false, 0)).await;
        if seen.status == 200 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "lyss did not serve again after the fault: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_give_clean_errors_and_the_books_still_balance() {
    let upstream = Upstream::start().await;
    let lyss = Lyss::start(&upstream, "", None).await;
    let (server, admin, key) = (&lyss.server, &lyss.admin, &lyss.key);
    let client = reqwest::Client::new();
    // What the ledger should hold, by status.
    let mut expected_rows: HashMap<u16, u64> = HashMap::new();

    // (fault, stream, status the client sees, status in the ledger)
    let cases = [
        (Fault::Slow(Duration::from_millis(1000)), false, 200, 200),
        (Fault::Slow(Duration::from_millis(1000)), true, 200, 200),
        (Fault::Hang, false, 504, 504),
        (Fault::Hang, true, 504, 504),
        (Fault::Reset, false, 502, 502),
        (Fault::Reset, true, 502, 502),
        (Fault::Garbage, false, 502, 502),
        (Fault::Garbage, true, 502, 502),
        (Fault::Cut, false, 502, 502),
        // Cut after the first bytes went out: the client has its 200 and then an error
        // event and no [DONE]; the ledger says 502 and bills the pieces that flowed.
        (Fault::Cut, true, 200, 502),
    ];
    for (i, (fault, stream, status, row)) in cases.into_iter().enumerate() {
        upstream.set(fault);
        let seen = send(&client, &server.base, key, &chat(stream, i as u64)).await;
        assert_eq!(seen.status, status, "{fault:?} stream={stream}: {seen:?}");
        if status == 200 && stream {
            let complete = fault != Fault::Cut;
            assert_eq!(seen.done, complete, "{fault:?}: {seen:?}");
            assert_eq!(seen.error_event, !complete, "{fault:?}: {seen:?}");
        } else if status != 200 {
            assert_openai_error(&seen);
        }
        *expected_rows.entry(row).or_default() += 1;
        upstream.set(Fault::Healthy);
        resumes(&client, &server.base, key).await;
        *expected_rows.entry(200).or_default() += 1;
    }

    // One row per request, with its status; the budget equals the ledger, nothing reserved.
    // (`resumes` may have been refused while the breaker was open: 503 rows, not counted.)
    let ledger = admin.check_books().await;
    let mut rows: HashMap<u16, u64> = HashMap::new();
    for r in &ledger {
        *rows
            .entry(r["status"].as_u64().unwrap() as u16)
            .or_default() += 1;
    }
    rows.remove(&503);
    assert_eq!(rows, expected_rows);
    let cut = ledger.iter().find(|r| {
        r["stream"] == json!(true)
            && r["status"] == json!(502)
            && r["completion_tokens"] != json!(0)
    });
    assert!(
        cut.is_some(),
        "the cut stream is billed for what flowed: {ledger:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_cancels_upstream_and_settles_what_flowed() {
    let upstream = Upstream::start().await;
    upstream.set(Fault::SlowStream);
    let lyss = Lyss::start(&upstream, "", None).await;
    let (server, admin, key) = (&lyss.server, &lyss.admin, &lyss.key);

    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.base))
        .bearer_auth(key)
        .json(&chat(true, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut pieces = 0;
    while pieces < 5 {
        let bytes = body.next().await.unwrap().unwrap();
        pieces += String::from_utf8_lossy(&bytes).matches("tok ").count();
    }
    drop(body);

    let deadline = Instant::now() + Duration::from_secs(5);
    while !upstream.cancelled.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the upstream stream was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ledger = admin.check_books().await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    let row = &ledger[0];
    assert_eq!(row["status"], 499, "{row}");
    let billed = row["completion_tokens"].as_u64().unwrap();
    assert!(
        (5..100).contains(&billed),
        "billed {billed} of 100 pieces: {row}"
    );
    assert!(row["cost_nusd"].as_i64().unwrap() > 0);
}

/// `clients` loops of requests (half streaming) for `secs`, each request recorded; `fault`
/// runs meanwhile. Returns (status → count) and the error bodies of non-200 answers.
async fn load_with<F: std::future::Future<Output = ()>>(
    base: &str,
    key: &str,
    secs: u64,
    fault: F,
) -> (HashMap<u16, u64>, Vec<Seen>) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..6u64)
        .map(|c| {
            let (client, base, key) = (client.clone(), base.to_owned(), key.to_owned());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for i in 0..2_000u64 {
                    if Instant::now() > deadline {
                        break;
                    }
                    seen.push(send(&client, &base, &key, &chat(i % 2 == 0, c * 10_000 + i)).await);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                seen
            })
        })
        .collect();
    fault.await;
    let mut statuses = HashMap::new();
    let mut failures = Vec::new();
    for t in tasks {
        for s in t.await.unwrap() {
            *statuses.entry(s.status).or_default() += 1;
            if s.status != 200 {
                failures.push(s);
            }
        }
    }
    (statuses, failures)
}

/// After a store outage under load: answers, and refusals that are all 503 in OpenAI's shape
/// (fail closed, never an unbudgeted answer); service again without a restart of lyss; one
/// ledger row per answer — also those settled while the store was down — and the books balance.
async fn assert_outage_survived(
    server: &Server,
    admin: &Admin,
    key: &str,
    statuses: &HashMap<u16, u64>,
    failures: &[Seen],
) {
    assert!(
        statuses.get(&200).copied().unwrap_or(0) > 20,
        "{statuses:?}"
    );
    assert!(
        !failures.is_empty(),
        "the outage was not seen: {statuses:?}"
    );
    for f in failures {
        assert_eq!(f.status, 503, "{f:?}");
        assert_openai_error(f);
    }
    resumes(&reqwest::Client::new(), &server.base, key).await;
    let ledger = admin.check_books().await;
    let served = ledger.iter().filter(|r| r["status"] == json!(200)).count() as u64;
    assert_eq!(served, statuses[&200] + 1, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_mid_load_refuses_meanwhile_and_loses_no_row() {
    if lyss_core::testing::services::postgres().await.is_none() {
        return; // the shared server is not configured: outside CI, so are the Postgres tests
    }
    let pg = lyss_core::testing::services::PrivatePostgres::start().await;
    let upstream = Upstream::start().await;
    upstream.set(Fault::Slow(Duration::from_millis(100)));
    let lyss = Lyss::start(&upstream, &format!("database_url = \"{}\"", pg.url()), None).await;
    let (server, admin, key) = (&lyss.server, &lyss.admin, &lyss.key);

    // Down for 9 s: longer than anything waits for it — the pool's 3 s wait for a connection
    // (a shorter blip is only latency), after the memory stage's 2 s deadline, behind the
    // writer's batch already waiting. With 6 s, the waits sometimes spanned the whole outage
    // and every request was served late instead of refused (about one run in five).
    let (statuses, failures) = load_with(&server.base, key, 17, async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        pg.stop();
        tokio::time::sleep(Duration::from_secs(9)).await;
        pg.start_again().await;
    })
    .await;
    assert_outage_survived(server, admin, key, &statuses, &failures).await;
    // Answers in flight when the database went away were delivered, their settlement retried.
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let deferred: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lyss_settlements_deferred_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(deferred > 0, "no settlement met the outage:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_and_restarted_mid_load_fails_closed_and_recovers() {
    let Some(db) = lyss_core::testing::services::postgres().await else {
        return;
    };
    let mut redis = lyss_core::testing::services::PrivateRedis::start().await;
    let upstream = Upstream::start().await;
    upstream.set(Fault::Slow(Duration::from_millis(50)));
    let lyss = Lyss::start(
        &upstream,
        &format!(
            "database_url = \"{db}\"\nredis_url = \"{}\"\n[cache]\nmode = \"exact\"\nbackend = \"redis\"",
            redis.url()
        ),
        None,
    )
    .await;
    let (server, admin, key) = (&lyss.server, &lyss.admin, &lyss.key);
    // A rate limit puts Redis on every request's path.
    let keys = admin.call(reqwest::Method::GET, "/admin/keys", None).await;
    let key_id = keys[0]["id"].as_str().unwrap().to_owned();
    admin
        .call(
            reqwest::Method::POST,
            "/admin/limits",
            Some(json!({"scope": "key", "target": key_id, "rpm": 100_000})),
        )
        .await;

    let (statuses, failures) = load_with(&server.base, key, 10, async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        redis.kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        redis.restart().await;
    })
    .await;
    assert_outage_survived(server, admin, key, &statuses, &failures).await;
}

/// Mounts a small tmpfs (needs root: CI runs as root; elsewhere the test says why it skips).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(SmallDisk { dir });
        }
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "CI=true but a tmpfs cannot be mounted (the disk-full test needs root)"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        None
    }

    /// Fills what is left with a file; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sqlite_disk_refuses_requests_and_recovers_once_space_is_back() {
    let Some(disk) = SmallDisk::mount(8) else {
        return;
    };
    let upstream = Upstream::start().await;
    let lyss = Lyss::start(&upstream, "", Some(disk.dir.path())).await;
    let (server, admin, key) = (&lyss.server, &lyss.admin, &lyss.key);
    let client = reqwest::Client::new();
    for i in 0..20 {
        assert_eq!(
            send(&client, &server.base, key, &chat(i % 2 == 0, i))
                .await
                .status,
            200
        );
    }

    let filler = disk.fill();
    let mut statuses: HashMap<u16, u64> = HashMap::new();
    let mut refused = None;
    for i in 0..3_000u64 {
        let seen = send(&client, &server.base, key, &chat(i % 2 == 0, 100 + i)).await;
        *statuses.entry(seen.status).or_default() += 1;
        if seen.status != 200 {
            refused = Some(seen);
            break;
        }
    }
    let refused = refused.unwrap_or_else(|| panic!("never refused on a full disk: {statuses:?}"));
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_openai_error(&refused);

    std::fs::remove_file(filler).unwrap();
    resumes(&client, &server.base, key).await;
    let ledger = admin.check_books().await;
    let served = ledger.iter().filter(|r| r["status"] == json!(200)).count() as u64;
    let before_full = statuses.get(&200).copied().unwrap_or(0);
    assert_eq!(served, 20 + before_full + 1, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_dir_is_refused_at_startup_with_a_clear_message() {
    // (The kernel will not remount a filesystem read-only while lyss has its database open
    // for writing; a full disk, above, is the write failure that can happen mid-run.)
    let Some(disk) = SmallDisk::mount(8) else {
        return;
    };
    let upstream = Upstream::start().await;
    let mut lyss = Lyss::start(&upstream, "", Some(disk.dir.path())).await;
    lyss.server.kill_hard();
    let (config, data) = (lyss.config.as_str(), lyss.data.as_str());
    let remount = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(disk.dir.path())
        .status()
        .unwrap();
    assert!(remount.success());

    let mut child = lyss_tests::command("lyss-server")
        .args([
            "--config",
            config,
            "--data-dir",
            data,
            "--bind",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "lyss-server started on a read-only data dir"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(data) && stderr.to_lowercase().contains("read-only"),
        "{stderr}"
    );
}
