//! The `lyss` binary against a real SQLite data directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use serde_json::Value;

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_lyss"))
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(args)
            .env_remove("LYSS_CONFIG")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OLLAMA_BASE_URL")
            // Keyword-only memory: deterministic, and no model load per command.
            .env("LYSS_MODELS_DIR", self.dir.path().join("no-models"))
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lyss {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

#[test]
fn mint_list_and_revoke_keys_without_email() {
    let cli = Cli::new();
    let ws = cli.json(&[
        "workspace",
        "create",
        "team",
        "--models",
        "gpt-4o-mini, gpt-4o",
    ]);
    assert_eq!(ws["models"], serde_json::json!(["gpt-4o-mini", "gpt-4o"]));
    cli.ok(&["user", "create", "ann", "--workspace", "team"]);
    let key = cli.json(&[
        "key",
        "create",
        "--user",
        "ann",
        "--models",
        "gpt-4o-mini",
        "--expires",
        "2099-01-31",
        "--name",
        "laptop",
    ]);
    let full = key["key"].as_str().unwrap();
    let id = key["id"].as_str().unwrap();
    assert!(full.starts_with(&format!("lyss-sk-{id}-")));
    assert_eq!(key["expires_at"], "2099-01-31T00:00:00Z");

    // Without --json the key alone goes to stdout, so `KEY=$(lyss key create …)` works.
    let plain = cli.ok(&["key", "create", "--user", "ann"]);
    assert!(plain.trim().starts_with("lyss-sk-") && plain.trim().lines().count() == 1);

    let listed = cli.json(&["key", "list", "--user", "ann"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let table = cli.ok(&["key", "list"]);
    assert!(table.contains(id) && table.contains("laptop") && table.contains("active"));
    let secret = full.rsplit('-').next().unwrap();
    assert!(!table.contains(secret) && !listed.to_string().contains(secret));

    let revoked = cli.json(&["key", "revoke", id]);
    assert!(revoked["revoked_at"].is_string());
    assert!(cli.ok(&["key", "list"]).contains("revoked"));

    let users = cli.json(&["user", "list", "--workspace", "team"]);
    assert_eq!(users[0]["name"], "ann");
    assert!(
        cli.ok(&["workspace", "list"])
            .contains("gpt-4o-mini,gpt-4o")
    );
}

#[test]
fn mistakes_are_explained_with_a_failing_exit_code() {
    let cli = Cli::new();
    let out = cli.run(&["user", "create", "bob", "--workspace", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("workspace `nope` not found"));
    let out = cli.run(&["key", "create", "--user", "bob", "--expires", "tomorrow"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("YYYY-MM-DD"));
    cli.ok(&["workspace", "create", "team"]);
    let out = cli.run(&["workspace", "create", "team"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

#[test]
fn model_list_reads_the_config_file_with_prices() {
    let cli = Cli::new();
    std::fs::write(
        cli.dir.path().join("lyss.toml"),
        r#"
[[providers]]
name = "local"
kind = "openai"
base_url = "http://127.0.0.1:9000/v1"
api_key_env = "LOCAL_API_KEY"

[[models]]
name = "gpt-4o-mini"
provider = "local"
upstream = "gpt-4o-mini"
aliases = ["gpt-5-mini"]
input_per_mtok = 0.15
output_per_mtok = 0.60

[[models]]
name = "gpt-4o"
provider = "local"
"#,
    )
    .unwrap();
    let models = cli.json(&["model", "list"]);
    assert_eq!(models[0]["name"], "gpt-4o");
    // No price in config: the built-in table applies.
    assert_eq!(models[0]["input_per_mtok"], 2.5);
    assert_eq!(models[1]["aliases"], serde_json::json!(["gpt-5-mini"]));
    assert_eq!(models[1]["output_per_mtok"], 0.6);
    let table = cli.ok(&["model", "list"]);
    assert!(table.contains("gpt-5-mini") && table.contains("local"));

    std::fs::write(
        cli.dir.path().join("lyss.toml"),
        "[[models]]\nname = \"x\"\nprovider = \"nope\"\n",
    )
    .unwrap();
    let out = cli.run(&["model", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no provider named `nope`"));
}

#[test]
fn budgets_limits_and_usage() {
    let cli = Cli::new();
    cli.ok(&["workspace", "create", "team", "--models", "*"]);
    cli.ok(&["user", "create", "ann", "--workspace", "team"]);
    let key = cli.json(&["key", "create", "--user", "ann"]);
    let id = key["id"].as_str().unwrap();

    let b = cli.json(&[
        "budget",
        "set",
        "--workspace",
        "team",
        "--usd",
        "5",
        "--period",
        "monthly",
        "--tz",
        "Europe/Paris",
    ]);
    assert_eq!(b[0]["limit"], 5_000_000_000i64);
    assert_eq!(b[0]["unit"], "usd");
    assert_eq!(b[0]["scope_name"], "team");
    assert!(b[0]["resets_at"].is_string());
    cli.json(&[
        "budget",
        "set",
        "--key",
        id,
        "--tokens",
        "1000",
        "--expires",
        "2099-01-01",
    ]);
    // Setting the same budget again replaces its limit.
    cli.json(&[
        "budget",
        "set",
        "--workspace",
        "team",
        "--usd",
        "7.5",
        "--period",
        "monthly",
    ]);
    let all = cli.json(&["budget", "list"]);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let table = cli.ok(&["budget", "list"]);
    assert!(
        table.contains("$7.5000") && table.contains("workspace team") && table.contains("1000"),
        "{table}"
    );

    let out = cli.run(&[
        "budget",
        "set",
        "--user",
        "ann",
        "--workspace",
        "team",
        "--usd",
        "1",
    ]);
    assert!(!out.status.success(), "two targets must be refused");
    let out = cli.run(&[
        "budget", "set", "--user", "ann", "--usd", "1", "--period", "hourly",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown period"));
    let out = cli.run(&[
        "budget",
        "set",
        "--user",
        "ann",
        "--usd",
        "1",
        "--period",
        "daily",
        "--tz",
        "Mars/Base",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("time zone"));

    let budget_id = all[0]["id"].as_str().unwrap();
    cli.ok(&["budget", "delete", budget_id]);
    assert_eq!(cli.json(&["budget", "list"]).as_array().unwrap().len(), 1);

    cli.ok(&[
        "limit", "set", "--user", "ann", "--rpm", "60", "--tpm", "100000",
    ]);
    let out = cli.run(&["limit", "set", "--key", "nope", "--rpm", "1"]);
    assert!(!out.status.success());

    // An empty ledger still reports, with a total row in the table.
    assert_eq!(
        cli.json(&["usage", "--by", "user", "--since", "7d"]),
        serde_json::json!([])
    );
    assert!(cli.ok(&["usage", "--by", "model"]).contains("total"));
    let out = cli.run(&["usage", "--since", "last tuesday"]);
    assert!(!out.status.success());
}

#[test]
fn memories_add_list_search_import_forget_across_end_user_scopes() {
    let cli = Cli::new();
    cli.ok(&["workspace", "create", "team", "--models", "*"]);
    cli.ok(&["user", "create", "ann", "--workspace", "team"]);
    cli.ok(&["user", "create", "bob", "--workspace", "team"]);
    let m = cli.json(&["memory", "add", "--user", "ann", "I prefer short answers."]);
    let id = m["id"].as_str().unwrap().to_owned();
    let export = cli.dir.path().join("chat.json");
    std::fs::write(
        &export,
        serde_json::json!({"messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "I live in Lyon with my two cats."},
            {"role": "assistant", "content": "Lovely!"},
            {"role": "user", "content": [{"type": "text", "text": "My favourite language is Rust."}]},
            {"role": "user", "content": "I prefer short answers."}
        ]})
        .to_string(),
    )
    .unwrap();
    let imported = cli.json(&[
        "memory",
        "import",
        "--user",
        "ann",
        export.to_str().unwrap(),
    ]);
    assert_eq!(imported["turns"], 3);
    assert_eq!(
        imported["memories"], 3,
        "the repeated preference is not stored twice"
    );
    let found = cli.json(&["memory", "search", "--user", "ann", "cats in Lyon"]);
    assert_eq!(
        found[0]["memory"]["text"],
        "I live in Lyon with my two cats."
    );
    assert!(
        cli.ok(&["memory", "list", "--user", "ann"])
            .contains("Rust")
    );
    assert_eq!(
        cli.json(&["memory", "list", "--user", "bob"]),
        serde_json::json!([])
    );
    let out = cli.run(&["memory", "delete", "--user", "bob", &id]);
    assert!(!out.status.success(), "bob cannot delete ann's memory");

    // An end-user's scope (what a client's `user` field narrows to): listed with its count,
    // seen and changed only with --end-user.
    let phone = ["--user", "ann", "--end-user", "lobe-7f3a"];
    let fact = cli.json(
        &[
            &["memory", "add"][..],
            &phone,
            &["My phone is a Fairphone."],
        ]
        .concat(),
    );
    let fact = fact["id"].as_str().unwrap().to_owned();
    cli.json(&[&["memory", "add"][..], &phone, &["I cycle to work."]].concat());
    assert_eq!(
        cli.json(&["memory", "scopes", "--user", "ann"]),
        serde_json::json!([
            {"end_user": null, "agent": null, "memories": 3},
            {"end_user": "lobe-7f3a", "agent": null, "memories": 2}
        ])
    );
    assert!(
        cli.ok(&["memory", "scopes", "--user", "ann"])
            .contains("lobe-7f3a")
    );
    assert!(
        !cli.ok(&["memory", "list", "--user", "ann"])
            .contains("Fairphone")
    );
    let listed = cli.json(&[&["memory", "list"][..], &phone].concat());
    assert_eq!(listed.as_array().unwrap().len(), 2);
    // An end-user id as the chat and the APIs take it: trimmed, the same scope.
    let padded = cli.json(&[
        "memory",
        "list",
        "--user",
        "ann",
        "--end-user",
        " lobe-7f3a ",
    ]);
    assert_eq!(padded, listed);
    let found = cli.json(&[&["memory", "search"][..], &phone, &["which phone"]].concat());
    assert_eq!(found[0]["memory"]["id"], fact.as_str());
    let out = cli.run(&["memory", "delete", "--user", "ann", &fact]);
    assert!(!out.status.success(), "not in ann's own scope");
    cli.ok(&[&["memory", "delete"][..], &phone, &[&fact]].concat());
    let events = cli.json(&[&["memory", "history"][..], &phone, &[&fact]].concat());
    let events: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["add", "delete"]);

    cli.ok(&["memory", "delete", "--user", "ann", &id]);
    cli.ok(&["memory", "forget", "--user", "ann"]);
    assert_eq!(
        cli.json(&["memory", "list", "--user", "ann"]),
        serde_json::json!([])
    );
    assert_eq!(
        cli.json(&["memory", "scopes", "--user", "ann"]),
        serde_json::json!([]),
        "forget takes every end-user scope"
    );
}
