//! Real clients on their default settings — only the base URL, the key and a model alias set
//! — through the real `lyss-server`, against a fake upstream that speaks OpenAI's chat
//! completions wire format faithfully: streams with a usage chunk, and a tool round trip (it
//! calls one of the tools the client offers, then answers once the tool's result comes back).
//!
//! The clients are the pinned versions `scripts/test.sh` installs outside the clone
//! (`LYSS_TEST_CLIENTS`: `node_modules/.bin` of `tests/clients/package.json`, and aider in its
//! own venv, `LYSS_TEST_AIDER`). Without them the tests say so and pass locally; with
//! `CI=true` they fail. Telemetry, update checks and error reports are off; the clients talk to
//! lyss on loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lyss_tests::{Server, lyss};
use serde_json::{Value, json};

/// What the file the clients are asked to read says.
const SECRET: &str = "LYSS-ROUND-TRIP-OK";
const ADMIN: &str = "clients-admin";
/// The model every client is pointed at, under the names they ask for by default.
const ALIASES: &[&str] = &["gpt-6.2-sol", "claude-opus-5-5", "claude-haiku-5-5"];

/// lyss's memory search as Claude Code names it once `claude mcp add … lyss …` added the server.
const MEMORY_TOOL: &str = "mcp__lyss__search_memories";

