//! A real router on a loopback port, a real SQLite store, and a `wiremock` upstream speaking
//! OpenAI's wire format.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use lyss_core::config::{Config, ModelConfig, ProviderConfig, ProviderKind, Secret};
use lyss_core::policy::NewKey;
use lyss_core::setup;
use lyss_server::AppState;
use serde_json::Value;
use wiremock::MockServer;

pub const ADMIN: &str = "test-admin-token";

pub struct TestApp {
    pub base: String,
    pub upstream: MockServer,
    pub state: AppState,
    /// A key of user `ann` in workspace `team` (allowed: gpt-4o-mini, text-embedding-3-small).
    pub key: String,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

pub fn model(name: &str, upstream: &str, aliases: &[&str]) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        provider: "up".into(),
        upstream: Some(upstream.into()),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        input_per_mtok: Some(1.0),
        output_per_mtok: Some(2.0),
        ..ModelConfig::default()
    }
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    pub async fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::with_clock(tweak, std::sync::Arc::new(lyss_core::clock::SystemClock)).await
    }

    pub async fn with_clock(
        tweak: impl FnOnce(&mut Config),
        clock: std::sync::Arc<dyn lyss_core::clock::Clock>,
    ) -> Self {
        let upstream = MockServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: Some(dir.path().to_owned()),
            admin_token: Some(Secret::new(ADMIN)),
            providers: vec![ProviderConfig {
                name: "up".into(),
                kind: ProviderKind::Openai,
                base_url: format!("{}/v1", upstream.uri()),
                api_key_env: None,
                api_key: Some(Secret::new("sk-upstream-secret")),
                connect_timeout_secs: 2,
                timeout_secs: 5,
                discover_models: false,
                api_version: None,
                prompt_cache: None,
                responses_models: None,
            }],
            models: vec![
                model("gpt-4o-mini", "up-mini", &["gpt-5-mini"]),
                model("gpt-4o", "up-big", &[]),
                model("text-embedding-3-small", "up-embed", &[]),
            ],
            ..Config::default()
        };
        tweak(&mut config);
        let lyss = Arc::new(setup::build_with_clock(&config, clock).await.unwrap());
        let policy = lyss.policy().clone();
        policy
            .create_workspace(
                "team",
                &["gpt-4o-mini".into(), "text-embedding-3-small".into()],
            )
            .await
            .unwrap();
        policy.create_user("ann", "team").await.unwrap();
        let key = policy
            .create_key(&NewKey {
                user: "ann".into(),
                ..NewKey::default()
            })
            .await
            .unwrap()
            .key;
        let (token, _) = setup::admin_token(&config).unwrap();
        let state = AppState {
            lyss,
            admin_token: Arc::new(token),
            body_limit: config.body_limit,
            auth_failures_per_minute: config.auth_failures_per_minute,
            metrics: config.metrics,
            metrics_token: config.metrics_token.clone().map(Arc::new),
        };
        let app = lyss_server::router(state.clone(), &config.cors_origins);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let limits = lyss_server::serve::Limits {
            header_read_timeout: std::time::Duration::from_secs(config.header_read_timeout_secs),
            max_header_bytes: config.max_header_bytes,
        };
        // The server's own loop, with its limits.
        tokio::spawn(lyss_server::serve::serve(
            listener,
            app,
            limits,
            std::future::pending(),
        ));
        Self {
            base,
            upstream,
            state,
            key,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// A new user of a workspace (name), and a key of theirs.
    #[allow(dead_code)] // Not every test file that includes this module uses it.
    pub async fn key_for(&self, user: &str, workspace: &str) -> String {
        let policy = self.state.lyss.policy();
        policy.create_user(user, workspace).await.unwrap();
        policy
            .create_key(&NewKey {
                user: user.into(),
                ..NewKey::default()
            })
            .await
            .unwrap()
            .key
    }

    /// `key` signed in on `/me`: the page's cookie (`lyss_me=…`) to send with later requests.
    pub async fn page_cookie(&self, key: &str) -> String {
        let once = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let resp = once
            .post(format!("{}/me/login", self.base))
            .form(&[("key", key)])
            .send()
            .await
            .unwrap();
        let cookie = resp.headers()["set-cookie"].to_str().unwrap();
        cookie.split(';').next().unwrap().to_owned()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// A chat completion with the test key.
    #[allow(dead_code)]
    pub async fn chat(&self, body: &Value) -> reqwest::Response {
        self.post("/v1/chat/completions")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    pub async fn ledger(&self) -> Vec<lyss_core::policy::LedgerEntry> {
        // Rows of cancelled streams are written by a spawned task; give it a moment.
        self.state
            .lyss
            .policy()
            .ledger(&Default::default())
            .await
            .unwrap()
    }

    /// The caller's memories, newest first (up to 1,000).
    #[allow(dead_code)] // Not every test file that includes this module uses it.
    pub async fn memories(&self) -> Vec<Value> {
        let listed: Value = self
            .get("/v1/memories?limit=1000")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        listed["data"].as_array().unwrap().clone()
    }

    /// The JSON bodies the upstream received, in order.
    pub async fn upstream_bodies(&self) -> Vec<Value> {
        self.upstream
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            .collect()
    }
}

/// A monthly token budget; its id.
#[allow(dead_code)]
pub async fn token_budget(
    app: &TestApp,
    scope: lyss_core::policy::Scope,
    target: &str,
    limit: i64,
) -> String {
    budget(
        app,
        scope,
        target,
        limit,
        lyss_core::policy::Period::Monthly,
    )
    .await
}

#[allow(dead_code)]
pub async fn budget(
    app: &TestApp,
    scope: lyss_core::policy::Scope,
    target: &str,
    limit: i64,
    period: lyss_core::policy::Period,
) -> String {
    app.state
        .lyss
        .policy()
        .set_budget(&lyss_core::policy::NewBudget {
            scope,
            target: target.into(),
            unit: lyss_core::policy::Unit::Tokens,
            limit,
            period,
            tz: None,
            expires_at: None,
        })
        .await
        .unwrap()
        .id
}

/// A budget's (spent, reserved) now.
#[allow(dead_code)]
pub async fn spent_reserved(app: &TestApp, id: &str) -> (i64, i64) {
    let all = app
        .state
        .lyss
        .policy()
        .budgets(time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    let b = all.iter().find(|b| b.budget.id == id).unwrap();
    (b.spent, b.reserved)
}
