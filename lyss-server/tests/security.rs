//! The security review's probes (docs/reliability.md): every admin route refuses without the
//! admin token; no endpoint reaches another tenant's memories, cache, budgets or models; hostile
//! names are data, never SQL; requests cannot choose where lyss connects (no SSRF); CORS echoes
//! only configured origins and never allows credentials.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN, TestApp};
use lyss_core::config::EmbedderKind;
use lyss_core::policy::{NewBudget, Period, Scope, Unit};
use lyss_testkit::assert_openai_error;
use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn answering(app: &TestApp) {
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(lyss_testkit::openai::completion("up-mini", "ok")),
        )
        .mount(&app.upstream)
        .await;
}

/// Every route under `/admin`, with a body where it takes one.
fn admin_routes() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/admin/workspaces", None),
        (
            Method::POST,
            "/admin/workspaces",
            Some(json!({"name": "intruders"})),
        ),
        (
            Method::PATCH,
            "/admin/workspaces/team",
            Some(json!({"models": ["gpt-4o"]})),
        ),
        (Method::GET, "/admin/users", None),
        (
            Method::POST,
            "/admin/users",
            Some(json!({"name": "mallory", "workspace": "team"})),
        ),
        (Method::GET, "/admin/keys", None),
        (Method::POST, "/admin/keys", Some(json!({"user": "ann"}))),
        (Method::POST, "/admin/keys/anything/revoke", None),
        (Method::GET, "/admin/ledger", None),
        (Method::GET, "/admin/usage", None),
        (Method::GET, "/admin/budgets", None),
        (
            Method::POST,
            "/admin/budgets",
            Some(json!({"scope": "workspace", "target": "team", "unit": "usd", "limit": 1})),
        ),
        (Method::DELETE, "/admin/budgets/anything", None),
        (
            Method::POST,
            "/admin/limits",
            Some(json!({"scope": "workspace", "target": "team", "rpm": 1})),
        ),
        (Method::GET, "/admin/models", None),
        (Method::GET, "/admin/cache", None),
        (Method::DELETE, "/admin/cache", None),
    ]
}

#[tokio::test]
async fn every_admin_route_refuses_without_the_admin_token_and_changes_nothing() {
    // Failed checks are throttled per address (tested in api.rs); here every refusal counts.
    let app = TestApp::with(|c| c.auth_failures_per_minute = 0).await;
    // Same length as the real token, one byte off; a user's key; nothing; another scheme.
    let mut near = ADMIN.to_owned();
    near.pop();
    near.push('X');
    for (m, path, body) in admin_routes() {
        for auth in [
            None,
            Some(format!("Bearer {near}")),
            Some(format!("Bearer {}", app.key)),
            Some(format!("Basic {ADMIN}")),
            Some(ADMIN.to_owned()),
        ] {
            let mut req = app.client.request(m.clone(), format!("{}{path}", app.base));
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{m} {path} with {auth:?}");
            let body = resp.json().await.unwrap();
            assert_openai_error(&body, "invalid_request_error", Some("invalid_api_key"));
        }
    }
    // Nothing was created, changed or revoked.
    let policy = app.state.lyss.policy();
    let ws = policy.list_workspaces().await.unwrap();
    assert_eq!(ws.len(), 1);
    assert_eq!(ws[0].models, vec!["gpt-4o-mini", "text-embedding-3-small"]);
    assert_eq!(policy.list_users(None).await.unwrap().len(), 1);
    assert_eq!(policy.list_keys(None).await.unwrap().len(), 1);
    assert!(
        policy
            .budgets(time::OffsetDateTime::now_utc())
            .await
            .unwrap()
            .is_empty()
    );
    answering(&app).await;
    let ok = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // The dashboard: every page and action needs a session made with the admin token.
    for (m, path) in [
        (Method::GET, "/dashboard"),
        (Method::GET, "/dashboard/workspaces"),
        (Method::GET, "/dashboard/users"),
        (Method::GET, "/dashboard/keys"),
        (Method::GET, "/dashboard/budgets"),
        (Method::POST, "/dashboard/workspaces"),
        (Method::POST, "/dashboard/users"),
        (Method::POST, "/dashboard/keys"),
        (Method::POST, "/dashboard/budgets"),
    ] {
        let resp = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .request(m.clone(), format!("{}{path}", app.base))
            .bearer_auth(ADMIN) // a bearer token is not a session
            .form(&[
                ("csrf", "forged"),
                ("name", "intruders"),
                ("workspace", "team"),
                ("user", "ann"),
                ("scope", "workspace"),
                ("target", "team"),
                ("unit", "usd"),
                ("limit", "1"),
                ("period", "monthly"),
            ])
            .send()
            .await
            .unwrap();
        // The sign-in page, a redirect to it, or a refusal: never data, never a change.
        let status = resp.status().as_u16();
        let page = resp.text().await.unwrap();
        let sign_in = status == 200 && page.contains("name=\"token\"") && !page.contains("ann");
        assert!(
            sign_in || status == 303 || status == 401 || status == 403,
            "{m} {path}: {status} {page}"
        );
    }
    assert_eq!(policy.list_workspaces().await.unwrap().len(), 1);
    assert_eq!(policy.list_users(None).await.unwrap().len(), 1);
    let now = time::OffsetDateTime::now_utc();
    assert!(policy.budgets(now).await.unwrap().is_empty());
}

