//! `lyss doctor` names what is wrong and how to fix it: a broken provider URL, a model the
//! provider does not have, a missing embedding model, an unreachable Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Runs `lyss --json doctor` with a config; returns (success, checks by name).
fn doctor(config: &str, extra: &[&str]) -> (bool, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lyss.toml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lyss"))
        .args(["--json", "--config", file.to_str().unwrap(), "--data-dir"])
        .arg(dir.path().join("data"))
        .args(extra)
        .args(["doctor"])
        .env_remove("LYSS_CONFIG")
        .env_remove("LYSS_DATABASE_URL")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OLLAMA_BASE_URL")
        .env_remove("LYSS_MASTER_KEY")
        .env("LYSS_MODELS_DIR", dir.path().join("no-models"))
        .output()
        .unwrap();
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), checks)
}

fn check<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))
}

#[tokio::test]
async fn a_healthy_setup_passes_and_a_missing_model_is_named_with_a_fix() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"object": "list", "data": [{"id": "llama3.2"}, {"id": "qwen2.5"}]}),
        ))
        .mount(&upstream)
        .await;
    let config = format!(
        "[[providers]]\nname = \"ollama\"\nbase_url = \"{}/v1\"\n\n\
         [[models]]\nname = \"llama\"\nprovider = \"ollama\"\nupstream = \"llama3.2\"\n\n\
         [[models]]\nname = \"mistral\"\nprovider = \"ollama\"\n",
        upstream.uri()
    );
    let (passed, checks) = doctor(&config, &[]);
    assert!(passed, "warnings do not fail: {checks:?}");
    assert_eq!(check(&checks, "store")["status"], "ok");
    assert_eq!(check(&checks, "provider ollama")["status"], "ok");
    let missing = check(&checks, "model mistral");
    assert_eq!(missing["status"], "warn");
    assert!(
        missing["fix"].as_str().unwrap().contains("upstream"),
        "{missing}"
    );
    assert!(
        missing["fix"].as_str().unwrap().contains("llama3.2"),
        "{missing}"
    );
    // No embedding model in the (empty) models dir: a warning with the fetch script as the fix.
    let embed = check(&checks, "embedding model");
    assert_eq!(embed["status"], "warn");
    assert!(
        embed["fix"]
            .as_str()
            .unwrap()
            .contains("scripts/fetch-models.sh")
    );
}

#[test]
fn a_broken_provider_url_fails_with_a_fix() {
    let config = "[[providers]]\nname = \"local\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n\
                  [[models]]\nname = \"m\"\nprovider = \"local\"\n";
    let (passed, checks) = doctor(config, &[]);
    assert!(!passed);
    let p = check(&checks, "provider local");
    assert_eq!(p["status"], "fail");
    assert!(p["fix"].as_str().unwrap().contains("check base_url"), "{p}");
}

#[tokio::test]
async fn a_refused_key_and_a_wrong_path_get_their_own_fixes() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": {"message": "Incorrect API key provided"}})),
        )
        .mount(&upstream)
        .await;
    let config = format!(
        "[[providers]]\nname = \"openai\"\nbase_url = \"{0}/v1\"\napi_key_env = \"DOCTOR_TEST_KEY\"\n\n\
         [[providers]]\nname = \"nopath\"\nbase_url = \"{0}\"\n",
        upstream.uri()
    );
    let (passed, checks) = doctor(&config, &[]);
    assert!(!passed);
    let key = check(&checks, "provider openai");
    assert!(
        key["fix"].as_str().unwrap().contains("DOCTOR_TEST_KEY"),
        "{key}"
    );
    let nopath = check(&checks, "provider nopath");
    assert!(
        nopath["fix"].as_str().unwrap().contains("version path"),
        "{nopath}"
    );
}

#[test]
fn an_unreachable_postgres_fails_with_a_fix() {
    let (passed, checks) = doctor(
        "",
        &["--database-url", "postgres://postgres@127.0.0.1:9/lyss"],
    );
    assert!(!passed);
    let store = check(&checks, "store");
    assert_eq!(store["status"], "fail");
    assert!(
        store["fix"].as_str().unwrap().contains("start PostgreSQL"),
        "{store}"
    );
}
