//! Three `lyss-server` replicas sharing one Postgres and one Redis (which holds the budget
//! counters), under concurrent streaming and non-streaming load with small budgets: no budget
//! is ever exceeded (sampled in Postgres and in Redis while the load runs), the ledger, the
//! budgets and the counters agree, nothing stays reserved — also after a replica is killed
//! with SIGKILL mid-load, and after Redis is killed mid-load and restarts empty. Revocation,
//! lowered limits and rate limits reach every replica. Needs `LYSS_TEST_POSTGRES_URL` and
//! `LYSS_TEST_REDIS_URL` (skipped locally without them, a failure in CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use lyss_testkit::openai::{chunk, usage_chunk};
use lyss_testkit::upstream;
use lyss_tests::{Server, lyss, write_config};
use serde_json::{Value, json};
use sqlx::PgPool;

/// Reservations of dead requests are released after this long.
const RESERVATION_TIMEOUT_SECS: u64 = 3;

/// An OpenAI-compatible upstream that behaves like a real one where budgets care: it honours
/// `max_tokens` / `max_completion_tokens`, reports usage (prompt 5 tokens — fewer than lyss's
/// count of the prompt — and min(max, 20) completion tokens), and streams slowly enough that
/// requests are in flight when a replica dies.
async fn upstream() -> String {
    async fn chat(axum::Json(body): axum::Json<Value>) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let max = body["max_completion_tokens"]
            .as_u64()
            .or(body["max_tokens"].as_u64())
            .unwrap_or(16_384);
        let completion = max.min(20);
        let usage = json!({"prompt_tokens": 5, "completion_tokens": completion, "total_tokens": 5 + completion});
        if body["stream"] != json!(true) {
            return axum::Json(json!({
                "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "x".repeat(completion as usize)},
                             "finish_reason": "length"}],
                "usage": usage
            }))
            .into_response();
        }
        let with_usage = body["stream_options"]["include_usage"] == json!(true);
        let event = |delta: Value, finish: Value| chunk("gpt-4o-mini", delta, finish).to_string();
        let mut events: Vec<String> = (0..completion)
            .map(|_| event(json!({"content": "x"}), Value::Null))
            .collect();
        events.push(event(json!({}), json!("length")));
        if with_usage {
            events.push(usage_chunk("gpt-4o-mini", usage).to_string());
        }
        events.push("[DONE]".into());
        upstream::sse(futures::stream::iter(events), Duration::from_millis(5))
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat));
    upstream::serve(app, 0).await
}

struct Cluster {
    replicas: Vec<Server>,
    db: String,
    pool: PgPool,
    /// Where the budget counters live: Redis and their key prefix.
    redis: redis::Client,
    prefix: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `None` when the services are not configured (outside CI).
    async fn start() -> Option<Cluster> {
        Self::start_with("").await
    }

    /// [`Cluster::start`] with more configuration (TOML appended to the shared file).
    async fn start_with(extra: &str) -> Option<Cluster> {
        let (redis, prefix) = lyss_core::testing::services::redis().await?;
        Self::start_on(&redis, &prefix, extra).await
    }

    /// [`Cluster::start_with`] on the Redis at `redis`, keys under `prefix`.
    async fn start_on(redis: &str, prefix: &str, extra: &str) -> Option<Cluster> {
        let db = lyss_core::testing::services::postgres().await?;
        let dir = tempfile::tempdir().unwrap();
        let upstream = upstream().await;
        let prefix = format!("{prefix}budget:");
        let config = write_config(
            dir.path(),
            &upstream,
            &format!(
                "database_url = \"{db}\"\nredis_url = \"{redis}\"\nreservation_timeout_secs = {RESERVATION_TIMEOUT_SECS}\nadmin_token = \"cluster-admin\"\n{extra}\n[budget_counters]\nredis_prefix = \"{prefix}\"\n\n# Budgets, caches and limits across replicas: memory (tested across replicas in\n# lyss-core's cluster suite) would only add its own load to the shared Postgres.\n[memory]\nenabled = false\n"
            ),
        );
        let config = config.to_str().unwrap().to_owned();
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        // The first replica creates the schema; the others start against it at once.
        let mut replicas = vec![Server::start(&["--config", &config, "--data-dir", data]).await];
        for _ in 0..2 {
            replicas.push(Server::start(&["--config", &config, "--data-dir", data]).await);
        }
        let pool = PgPool::connect(&db).await.unwrap();
        Some(Cluster {
            replicas,
            db,
            pool,
            redis: redis::Client::open(redis).unwrap(),
            prefix,
            _dir: dir,
        })
    }