/// Sends `method path` with `key`; returns (status, body).
async fn probe(
    app: &TestApp,
    key: &str,
    m: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app
        .client
        .request(m, format!("{}{path}", app.base))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn no_endpoint_reaches_another_tenants_memories_cache_budgets_or_models() {
    let app = TestApp::with(|c| {
        c.memory.enabled = lyss_core::config::MemoryMode::On;
        c.embedder.kind = EmbedderKind::None;
        c.cache.mode = lyss_core::config::CacheMode::Exact;
    })
    .await;
    answering(&app).await;
    let policy = app.state.lyss.policy().clone();
    // B: another workspace (its own models); C: another user of A's workspace.
    policy
        .create_workspace("rivals", &["gpt-4o-mini".into()])
        .await
        .unwrap();
    let b = app.key_for("bob", "rivals").await;
    let c = app.key_for("cal", "team").await;
    let a = app.key.clone();
    policy
        .set_budget(&NewBudget {
            scope: Scope::Workspace,
            target: "team".into(),
            unit: Unit::Tokens,
            limit: 1_000_000,
            period: Period::Monthly,
            tz: None,
            expires_at: None,
        })
        .await
        .unwrap();

    // A's memories: their own, and one narrowed to their app's end-user "eve".
    let (s, mine) = probe(
        &app,
        &a,
        Method::POST,
        "/v1/memories",
        Some(json!({"text": "Ann's locker code is 4711"})),
    )
    .await;
    assert_eq!(s, 201, "{mine}");
    let (s, eves) = probe(
        &app,
        &a,
        Method::POST,
        "/v1/memories",
        Some(json!({"text": "Eve's locker code is 1234", "user": "eve"})),
    )
    .await;
    assert_eq!(s, 201, "{eves}");
    let ids = [
        mine["id"].as_str().unwrap().to_owned(),
        eves["id"].as_str().unwrap().to_owned(),
    ];

    for other in [&b, &c] {
        for id in &ids {
            for user in ["", "?user=eve"] {
                for (m, path, body) in [
                    (Method::GET, format!("/v1/memories/{id}{user}"), None),
                    (
                        Method::GET,
                        format!("/v1/memories/{id}/history{user}"),
                        None,
                    ),
                    (
                        Method::PATCH,
                        format!("/v1/memories/{id}{user}"),
                        Some(json!({"text": "overwritten"})),
                    ),
                    (Method::DELETE, format!("/v1/memories/{id}{user}"), None),
                ] {
                    let (s, body) = probe(&app, other, m.clone(), &path, body).await;
                    assert_eq!(s, 404, "{m} {path}: {body}");
                    assert_openai_error(&body, "invalid_request_error", Some("not_found"));
                }
            }
        }
        for path in [
            "/v1/memories",
            "/v1/memories?user=eve",
            "/v1/memories?q=locker%20code",
            "/v1/memories?q=locker%20code&user=eve",
        ] {
            let (s, body) = probe(&app, other, Method::GET, path, None).await;
            assert_eq!(s, 200, "{path}: {body}");
            assert_eq!(body["data"], json!([]), "{path} leaked: {body}");
        }
        let (s, _) = probe(&app, other, Method::DELETE, "/v1/memories", None).await;
        assert_eq!(s, 200);
    }
    // A's memories are untouched, with their own history only.
    for (id, user) in [(&ids[0], ""), (&ids[1], "?user=eve")] {
        let (s, m) = probe(
            &app,
            &a,
            Method::GET,
            &format!("/v1/memories/{id}{user}"),
            None,
        )
        .await;
        assert_eq!(s, 200);
        assert!(m["text"].as_str().unwrap().contains("locker code"), "{m}");
        let (_, h) = probe(
            &app,
            &a,
            Method::GET,
            &format!("/v1/memories/{id}/history{user}"),
            None,
        )
        .await;
        assert_eq!(h["data"].as_array().unwrap().len(), 1, "{h}");
    }

    // Models: B sees and may use only its workspace's, not A's nor every configured one.
    let (_, models) = probe(&app, &b, Method::GET, "/v1/models", None).await;
    let names: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["gpt-4o-mini", "gpt-5-mini"]); // the model and its alias
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "hi"}),
        ),
    ] {
        let (s, body) = probe(&app, &b, Method::POST, path, Some(body)).await;
        assert_eq!(s, 404, "{path}: {body}");
        assert_openai_error(&body, "invalid_request_error", Some("model_not_found"));
    }

    // Cache: an answer A paid for is a hit for A, never for another workspace.
    let ask = |key: String, model: &'static str| {
        let app = &app;
        async move {
            let resp = app
                .client
                .post(format!("{}/v1/chat/completions", app.base))
                .bearer_auth(key)
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "what is 2+2?"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            (
                resp.headers()["x-lyss-cache"].to_str().unwrap().to_owned(),
                resp.headers()
                    .get("x-lyss-budget-remaining")
                    .map(|v| v.to_str().unwrap().to_owned()),
            )
        }
    };
    assert_eq!(ask(a.clone(), "gpt-4o-mini").await.0, "miss");
    assert_eq!(ask(a.clone(), "gpt-4o-mini").await.0, "hit");
    let (cache, budget) = ask(b.clone(), "gpt-4o-mini").await;
    assert_eq!(
        cache, "miss",
        "another workspace was served A's cached answer"
    );
    assert_eq!(budget, None, "B was shown A's budget");
    assert_eq!(app.upstream.received_requests().await.unwrap().len(), 2);

    // Usage: no user-facing route reports anyone's usage; the admin's does, by tenant.
    for path in ["/admin/usage", "/admin/ledger", "/admin/budgets"] {
        let (s, _) = probe(&app, &b, Method::GET, path, None).await;
        assert_eq!(s, 401, "{path}");
    }
    // The ledger: the one hit is A's; B's request is a miss under B's own ids.
    let rivals = policy
        .list_workspaces()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.name == "rivals")
        .unwrap();
    let rows = app.ledger().await;
    let hits: Vec<_> = rows.iter().filter(|r| r.cache.is_some()).collect();
    assert_eq!(hits.len(), 1);
    assert_ne!(hits[0].workspace_id, rivals.id);
    let bobs: Vec<_> = rows
        .iter()
        .filter(|r| r.workspace_id == rivals.id && r.status == 200)
        .collect();
    assert_eq!(bobs.len(), 1, "{rows:?}");
    assert!(bobs[0].cache.is_none());
    // B's refused probes are B's rows too: nothing billed, the refusal named.
    assert!(
        rows.iter()
            .filter(|r| r.workspace_id == rivals.id && r.status != 200)
            .all(
                |r| r.cost_nusd == 0 && r.error.as_deref().is_some_and(|e| e.starts_with("model:"))
            )
    );
}

