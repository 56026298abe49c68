//! Stage 8 — settle: a request in flight becomes its ledger row and its reservation turns
//! into spend, once, whatever way it ends (answered, failed, abandoned).

use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::models::Model;
use crate::policy::{BudgetLeft, LedgerEntry, Policy, Principal, Reservation};
use crate::settlement::{failure, settle_or_retry};
use crate::wire::Usage;

use super::memory::Compressed;
use super::{Call, Lyss};

/// What the ledger needs to know about a request in flight.
pub(super) struct LedgerDraft {
    pub(super) principal: Arc<Principal>,
    pub(super) request_id: String,
    pub(super) endpoint: &'static str,
    pub(super) model: Arc<Model>,
    pub(super) public_model: String,
    pub(super) stream: bool,
    pub(super) started: Instant,
    pub(super) reservation: Reservation,
    /// Prompt tokens as counted before sending (0 when nothing needed the count).
    pub(super) prompt_tokens: u64,
    /// What memory made of the prompt (lyss's counts before and after), when it changed it.
    pub(super) memory: Option<Compressed>,
    pub(super) policy: Arc<dyn Policy>,
    /// Set once settlement was attempted; a draft dropped before that settles itself.
    pub(super) settled: bool,
}

impl LedgerDraft {
    /// Stage 8: settles the reservation with this usage and appends the ledger row.
    pub(super) async fn settle(
        &mut self,
        usage: &Usage,
        status: u16,
        error: Option<String>,
    ) -> Result<BudgetLeft> {
        self.settled = true;
        let entry = self.entry(usage, status, error);
        crate::settlement::finished(&entry);
        settle_or_retry(&self.policy, &self.reservation, &entry).await
    }

    fn entry(&self, usage: &Usage, status: u16, error: Option<String>) -> LedgerEntry {
        let (prompt_tokens_original, memory_saved_nusd) = self.memory_saving(usage);
        LedgerEntry {
            stream: self.stream,
            prompt_tokens_original,
            status,
            error,
            memory_saved_nusd,
            ..LedgerEntry::new(
                self.principal.payer(),
                &self.request_id,
                self.endpoint,
                &self.public_model,
                self.started,
            )
            .with_usage(&self.model, usage)
        }
    }

    /// What the prompt would have been without memory, in the upstream's units, and what
    /// memory saved (negative: cost) in nano-USD. Lyss counted the prompt before and after the
    /// memory stage with one tokenizer; the upstream reported what it counted of what was sent.
    /// The difference is scaled by their ratio, so that a provider that counts differently
    /// (Claude, Gemini, chat-format overhead) shifts nothing: an untouched prompt saved exactly
    /// nothing. Tokens saved are priced as cached input (a plain gateway would have resent the
    /// dropped history as a prefix the provider caches); tokens memory added, at the full input
    /// price.
    fn memory_saving(&self, usage: &Usage) -> (u64, i64) {
        let Some(c) = self
            .memory
            .filter(|c| c.sent > 0 && usage.prompt_tokens > 0)
        else {
            return (usage.prompt_tokens, 0);
        };
        let ratio = usage.prompt_tokens as f64 / c.sent as f64;
        let original = (c.original as f64 * ratio).round() as u64;
        let delta = original as i64 - usage.prompt_tokens as i64;
        let price = if delta >= 0 {
            self.model.price.cached_input
        } else {
            self.model.price.input
        };
        (original, delta.saturating_mul(price))
    }

    /// Records an answer served from the cache (`kind`: `hit` or `semantic`): nothing billed,
    /// `saved` the usage it replaced.
    pub(super) async fn record_hit(&mut self, saved: &Usage, kind: &str) -> Result<BudgetLeft> {
        self.settled = true;
        let mut entry = self.entry(&Usage::default(), 200, None);
        entry.cache = Some(kind.into());
        entry.saved_tokens = saved.prompt_tokens.saturating_add(saved.completion_tokens);
        entry.saved_nusd = self.model.price.cost(saved);
        // Nothing was sent: the hit saved the whole prompt, memory nothing.
        entry.prompt_tokens_original = 0;
        entry.memory_saved_nusd = 0;
        crate::settlement::finished(&entry);
        settle_or_retry(&self.policy, &self.reservation, &entry).await
    }

