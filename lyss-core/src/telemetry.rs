//! Metrics, through the `metrics` facade: lyss-core records, the application installs a
//! recorder (lyss-server exports Prometheus text at `/metrics`; an embedding app may install
//! any recorder, or none — then recording costs next to nothing).
//!
//! Labels never carry tenant ids or keys: only endpoint, public model, provider, status and
//! outcome, so cardinality stays bounded by configuration.

use std::cell::RefCell;
use std::time::Duration;

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
    /// (`settlement::finished`) is the request's, so the HTTP layer writes none.
    pub ledgered: bool,
    /// The key the request authenticated with, if it did.
    pub key_id: Option<String>,
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

/// The request being handled authenticated with key `key_id` (no-op outside [`watch`]).
pub(crate) fn authenticated(key_id: &str) {
    let _ = WATCHED.try_with(|w| w.borrow_mut().key_id = Some(key_id.to_owned()));
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