/// The fake upstream's answer to a chat request: a call to the first tool it knows among those
/// offered, or — once a tool's result is the newest message — an answer quoting it.
fn decide(req: &Value, workspace: &Path) -> (Option<(String, String)>, String) {
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let offered: Vec<&str> = req["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    let notes = workspace.join("NOTES.md").to_string_lossy().into_owned();
    // Asked what it remembers, with lyss's MCP server added: its memory search, found first
    // through the client's tool search when the client defers MCP tools (Claude Code does).
    let called = |name: &str| {
        messages.iter().any(|m| {
            m["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["function"]["name"] == name)
        })
    };
    let asked_to_recall = messages
        .iter()
        .any(|m| m["role"] == "user" && m["content"].to_string().contains("remember about"));
    if asked_to_recall && !called(MEMORY_TOOL) {
        let found = messages
            .iter()
            .any(|m| m["role"] == "tool" && m["content"].to_string().contains(MEMORY_TOOL));
        if offered.contains(&MEMORY_TOOL) || found {
            let args = json!({"query": "my bike"}).to_string();
            return (Some((MEMORY_TOOL.to_owned(), args)), String::new());
        }
        if offered.contains(&"ToolSearch") && !called("ToolSearch") {
            let args = json!({"query": format!("select:{MEMORY_TOOL}")}).to_string();
            return (Some(("ToolSearch".to_owned(), args)), String::new());
        }
    }
    if let Some(last) = messages.last()
        && last["role"] == "tool"
    {
        let said = match &last["content"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return match said.contains(SECRET) {
            true => (None, format!("The secret word is {SECRET}.")),
            false => (
                None,
                format!(
                    "All done. The tool said: {}",
                    said.chars().take(60).collect::<String>()
                ),
            ),
        };
    }
    let calls = [
        ("Read", json!({"file_path": notes})),
        ("read", json!({"filePath": notes})),
        ("clock__sleep", json!({"duration_ms": 5})),
    ];
    for (name, args) in calls {
        if offered.contains(&name) {
            return (Some((name.to_owned(), args.to_string())), String::new());
        }
    }
    (None, "PONG".into())
}

/// The fake upstream: `/v1/chat/completions` (streamed or not) and `/v1/models`; keeps every
/// request body.
async fn upstream(workspace: PathBuf) -> (String, Arc<Mutex<Vec<Value>>>) {
    use axum::response::IntoResponse;
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let chat = move |axum::Json(req): axum::Json<Value>| {
        let (kept, workspace) = (kept.clone(), workspace.clone());
        async move {
            // Each answer and tool call its own id, as a real upstream's are (a client that
            // merges messages by id would otherwise fold a second tool call into the first).
            let n = {
                let mut kept = kept.lock().unwrap();
                kept.push(req.clone());
                kept.len()
            };
            let (id, call_id) = (format!("chatcmpl-fake{n}"), format!("call_fake{n}"));
            let (call, text) = decide(&req, &workspace);
            let model = req["model"].clone();
            let usage = json!({"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129});
            let finish = if call.is_some() { "tool_calls" } else { "stop" };
            if req["stream"] == true {
                let chunk = |choices: Value, usage: Value| {
                    let mut c = json!({"id": id, "object": "chat.completion.chunk",
                        "created": 1, "model": model, "choices": choices});
                    if !usage.is_null() {
                        c["usage"] = usage;
                    }
                    format!("data: {c}\n\n")
                };
                let mut sse = chunk(
                    json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
                    Value::Null,
                );
                match &call {
                    Some((name, args)) => {
                        sse += &chunk(
                            json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}, "finish_reason": null}]),
                            Value::Null,
                        );
                        sse += &chunk(
                            json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": args}}]}, "finish_reason": null}]),
                            Value::Null,
                        );
                    }
                    None => {
                        sse += &chunk(
                            json!([{"index": 0, "delta": {"content": text}, "finish_reason": null}]),
                            Value::Null,
                        );
                    }
                }
                sse += &chunk(
                    json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
                    Value::Null,
                );
                sse += &chunk(json!([]), usage);
                sse += "data: [DONE]\n\n";
                (
                    [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                    sse,
                )
                    .into_response()
            } else {
                let mut message = json!({"role": "assistant", "content": if call.is_some() { Value::Null } else { json!(text) }});
                if let Some((name, args)) = &call {
                    message["tool_calls"] = json!([{"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]);
                }
                axum::Json(json!({"id": id, "object": "chat.completion", "created": 1,
                    "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage}))
                .into_response()
            }
        }
    };
    let models = || async {
        axum::Json(
            json!({"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 1, "owned_by": "fake"}]}),
        )
    };
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .route("/v1/models", axum::routing::get(models));
    let url = lyss_testkit::upstream::serve(app, 0).await;
    (url, bodies)
}

/// lyss in front of the fake upstream, a key, and a workspace folder with `NOTES.md`.
struct Setup {
    server: Server,
    key: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("workspace");
        std::fs::create_dir_all(&workspace).unwrap();
        std::fs::write(
            workspace.join("NOTES.md"),
            format!("The secret word is {SECRET}.\n"),
        )
        .unwrap();
        let (upstream, bodies) = upstream(workspace).await;
        let config = dir.path().join("lyss.toml");
        let aliases = ALIASES
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            &config,
            format!(
                "admin_token = \"{ADMIN}\"\nauth_failures_per_minute = 0\n\n[embedder]\nkind = \"none\"\n\n[[providers]]\nname = \"fake\"\nkind = \"openai\"\nbase_url = \"{upstream}\"\n\n\
                 [[models]]\nname = \"fake-model\"\nprovider = \"fake\"\naliases = [{aliases}]\nmax_output_tokens = 16384\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n"
            ),
        )
        .unwrap();
        let args = [
            "--config".to_owned(),
            config.to_str().unwrap().to_owned(),
            "--data-dir".to_owned(),
            dir.path().join("data").to_str().unwrap().to_owned(),
        ];
        let cli = |extra: &[&str]| {
            let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
            all.extend_from_slice(extra);
            lyss(&all)
        };
        cli(&["workspace", "create", "team", "--models", "*"]);
        cli(&["user", "create", "dev", "--workspace", "team"]);
        let key = cli(&["key", "create", "--user", "dev"])["key"]
            .as_str()
            .unwrap()
            .to_owned();
        let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        Setup {
            server,
            key,
            bodies,
            dir,
        }
    }

    fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    /// A home of the client's own: no configuration of the machine's user reaches it.
    fn home(&self, name: &str) -> PathBuf {
        let home = self.dir.path().join(format!("home-{name}"));
        std::fs::create_dir_all(&home).unwrap();
        home
    }

    /// The ledger rows of this run (`/admin/ledger`).
    async fn ledger(&self) -> Vec<Value> {
        lyss_tests::ledger(&self.server.base, ADMIN).await
    }

    fn requests(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

/// Where a client is installed: `LYSS_TEST_CLIENTS` (npm clients' `.bin`) or `LYSS_TEST_AIDER`.
/// `None` outside CI when it is not set (the test then says so); a failure in CI.
fn installed(var: &str, name: &str) -> Option<PathBuf> {
    let found = std::env::var_os(var)
        .map(PathBuf::from)
        .map(|d| d.join(name))
        .filter(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "{name} is not installed ({var}): scripts/test.sh installs the real clients"
        );
        eprintln!("skipped: {name} is not installed ({var}; scripts/test.sh installs it)");
    }
    found
}

/// Runs a client to its end (at most 3 minutes); returns (success, stdout + stderr).
async fn run(mut cmd: tokio::process::Command) -> (bool, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().unwrap();
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("the client did not finish within 3 minutes")
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The environment every client runs with: no proxy, nothing inherited that points elsewhere.
fn client(bin: &Path, home: &Path, workspace: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.current_dir(workspace)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("NO_COLOR", "1")
        .env("TERM", "dumb");
    cmd
}

/// The tool round trip reached the upstream: a request whose newest message is the tool's
/// result, after one that offered the tools.
fn assert_round_trip(s: &Setup, output: &str) {
    let requests = s.requests();
    assert!(
        requests.iter().any(|r| r["messages"]
            .as_array()
            .and_then(|m| m.last())
            .is_some_and(|m| m["role"] == "tool")),
        "no tool result reached the upstream:\n{output}\n{requests:#?}"
    );
}

#[tokio::test]
async fn codex_cli_on_its_defaults_completes_a_tool_round_trip() {
    let Some(bin) = installed("LYSS_TEST_CLIENTS", "codex") else {
        return;
    };
    let s = Setup::start().await;
    let home = s.home("codex");
    let mut cmd = client(&bin, &home, &s.workspace());
    cmd.env("CODEX_HOME", home.join(".codex"))
        .env("LYSS_KEY", &s.key)
        .args(["exec", "--skip-git-repo-check"])
        .args(["-c", "model_provider=\"lyss\""])
        .args(["-c", &format!("model_providers.lyss={{name=\"lyss\",base_url=\"{}/v1\",env_key=\"LYSS_KEY\",wire_api=\"responses\"}}", s.server.base)])
        .args(["-c", "analytics.enabled=false", "-c", "feedback.enabled=false", "-c", "check_for_update_on_startup=false"])
        .arg("Sleep a moment, then reply PONG.");
    std::fs::create_dir_all(home.join(".codex")).unwrap();
    let (ok, out) = run(cmd).await;
    assert!(ok, "codex failed:\n{out}");
    assert!(out.contains("All done. The tool said:"), "{out}");
    assert_round_trip(&s, &out);
    // Through `/v1/responses`, in the ledger as such, every request answered.
    let rows = s.ledger().await;
    assert!(rows.len() >= 2, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r["endpoint"] == "responses" && r["status"] == 200),
        "{rows:?}"
    );
}

#[tokio::test]
async fn claude_code_on_its_defaults_completes_a_tool_round_trip() {
    let Some(bin) = installed("LYSS_TEST_CLIENTS", "claude") else {
        return;
    };
    let s = Setup::start().await;
    let home = s.home("claude");
    let mut cmd = client(&bin, &home, &s.workspace());
    cmd.env("ANTHROPIC_BASE_URL", &s.server.base)
        .env("ANTHROPIC_API_KEY", &s.key)
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .args(["-p", "Read NOTES.md and tell me the secret word."]);
    let (ok, out) = run(cmd).await;
    assert!(ok, "claude failed:\n{out}");
    assert!(out.contains(SECRET), "{out}");
    assert_round_trip(&s, &out);
    let rows = s.ledger().await;
    assert!(rows.iter().any(|r| r["endpoint"] == "messages"), "{rows:?}");
    assert!(rows.iter().all(|r| r["status"] == 200), "{rows:?}");
}

/// Claude Code with lyss's MCP server added as its docs say (`claude mcp add --transport
/// http`): `claude mcp list` finds it connected, and a chat calls its memory search through
/// lyss, whose answer (a memory of the key's user) reaches the model.
#[tokio::test]
async fn claude_code_calls_the_mcp_memory_tools() {
    let Some(bin) = installed("LYSS_TEST_CLIENTS", "claude") else {
        return;
    };
    let s = Setup::start().await;
    let added = reqwest::Client::new()
        .post(format!("{}/v1/memories", s.server.base))
        .bearer_auth(&s.key)
        .json(&json!({"text": "My bike is a blue Gazelle with a wicker basket."}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let home = s.home("claude-mcp");
    let claude = |args: &[&str]| {
        let mut cmd = client(&bin, &home, &s.workspace());
        cmd.env("ANTHROPIC_BASE_URL", &s.server.base)
            .env("ANTHROPIC_API_KEY", &s.key)
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_ERROR_REPORTING", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .args(args);
        cmd
    };
    let url = format!("{}/mcp", s.server.base);
    let auth = format!("Authorization: Bearer {}", s.key);
    let (ok, out) = run(claude(&[
        "mcp",
        "add",
        "--transport",
        "http",
        "lyss",
        &url,
        "--header",
        &auth,
    ]))
    .await;
    assert!(ok, "claude mcp add failed:\n{out}");
    let (ok, out) = run(claude(&["mcp", "list"])).await;
    assert!(
        ok && out.contains("lyss") && out.contains("Connected"),
        "{out}"
    );
    // The tool is allowed as a person would allow it when asked (-p cannot ask).
    let (ok, out) = run(claude(&[
        "-p",
        "What do you remember about my bike?",
        "--allowedTools",
        "mcp__lyss__search_memories",
    ]))
    .await;
    assert!(ok, "claude failed:\n{out}");
    let requests = s.requests();
    assert!(out.contains("All done. The tool said:"), "{out}");
    let answered = requests.iter().any(|r| {
        r["messages"]
            .as_array()
            .and_then(|m| m.last())
            .is_some_and(|m| {
                m["role"] == "tool" && m["content"].to_string().contains("blue Gazelle")
            })
    });
    assert!(
        answered,
        "the memory never reached the model:\n{out}\n{requests:#?}"
    );
    let rows = s.ledger().await;
    assert!(
        rows.iter().any(|r| r["endpoint"] == "mcp"
            && r["model"] == "search_memories"
            && r["status"] == 200),
        "{rows:?}"
    );
}

#[tokio::test]
async fn opencode_on_its_defaults_completes_a_tool_round_trip() {
    let Some(bin) = installed("LYSS_TEST_CLIENTS", "opencode") else {
        return;
    };
    let s = Setup::start().await;
    // Its provider package is fetched from the npm registry once and kept with the clients.
    let home = std::env::var_os("LYSS_TEST_CLIENTS")
        .map(PathBuf::from)
        .and_then(|d| d.parent()?.parent().map(|p| p.join("opencode-home")))
        .unwrap_or_else(|| s.home("opencode"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        s.workspace().join("opencode.json"),
        json!({"$schema": "https://opencode.ai/config.json",
            "provider": {"lyss": {"npm": "@ai-sdk/openai-compatible", "name": "lyss",
                "options": {"baseURL": format!("{}/v1", s.server.base), "apiKey": "{env:LYSS_KEY}"},
                "models": {"fake-model": {}}}},
            "model": "lyss/fake-model", "share": "disabled", "autoupdate": false})
        .to_string(),
    )
    .unwrap();
    let mut cmd = client(&bin, &home, &s.workspace());
    cmd.env("LYSS_KEY", &s.key)
        .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
        .env("OPENCODE_DISABLE_SHARE", "1")
        .args(["run", "Read NOTES.md and tell me the secret word."]);
    let (ok, out) = run(cmd).await;
    assert!(ok, "opencode failed:\n{out}");
    assert!(out.contains(SECRET), "{out}");
    assert_round_trip(&s, &out);
    let rows = s.ledger().await;
    assert!(
        rows.iter()
            .all(|r| r["endpoint"] == "chat" && r["status"] == 200),
        "{rows:?}"
    );
}

#[tokio::test]
async fn aider_on_its_defaults_gets_its_answer_and_its_prompt_goes_as_sent() {
    let Some(bin) = installed("LYSS_TEST_AIDER", "aider") else {
        return;
    };
    let s = Setup::start().await;
    let home = s.home("aider");
    let mut cmd = client(&bin, &home, &s.workspace());
    cmd.env("OPENAI_API_KEY", &s.key)
        .env("OPENAI_API_BASE", format!("{}/v1", s.server.base))
        .args([
            "--model",
            "openai/fake-model",
            "--no-git",
            "--yes-always",
            "--no-check-update",
        ])
        .args([
            "--analytics-disable",
            "--no-show-release-notes",
            "--no-pretty",
            "--no-stream",
        ])
        .args(["--message", "Say PONG."]);
    let (ok, out) = run(cmd).await;
    assert!(ok, "aider failed:\n{out}");
    assert!(out.contains("PONG"), "{out}");
    // Agent traffic: memory left its prompt exactly as aider composed it (its trailing
    // reminder stays last, no turn dropped).
    let requests = s.requests();
    let last = requests.last().unwrap();
    let roles: Vec<&str> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert!(!roles.is_empty(), "{last}");
    assert!(
        !last.to_string().contains("What you know about the user"),
        "memory touched aider's prompt: {last}"
    );
    let rows = s.ledger().await;
    assert!(rows.iter().all(|r| r["status"] == 200), "{rows:?}");
}