    /// Records a failed upstream call (no tokens billed, the reservation released) and hands
    /// the error back.
    pub(super) async fn failed(&mut self, e: Error) -> Error {
        let (status, usage) = failure(&e, self.prompt_tokens);
        if let Err(le) = self.settle(&usage, status, Some(e.to_string())).await {
            tracing::error!(error = %le, "could not record a failed request in the ledger");
        }
        e
    }
}

impl Drop for LedgerDraft {
    /// The request was abandoned before it settled (the client went away while lyss waited
    /// for the upstream, which is then cancelled): release the reservation now rather than at
    /// the reaper's timeout, and bill the prompt, which the upstream may have processed.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let usage = Usage {
            prompt_tokens: self.prompt_tokens,
            ..Usage::default()
        };
        let entry = self.entry(
            &usage,
            499,
            Some("client disconnected before the answer".into()),
        );
        crate::settlement::finished(&entry);
        let (policy, reservation) = (self.policy.clone(), std::mem::take(&mut self.reservation));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = settle_or_retry(&policy, &reservation, &entry).await {
                    tracing::error!(error = %e, "could not record an abandoned request");
                }
            });
        }
    }
}

impl Lyss {
    /// Records a request refused before it reached an upstream — a model it may not use, a
    /// limit, a budget, a request lyss cannot serve — as a ledger row under the caller's
    /// workspace, user and key (no tokens, no cost) and an info log line with the reason, so
    /// that `lyss usage`, the dashboard and the analytics API count it. A key that does not
    /// check out gets the log line only. Failures after a reservation already have their row.
    pub async fn record_refusal(&self, call: &Call, model: &str, e: &Error, started: Instant) {
        let Some((status, reason)) = refusal(e) else {
            return;
        };
        crate::telemetry::refused(reason);
        tracing::info!(request_id = %call.request_id, endpoint = call.endpoint.as_str(), model, status, reason, error = %e, "request refused");
        // A caller whose key does not check out has no row: a flood of bad keys must not grow
        // the ledger (it is in the log and in `lyss_refusals_total`), nor cost a second lookup.
        if matches!(e, Error::Unauthenticated(_)) {
            return;
        }
        self.record_call(call, model, status, Some(format!("{reason}: {e}")), started)
            .await;
    }

    /// Records a call that spends nothing — a refusal, a memory tool's call — as a ledger row
    /// under the caller's workspace, user and key (no tokens, no cost; `name` where a model's
    /// name goes) with its access log line. Nothing is recorded (`false`) for a key that does
    /// not check out.
    pub async fn record_call(
        &self,
        call: &Call,
        name: &str,
        status: u16,
        error: Option<String>,
        started: Instant,
    ) -> bool {
        let Ok(who) = self.authenticate(&call.api_key).await else {
            return false;
        };
        let entry = crate::policy::LedgerEntry {
            at: self.clock.now(),
            status,
            error,
            ..crate::policy::LedgerEntry::new(
                who.payer(),
                &call.request_id,
                call.endpoint.as_str(),
                name,
                started,
            )
        };
        crate::settlement::finished(&entry);
        let reservation = crate::policy::Reservation::default();
        if let Err(le) =
            crate::settlement::settle_or_retry(&self.policy, &reservation, &entry).await
        {
            tracing::warn!(error = %le, "could not record a call in the ledger");
        }
        true
    }
}

/// A refusal's HTTP status and reason, for an error that refuses a request before any upstream
/// call (the HTTP layer maps the same errors to the same statuses).
fn refusal(e: &Error) -> Option<(u16, &'static str)> {
    Some(match e {
        Error::BudgetExceeded(_) => (429, "budget"),
        Error::RateLimited { .. } => (429, "rate_limit"),
        Error::Unauthenticated(_) => (401, "auth"),
        Error::PermissionDenied(_) => (403, "permission"),
        Error::ModelNotFound(_) => (404, "model"),
        Error::InvalidRequest { .. } => (400, "invalid_request"),
        Error::PayloadTooLarge { .. } => (413, "too_large"),
        _ => return None,
    })
}
