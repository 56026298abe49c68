//! The cache through the HTTP API, on both backends: a hit costs nothing and records its
//! saving, any output-changing parameter misses, workspaces never share, streams are stored
//! once complete and replayed either way, a broken stream is not stored, TTLs expire, a
//! paraphrase is a semantic hit above the threshold and a miss below it (with the real
//! embedding model), settings change at run time, and a dead Redis never fails a request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestApp;
use lyss_core::config::{CacheBackend, CacheMode, Config};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, Request, ResponseTemplate};

/// Answers like OpenAI: SSE for stream requests, a completion otherwise.
fn upstream(req: &Request) -> ResponseTemplate {
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    if body["stream"] == true {
        ResponseTemplate::new(200)
            .insert_header("content-type", "text/event-stream")
            .set_body_string(lyss_testkit::openai::sse(
                "up-mini",
                &["Once ", "upon ", "a time."],
                true,
            ))
    } else {
        ResponseTemplate::new(200).set_body_json(lyss_testkit::openai::completion("up-mini", "4"))
    }
}

/// Where answers live in a test.
#[derive(Debug, Clone)]
enum Backend {
    Memory,
    /// The shared Redis, under a prefix of this test's own.
    Redis {
        url: String,
        prefix: String,
    },
}

impl Backend {
    async fn redis() -> Option<Self> {
        let (url, prefix) = lyss_core::testing::services::redis().await?;
        Some(Self::Redis { url, prefix })
    }

    fn apply(&self, c: &mut Config) {
        if let Self::Redis { url, prefix } = self {
            c.cache.backend = CacheBackend::Redis;
            c.redis_url = Some(url.clone());
            c.cache.redis_prefix = format!("{prefix}cache:");
        }
    }
}

/// Runs each scenario once per backend.
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        mod in_process {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(super::Backend::Memory).await;
            })+
        }
        mod redis {
            $(#[tokio::test]
            async fn $scenario() {
                let Some(backend) = super::Backend::redis().await else { return };
                super::$scenario(backend).await;
            })+
        }
    };
}

on_both_backends!(
    a_hit_costs_nothing_records_its_saving_and_never_crosses_workspaces,
    streams_are_stored_once_complete_and_replayed_either_way,
    a_broken_stream_is_not_stored,
    a_hit_counts_against_requests_per_minute,
    an_entry_expires_after_its_ttl,
    a_paraphrase_is_a_semantic_hit_above_the_threshold_only,
    settings_stored_for_a_workspace_apply_at_once,
);

async fn app(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let app = TestApp::with(|c| {
        c.cache.mode = CacheMode::Exact;
        backend.apply(c);
        tweak(c);
    })
    .await;
    Mock::given(method("POST"))
        .respond_with(upstream)
        .mount(&app.upstream)
        .await;
    app
}

