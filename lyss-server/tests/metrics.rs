//! `/metrics` after traffic: the text parses with a Prometheus parser, and the counters moved
//! as the requests did (requests, tokens, a cache hit, a refusal, HTTP routes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestApp;
use lyss_core::config::CacheMode;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

/// The value of a sample whose labels include all of `labels` (0 when absent).
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => {
                h.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

async fn scrape(app: &TestApp) -> prometheus_parse::Scrape {
    let resp = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

#[tokio::test]
async fn counters_move_with_traffic_and_the_text_parses() {
    // The recorder is global to the process: measure differences, with a model of this test's own.
    let app = TestApp::with(|c| {
        c.cache.mode = CacheMode::Exact;
        c.models
            .push(common::model("metrics-model", "up-metrics", &[]));
    })
    .await;
    app.state
        .lyss
        .policy()
        .update_workspace(
            "team",
            &lyss_core::policy::WorkspaceUpdate {
                models: Some(vec!["metrics-model".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(lyss_testkit::openai::completion("up-metrics", "4")),
        )
        .mount(&app.upstream)
        .await;
    let before = scrape(&app).await;
    let m = [("model", "metrics-model")];
    let chat = json!({"model": "metrics-model", "messages": [{"role": "user", "content": "2+2?"}]});
    for _ in 0..2 {
        let resp = app
            .post("/v1/chat/completions")
            .json(&chat)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // A refusal: a key that does not exist.
    let resp = app
        .client
        .post(format!("{}/v1/chat/completions", app.base))
        .bearer_auth("lyss-sk-nope-nope")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let after = scrape(&app).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };

    assert_eq!(
        moved(
            "lyss_requests_total",
            &[m[0], ("status", "200"), ("cache", "none")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "lyss_requests_total",
            &[m[0], ("status", "200"), ("cache", "hit")]
        ),
        1.0
    );
    assert_eq!(
        moved("lyss_tokens_total", &[m[0], ("kind", "prompt")]),
        1117.0
    );
    assert_eq!(
        moved("lyss_tokens_total", &[m[0], ("kind", "completion")]),
        46.0
    );
    assert_eq!(
        moved("lyss_cost_nanousd_total", &m),
        (1117 * 1_000 + 46 * 2_000) as f64
    );
    assert_eq!(moved("lyss_cache_saved_tokens_total", &m), 1163.0);
    assert!(moved("lyss_refusals_total", &[("reason", "auth")]) >= 1.0);
    assert!(moved("lyss_upstream_duration_seconds_count", &[("outcome", "ok")]) >= 1.0);
    assert!(
        moved(
            "lyss_http_requests_total",
            &[("route", "/v1/chat/completions"), ("status", "401")]
        ) >= 1.0
    );
    // Histograms are real Prometheus histograms, with the gateway's own time apart.
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric == "lyss_gateway_duration_seconds_bucket"
                || (s.metric == "lyss_gateway_duration_seconds"
                    && matches!(s.value, prometheus_parse::Value::Histogram(_))))
    );
    assert!(
        after.docs.contains_key("lyss_requests_total"),
        "help text is exported"
    );
}

#[tokio::test]
async fn a_metrics_token_when_set_is_required() {
    let app = TestApp::with(|c| {
        c.metrics_token = Some(lyss_core::config::Secret::new("scrape-secret"));
    })
    .await;
    let url = format!("{}/metrics", app.base);
    for auth in [None, Some("wrong"), Some(app.key.as_str())] {
        let mut req = app.client.get(&url);
        if let Some(token) = auth {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "with {auth:?}");
        let body: serde_json::Value = resp.json().await.unwrap();
        lyss_testkit::assert_openai_error(&body, "invalid_request_error", Some("invalid_api_key"));
    }
    let resp = app
        .client
        .get(&url)
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("# TYPE"));
}
