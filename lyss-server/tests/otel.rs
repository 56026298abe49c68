//! With the `otel` feature, request spans reach an OTLP/HTTP collector (a fake one here).
//! Run by `.ci/run` with `--features otel`.
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_are_exported_over_otlp() {
    let collector = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&collector)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The real binary, built with the feature, configured the way operators do it.
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_lyss-server"))
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.uri())
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env_remove("LYSS_CONFIG")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OLLAMA_BASE_URL")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        // Kept for the failure message: a start that fails should say why.
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let client = reqwest::Client::new();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        let log = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
        if let Some(status) = server.try_wait().unwrap() {
            panic!("server exited with {status}: {}", log());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server did not start in 60 s: {}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
        .get(format!("{base}/v1/models"))
        .header("x-request-id", "otel-trace-1")
        .send()
        .await
        .unwrap();
    let sent = Instant::now();
    loop {
        let got = collector.received_requests().await.unwrap();
        if let Some(r) = got.iter().find(|r| r.url.path() == "/v1/traces") {
            assert_eq!(r.headers["content-type"], "application/x-protobuf");
            // The span's attributes travel in the protobuf body: the request id is in it.
            assert!(
                r.body.windows(12).any(|w| w == b"otel-trace-1"),
                "the request span carries its request id"
            );
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "no spans were exported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = server.kill();
    let _ = server.wait();
}
