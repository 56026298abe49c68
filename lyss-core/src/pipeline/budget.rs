//! Stage 6 — budgets: reserve the worst case on every budget that applies, and cap the
//! answer to what fits.

use time::OffsetDateTime;

use super::{BUDGET_REMAINING_HEADER, Lyss};
use crate::error::Result;
use crate::models::Model;
use crate::openai::ChatRequest;
use crate::policy::budget::DEFAULT_OUTPUT_CAP;
use crate::policy::{Ask, BudgetLeft, Principal, Reservation};

impl Lyss {
    /// Stage 6: reserves the worst case on every budget that applies (none: nothing to do).
    pub(super) async fn reserve(
        &self,
        who: &Principal,
        model: &Model,
        prompt_tokens: u64,
        requested_output: Option<u32>,
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
        };
        self.policy
            .reserve(who, &ask, now, self.reservation_ttl)
            .await
    }
}

/// Caps the completion length. Reasoning families (o-series, GPT-5) only take
/// `max_completion_tokens`; most OpenAI-compatible servers only know `max_tokens`.
pub(super) fn set_output_cap(req: &mut ChatRequest, upstream: &str, n: u32) {
    let m = upstream.rsplit('/').next().unwrap_or(upstream);
    let reasoning = m.starts_with("gpt-5")
        || (m.starts_with('o') && m[1..].starts_with(|c: char| c.is_ascii_digit()));
    if reasoning {
        req.max_completion_tokens = Some(n);
    } else {
        req.max_tokens = Some(n);
    }
}

/// The error for a request cut at its deadline.
pub(super) fn budget_headers(left: &BudgetLeft) -> Vec<(&'static str, String)> {
    left.header_value()
        .map(|v| vec![(BUDGET_REMAINING_HEADER, v)])
        .unwrap_or_default()
}