fn question(extra: Value) -> Value {
    let mut body = json!({"model": "gpt-4o-mini", "temperature": 0,
                          "messages": [{"role": "user", "content": "What is 2+2?"}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

async fn ask(app: &TestApp, key: &str, body: &Value, control: Option<&str>) -> (String, String) {
    let mut req = app
        .client
        .post(format!("{}/v1/chat/completions", app.base))
        .bearer_auth(key)
        .json(body);
    if let Some(c) = control {
        req = req.header("x-lyss-cache", c);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    if let Some(sim) = resp.headers().get("x-lyss-cache-similarity") {
        let sim: f32 = sim.to_str().unwrap().parse().unwrap();
        assert!((0.0..=1.0001).contains(&sim), "{sim}");
    }
    let cache = resp
        .headers()
        .get("x-lyss-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (cache, resp.text().await.unwrap())
}

async fn upstream_calls(app: &TestApp) -> usize {
    app.upstream.received_requests().await.unwrap().len()
}

async fn a_hit_costs_nothing_records_its_saving_and_never_crosses_workspaces(backend: Backend) {
    let app = app(backend, |_| {}).await;
    let key = app.key.clone();
    let (first, _) = ask(&app, &key, &question(json!({})), None).await;
    assert_eq!(first, "miss");
    let (second, body) = ask(&app, &key, &question(json!({})), None).await;
    assert_eq!(second, "hit");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "4");
    assert_eq!(upstream_calls(&app).await, 1);

    let ledger = app.ledger().await;
    let hit = ledger.iter().find(|e| e.cache.is_some()).unwrap();
    let paid = ledger.iter().find(|e| e.cache.is_none()).unwrap();
    assert_eq!(hit.cache.as_deref(), Some("hit"));
    assert_eq!(
        (hit.prompt_tokens, hit.completion_tokens, hit.cost_nusd),
        (0, 0, 0)
    );
    assert_eq!(hit.saved_tokens, 1117 + 46);
    assert_eq!(hit.saved_nusd, paid.cost_nusd);
    assert_eq!(paid.cost_nusd, 1117 * 1_000 + 46 * 2_000);
    // Usage reports show what the cache saved.
    let usage = app
        .state
        .lyss
        .policy()
        .usage(&lyss_core::policy::UsageQuery {
            by: lyss_core::policy::GroupBy::Workspace,
            since: None,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((usage[0].requests, usage[0].cache_hits), (2, 1));
    assert_eq!(usage[0].cache_saved_nusd, paid.cost_nusd);

    // Any parameter that changes the answer is another entry.
    let (warmer, _) = ask(&app, &key, &question(json!({"temperature": 0.9})), None).await;
    assert_eq!(warmer, "miss");
    assert_eq!(upstream_calls(&app).await, 2);

    // Another workspace asking the very same thing is not served this workspace's answer.
    let policy = app.state.lyss.policy();
    policy
        .create_workspace("rivals", &["gpt-4o-mini".into()])
        .await
        .unwrap();
    let eve = app.key_for("eve", "rivals").await;
    let (theirs, _) = ask(&app, &eve, &question(json!({})), None).await;
    assert_eq!(theirs, "miss");
    assert_eq!(upstream_calls(&app).await, 3);

    // The caller's controls.
    let (skipped, _) = ask(&app, &key, &question(json!({})), Some("no-cache")).await;
    assert_eq!(skipped, "", "no-cache skips the cache");
    assert_eq!(upstream_calls(&app).await, 4);
    let (refreshed, _) = ask(&app, &key, &question(json!({})), Some("refresh")).await;
    assert_eq!(refreshed, "miss");
    assert_eq!(upstream_calls(&app).await, 5);
    let (unstored, _) = ask(&app, &key, &question(json!({"seed": 7})), Some("no-store")).await;
    assert_eq!(unstored, "miss");
    let (again, _) = ask(&app, &key, &question(json!({"seed": 7})), None).await;
    assert_eq!(again, "miss", "no-store kept it out");
    assert_eq!(upstream_calls(&app).await, 7);

    // Admins see and clear the cache, one workspace at a time.
    let admin = |m: reqwest::Method, path: &str| {
        app.client
            .request(m, format!("{}{path}", app.base))
            .bearer_auth(common::ADMIN)
    };
    let stats: Value = admin(reqwest::Method::GET, "/admin/cache")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["enabled"], true);
    assert_eq!(stats["entries"], 4, "{stats}");
    let cleared: Value = admin(reqwest::Method::DELETE, "/admin/cache?workspace=team")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["cleared"], 3, "the rivals' entry stays");
    assert_eq!(ask(&app, &key, &question(json!({})), None).await.0, "miss");
    assert_eq!(ask(&app, &eve, &question(json!({})), None).await.0, "hit");
    let unknown = admin(reqwest::Method::DELETE, "/admin/cache?workspace=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let anonymous = app
        .client
        .delete(format!("{}/admin/cache", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

async fn streams_are_stored_once_complete_and_replayed_either_way(backend: Backend) {
    let app = app(backend, |_| {}).await;
    let key = app.key.clone();
    let story = |stream: bool| {
        let mut b =
            question(json!({"messages": [{"role": "user", "content": "A story, please."}]}));
        if stream {
            b["stream"] = json!(true);
            b["stream_options"] = json!({"include_usage": true});
        }
        b
    };
    let (first, _) = ask(&app, &key, &story(true), None).await;
    assert_eq!(first, "miss");
    // The streamed answer, asked without streaming: one completion.
    let (hit, body) = ask(&app, &key, &story(false), None).await;
    assert_eq!(hit, "hit");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Once upon a time."
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 12);
    // And streamed again: well-formed SSE with the usage chunk, then [DONE].
    let (hit, sse) = ask(&app, &key, &story(true), None).await;
    assert_eq!(hit, "hit");
    let chunks = lyss_testkit::sse::chunks(&sse);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Once upon a time.");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 21);
    assert_eq!(upstream_calls(&app).await, 1);

    // A completion cached without streaming is replayed as a stream (no usage unless asked).
    ask(&app, &key, &question(json!({})), None).await;
    let (hit, sse) = ask(&app, &key, &question(json!({"stream": true})), None).await;
    assert_eq!(hit, "hit");
    let data = lyss_testkit::sse::data(&sse);
    assert!(
        data.iter().any(|d| d.contains("\"content\":\"4\"")),
        "{data:?}"
    );
    assert!(!data.iter().any(|d| d.contains("\"usage\"")), "{data:?}");
}

async fn a_broken_stream_is_not_stored(backend: Backend) {
    let app = TestApp::with(|c| {
        c.cache.mode = CacheMode::Exact;
        backend.apply(c);
    })
    .await;
    // The role chunk and two content chunks, then the connection ends: no finish, no [DONE].
    let cut: String = lyss_testkit::openai::sse("up-mini", &["Once ", "upon "], false)
        .split("\n\n")
        .take(3)
        .map(|event| format!("{event}\n\n"))
        .collect();
    assert!(
        !cut.contains("[DONE]") && !cut.contains("\"stop\""),
        "{cut}"
    );
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(cut),
        )
        .mount(&app.upstream)
        .await;
    let body = question(json!({"stream": true}));
    for _ in 0..2 {
        let resp = app
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap();
        resp.text().await.unwrap();
    }
    assert_eq!(upstream_calls(&app).await, 2, "nothing was cached");
}

async fn a_hit_counts_against_requests_per_minute(backend: Backend) {
    let app = app(backend, |_| {}).await;
    let key = app.key.clone();
    app.state
        .lyss
        .policy()
        .set_rate_limit(lyss_core::policy::Scope::User, "ann", Some(2), None)
        .await
        .unwrap();
    ask(&app, &key, &question(json!({})), None).await;
    assert_eq!(ask(&app, &key, &question(json!({})), None).await.0, "hit");
    let third = app
        .post("/v1/chat/completions")
        .json(&question(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
}

async fn an_entry_expires_after_its_ttl(backend: Backend) {
    let app = app(backend, |c| c.cache.ttl_secs = 1).await;
    let key = app.key.clone();
    ask(&app, &key, &question(json!({})), None).await;
    assert_eq!(ask(&app, &key, &question(json!({})), None).await.0, "hit");
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(ask(&app, &key, &question(json!({})), None).await.0, "miss");
}

#[tokio::test]
async fn with_redis_hits_are_served_and_a_dead_redis_fails_no_request() {
    let Some(_) = lyss_core::testing::services::redis().await else {
        return;
    };
    let mut redis = lyss_core::testing::services::PrivateRedis::start().await;
    let url = redis.url();
    let app = app(Backend::Memory, |c| {
        c.cache.backend = CacheBackend::Redis;
        c.redis_url = Some(url.clone());
    })
    .await;
    let key = app.key.clone();
    assert_eq!(ask(&app, &key, &question(json!({})), None).await.0, "miss");
    assert_eq!(ask(&app, &key, &question(json!({})), None).await.0, "hit");

    redis.kill();
    // Redis is gone: the cached question and a new one are both answered from upstream.
    let (_, body) = ask(&app, &key, &question(json!({})), None).await;
    assert!(body.contains("\"4\""), "{body}");
    ask(&app, &key, &question(json!({"seed": 1})), None).await;
    assert_eq!(upstream_calls(&app).await, 3);
}

/// Changes the team workspace through the admin API (as `lyss workspace update` does).
async fn update_team(app: &TestApp, change: Value) -> reqwest::Response {
    app.client
        .patch(format!("{}/admin/workspaces/team", app.base))
        .bearer_auth(common::ADMIN)
        .json(&change)
        .send()
        .await
        .unwrap()
}

fn asking(question: &str) -> Value {
    json!({"model": "gpt-4o-mini", "temperature": 0,
           "messages": [{"role": "system", "content": "Answer briefly."},
                        {"role": "user", "content": question}]})
}

async fn a_paraphrase_is_a_semantic_hit_above_the_threshold_only(backend: Backend) {
    if lyss_core::testing::services::local_embedder()
        .await
        .is_none()
    {
        return;
    }
    // Caching is off in the config; the workspace turns semantic caching on at run time, so
    // the embedder is loaded on first use.
    let app = app(backend, |c| c.cache.mode = CacheMode::Off).await;
    let key = app.key.clone();
    let changed = update_team(&app, json!({"cache": {"mode": "semantic"}})).await;
    assert_eq!(changed.status(), 200);
    let q = "How do I reverse a list in Python?";
    assert_eq!(ask(&app, &key, &asking(q), None).await.0, "miss");

    // A paraphrase (similarity 0.998 with all-MiniLM-L6-v2) is answered from the cache.
    let resp = app
        .post("/v1/chat/completions")
        .json(&asking("How can I reverse a list in Python?"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-lyss-cache"], "semantic-hit");
    let sim: f32 = resp.headers()["x-lyss-cache-similarity"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.95..1.0).contains(&sim), "{sim}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "4");
    assert_eq!(upstream_calls(&app).await, 1);

    // Close in words, another question (0.83): below the threshold, so upstream.
    let other = "How do I reverse a string in Python?";
    assert_eq!(ask(&app, &key, &asking(other), None).await.0, "miss");
    assert_eq!(upstream_calls(&app).await, 2);
    // The same question in another context (system prompt) is another partition.
    let mut elsewhere = asking(q);
    elsewhere["messages"][0]["content"] = json!("Answer at length.");
    assert_eq!(ask(&app, &key, &elsewhere, None).await.0, "miss");
    assert_eq!(upstream_calls(&app).await, 3);

    // A request may raise the threshold, never lower it.
    let strict = app
        .post("/v1/chat/completions")
        .header("x-lyss-cache-threshold", "0.9999")
        .json(&asking("In Python, how do I reverse a list?"))
        .send()
        .await
        .unwrap();
    assert_eq!(strict.headers()["x-lyss-cache"], "miss");
    let lax = app
        .post("/v1/chat/completions")
        .header("x-lyss-cache-threshold", "0.5")
        .json(&asking("How do I sort a list in Python?"))
        .send()
        .await
        .unwrap();
    assert_eq!(lax.headers()["x-lyss-cache"], "miss");
    assert_eq!(upstream_calls(&app).await, 5);
    let bad = app
        .post("/v1/chat/completions")
        .header("x-lyss-cache-threshold", "lots")
        .json(&asking(q))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let err: Value = bad.json().await.unwrap();
    assert_eq!(err["error"]["param"], "x-lyss-cache-threshold");

    // A streamed answer is found by meaning too, and replayed either way.
    let mut haiku = asking("Write a haiku about autumn");
    haiku["stream"] = json!(true);
    assert_eq!(ask(&app, &key, &haiku, None).await.0, "miss");
    let (hit, body) = ask(&app, &key, &asking("Compose a haiku about autumn"), None).await;
    assert_eq!(hit, "semantic-hit");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Once upon a time."
    );
    // (The strict request above was a miss, stored under its own exact key: another phrasing.)
    let mut streamed = asking("How can I reverse a list in Python?");
    streamed["stream"] = json!(true);
    let (hit, sse) = ask(&app, &key, &streamed, None).await;
    assert_eq!(hit, "semantic-hit");
    assert!(
        lyss_testkit::sse::data(&sse)
            .iter()
            .any(|d| d.contains("\"content\":\"4\""))
    );
    assert_eq!(upstream_calls(&app).await, 6);

    // The ledger tells semantic hits apart, with what they saved.
    let ledger = app.ledger().await;
    let semantic: Vec<_> = ledger
        .iter()
        .filter(|e| e.cache.as_deref() == Some("semantic"))
        .collect();
    assert_eq!(semantic.len(), 3);
    assert!(
        semantic
            .iter()
            .all(|e| e.saved_tokens > 0 && e.cost_nusd == 0)
    );
}

async fn settings_stored_for_a_workspace_apply_at_once(backend: Backend) {
    let app = app(backend, |c| c.cache.mode = CacheMode::Off).await;
    let key = app.key.clone();
    assert_eq!(ask(&app, &key, &question(json!({})), None).await.0, "");
    for bad in [
        json!({"cache": {"semantic_threshold": 1.5}}),
        json!({"cache": {"ttl_secs": 0}}),
        json!({"cache": {"mode": "sometimes"}}),
        json!({"cahce": {}}),
    ] {
        let resp = update_team(&app, bad.clone()).await;
        assert_eq!(resp.status(), 400, "{bad}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["type"], "invalid_request_error", "{bad}");
    }
    let resp = update_team(&app, json!({"cache": {"mode": "exact", "ttl_secs": 1}})).await;
    assert_eq!(resp.status(), 200);
    let ws: Value = resp.json().await.unwrap();
    assert_eq!(ws["cache"], json!({"mode": "exact", "ttl_secs": 1}));
    // Running servers follow within the key cache's time to live (500 ms).
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(ask(&app, &key, &question(json!({})), None).await.0, "miss");
    assert_eq!(ask(&app, &key, &question(json!({})), None).await.0, "hit");
    // The stored ttl applies.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(ask(&app, &key, &question(json!({})), None).await.0, "miss");
    // And caching goes off again.
    update_team(&app, json!({"cache": {"mode": "off"}})).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(ask(&app, &key, &question(json!({})), None).await.0, "");
    let missing = app
        .client
        .patch(format!("{}/admin/workspaces/nope", app.base))
        .bearer_auth(common::ADMIN)
        .json(&json!({"cache": {"mode": "exact"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
