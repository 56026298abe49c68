//! End to end, as a new user would: start the real `lyss-server` with a config file and an
//! empty data directory, mint a key with the real `lyss`, chat through it, revoke it — and,
//! when a Python with the `openai` SDK is given (`LYSS_TEST_PYTHON`; required when `CI=true`),
//! drive the server with the official SDK.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lyss_tests::{Server, command, free_port};

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn lyss(config: &Path, data: &Path, args: &[&str]) -> Value {
    let mut all = vec![
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    lyss_tests::lyss(&all)
}

async fn fake_openai() -> MockServer {
    let upstream = MockServer::start().await;
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c1", "object": "chat.completion.chunk",
        "created": 1, "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut sse = String::new();
    for c in [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Hel"}), Value::Null),
        chunk(json!({"content": "lo"}), Value::Null),
        chunk(json!({}), json!("stop")),
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18",
               "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}}),
    ] {
        sse.push_str(&format!("data: {c}\n\n"));
    }
    sse.push_str("data: [DONE]\n\n");
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse),
        )
        .with_priority(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!", "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163}
        })))
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0, 0.25]}],
            "usage": {"prompt_tokens": 1, "total_tokens": 1}
        })))
        .mount(&upstream)
        .await;
    upstream
}

#[tokio::test]
async fn zero_to_chat_with_the_real_binaries() {
    let upstream = fake_openai().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("lyss.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[providers]]
name = "local"
kind = "openai"
base_url = "{}/v1"
api_key_env = "LOCAL_API_KEY"

[[models]]
name = "gpt-4o-mini"
provider = "local"
aliases = ["gpt-5-mini"]
input_per_mtok = 0.15
output_per_mtok = 0.60

[[models]]
name = "gpt-4o"
provider = "local"

[[models]]
name = "text-embedding-3-small"
provider = "local"
"#,
            upstream.uri()
        ),
    )
    .unwrap();

    let mut server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ])
    .await;
    // First start: a private admin token was generated in the data directory.
    let token_file = data.join("admin_token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let admin = std::fs::read_to_string(&token_file).unwrap();

    lyss(
        &config,
        &data,
        &[
            "workspace",
            "create",
            "team",
            "--models",
            "gpt-4o-mini,text-embedding-3-small",
        ],
    );
    lyss(
        &config,
        &data,
        &["user", "create", "ann", "--workspace", "team"],
    );
    let created = lyss(&config, &data, &["key", "create", "--user", "ann"]);
    let key = created["key"].as_str().unwrap().to_owned();
    // A user whose budget admits nothing, for the SDK's view of a budget refusal.
    lyss(
        &config,
        &data,
        &["user", "create", "broke", "--workspace", "team"],
    );
    let broke = lyss(&config, &data, &["key", "create", "--user", "broke"])["key"]
        .as_str()
        .unwrap()
        .to_owned();
    lyss(
        &config,
        &data,
        &["budget", "set", "--user", "broke", "--tokens", "5"],
    );
    let id = created["id"].as_str().unwrap().to_owned();

    let client = reqwest::Client::new();
    let chat = json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hi"}]});
    let resp = client
        .post(format!("{}/v1/chat/completions", server.base))
        .bearer_auth(&key)
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["choices"][0]["message"]["content"],
        "Hello!"
    );

    // The admin API shares the store with the CLI.
    let ledger = lyss_tests::ledger(&server.base, admin.trim()).await;
    assert_eq!(ledger[0]["key_id"], id.as_str());
    assert_eq!(ledger[0]["cost_nusd"], 1117 * 150 + 46 * 600);

    let python = std::env::var("LYSS_TEST_PYTHON").ok();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(
            python.is_some(),
            "CI=true needs LYSS_TEST_PYTHON (a Python with the openai SDK; scripts/test.sh sets it)"
        );
    }
    match python {
        Some(py) => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/openai_sdk.py");
            let out = Command::new(&py)
                .arg(script)
                .env("LYSS_BASE_URL", format!("{}/v1", server.base))
                .env("LYSS_KEY", &key)
                .env("LYSS_BROKE_KEY", &broke)
                .env(
                    "LYSS_EXPECT_MODELS",
                    "gpt-4o-mini,gpt-5-mini,text-embedding-3-small",
                )
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openai SDK check failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // And Anthropic's SDK, through /v1/messages, to the same OpenAI-compatible upstream.
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/anthropic_sdk.py");
            let out = Command::new(&py)
                .arg(script)
                .env("LYSS_BASE_URL", &server.base)
                .env("LYSS_KEY", &key)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "anthropic SDK check failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => eprintln!("skipping the openai SDK check: LYSS_TEST_PYTHON is not set"),
    }

    // Revoking with the CLI reaches the running server within a second.
    lyss(&config, &data, &["key", "revoke", &id]);
    let revoked_at = Instant::now();
    loop {
        let sent = Instant::now();
        let status = client
            .post(format!("{}/v1/chat/completions", server.base))
            .bearer_auth(&key)
            .json(&chat)
            .send()
            .await
            .unwrap()
            .status();
        if status == 401 {
            // Judged by when the request was sent, not by how long a loaded machine took.
            assert!(
                sent - revoked_at < Duration::from_secs(1),
                "revocation took over a second"
            );
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "the revoked key kept working"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // SIGTERM: a graceful, successful exit.
    #[cfg(unix)]
    {
        let pid = server.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                assert!(status.success(), "lyss-server exited with {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "lyss-server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A server that cannot start fails its test at once, with the server's own reason.
#[tokio::test]
#[should_panic(expected = "config file /nonexistent/lyss.toml does not exist")]
async fn a_server_that_cannot_start_fails_the_test_with_its_reason() {
    Server::start(&["--config", "/nonexistent/lyss.toml"]).await;
}

#[tokio::test]
async fn zero_configuration_starts_and_serves_health() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    // No config file, no flags but the data dir and port: the embedded default.
    let mut child = command("lyss-server")
        .current_dir(dir.path())
        .env("LYSS_DATA_DIR", &data)
        .env("LYSS_BIND", format!("127.0.0.1:{port}"))
        .env("LYSS_METRICS_TOKEN", "scrape-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lyss-server did not start with zero configuration"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(data.join("lyss.db").exists());
    assert!(data.join("admin_token").exists());
    // Settings come from the environment too: the metrics token.
    let metrics = |token: &'static str| {
        reqwest::Client::new()
            .get(format!("{base}/metrics"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(metrics("wrong").await.unwrap().status(), 401);
    assert_eq!(metrics("scrape-secret").await.unwrap().status(), 200);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("key create --user me"),
        "no first-key hint in: {log}"
    );
    assert!(
        log.contains("admin_token"),
        "no admin token location in: {log}"
    );
}

#[tokio::test]
async fn lyss_cache_reads_and_clears_the_running_servers_cache() {
    let upstream = fake_openai().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = lyss_tests::write_config(dir.path(), &format!("{}/v1", upstream.uri()), "");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let mut server = Server::start(&args).await;
    lyss(
        &config,
        &data,
        &["workspace", "create", "team", "--models", "gpt-4o-mini"],
    );
    lyss(
        &config,
        &data,
        &["user", "create", "ann", "--workspace", "team"],
    );
    let key = lyss(&config, &data, &["key", "create", "--user", "ann"])["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // Caching is off in the config; the admin turns it on for the workspace.
    let updated = lyss(
        &config,
        &data,
        &[
            "workspace",
            "update",
            "team",
            "--cache",
            "exact",
            "--cache-ttl",
            "1h",
            "--semantic-threshold",
            "0.97",
        ],
    );
    assert_eq!(
        updated["cache"],
        json!({"mode": "exact", "ttl_secs": 3600, "semantic_threshold": 0.97})
    );
    let listed = lyss(&config, &data, &["workspace", "list"]);
    assert_eq!(listed[0]["cache"]["mode"], "exact");
    let client = reqwest::Client::new();
    let ask = || {
        client
            .post(format!("{}/v1/chat/completions", server.base))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    assert_eq!(ask().await.unwrap().headers()["x-lyss-cache"], "miss");
    assert_eq!(ask().await.unwrap().headers()["x-lyss-cache"], "hit");

    let stats = lyss(
        &config,
        &data,
        &["cache", "stats", "--server", &server.base],
    );
    assert_eq!(
        (stats["enabled"].clone(), stats["entries"].clone()),
        (json!(true), json!(1))
    );
    let cleared = lyss(
        &config,
        &data,
        &[
            "cache",
            "clear",
            "--workspace",
            "team",
            "--server",
            &server.base,
        ],
    );
    assert_eq!(cleared["cleared"], 1);
    assert_eq!(ask().await.unwrap().headers()["x-lyss-cache"], "miss");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// `lyss provider add … --api-key -` stores the key encrypted, never shows it, `lyss provider
/// test` makes an authenticated call, and a server started afterwards serves a model through
/// the stored provider (Anthropic's wire format here).
#[tokio::test]
async fn a_provider_stored_with_lyss_serves_models_and_its_key_stays_secret() {
    const KEY: &str = "sk-ant-api03-very-secret-value";
    let anthropic = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(wiremock::matchers::header("x-api-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"data": [{"id": "claude-sonnet-4-5", "type": "model"}], "has_more": false}),
        ))
        .mount(&anthropic)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(wiremock::matchers::header("x-api-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Bonjour from Claude"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 4}})))
        .mount(&anthropic)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"}})),
        )
        .mount(&anthropic)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("lyss.toml");
    std::fs::write(
        &config,
        "[[models]]\nname = \"claude\"\nprovider = \"claude-api\"\nupstream = \"claude-sonnet-4-5\"\n",
    )
    .unwrap();
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut child = command("lyss")
            .args([
                "--config",
                config.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(s) = stdin {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    };
    let base = format!("{}/v1", anthropic.uri());
    // A key on the command line is refused: it would land in shell history.
    let out = run(
        &[
            "provider",
            "add",
            "claude-api",
            "--kind",
            "anthropic",
            "--api-key",
            KEY,
        ],
        None,
    );
    assert!(!out.status.success());
    let out = run(
        &[
            "provider",
            "add",
            "claude-api",
            "--kind",
            "anthropic",
            "--base-url",
            &base,
            "--api-key",
            "-",
        ],
        Some(&format!("{KEY}\n")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key_file = data.join("master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let out = run(&["provider", "list"], None);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listed.contains("claude-api") && listed.contains("stored (encrypted)"),
        "{listed}"
    );
    let out = run(&["--json", "provider", "test", "claude-api"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tested: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (tested["ok"].clone(), tested["models"].clone()),
        (json!(true), json!(1))
    );

    // The server uses it.
    let mut server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ])
    .await;
    lyss(
        &config,
        &data,
        &["workspace", "create", "team", "--models", "claude"],
    );
    lyss(
        &config,
        &data,
        &["user", "create", "ann", "--workspace", "team"],
    );
    let key = lyss(&config, &data, &["key", "create", "--user", "ann"])["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.base))
        .bearer_auth(&key)
        .json(&json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Bonjour from Claude"
    );
    server.kill_hard();

    // The key is nowhere in clear: not in the database, not in any output.
    let db = std::fs::read(data.join("lyss.db")).unwrap();
    assert!(!db.windows(KEY.len()).any(|w| w == KEY.as_bytes()));
    assert!(!listed.contains(KEY) && !String::from_utf8_lossy(&out.stderr).contains(KEY));
    // Another master key cannot open it: the server refuses to start, naming the provider.
    let out = command("lyss-server")
        .args([
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .env("LYSS_MASTER_KEY", "0".repeat(64))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("claude-api"));

    // A wrong key fails `lyss provider test` with the vendor's message.
    let out = run(
        &[
            "provider",
            "add",
            "claude-api",
            "--kind",
            "anthropic",
            "--base-url",
            &base,
            "--api-key",
            "-",
        ],
        Some("sk-wrong"),
    );
    assert!(out.status.success());
    let out = run(&["provider", "test", "claude-api"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid x-api-key"));
    assert!(
        run(&["provider", "remove", "claude-api"], None)
            .status
            .success()
    );
    assert!(
        !run(&["provider", "remove", "claude-api"], None)
            .status
            .success()
    );
}

/// A full run with debug logs, JSON and text: no API key, admin token or provider key — nor
/// the secret part of a key — ever reaches the logs.
#[tokio::test]
async fn no_secret_ever_reaches_the_logs() {
    const PROVIDER_KEY: &str = "sk-upstream-LOGCHECK-0123456789abcdef";
    const ADMIN: &str = "lyss-admin-LOGCHECK-fedcba9876543210";
    let upstream = fake_openai().await;
    for format in ["json", "text"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = lyss_tests::write_config(
            dir.path(),
            &format!("{}/v1", upstream.uri()),
            &format!(
                "admin_token = \"{ADMIN}\"\nlog_format = \"{format}\"\n[cache]\nmode = \"exact\""
            ),
        );
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "kind = \"openai\"",
            &format!("kind = \"openai\"\napi_key = \"{PROVIDER_KEY}\""),
        );
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("server.log");
        let (mut child, base, created) =
            logged_server_with_a_key(dir.path(), &config, &data, "debug").await;
        let client = reqwest::Client::new();
        let key = created["key"].as_str().unwrap().to_owned();
        let secret = key.rsplit('-').next().unwrap().to_owned();
        let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
        for (bearer, stream) in [
            (key.as_str(), false),
            (key.as_str(), true),
            ("lyss-sk-abc-WRONGSECRETLOGCHECK", false),
            ("garbage", false),
        ] {
            let mut body = chat.clone();
            body["stream"] = json!(stream);
            client
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
        }
        client
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", &key)
            .json(&json!({"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        for token in [ADMIN, "not-the-admin-token"] {
            client
                .get(format!("{base}/admin/ledger"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
        }
        let _ = child.kill();
        let _ = child.wait();
        let logged = std::fs::read_to_string(&log).unwrap()
            + &std::fs::read_to_string(dir.path().join("server.out")).unwrap();
        assert!(logged.len() > 200, "debug logs were written: {logged}");
        for needle in [
            key.as_str(),
            secret.as_str(),
            ADMIN,
            PROVIDER_KEY,
            "WRONGSECRETLOGCHECK",
        ] {
            assert!(
                !logged.contains(needle),
                "{format} logs contain a secret ({needle})"
            );
        }
    }
}

/// One access line per request at info (JSON logs): a request with a ledger row has its row's
/// line (model and tokens, for a stream when it ends), every other request the HTTP layer's —
/// and an embeddings request refused for its model is a ledger row like a chat's.
#[tokio::test]
async fn every_request_has_one_access_line() {
    const ADMIN: &str = "lyss-admin-ACCESSLOG-0123456789";
    let upstream = fake_openai().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = lyss_tests::write_config(
        dir.path(),
        &format!("{}/v1", upstream.uri()),
        &format!("admin_token = \"{ADMIN}\"\nlog_format = \"json\""),
    );
    let log = dir.path().join("server.log");
    let (mut child, base, created) =
        logged_server_with_a_key(dir.path(), &config, &data, "info").await;
    let client = reqwest::Client::new();
    let key = created["key"].as_str().unwrap().to_owned();
    let key_id = created["id"].as_str().unwrap().to_owned();
    let chat = |stream: bool| {
        json!({"model": "gpt-4o-mini", "stream": stream,
               "messages": [{"role": "user", "content": "hi"}]})
    };
    // (request id, method, path, bearer, body, status, has a ledger row)
    let requests = [
        Probe::new("r-chat", "POST", "/v1/chat/completions", &key, 200, true).body(chat(false)),
        Probe::new("r-stream", "POST", "/v1/chat/completions", &key, 200, true).body(chat(true)),
        Probe::new(
            "r-badkey",
            "POST",
            "/v1/chat/completions",
            "lyss-sk-nope",
            401,
            false,
        )
        .body(chat(false)),
        Probe::new(
            "r-badjson",
            "POST",
            "/v1/chat/completions",
            &key,
            400,
            false,
        ),
        Probe::new("r-embed", "POST", "/v1/embeddings", &key, 404, true)
            .body(json!({"model": "text-embedding-3-small", "input": "x"})),
        Probe::new("r-models", "GET", "/v1/models", &key, 200, false),
        Probe::new("r-admin", "GET", "/admin/ledger", ADMIN, 200, false),
        Probe::new("r-nowhere", "GET", "/v1/nowhere", "", 404, false),
        Probe::new("r-health", "GET", "/healthz", "", 200, false),
    ];
    for p in &requests {
        let mut req = client
            .request(p.verb.parse().unwrap(), format!("{base}{}", p.path))
            .header("x-request-id", p.id)
            .bearer_auth(&p.bearer);
        if p.verb == "POST" {
            req = req
                .header("content-type", "application/json")
                .body(p.body.clone().unwrap_or_else(|| "{not json".into()));
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), p.status, "{}", p.id);
        resp.text().await.unwrap();
    }
    // The stream's row (and line) is written as it ends: wait for the ledger to hold it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = lyss_tests::ledger(&base, ADMIN).await;
        if rows.len() >= 3 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let embed = rows
        .iter()
        .find(|r| r["request_id"] == "r-embed")
        .expect("the refused embeddings request has a ledger row");
    assert_eq!(embed["endpoint"], "embeddings");
    assert_eq!(embed["status"], 404);
    let _ = child.kill();
    let _ = child.wait();
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "lyss::access")
        .collect();
    for p in &requests {
        let id = p.id;
        let mine: Vec<&Value> = lines
            .iter()
            .filter(|l| l["fields"]["request_id"] == id)
            .collect();
        if id == "r-health" {
            assert!(mine.is_empty(), "probes log at debug: {mine:?}");
            continue;
        }
        assert_eq!(mine.len(), 1, "{id} has one access line: {mine:?}");
        let f = &mine[0]["fields"];
        assert_eq!(mine[0]["level"], "INFO", "{id}");
        assert_eq!(f["status"], p.status, "{id}: {f}");
        assert_eq!(f["key"] == key_id.as_str(), p.bearer == key, "{id}: {f}");
        if p.ledgered {
            let model = match id {
                "r-embed" => "text-embedding-3-small",
                _ => "gpt-4o-mini",
            };
            assert_eq!(f["model"], model, "{id}: {f}");
        } else {
            let route = if id == "r-nowhere" {
                "unmatched"
            } else {
                p.path
            };
            assert_eq!(f["route"], route, "{id}: {f}");
        }
    }
    let stream = lines
        .iter()
        .find(|l| l["fields"]["request_id"] == "r-stream")
        .unwrap();
    assert_eq!(
        stream["fields"]["completion_tokens"], 12,
        "the stream's line has its usage"
    );
}

/// One request of [`every_request_has_one_access_line`]; a POST without a body sends JSON that
/// does not parse.
struct Probe {
    id: &'static str,
    verb: &'static str,
    path: &'static str,
    bearer: String,
    body: Option<String>,
    status: u16,
    /// Whether it has a ledger row (whose line is the access line).
    ledgered: bool,
}

impl Probe {
    fn new(
        id: &'static str,
        verb: &'static str,
        path: &'static str,
        bearer: &str,
        status: u16,
        ledgered: bool,
    ) -> Self {
        Self {
            id,
            verb,
            path,
            bearer: bearer.to_owned(),
            body: None,
            status,
            ledgered,
        }
    }

    fn body(self, body: Value) -> Self {
        Self {
            body: Some(body.to_string()),
            ..self
        }
    }
}

/// Starts `lyss-server` on `config` and `data` with `RUST_LOG=level`, its stderr in
/// `dir/server.log` and stdout in `dir/server.out`, waits until it answers, and creates
/// workspace `team` (gpt-4o-mini), user `ann` and a key: the child, the base URL and
/// `lyss key create`'s output.
async fn logged_server_with_a_key(
    dir: &Path,
    config: &Path,
    data: &Path,
    level: &str,
) -> (std::process::Child, String, Value) {
    let port = free_port();
    let child = command("lyss-server")
        .args([
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", level)
        .stdout(std::fs::File::create(dir.join("server.out")).unwrap())
        .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client.get(format!("{base}/readyz")).send().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lyss(
        config,
        data,
        &["workspace", "create", "team", "--models", "gpt-4o-mini"],
    );
    lyss(
        config,
        data,
        &["user", "create", "ann", "--workspace", "team"],
    );
    let created = lyss(config, data, &["key", "create", "--user", "ann"]);
    (child, base, created)
}