/// Names the admin API refuses (names are letters, digits, `-`, `_`, `.`, `@`).
const REFUSED_NAMES: &[&str] = &[
    "x'); DROP TABLE usage_ledger; --",
    "a\" OR \"1\"=\"1",
    "%",
    "team%",
    "*",
    "back\\slash",
    "$1",
    "a b",
    "",
];
/// Valid names that are special to SQL's LIKE or to URLs, and Unicode letters.
const TRICKY_NAMES: &[&str] = &["_", "__", "t_am", "a.b@c-d", "名前"];
/// Free text that reaches SQL as a bound value: memories, end users, search text, key names,
/// request ids, and search text with query-language syntax (search never reaches SQL).
const HOSTILE_TEXT: &[&str] = &[
    "x'); DROP TABLE usage_ledger; --",
    "a\" OR \"1\"=\"1",
    "%",
    "_",
    "*",
    "back\\slash",
    "$1",
    "NEAR(a b",
    "\"unbalanced",
    "a OR b AND NOT",
    "note:x",
    "^",
];

/// Percent-encodes every byte (for paths and query strings).
fn enc(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[tokio::test]
async fn hostile_names_are_refused_or_matched_exactly_never_run_as_sql() {
    let app = TestApp::with(|c| {
        c.memory.enabled = lyss_core::config::MemoryMode::On;
        c.embedder.kind = EmbedderKind::None;
    })
    .await;
    answering(&app).await;

    // Refused as names, with a clear 400; as lookups, nothing is found. Never a 5xx.
    for name in REFUSED_NAMES {
        for (path, body) in [
            (
                "/admin/workspaces",
                json!({"name": name, "models": ["gpt-4o-mini"]}),
            ),
            ("/admin/users", json!({"name": name, "workspace": "team"})),
        ] {
            let (s, b) = probe(&app, ADMIN, Method::POST, path, Some(body)).await;
            assert_eq!(s, 400, "{path} {name:?}: {b}");
            assert_openai_error(&b, "invalid_request_error", None);
        }
        let e = enc(name);
        for (m, path, body) in [
            (Method::GET, format!("/admin/users?workspace={e}"), None),
            (Method::GET, format!("/admin/keys?user={e}"), None),
            (
                Method::PATCH,
                format!("/admin/workspaces/{e}"),
                Some(json!({"models": []})),
            ),
            (Method::POST, format!("/admin/keys/{e}/revoke"), None),
            (Method::DELETE, format!("/admin/budgets/{e}"), None),
            (
                Method::POST,
                "/admin/budgets".into(),
                Some(json!({"scope": "workspace", "target": name, "unit": "usd", "limit": 1})),
            ),
            (
                Method::POST,
                "/admin/keys".into(),
                Some(json!({"user": name})),
            ),
            (Method::GET, format!("/admin/usage?by={e}"), None),
        ] {
            let (s, b) = probe(&app, ADMIN, m.clone(), &path, body).await;
            assert!(
                (400..500).contains(&s) || (s == 200 && b.as_array().is_some_and(Vec::is_empty)),
                "{m} {path}: {s} {b}"
            );
        }
    }

    // Valid but tricky names: each resolves to itself only (`_` is LIKE's any-character).
    let mut keys = Vec::new();
    for (i, name) in TRICKY_NAMES.iter().enumerate() {
        let (s, w) = probe(
            &app,
            ADMIN,
            Method::POST,
            "/admin/workspaces",
            Some(json!({"name": name, "models": ["gpt-4o-mini"]})),
        )
        .await;
        assert_eq!(s, 200, "{name}: {w}");
        let user = format!("{name}{i}");
        let (s, u) = probe(
            &app,
            ADMIN,
            Method::POST,
            "/admin/users",
            Some(json!({"name": user, "workspace": name})),
        )
        .await;
        assert_eq!(s, 200, "{user}: {u}");
        let key_name = HOSTILE_TEXT[i];
        let (s, k) = probe(
            &app,
            ADMIN,
            Method::POST,
            "/admin/keys",
            Some(json!({"user": user, "name": key_name})),
        )
        .await;
        assert_eq!(s, 200, "{k}");
        let (s, b) = probe(
            &app,
            ADMIN,
            Method::POST,
            "/admin/budgets",
            Some(
                json!({"scope": "workspace", "target": name, "unit": "tokens", "limit": 1_000_000}),
            ),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let (s, p) = probe(
            &app,
            ADMIN,
            Method::PATCH,
            &format!("/admin/workspaces/{}", enc(name)),
            Some(json!({"models": ["gpt-4o-mini", "gpt-4o"]})),
        )
        .await;
        assert_eq!(s, 200, "{p}");
        assert_eq!(p["name"], *name);
        let (_, listed) = probe(
            &app,
            ADMIN,
            Method::GET,
            &format!("/admin/keys?user={}", enc(&user)),
            None,
        )
        .await;
        assert_eq!(listed[0]["name"], key_name, "{listed}");
        keys.push(k["key"].as_str().unwrap().to_owned());
    }
    for name in TRICKY_NAMES.iter().chain(&["team"]) {
        let (s, users) = probe(
            &app,
            ADMIN,
            Method::GET,
            &format!("/admin/users?workspace={}", enc(name)),
            None,
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(users.as_array().unwrap().len(), 1, "{name}: {users}");
    }

    // Free text everywhere a request can put it; read back exactly.
    let key = &keys[0];
    for (i, text) in HOSTILE_TEXT.iter().enumerate() {
        let resp = app
            .client
            .post(format!("{}/v1/chat/completions", app.base))
            .bearer_auth(key)
            .header("x-request-id", *text)
            .json(&json!({"model": "gpt-4o-mini", "user": text,
                          "messages": [{"role": "user", "content": text}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{text}");
        let (s, m) = probe(
            &app,
            key,
            Method::POST,
            "/v1/memories",
            Some(json!({"text": format!("note {i}: {text}"), "user": text})),
        )
        .await;
        assert_eq!(s, 201, "{m}");
        let (s, body) = probe(
            &app,
            key,
            Method::GET,
            &format!("/v1/memories?q={}", enc(text)),
            None,
        )
        .await;
        assert_eq!(s, 200, "search {text:?}: {body}");
        let (s, body) = probe(
            &app,
            key,
            Method::GET,
            &format!("/v1/memories/{}", enc(text)),
            None,
        )
        .await;
        assert_eq!(s, 404, "{body}");
    }
    for (i, text) in HOSTILE_TEXT.iter().enumerate() {
        let (_, listed) = probe(
            &app,
            key,
            Method::GET,
            &format!("/v1/memories?user={}", enc(text)),
            None,
        )
        .await;
        let data = listed["data"].as_array().unwrap();
        assert_eq!(data.len(), 1, "end user {text:?} matched others: {listed}");
        assert_eq!(data[0]["text"], format!("note {i}: {text}"));
    }
    let ledger = app.ledger().await;
    assert_eq!(ledger.len(), HOSTILE_TEXT.len(), "the ledger is intact");
    for text in HOSTILE_TEXT {
        assert!(ledger.iter().any(|r| r.request_id == *text), "{text}");
    }
    let (s, usage) = probe(&app, ADMIN, Method::GET, "/admin/usage?by=workspace", None).await;
    assert_eq!(s, 200, "{usage}");
    assert_eq!(usage[0]["group"], TRICKY_NAMES[0], "{usage}");
}

#[tokio::test]
async fn requests_cannot_choose_where_lyss_connects() {
    let app = TestApp::new().await;
    answering(&app).await;
    let evil = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(lyss_testkit::openai::completion("evil", "pwned")),
        )
        .mount(&evil)
        .await;
    let url = format!("{}/v1", evil.uri());
    let mut body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "describe"},
            {"type": "image_url", "image_url": {"url": format!("{url}/image.png")}}]}],
        "base_url": url, "api_base": url, "provider": {"base_url": url, "kind": "openai"},
        "extra_body": {"base_url": url},
    });
    let resp = app
        .post("/v1/chat/completions")
        .header("x-portkey-custom-host", &url)
        .header("x-portkey-provider", "openai")
        .header("x-lyss-base-url", &url)
        .header("x-forwarded-host", evil.address().to_string())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A model named by URL, or by a provider prefix, is just an unknown model.
    for model in [url.clone(), format!("openai/{url}"), "up/up-mini".into()] {
        body["model"] = json!(model);
        let resp = app
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{model}");
    }
    // The Anthropic route, with an image by URL.
    let resp = app
        .post("/v1/messages")
        .json(&json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": format!("{url}/image.png")}},
            {"type": "text", "text": "describe"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        evil.received_requests().await.unwrap().is_empty(),
        "lyss connected where a request told it to"
    );
    // The image URL went to the configured upstream as data, for it to fetch or refuse.
    let sent = app.upstream_bodies().await;
    assert_eq!(sent.len(), 2);
    // (Unknown fields pass through to it as data too, as vendor parameters do.)
    assert!(sent[0].to_string().contains("image.png"));
}

#[tokio::test]
async fn cors_echoes_only_configured_origins_and_never_allows_credentials() {
    let app = TestApp::with(|c| c.cors_origins = vec!["https://chat.example.com".into()]).await;
    for (origin, allowed) in [
        ("https://chat.example.com", true),
        ("https://evil.example.com", false),
        ("https://chat.example.com.evil.net", false),
        ("null", false),
    ] {
        let resp = app
            .client
            .request(Method::OPTIONS, format!("{}/v1/chat/completions", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
            .await
            .unwrap();
        let h = resp.headers();
        assert_eq!(
            h.get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            allowed.then_some(origin),
            "{origin}"
        );
        assert!(h.get("access-control-allow-credentials").is_none());
    }
}

/// A page's message comes only from the server, for the session that acted: a link made
/// elsewhere that carries text for the page (`/me?msg=…`, a forged `note`, a note sealed for
/// another person's session) shows nothing on a person's own page, while the notice of their
/// own action does.
#[tokio::test]
async fn a_page_shows_only_messages_the_server_sealed() {
    let app = TestApp::new().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let ann = app.page_cookie(&app.key).await;
    let me = |path: &str| {
        http.get(format!("{}{path}", app.base))
            .header("cookie", &ann)
    };
    let phish = "Your key leaked: mail it to help@attacker.example";
    let q: String = phish.replace(' ', "%20");
    for path in [
        format!("/me?msg={q}"),
        format!("/me?err={q}"),
        format!("/me?note=6d73670a{}.{}", "41".repeat(8), "0".repeat(64)),
    ] {
        let page = me(&path).send().await.unwrap();
        assert_eq!(page.status(), 200, "{path}");
        let body = page.text().await.unwrap();
        assert!(body.contains("Signed in as"), "{path}: {body}");
        assert!(
            !body.contains("attacker") && !body.contains("AAAA"),
            "{path} shown"
        );
    }
    // The notice of the person's own action is shown.
    let page = me("/me").send().await.unwrap().text().await.unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let done = http
        .post(format!("{}/me/forget", app.base))
        .header("cookie", &ann)
        .form(&[("csrf", csrf.as_str()), ("confirm", "no")])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    let to = done.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.starts_with("/me?note="), "{to}");
    let shown = me(&to).send().await.unwrap().text().await.unwrap();
    assert!(
        shown.contains("Nothing forgotten: type FORGET to confirm."),
        "{shown}"
    );
    // The same note on another person's page: nothing (it was sealed for the first session).
    let bob = app.key_for("bob", "team").await;
    let bob = app.page_cookie(&bob).await;
    let other = http
        .get(format!("{}{to}", app.base))
        .header("cookie", &bob)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(other.contains("Signed in as"), "{other}");
    assert!(!other.contains("Nothing forgotten"), "another's note shown");
}
