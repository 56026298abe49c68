//! What lyss's tests and benchmarks share, in one place: the wire of a fake OpenAI upstream
//! ([`openai`]: answers, stream chunks, SSE bodies, mounted on a `wiremock` server), reading a
//! server-sent-event body back ([`sse`]), OpenAI's error shape ([`assert_openai_error`]), and
//! a `lyss-server` process ([`server`]), fake upstreams `wiremock` cannot play ([`upstream`]), and
//! the books checked after a load ([`assert_books_balance`]). Only loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers panic on purpose.

pub mod openai;
pub mod server;
pub mod sse;
pub mod upstream;

pub use self::server::{Server, binary, free_port};

use serde_json::{Value, json};

/// An error in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, of this
/// type and code.
pub fn assert_openai_error(body: &Value, kind: &str, code: Option<&str>) {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(e["type"], kind, "{body}");
    assert_eq!(e["code"], code.map_or(Value::Null, |c| json!(c)), "{body}");
    assert!(e.get("param").is_some(), "{body}");
}

/// The books after a load, once nothing is reserved: every budget (rows as `/admin/budgets` and
/// `lyss budget list` give them) spent no more than its limit, and exactly what the ledger says
/// it should have (`ledger(budget)`). Returns how many budgets were checked.
pub fn assert_books_balance(budgets: &Value, mut ledger: impl FnMut(&Value) -> i64) -> usize {
    let budgets = budgets.as_array().unwrap();
    for b in budgets {
        let (limit, spent) = (b["limit"].as_i64().unwrap(), b["spent"].as_i64().unwrap());
        assert!(spent <= limit, "budget {b} overspent");
        assert_eq!(spent, ledger(b), "budget {b} and the ledger disagree");
    }
    budgets.len()
}
