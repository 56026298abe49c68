//! Settlement: a finished call's ledger row, written through the policy so that it lands
//! (in the background while the database is down). The request path and memory extraction
//! both settle through here; it sits above the policy and telemetry, which it uses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::policy::{BudgetLeft, LedgerEntry, Policy, Reservation};
use crate::wire::Usage;

/// The ledger status and billed usage of an upstream call that failed with `e`. A call that
/// timed out may have been processed (and billed) upstream: its prompt counts. Refused or
/// unreachable calls cost nothing.
pub(crate) fn failure(e: &Error, prompt_tokens: u64) -> (u16, Usage) {
    match e {
        Error::Upstream { status, .. } => (*status, Usage::default()),
        Error::UpstreamTimeout { .. } => (
            504,
            Usage {
                prompt_tokens,
                ..Usage::default()
            },
        ),
        // One the upstream's translation cannot carry: the client was told 400.
        Error::InvalidRequest { .. } => (400, Usage::default()),
        _ => (502, Usage::default()),
    }
}

/// How long a settlement that found the database down keeps trying in the background.
const SETTLE_RETRY_FOR: Duration = Duration::from_secs(15 * 60);

/// Settles; when the database is unreachable, keeps trying in the background instead of
/// failing the request. The upstream has spent the tokens already: withholding the answer
/// saves nothing, and the row must land to keep the budget true. A late settlement still adds
/// its spend if the reaper released the hold meanwhile. Admission stays closed while the
/// database is down (reservations fail), so nothing new is spent unrecorded.
pub(crate) async fn settle_or_retry(
    policy: &Arc<dyn Policy>,
    reservation: &Reservation,
    entry: &LedgerEntry,
) -> Result<BudgetLeft> {
    match policy.settle(reservation, entry).await {
        Err(e @ Error::Unavailable { .. }) => {
            tracing::warn!(error = %e, request_id = %entry.request_id, "ledger unavailable: settling in the background");
            crate::telemetry::settlement_deferred();
            tokio::spawn(retry_settle(
                policy.clone(),
                reservation.clone(),
                entry.clone(),
            ));
            Ok(BudgetLeft::default())
        }
        other => other,
    }
}

async fn retry_settle(policy: Arc<dyn Policy>, reservation: Reservation, entry: LedgerEntry) {
    let deadline = Instant::now() + SETTLE_RETRY_FOR;
    let mut wait = Duration::from_millis(100);
    loop {
        tokio::time::sleep(wait).await;
        // The failed attempt may have committed with its acknowledgement lost: never twice.
        let settled = match already_recorded(policy.as_ref(), &entry).await {
            Ok(true) => Ok(()),
            Ok(false) => policy.settle(&reservation, &entry).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match settled {
            Ok(()) => {
                tracing::info!(request_id = %entry.request_id, "settled after the database came back");
                return;
            }
            Err(Error::Unavailable { .. }) if Instant::now() < deadline => {
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                let row = serde_json::to_string(&entry).unwrap_or_default();
                tracing::error!(error = %e, row = %row, "gave up settling: the ledger row is lost");
                return;
            }
        }
    }
}

/// Whether the ledger holds this entry (same request, endpoint and millisecond).
async fn already_recorded(policy: &dyn Policy, entry: &LedgerEntry) -> Result<bool> {
    let rows = policy
        .ledger(&crate::policy::LedgerQuery {
            since: Some(entry.at - Duration::from_millis(1)),
            until: Some(entry.at + Duration::from_millis(1)),
            key_id: Some(entry.key_id.clone()),
            limit: Some(10_000),
        })
        .await?;
    let ms = crate::clock::unix_ms;
    Ok(rows.iter().any(|r| {
        r.request_id == entry.request_id && r.endpoint == entry.endpoint && ms(r.at) == ms(entry.at)
    }))
}

/// A request's ledger row: what it cost, saved and took — and the request's access-log line,
/// at info (request id, key id, endpoint, model, status, latency, tokens; never a secret or a
/// prompt), written once the row is final (for a stream, when it ends).
pub(crate) fn finished(e: &LedgerEntry) {
    crate::telemetry::ledgered();
    tracing::info!(
        target: "lyss::access",
        request_id = %e.request_id,
        key = %e.key_id,
        endpoint = %e.endpoint,
        model = %e.model,
        status = e.status,
        latency_ms = (e.latency_ms * 10.0).round() / 10.0,
        prompt_tokens = e.prompt_tokens,
        completion_tokens = e.completion_tokens,
        cache = e.cache.as_deref().unwrap_or("-"),
        error = e.error.as_deref().unwrap_or("-"),
        "request"
    );
    let model = e.model.clone();
    metrics::counter!("lyss_requests_total",
        "endpoint" => e.endpoint.clone(), "model" => model.clone(),
        "status" => e.status.to_string(), "cache" => e.cache.clone().unwrap_or_else(|| "none".into()))
    .increment(1);
    metrics::histogram!("lyss_request_duration_seconds", "endpoint" => e.endpoint.clone())
        .record(e.latency_ms / 1000.0);
    if e.prompt_tokens > 0 {
        metrics::counter!("lyss_tokens_total", "model" => model.clone(), "kind" => "prompt")
            .increment(e.prompt_tokens);
    }
    if e.completion_tokens > 0 {
        metrics::counter!("lyss_tokens_total", "model" => model.clone(), "kind" => "completion")
            .increment(e.completion_tokens);
    }
    if e.cost_nusd > 0 {
        metrics::counter!("lyss_cost_nanousd_total", "model" => model.clone())
            .increment(e.cost_nusd.unsigned_abs());
    }
    if e.cache.is_some() {
        metrics::counter!("lyss_cache_saved_tokens_total", "model" => model.clone())
            .increment(e.saved_tokens);
        metrics::counter!("lyss_cache_saved_nanousd_total", "model" => model.clone())
            .increment(e.saved_nusd.unsigned_abs());
    }
    if e.cache.is_none() {
        // Gross both ways, so that saved minus added is the ledger's net saving.
        let compressed = e.prompt_tokens_original.saturating_sub(e.prompt_tokens);
        let added = e.prompt_tokens.saturating_sub(e.prompt_tokens_original);
        if compressed > 0 {
            metrics::counter!("lyss_memory_saved_tokens_total", "model" => model)
                .increment(compressed);
        } else if added > 0 {
            metrics::counter!("lyss_memory_added_tokens_total", "model" => model).increment(added);
        }
    }
}

impl LedgerEntry {
    /// What `model`'s upstream answered with, and what it cost at the model's price.
    pub fn with_usage(self, model: &crate::models::Model, usage: &crate::wire::Usage) -> Self {
        Self {
            provider: model.provider.name().to_owned(),
            upstream_model: model.upstream.clone(),
            prompt_tokens: usage.prompt_tokens,
            prompt_tokens_original: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens(),
            cost_nusd: model.price.cost(usage),
            cache_write_tokens: usage.cache_write_tokens(),
            prompt_cache_saved_nusd: model.price.prompt_cache_saving(usage),
            ..self
        }
    }
}