    /// Every budget's counters in Redis, summed over periods: budget id → (spent, reserved).
    async fn counters(&self) -> redis::RedisResult<HashMap<String, (i64, i64)>> {
        let mut conn = self.redis.get_multiplexed_async_connection().await?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}u:*", self.prefix))
            .query_async(&mut conn)
            .await?;
        let mut out: HashMap<String, (i64, i64)> = HashMap::new();
        for key in keys {
            let (s, r): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
                .arg(&key)
                .arg("s")
                .arg("r")
                .query_async(&mut conn)
                .await?;
            let budget = key[self.prefix.len() + 2..]
                .rsplit_once(':')
                .unwrap()
                .0
                .to_owned();
            let c = out.entry(budget).or_default();
            c.0 += s.unwrap_or(0);
            c.1 += r.unwrap_or(0);
        }
        Ok(out)
    }

    /// Budgets whose Redis counters are over their limit (none while Redis is down).
    async fn counters_over_limit(&self) -> u64 {
        let Ok(counters) = self.counters().await else {
            return 0;
        };
        let limits: Vec<(String, i64)> = sqlx::query_as("SELECT id, limit_amount FROM budgets")
            .fetch_all(&self.pool)
            .await
            .unwrap();
        limits
            .iter()
            .filter(|(id, limit)| counters.get(id).is_some_and(|(s, r)| s + r > *limit))
            .count() as u64
    }

    fn lyss(&self, args: &[&str]) -> Value {
        let mut all = vec!["--database-url", self.db.as_str()];
        all.extend_from_slice(args);
        lyss(&all)
    }

    /// A workspace `team` and `n` users with one key each; returns (key id, key).
    fn tenants(&self, n: usize) -> Vec<(String, String)> {
        self.lyss(&["workspace", "create", "team", "--models", "gpt-4o-mini"]);
        (0..n)
            .map(|i| {
                let user = format!("u{i}");
                self.lyss(&["user", "create", &user, "--workspace", "team"]);
                let k = self.lyss(&["key", "create", "--user", &user]);
                (
                    k["id"].as_str().unwrap().to_owned(),
                    k["key"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Every budget's row of the current period: (budget id, limit, spent, reserved).
    async fn budget_rows(&self) -> Vec<(String, i64, i64, i64)> {
        sqlx::query_as(
            "SELECT b.id, b.limit_amount, COALESCE(SUM(u.spent), 0)::BIGINT, COALESCE(SUM(u.reserved), 0)::BIGINT \
             FROM budgets b LEFT JOIN budget_usage u ON u.budget_id = b.id GROUP BY b.id, b.limit_amount",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

fn chat_body(i: u64) -> Value {
    let mut body = json!({"model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hello there, how are you today? tell me something."}]});
    if i.is_multiple_of(2) {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    if !i.is_multiple_of(3) {
        body["max_tokens"] = json!(20);
    }
    body
}

/// Sends one chat request and reads it to the end; returns the status (0: connection failed;
/// [`STREAM_FAILED`]: a stream that started but ended in an error event, not `[DONE]`).
async fn one_request(client: &reqwest::Client, base: &str, key: &str, i: u64) -> u16 {
    let Ok(resp) = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body(i))
        .send()
        .await
    else {
        return 0;
    };
    let status = resp.status().as_u16();
    let mut body = resp.bytes_stream();
    let mut tail = Vec::new();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            return 0;
        };
        tail.extend_from_slice(&chunk);
        tail.drain(..tail.len().saturating_sub(64));
    }
    let done = String::from_utf8_lossy(&tail).contains("data: [DONE]");
    if status == 200 && chat_body(i)["stream"] == json!(true) && !done {
        return STREAM_FAILED;
    }
    status
}

/// What [`one_request`] reports for a stream that failed after its 200: with a 3 s
/// reservation, a request runs until 2.7 s at most, and a CPU-starved machine can take that
/// long; lyss then ends the stream with an error event and ledgers the request as a 504.
const STREAM_FAILED: u16 = 1;

/// Drives `clients` concurrent loops against the replicas until every budget refuses, or the
/// bound on requests or time is reached, while `fault` runs. Meanwhile, samples `spent +
/// reserved ≤ limit` on every budget, in Postgres and in Redis. Returns the statuses seen.
async fn load(
    cluster: &Cluster,
    keys: &[(String, String)],
    fault: impl std::future::Future<Output = ()>,
) -> HashMap<u16, u64> {
    let bases: Vec<String> = cluster.replicas.iter().map(|r| r.base.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(AtomicU64::new(0));
    let sampler = async {
        while !stop.load(Ordering::SeqCst) {
            let over: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM budget_usage u JOIN budgets b ON b.id = u.budget_id \
                 WHERE u.spent + u.reserved > b.limit_amount",
            )
            .fetch_one(&cluster.pool)
            .await
            .unwrap();
            let over = over as u64 + cluster.counters_over_limit().await;
            violations.fetch_add(over, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    let tasks: Vec<_> = (0..24u64)
        .map(|c| {
            let (client, bases, key) = (
                client.clone(),
                bases.clone(),
                keys[c as usize % keys.len()].1.clone(),
            );
            tokio::spawn(async move {
                let mut seen: HashMap<u16, u64> = HashMap::new();
                let mut refused_in_a_row = 0;
                for i in 0..150u64 {
                    if Instant::now() > deadline || refused_in_a_row >= 5 {
                        break;
                    }
                    let base = &bases[((c + i) % bases.len() as u64) as usize];
                    let status = one_request(&client, base, &key, c * 1000 + i).await;
                    *seen.entry(status).or_default() += 1;
                    match status {
                        200 => refused_in_a_row = 0,
                        429 => refused_in_a_row += 1,
                        // Refused while a backend is down: give it a moment.
                        503 => tokio::time::sleep(Duration::from_millis(50)).await,
                        _ => {}
                    }
                }
                seen
            })
        })
        .collect();
    let driven = async {
        let mut seen: HashMap<u16, u64> = HashMap::new();
        for t in tasks {
            for (s, n) in t.await.unwrap() {
                *seen.entry(s).or_default() += n;
            }
        }
        stop.store(true, Ordering::SeqCst);
        seen
    };
    let (seen, (), ()) = tokio::join!(driven, sampler, fault);
    assert_eq!(
        violations.load(Ordering::SeqCst),
        0,
        "a budget was exceeded during the load"
    );
    seen
}

/// Sends SIGKILL to replica `i` by pid (its `Server` stays in place and is reaped on drop).
fn sigkill(cluster: &Cluster, i: usize) {
    let pid = cluster.replicas[i].child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// After the load (and the reaper): nothing is reserved, the books balance
/// ([`lyss_testkit::assert_books_balance`]), and Redis counts what Postgres does.
async fn check_books(cluster: &Cluster, keys: &[(String, String)], counted: Counted) {
    let deadline = Instant::now() + Duration::from_secs(RESERVATION_TIMEOUT_SECS * 4 + 5);
    let counters = loop {
        let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reservations")
            .fetch_one(&cluster.pool)
            .await
            .unwrap();
        let reserved: i64 = cluster.budget_rows().await.iter().map(|r| r.3).sum();
        let counters = cluster.counters().await.unwrap();
        let held: i64 = counters.values().map(|c| c.1).sum();
        if open == 0 && reserved == 0 && held == 0 {
            break counters;
        }
        assert!(
            Instant::now() < deadline,
            "{open} reservations ({reserved} reserved, {held} held in Redis) left behind"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ledger_cost: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(cost_nusd), 0)::BIGINT FROM usage_ledger")
            .fetch_one(&cluster.pool)
            .await
            .unwrap();
    let by_key: HashMap<String, i64> = sqlx::query_as(
        "SELECT key_id, COALESCE(SUM(prompt_tokens + completion_tokens), 0)::BIGINT FROM usage_ledger GROUP BY key_id",
    )
    .fetch_all(&cluster.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let budgets = cluster.lyss(&["budget", "list"]);
    let checked =
        lyss_testkit::assert_books_balance(&budgets, |b| match b["scope"].as_str().unwrap() {
            "workspace" => ledger_cost,
            "key" => {
                let key = b["scope_id"].as_str().unwrap();
                assert!(keys.iter().any(|(id, _)| id == key));
                by_key.get(key).copied().unwrap_or(0)
            }
            other => panic!("unexpected budget scope {other}"),
        });
    assert_eq!(checked, keys.len() + 1);
    for b in budgets.as_array().unwrap() {
        let (limit, spent) = (b["limit"].as_i64().unwrap(), b["spent"].as_i64().unwrap());
        let id = b["id"].as_str().unwrap();
        let in_redis = counters.get(id).map_or(0, |c| c.0);
        match counted {
            Counted::Exactly => {
                assert_eq!(in_redis, spent, "budget {id}: Redis and Postgres disagree")
            }
            Counted::AtLeast => assert!(
                (spent..=limit).contains(&in_redis),
                "budget {id}: Redis counts {in_redis}, Postgres {spent} of {limit}"
            ),
        }
    }
}

/// What the Redis counters must say of the spend once the load is over.
#[derive(Clone, Copy)]
enum Counted {
    /// What Postgres recorded.
    Exactly,
    /// At least that, never over the limit: a replica killed between a settlement's commit
    /// and its Redis script leaves a hold that is counted whole when it expires.
    AtLeast,
}

fn set_budgets(cluster: &Cluster, keys: &[(String, String)]) {
    // Workspace: $0.004 ≈ 100 requests of 5 + 20 tokens at $1/$2 per 1M; keys: 400 tokens each.
    cluster.lyss(&[
        "budget",
        "set",
        "--workspace",
        "team",
        "--usd",
        "0.004",
        "--period",
        "monthly",
    ]);
    for (id, _) in keys {
        cluster.lyss(&["budget", "set", "--key", id, "--tokens", "400"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_under_load_never_overspend_and_the_books_balance() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let keys = cluster.tenants(6);
    set_budgets(&cluster, &keys);
    let seen = load(&cluster, &keys, async {}).await;
    assert!(
        seen.get(&200).copied().unwrap_or(0) >= 20,
        "too few requests served: {seen:?}"
    );
    assert!(
        seen.get(&429).copied().unwrap_or(0) > 0,
        "budgets never refused: {seen:?}"
    );
    assert_eq!(seen.get(&0), None, "connection failures: {seen:?}");
    // A settlement that lost a lock conflict more than five times is retried in the
    // background (the client has its answer): give those rows a moment to land.
    let deadline = Instant::now() + Duration::from_secs(10);
    // A 503 is the database refusing (its pool's wait ran out on this loaded machine): refused
    // before the upstream, it has no row — unless the refusal came after admission, when the
    // request is settled as failed. Every other 5xx, and every broken stream, has its row.
    let failed_seen: u64 = seen
        .iter()
        .filter(|(s, _)| **s == STREAM_FAILED || (**s >= 500 && **s != 503))
        .map(|(_, n)| n)
        .sum();
    let refused = seen.get(&503).copied().unwrap_or(0);
    let rows_balance = |served: u64, failed: u64| {
        served == seen[&200] && (failed_seen..=failed_seen + refused).contains(&failed)
    };
    loop {
        let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).fetch_one(&cluster.pool);
        let served = count("SELECT COUNT(*) FROM usage_ledger WHERE status = 200")
            .await
            .unwrap() as u64;
        let failed = count("SELECT COUNT(*) FROM usage_ledger WHERE status >= 500")
            .await
            .unwrap() as u64;
        if rows_balance(served, failed) || Instant::now() > deadline {
            assert!(
                rows_balance(served, failed),
                "one ledger row per request served, and per request that failed upstream \
                 (rows: {served} served, {failed} failed): {seen:?}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check_books(&cluster, &keys, Counted::Exactly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_load_leaves_nothing_reserved_and_nothing_double_counted() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let keys = cluster.tenants(6);
    set_budgets(&cluster, &keys);
    let seen = load(&cluster, &keys, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sigkill(&cluster, 0);
    })
    .await;
    assert!(seen.get(&200).copied().unwrap_or(0) >= 10, "{seen:?}");
    assert!(
        seen.get(&0).copied().unwrap_or(0) > 0,
        "the kill hit no request in flight: {seen:?}"
    );
    check_books(&cluster, &keys, Counted::AtLeast).await;
}

/// Redis dies mid-load and comes back empty: while it is down requests are refused (503),
/// never admitted unchecked; when it is back the counters are rebuilt from Postgres and the
/// load goes on until the budgets refuse. Nothing is overspent and the books balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_load_loses_every_counter_and_nothing_is_overspent() {
    if lyss_core::testing::services::redis().await.is_none() {
        return;
    }
    let mut redis = lyss_core::testing::services::PrivateRedis::start().await;
    let Some(cluster) = Cluster::start_on(&redis.url(), "", "").await else {
        return;
    };
    let keys = cluster.tenants(6);
    set_budgets(&cluster, &keys);
    let seen = load(&cluster, &keys, async {
        // Mid-load: once about a quarter of what the budgets allow has been served (the load
        // can run them out in well under a second); at most 30 s.
        for _ in 0..6_000 {
            let served: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM usage_ledger WHERE status = 200")
                    .fetch_one(&cluster.pool)
                    .await
                    .unwrap();
            if served >= 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        redis.kill();
        tokio::time::sleep(Duration::from_millis(700)).await;
        redis.restart().await;
    })
    .await;
    assert!(seen.get(&200).copied().unwrap_or(0) >= 20, "{seen:?}");
    assert!(
        seen.get(&503).copied().unwrap_or(0) > 0,
        "nothing was refused while Redis was down: {seen:?}"
    );
    assert!(
        seen.get(&429).copied().unwrap_or(0) > 0,
        "budgets never refused after Redis came back: {seen:?}"
    );
    check_books(&cluster, &keys, Counted::Exactly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_and_lowered_limits_reach_every_replica_within_a_second() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let keys = cluster.tenants(2);
    let client = reqwest::Client::new();
    let all_replicas = |key: String| {
        let client = client.clone();
        let bases: Vec<String> = cluster.replicas.iter().map(|r| r.base.clone()).collect();
        async move {
            let mut statuses = Vec::new();
            for base in &bases {
                statuses.push(one_request(&client, base, &key, 1).await);
            }
            statuses
        }
    };
    assert_eq!(all_replicas(keys[0].1.clone()).await, vec![200, 200, 200]);
    assert_eq!(all_replicas(keys[1].1.clone()).await, vec![200, 200, 200]);

    cluster.lyss(&["key", "revoke", &keys[0].0]);
    every_replica_within_a_second(&cluster, &client, &keys[0].1, 401).await;

    // A budget that the key has already used up, set while the key is in every cache.
    cluster.lyss(&["budget", "set", "--key", &keys[1].0, "--tokens", "10"]);
    every_replica_within_a_second(&cluster, &client, &keys[1].1, 429).await;
}

/// Asks every replica at once until each answers `want`; each must, for a request sent within
/// a second of now.
async fn every_replica_within_a_second(
    cluster: &Cluster,
    client: &reqwest::Client,
    key: &str,
    want: u16,
) {
    let t = Instant::now();
    let checks = cluster
        .replicas
        .iter()
        .map(|r| first_status(client, &r.base, key, want, t));
    for (r, after) in cluster
        .replicas
        .iter()
        .zip(futures::future::join_all(checks).await)
    {
        assert!(
            after < Duration::from_secs(1),
            "{} answered {want} only after {after:?}",
            r.base
        );
    }
}

/// How long after `since` the first request that got `want` from `base` was *sent* — the
/// moment the replica was asked, whatever the load makes the answer take.
async fn first_status(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    want: u16,
    since: Instant,
) -> Duration {
    loop {
        let sent = Instant::now();
        let got = one_request(client, base, key, 1).await;
        eprintln!(
            "{base} {:?} -> {got} (took {:?})",
            sent - since,
            sent.elapsed()
        );
        if got == want {
            return sent - since;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{base} never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_hold_across_replicas() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let keys = cluster.tenants(1);
    cluster.lyss(&["limit", "set", "--key", &keys[0].0, "--rpm", "6"]);
    let client = reqwest::Client::new();
    let mut ok = 0;
    for i in 0..18usize {
        let base = &cluster.replicas[i % 3].base;
        let status = one_request(&client, base, &keys[0].1, 1).await;
        assert!(status == 200 || status == 429, "status {status}");
        ok += usize::from(status == 200);
    }
    // Three replicas, one shared limit: 6 per minute in all, not 18.
    assert_eq!(ok, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_cached_through_one_replica_is_a_hit_on_the_others() {
    // Semantic mode needs the real embedding model in every replica.
    if lyss_core::testing::services::local_embedder()
        .await
        .is_none()
    {
        return;
    }
    let Some(cluster) =
        Cluster::start_with("[cache]\nmode = \"semantic\"\nbackend = \"redis\"").await
    else {
        return;
    };
    let (_, key) = cluster.tenants(1).remove(0);
    let client = reqwest::Client::new();
    let ask = |replica: usize, question: &str, stream: bool| {
        let body = json!({"model": "gpt-4o-mini", "stream": stream,
                          "messages": [{"role": "user", "content": question}]});
        client
            .post(format!(
                "{}/v1/chat/completions",
                cluster.replicas[replica].base
            ))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let q = "How do I reverse a list in Python?";
    let first = ask(0, q, false).await.unwrap();
    assert_eq!(first.headers()["x-lyss-cache"], "miss");
    let answer: Value = first.json().await.unwrap();
    // The same question on another replica: an exact hit.
    let second = ask(1, q, false).await.unwrap();
    assert_eq!(second.headers()["x-lyss-cache"], "hit");
    let replayed: Value = second.json().await.unwrap();
    assert_eq!(replayed["choices"], answer["choices"]);
    let third = ask(2, q, true).await.unwrap();
    assert_eq!(third.headers()["x-lyss-cache"], "hit");
    assert!(third.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    // A paraphrase on the replicas that did not answer it: semantic hits.
    for replica in [1, 2] {
        let resp = ask(replica, "How can I reverse a list in Python?", false)
            .await
            .unwrap();
        assert_eq!(
            resp.headers()["x-lyss-cache"],
            "semantic-hit",
            "replica {replica}"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["choices"], answer["choices"]);
    }
    // Another question is a miss everywhere, and once answered, found by meaning elsewhere.
    let other = ask(2, "How do I reverse a string in Python?", false)
        .await
        .unwrap();
    assert_eq!(other.headers()["x-lyss-cache"], "miss");
    let found = ask(0, "How can I reverse a string in Python?", false)
        .await
        .unwrap();
    assert_eq!(found.headers()["x-lyss-cache"], "semantic-hit");
    let hits: Vec<(String, i64)> = sqlx::query_as(
        "SELECT cache, COUNT(*) FROM usage_ledger WHERE cache IS NOT NULL GROUP BY cache ORDER BY cache",
    )
    .fetch_all(&cluster.pool)
    .await
    .unwrap();
    assert_eq!(hits, vec![("hit".into(), 2), ("semantic".into(), 3)]);
}
