//! Metrics, through the `metrics` facade: lyss-core records, the application installs a
//! recorder (lyss-server exports Prometheus text at `/metrics`; an embedding app may install
//! any recorder, or none — then recording costs next to nothing).
//!
//! Labels never carry tenant ids or keys: only endpoint, public model, provider, status and
//! outcome, so cardinality stays bounded by configuration.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use crate::policy::{LedgerEntry, Principal};

/// Every metric lyss records, with its help text, for [`describe`].
pub const METRICS: &[(&str, &str)] = &[
    (
        "lyss_requests_total",
        "Requests answered, by endpoint, model, status and cache outcome (none, hit, semantic).",
    ),
    (
        "lyss_request_duration_seconds",
        "Whole request time as the ledger records it, by endpoint.",
    ),
    (
        "lyss_gateway_duration_seconds",
        "Time lyss itself spent on a request (total minus upstream), non-streaming and cache hits.",
    ),
    (
        "lyss_upstream_duration_seconds",
        "Time of each upstream attempt, by provider and outcome.",
    ),
    (
        "lyss_tokens_total",
        "Billed tokens, by model and kind (prompt, completion).",
    ),
    (
        "lyss_cost_nanousd_total",
        "Billed cost in nano-USD, by model.",
    ),
    (
        "lyss_cache_saved_tokens_total",
        "Tokens answers from the cache saved, by model.",
    ),
    (
        "lyss_cache_saved_nanousd_total",
        "Cost answers from the cache saved, in nano-USD, by model.",
    ),
    (
        "lyss_memory_saved_tokens_total",
        "Prompt tokens memory compression removed, by model.",
    ),
    (
        "lyss_memory_added_tokens_total",
        "Prompt tokens memory added (recalled memories, the profile), by model; net saving is saved minus added.",
    ),
    (
        "lyss_refusals_total",
        "Requests refused before the upstream, by reason (budget, rate_limit, auth, model).",
    ),
    (
        "lyss_upstream_errors_total",
        "Failed upstream attempts, by provider and kind (status code, timeout, unavailable).",
    ),
    (
        "lyss_upstream_retries_total",
        "Attempts after a failed one, by provider.",
    ),
    (
        "lyss_breaker_open",
        "1 while a target's circuit is open (it is skipped), else 0, by target.",
    ),
    (
        "lyss_settlements_deferred_total",
        "Settlements that found the database down and were retried in the background.",
    ),
];

/// Registers the help text of every metric with the installed recorder.
pub fn describe() {
    for (name, help) in METRICS {
        if name.ends_with("_seconds") {
            metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help);
        } else if name.ends_with("_total") {
            metrics::describe_counter!(*name, *help);
        } else {
            metrics::describe_gauge!(*name, *help);
        }
    }
}

tokio::task_local! {
    /// What lyss-core learnt about the request an HTTP layer is watching ([`watch`]).
    static WATCHED: RefCell<Watched>;
}

/// What a request's handling told the HTTP layer that watched it ([`watch`]).
#[derive(Debug, Default)]
pub struct Watched {
    /// The request has a ledger row, now or when its stream ends: that row's access line
    /// ([`finished`]) is the request's, so the HTTP layer writes none.
    pub ledgered: bool,
    /// Who the request authenticated as, if it did.
    pub caller: Option<Arc<Principal>>,
}

/// Runs one request's handling and returns what it learnt ([`Watched`]), so that an HTTP layer
/// writes one access line for every request without a ledger row (admin, health, model lists,
/// a key that does not check out, a body that does not parse) and none for those with one.
pub async fn watch<F: std::future::Future>(request: F) -> (F::Output, Watched) {
    WATCHED
        .scope(RefCell::new(Watched::default()), async move {
            let out = request.await;
            (out, WATCHED.with(RefCell::take))
        })
        .await
}

/// The request being handled has a ledger row coming (no-op outside [`watch`]).
pub fn ledgered() {
    let _ = WATCHED.try_with(|w| w.borrow_mut().ledgered = true);
}

/// The request being handled authenticated as `caller` (no-op outside [`watch`]).
pub(crate) fn authenticated(caller: &Arc<Principal>) {
    let _ = WATCHED.try_with(|w| w.borrow_mut().caller = Some(caller.clone()));
}

/// A request's ledger row: what it cost, saved and took — and the request's access-log line,
/// at info (request id, key id, endpoint, model, status, latency, tokens; never a secret or a
/// prompt), written once the row is final (for a stream, when it ends).
pub fn finished(e: &LedgerEntry) {
    ledgered();
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

/// Time lyss spent on a request itself.
pub fn gateway_time(d: Duration) {
    metrics::histogram!("lyss_gateway_duration_seconds").record(d.as_secs_f64());
}

/// A request refused before the upstream.
pub fn refused(reason: &'static str) {
    metrics::counter!("lyss_refusals_total", "reason" => reason).increment(1);
}

/// One upstream attempt; `outcome` is `ok` or the error kind.
pub fn upstream_attempt(provider: &str, outcome: &str, took: Duration) {
    metrics::histogram!("lyss_upstream_duration_seconds",
        "provider" => provider.to_owned(), "outcome" => outcome.to_owned())
    .record(took.as_secs_f64());
    if outcome != "ok" {
        metrics::counter!("lyss_upstream_errors_total",
            "provider" => provider.to_owned(), "kind" => outcome.to_owned())
        .increment(1);
    }
}

/// Another attempt after a failed one.
pub fn retry(provider: &str) {
    metrics::counter!("lyss_upstream_retries_total", "provider" => provider.to_owned())
        .increment(1);
}

/// A settlement found the database down; it goes on in the background.
pub fn settlement_deferred() {
    metrics::counter!("lyss_settlements_deferred_total").increment(1);
}

/// A target's circuit opened (`true`) or closed.
pub fn breaker(target: &str, open: bool) {
    metrics::gauge!("lyss_breaker_open", "target" => target.to_owned()).set(if open {
        1.0
    } else {
        0.0
    });
}
