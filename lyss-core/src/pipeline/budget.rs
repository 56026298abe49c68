//! Stage 6 — budgets: reserve the worst case on every budget that applies, and cap the
//! answer to what fits. An answer lyss can count as it flows (no output cap asked, no hidden
//! reasoning) reserves only a first share and is topped up as it grows, so a small
//! budget serves many requests up to its limit instead of one request holding all of it.

use time::OffsetDateTime;

use super::{BUDGET_REMAINING_HEADER, Lyss};
use crate::error::Result;
use crate::models::Model;
use crate::policy::budget::DEFAULT_OUTPUT_CAP;
use crate::policy::{Ask, BudgetLeft, Principal, Reservation};
use crate::wire::ChatRequest;

impl Lyss {
    /// Stage 6: reserves the worst case on every budget that applies (none: nothing to do).
    pub(super) async fn reserve(
        &self,
        who: &Principal,
        model: &Model,
        prompt_tokens: u64,
        requested_output: Option<u32>,
        grows: bool,
        now: OffsetDateTime,
    ) -> Result<Reservation> {
        if !who.budgeted {
            return Ok(Reservation::default());
        }
        let ask = Ask {
            prompt_tokens,
            requested_output,
            output_cap: model.max_output_tokens.unwrap_or(DEFAULT_OUTPUT_CAP),
            price: model.price,
            grows: grows.then_some(self.first_share),
        };
        self.policy
            .reserve(who.payer(), &ask, now, self.reservation_ttl)
            .await
    }
}

/// The o-series and GPT-5: they reason in tokens they bill but do not stream, and take only
/// `max_completion_tokens`.
pub(super) fn openai_reasoning(upstream: &str) -> bool {
    let m = upstream.rsplit('/').next().unwrap_or(upstream);
    m.starts_with("gpt-5")
        || (m.starts_with('o') && m[1..].starts_with(|c: char| c.is_ascii_digit()))
}

/// Whether every output token the upstream bills flows through the relay, so the reservation
/// can follow the answer: not for models or requests that think in hidden tokens (OpenAI's
/// reasoning families, Gemini 2.5+, Claude or others asked to think), nor for whole answers
/// asking for `logprobs` (a whole answer that grows is gathered from a stream, which carries
/// the text and tool calls but not log-probabilities).
pub(super) fn answer_is_countable(upstream: &str, req: &ChatRequest) -> bool {
    let m = upstream
        .rsplit('/')
        .next()
        .unwrap_or(upstream)
        .to_ascii_lowercase();
    let thinks = openai_reasoning(&m)
        || m.starts_with("gemini-2.5")
        || m.starts_with("gemini-3")
        || m.contains("thinking")
        || m.contains("reasoner")
        || ["thinking", "reasoning", "reasoning_effort"]
            .iter()
            .any(|k| req.extra.contains_key(*k));
    let logprobs = req
        .extra
        .get("logprobs")
        .is_some_and(|v| v != &serde_json::Value::Bool(false));
    !thinks && (req.is_stream() || !logprobs)
}

/// Caps the completion length. Reasoning families (o-series, GPT-5) only take
/// `max_completion_tokens`; most OpenAI-compatible servers only know `max_tokens`.
pub(super) fn set_output_cap(req: &mut ChatRequest, upstream: &str, n: u32) {
    if openai_reasoning(upstream) {
        req.max_completion_tokens = Some(n);
    } else {
        req.max_tokens = Some(n);
    }
}

/// The `x-lyss-budget-remaining` header of an answer: what its settlement left of the caller's
/// budgets (none when no budget applies).
pub(super) fn budget_headers(left: &BudgetLeft) -> Vec<(&'static str, String)> {
    left.header_value()
        .map(|v| vec![(BUDGET_REMAINING_HEADER, v)])
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(extra: serde_json::Value, stream: bool) -> ChatRequest {
        let mut v = serde_json::json!({"model": "m", "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn answers_with_hidden_reasoning_or_log_probabilities_are_reserved_whole() {
        let plain = req(serde_json::json!({}), false);
        for countable in [
            "gpt-4o-mini",
            "claude-sonnet-4-5",
            "llama3.1:8b",
            "openai/gpt-4.1",
        ] {
            assert!(answer_is_countable(countable, &plain), "{countable}");
        }
        for hidden in [
            "o4-mini",
            "gpt-5-mini",
            "gemini-2.5-flash",
            "deepseek-reasoner",
        ] {
            assert!(!answer_is_countable(hidden, &plain), "{hidden}");
        }
        let thinking = req(serde_json::json!({"thinking": {"type": "enabled"}}), true);
        assert!(!answer_is_countable("claude-sonnet-4-5", &thinking));
        // A whole answer gathered from a stream would lose its log-probabilities; a stream has
        // them in its chunks.
        let logprobs = req(serde_json::json!({"logprobs": true}), false);
        assert!(!answer_is_countable("gpt-4o-mini", &logprobs));
        assert!(answer_is_countable(
            "gpt-4o-mini",
            &req(serde_json::json!({"logprobs": true}), true)
        ));
    }
}
