//! Budgets and rate limits through the real router: refusals in OpenAI's shape, the output cap
//! sent upstream, the remaining-budget header, and failing closed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN, TestApp, budget, spent_reserved, token_budget};
use lyss_core::policy::{Period, Scope};
use lyss_testkit::{openai::sse, openai::sse_with_usage, sse::data as sse_data};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method};
use wiremock::{Mock, ResponseTemplate};

fn small_completion(prompt: u64, completion: u64) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    })
}

/// Answers 10 + 5 tokens, as JSON or — when lyss asks for a stream — as SSE.
async fn mock_small(app: &TestApp) {
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse_with_usage("up-mini", &["ok"], Some((10, 5)))),
        )
        .with_priority(1)
        .mount(&app.upstream)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(small_completion(10, 5)))
        .mount(&app.upstream)
        .await;
}

fn chat(extra: Value) -> Value {
    let mut body =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// Waits out the key cache so a budget set after the key was first used is seen.
async fn key_cache_expiry() {
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
}

#[tokio::test]
async fn a_request_no_budget_can_admit_is_429_insufficient_quota_and_never_sent() {
    let app = TestApp::new().await;
    mock_small(&app).await;
    token_budget(&app, Scope::User, "ann", 15).await;
    let resp = app
        .post("/v1/chat/completions")
        .json(&chat(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    // Retry when the month turns: at most 31 days from now.
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=31 * 86_400).contains(&retry), "retry-after {retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert_eq!(body["error"]["type"], "insufficient_quota");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("user `ann` monthly budget of 15 tokens"),
        "{msg}"
    );
    assert!(msg.contains("resets at"), "{msg}");
    assert!(app.upstream_bodies().await.is_empty());
}

#[tokio::test]
async fn max_tokens_is_set_to_what_is_left_and_the_caller_sees_the_remainder() {
    let app = TestApp::new().await;
    mock_small(&app).await;
    let id = token_budget(&app, Scope::Workspace, "team", 1_000).await;
    let resp = app
        .post("/v1/chat/completions")
        .json(&chat(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The prompt ("hello there" + framing) is 8 tokens on o200k: 992 left for the answer.
    let sent = &app.upstream_bodies().await[0];
    assert_eq!(sent["max_tokens"], 992);
    // A whole answer of a small budget is followed as a stream (its reservation grows with
    // it) and handed back whole, as asked.
    assert_eq!(sent["stream"], true);
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "ok");
    assert_eq!(body["usage"]["total_tokens"], 15);
    // Settled with the upstream's usage (10 + 5), the rest released.
    assert_eq!(headers["x-lyss-budget-remaining"], "tokens=985");
    assert_eq!(spent_reserved(&app, &id).await, (15, 0));

    // A request that sets its own cap is left alone when it fits...
    let resp = app
        .post("/v1/chat/completions")
        .json(&chat(json!({"max_tokens": 100})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.upstream_bodies().await[1]["max_tokens"], 100);
    // ...and refused when it does not.
    let resp = app
        .post("/v1/chat/completions")
        .json(&chat(json!({"max_completion_tokens": 5000})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
}

#[tokio::test]
async fn streams_settle_their_usage_into_the_budget() {
    let app = TestApp::new().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse("up-mini", &["a", "b"], true)),
        )
        .mount(&app.upstream)
        .await;
    let id = token_budget(&app, Scope::Key, app.key.split('-').nth(2).unwrap(), 5_000).await;
    let resp = app
        .post("/v1/chat/completions")
        .json(&chat(json!({"stream": true})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let left = resp.headers()["x-lyss-budget-remaining"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(left.starts_with("tokens="), "{left}");
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    // The fake's usage chunk says 9 + 12.
    assert_eq!(spent_reserved(&app, &id).await, (21, 0));
}

#[tokio::test]
async fn a_failed_upstream_call_releases_its_reservation() {
    let app = TestApp::new().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&app.upstream)
        .await;
    let id = token_budget(&app, Scope::User, "ann", 5_000).await;
    let resp = app
        .post("/v1/chat/completions")
        .json(&chat(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(spent_reserved(&app, &id).await, (0, 0));
    assert_eq!(app.ledger().await[0].status, 500);
}

#[tokio::test]
async fn rate_limits_refuse_with_retry_after() {
    let app = TestApp::new().await;
    mock_small(&app).await;
    let key_id = app.key.split('-').nth(2).unwrap().to_owned();
    app.state
        .lyss
        .policy()
        .set_rate_limit(Scope::Key, &key_id, Some(2), None)
        .await
        .unwrap();
    for _ in 0..2 {
        let resp = app
            .post("/v1/chat/completions")
            .json(&chat(json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = app
        .post("/v1/chat/completions")
        .json(&chat(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "retry after {retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 requests per minute")
    );
    assert_eq!(app.upstream_bodies().await.len(), 2);
}

#[tokio::test]
async fn tokens_per_minute_count_the_prompt_and_the_requested_answer() {
    let app = TestApp::new().await;
    mock_small(&app).await;
    app.state
        .lyss
        .policy()
        .set_rate_limit(Scope::User, "ann", None, Some(300))
        .await
        .unwrap();
    key_cache_expiry().await;
    let ok = app
        .post("/v1/chat/completions")
        .json(&chat(json!({"max_tokens": 200})))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let refused = app
        .post("/v1/chat/completions")
        .json(&chat(json!({"max_tokens": 200})))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
}

/// The running server's SQLite file, opened beside it to break it.
async fn side_door(app: &TestApp) -> sqlx::SqlitePool {
    let db = app.data_dir().join("lyss.db");
    sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_broken_budget_store_refuses_instead_of_overspending() {
    let app = TestApp::new().await;
    mock_small(&app).await;
    token_budget(&app, Scope::User, "ann", 5_000).await;
    // Break the store under the running server: the budget's usage cannot be read.
    let pool = side_door(&app).await;
    sqlx::query("DROP TABLE budget_usage")
        .execute(&pool)
        .await
        .unwrap();
    let resp = app
        .post("/v1/chat/completions")
        .json(&chat(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "service_unavailable");
    assert!(
        !body.to_string().contains("budget_usage"),
        "5xx bodies stay generic"
    );
    assert!(
        app.upstream_bodies().await.is_empty(),
        "nothing may reach upstream unreserved"
    );
}

#[tokio::test]
async fn a_settlement_that_cannot_be_written_closes_admission_until_one_can() {
    let app = TestApp::new().await;
    mock_small(&app).await;
    token_budget(&app, Scope::User, "ann", 5_000).await;
    assert_eq!(app.chat(&chat(json!({}))).await.status(), 200);
    // The ledger breaks under the running server, whose reservations live in memory.
    let pool = side_door(&app).await;
    sqlx::query("ALTER TABLE usage_ledger RENAME TO usage_ledger_away")
        .execute(&pool)
        .await
        .unwrap();
    // Answered (the upstream has spent the tokens), its row kept for later ...
    assert_eq!(app.chat(&chat(json!({}))).await.status(), 200);
    // ... but nothing more is let through while rows cannot be written.
    let sent = app.upstream_bodies().await.len();
    let refused = app.chat(&chat(json!({}))).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        app.upstream_bodies().await.len(),
        sent,
        "refused before upstream"
    );
    sqlx::query("ALTER TABLE usage_ledger_away RENAME TO usage_ledger")
        .execute(&pool)
        .await
        .unwrap();
    // The deferred settlement lands, and admission opens again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = app.chat(&chat(json!({}))).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            std::time::Instant::now() < deadline,
            "admission never reopened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let rows = app.ledger().await;
    assert_eq!(rows.iter().filter(|r| r.status == 200).count(), 3);
}

#[tokio::test]
async fn admins_manage_budgets_limits_and_read_usage_over_http() {
    let app = TestApp::new().await;
    mock_small(&app).await;
    let admin = |rb: reqwest::RequestBuilder| rb.bearer_auth(ADMIN);
    let created: Value = admin(app.client.post(format!("{}/admin/budgets", app.base)))
        .json(&json!({"scope": "workspace", "target": "team", "unit": "usd", "limit": 2_000_000_000i64, "period": "daily"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let resp = admin(app.client.post(format!("{}/admin/limits", app.base)))
        .json(&json!({"scope": "user", "target": "ann", "rpm": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    key_cache_expiry().await;
    let resp = app
        .post("/v1/chat/completions")
        .json(&chat(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let budgets: Value = admin(app.client.get(format!("{}/admin/budgets", app.base)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(budgets[0]["id"], id.as_str());
    assert_eq!(budgets[0]["spent"], 10 * 1000 + 5 * 2000);
    assert_eq!(budgets[0]["scope_name"], "team");
    let usage: Value = admin(app.client.get(format!("{}/admin/usage?by=model", app.base)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage[0]["group"], "gpt-4o-mini");
    assert_eq!(usage[0]["requests"], 1);
    let none: Value = admin(app.client.get(format!(
        "{}/admin/usage?by=model&key_id=no-such-key",
        app.base
    )))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(none, json!([]), "one key's rows only");
    let resp = admin(
        app.client
            .delete(format!("{}/admin/budgets/{id}", app.base)),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = app
        .client
        .get(format!("{}/admin/budgets", app.base))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn a_daily_budget_resets_exactly_at_midnight_and_in_flight_streams_settle_into_their_day() {
    use lyss_core::clock::{Clock as _, ManualClock};
    use std::sync::Arc;
    use time::macros::datetime;
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-27 23:59:59 UTC)));
    let app = TestApp::with_clock(|_| {}, clock.clone()).await;
    // Every answer is 5 + 100 tokens; streams carry their usage chunk at the end.
    let usage = json!({"prompt_tokens": 5, "completion_tokens": 100, "total_tokens": 105});
    let mut stream = String::new();
    for chunk in [
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}),
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [], "usage": usage}),
    ] {
        stream.push_str(&format!("data: {chunk}\n\n"));
    }
    stream.push_str("data: [DONE]\n\n");
    Mock::given(method("POST"))
        .and(wiremock::matchers::body_partial_json(
            json!({"stream": true}),
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(stream)
                .set_delay(std::time::Duration::from_millis(300)),
        )
        .with_priority(1)
        .mount(&app.upstream)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(small_completion(5, 100)))
        .mount(&app.upstream)
        .await;
    let id = budget(&app, Scope::User, "ann", 300, Period::Daily).await;
    let capped = |n: u32| chat(json!({"max_tokens": n}));
    let day_usage = |at: time::OffsetDateTime| {
        let policy = app.state.lyss.policy().clone();
        let id = id.clone();
        async move {
            let b = policy
                .budgets(at)
                .await
                .unwrap()
                .into_iter()
                .find(|b| b.budget.id == id)
                .unwrap();
            (b.spent, b.reserved)
        }
    };

    // 23:59:59 — a stream starts (reserving 8 + 100) and is still running at midnight.
    let in_flight = {
        let rb = app
            .post("/v1/chat/completions")
            .json(&chat(json!({"max_tokens": 100, "stream": true})));
        tokio::spawn(async move { rb.send().await.unwrap().text().await.unwrap() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        app.post("/v1/chat/completions")
            .json(&capped(100))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // 105 spent + 108 reserved of 300: another 108 does not fit today.
    assert_eq!(
        app.post("/v1/chat/completions")
            .json(&capped(100))
            .send()
            .await
            .unwrap()
            .status(),
        429
    );

    // Midnight, exactly: a new day admits again while the old day's stream is still open.
    clock.set(datetime!(2026-11-28 00:00:00 UTC));
    assert_eq!(
        app.post("/v1/chat/completions")
            .json(&capped(100))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(in_flight.await.unwrap().contains("[DONE]"));

    // The stream settled into the day it was reserved in.
    assert_eq!(day_usage(datetime!(2026-11-27 12:00 UTC)).await, (210, 0));
    assert_eq!(day_usage(clock.now()).await, (105, 0));
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_releases_its_reservation_at_once() {
    let app = TestApp::new().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(small_completion(10, 5))
                .set_delay(std::time::Duration::from_secs(3)),
        )
        .mount(&app.upstream)
        .await;
    let id = token_budget(&app, Scope::User, "ann", 5_000).await;
    // The tokenizer loads on first use (the server warms it at start only when budgets exist
    // then): load it now, so the request reaches its reservation within the client's patience.
    tokio::task::spawn_blocking(lyss_core::tokens::warm_up)
        .await
        .unwrap();
    let gave_up = app
        .post("/v1/chat/completions")
        .timeout(std::time::Duration::from_millis(300))
        .json(&chat(json!({"max_tokens": 100})))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client was meant to time out");
    // Well before the reaper's timeout (15 min) and the upstream's answer (3 s), with room
    // for a busy machine.
    let mut row = None;
    for _ in 0..125 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if let Some(r) = app.ledger().await.into_iter().next() {
            row = Some(r);
            break;
        }
    }
    let row = row.expect("the abandoned request is in the ledger");
    assert_eq!(row.status, 499);
    // The prompt ("hello there" + framing, 8 tokens) is billed; nothing stays reserved.
    assert_eq!(row.prompt_tokens, 8);
    assert_eq!(spent_reserved(&app, &id).await, (8, 0));
}
