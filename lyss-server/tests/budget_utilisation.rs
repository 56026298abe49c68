//! Budgets that serve up to their limit: an answer without `max_tokens` reserves a first share
//! and grows as it streams, so concurrent requests on a small budget spend nearly all of it —
//! and never more — and an answer the budget cannot hold is cut with `finish_reason: "length"`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestApp, spent_reserved, token_budget};
use lyss_core::policy::Scope;
use lyss_testkit::{openai::completion, openai::sse_with_usage, sse::chunks as sse_chunks};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method};
use wiremock::{Mock, ResponseTemplate};

/// An upstream that streams `words` one-token words (ignoring any `max_tokens`), with a usage
/// chunk — as JSON, too, should lyss ask for a whole answer — after thinking for a while, as
/// models do: requests sent together are in flight together, whatever lyss's own speed.
async fn upstream_writing(app: &TestApp, words: usize) {
    let parts = vec![" ok"; words];
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse_with_usage("up-mini", &parts, Some((8, words as u64))))
                .set_delay(THINKING),
        )
        .with_priority(1)
        .mount(&app.upstream)
        .await;
    let mut whole = completion("up-mini", &parts.concat());
    whole["usage"] = json!({"prompt_tokens": 8, "completion_tokens": words,
                            "total_tokens": 8 + words});
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(whole)
                .set_delay(THINKING),
        )
        .mount(&app.upstream)
        .await;
}

const THINKING: std::time::Duration = std::time::Duration::from_millis(300);

fn ask(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "stream": stream,
           "messages": [{"role": "user", "content": "hello there"}]})
}

/// 60 requests at once on a 400-token key budget, each answer 27 tokens: returns how many were
/// served whole, how many cut, and the budget's (spent, reserved) afterwards. (Before answers
/// grew with their reservations, one request held all 400 tokens and 59 were refused.)
async fn sixty_at_once(stream: bool, share: f64) -> (usize, usize, (i64, i64), TestApp) {
    // A model whose tokenizer lyss has exactly, so the count it cuts at is the provider's.
    let app = TestApp::with(|c| {
        c.models[0].upstream = Some("gpt-4o-mini".into());
        c.reserve_output_share = share;
    })
    .await;
    upstream_writing(&app, 27).await;
    let key_id = app.key.split('-').nth(2).unwrap().to_owned();
    let id = token_budget(&app, Scope::Key, &key_id, 400).await;
    let calls: Vec<_> = (0..60)
        .map(|_| {
            let req = app.post("/v1/chat/completions").json(&ask(stream));
            tokio::spawn(async move {
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                (status, resp.text().await.unwrap())
            })
        })
        .collect();
    let (mut whole, mut cut) = (0, 0);
    for call in calls {
        let (status, body) = call.await.unwrap();
        if status == 429 {
            continue;
        }
        assert_eq!(status, 200, "{body}");
        let finish = if stream {
            sse_chunks(&body)
                .iter()
                .find_map(|c| c["choices"][0]["finish_reason"].as_str().map(str::to_owned))
                .unwrap()
        } else {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["object"], "chat.completion");
            v["choices"][0]["finish_reason"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        match finish.as_str() {
            "stop" => whole += 1,
            "length" => cut += 1,
            other => panic!("finish_reason {other}"),
        }
    }
    let usage = spent_reserved(&app, &id).await;
    (whole, cut, usage, app)
}

async fn spends_to_the_limit(stream: bool) {
    let (whole, cut, (spent, reserved), app) = sixty_at_once(stream, 0.05).await;
    eprintln!(
        "stream={stream}: {whole} answered whole, {cut} cut, spent {spent} of 400 ({:.1}%)",
        spent as f64 / 4.0
    );
    assert!(spent <= 400, "overspent: {spent}");
    assert_eq!(reserved, 0, "every reservation settled");
    assert!(spent >= 360, "spent only {spent} of 400");
    assert!(whole + cut > 1, "{whole} answered whole, {cut} cut");
    // The ledger and the budget agree.
    let rows = app.ledger().await;
    let booked: u64 = rows
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.prompt_tokens + r.completion_tokens)
        .sum();
    assert_eq!(booked as i64, spent);
    assert_eq!(
        rows.iter()
            .filter(|r| r.error.as_deref() == Some("cut at the budget's limit"))
            .count(),
        cut
    );
}

#[tokio::test]
async fn sixty_concurrent_streams_spend_a_small_budget_to_its_limit_and_never_past_it() {
    spends_to_the_limit(true).await;
}

#[tokio::test]
async fn sixty_concurrent_whole_answers_spend_a_small_budget_to_its_limit_and_never_past_it() {
    spends_to_the_limit(false).await;
}

#[tokio::test]
async fn with_the_whole_share_reserved_up_front_one_request_holds_the_budget() {
    // `reserve_output_share = 1`: every answer is reserved whole, as before answers grew.
    let (whole, cut, (spent, reserved), _app) = sixty_at_once(false, 1.0).await;
    eprintln!("share=1: {whole} answered, spent {spent} of 400");
    assert_eq!((whole, cut, reserved), (1, 0, 0));
    assert_eq!(spent, 8 + 27);
}

#[tokio::test]
async fn an_answer_no_budget_can_hold_is_cut_with_length_and_settled_at_what_flowed() {
    let app = TestApp::new().await;
    upstream_writing(&app, 200).await;
    let id = token_budget(&app, Scope::User, "ann", 100).await;
    let mut req = ask(true);
    req["stream_options"] = json!({"include_usage": true});
    let resp = app.chat(&req).await;
    assert_eq!(resp.status(), 200);
    let chunks = sse_chunks(&resp.text().await.unwrap());
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    let words = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["content"] == " ok")
        .count();
    // What flowed is what is billed, within the budget; the rest was never relayed.
    let usage = &last["usage"];
    let billed =
        usage["prompt_tokens"].as_i64().unwrap() + usage["completion_tokens"].as_i64().unwrap();
    assert!(words > 30 && words < 100, "{words} words relayed");
    assert_eq!(usage["completion_tokens"].as_i64().unwrap(), words as i64);
    assert_eq!(spent_reserved(&app, &id).await, (billed, 0));
    assert!(billed <= 100, "billed {billed}");
    let row = &app.ledger().await[0];
    assert_eq!(row.status, 200);
    assert_eq!(row.error.as_deref(), Some("cut at the budget's limit"));
    // The upstream was told the most the budget could hold at admission.
    let sent = &app.upstream_bodies().await[0];
    assert!(sent["max_tokens"].as_u64().unwrap() <= 100);
}

#[tokio::test]
async fn a_whole_answer_cut_at_the_limit_says_length_and_what_is_left() {
    let app = TestApp::new().await;
    upstream_writing(&app, 200).await;
    let id = token_budget(&app, Scope::User, "ann", 100).await;
    let resp = app.chat(&ask(false)).await;
    assert_eq!(resp.status(), 200);
    let left = resp.headers()["x-lyss-budget-remaining"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let words = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .matches(" ok")
        .count() as i64;
    let billed = body["usage"]["prompt_tokens"].as_i64().unwrap() + words;
    assert_eq!(body["usage"]["completion_tokens"].as_i64().unwrap(), words);
    // The header is what is left after settlement, as for any whole answer.
    assert_eq!(spent_reserved(&app, &id).await, (billed, 0));
    assert_eq!(left, format!("tokens={}", 100 - billed));
}
