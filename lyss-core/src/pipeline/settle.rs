//! Stage 8 — settle: a request in flight becomes its ledger row and its reservation turns
//! into spend, once, whatever way it ends (answered, failed, abandoned).

use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::models::Model;
use crate::policy::settle::{failure, settle_or_retry};
use crate::policy::{BudgetLeft, LedgerEntry, Policy, Principal, Reservation};
use crate::wire::Usage;

use super::memory::Compressed;

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
        crate::telemetry::finished(&entry);
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
        crate::telemetry::finished(&entry);
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
        crate::telemetry::finished(&entry);
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
