//! `GET /metrics`: Prometheus text exposition of everything lyss-core records
//! ([`lyss_core::telemetry`]) and of the HTTP layer (requests by route and status); and the
//! access line of every request that has no ledger row ([`access`]).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// Latency buckets in seconds: sub-millisecond for the gateway itself, up to minutes for
/// upstream streams.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. `None` if the embedding
/// application installed another recorder first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(h) => {
                    lyss_core::telemetry::describe();
                    metrics::describe_counter!(
                        "lyss_http_requests_total",
                        "HTTP requests by route, method and status."
                    );
                    metrics::describe_histogram!(
                        "lyss_http_request_duration_seconds",
                        metrics::Unit::Seconds,
                        "HTTP request time to the response head, by route."
                    );
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics is empty");
                    None
                }
            }
        })
        .as_ref()
}

/// `/metrics`; 404 when metrics are off (`metrics = false`), 401 without the metrics token
/// when one is set (constant-time comparison).
pub async fn render(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.metrics_token
        && !super::bearer_is(&headers, token)
    {
        return crate::error::ApiError(lyss_core::Error::Unauthenticated(
            "A valid metrics token is required.".into(),
        ))
        .into_response();
    }
    let Some(Some(h)) = HANDLE.get() else {
        return crate::error::ApiError(lyss_core::Error::NotFound(
            "metrics (metrics = false)".into(),
        ))
        .into_response();
    };
    let body = h.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Counts every request by its route pattern (never the raw path: ids would explode the
/// label set), method and status.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics::counter!("lyss_http_requests_total",
        "route" => route.clone(), "method" => method, "status" => resp.status().as_u16().to_string())
    .increment(1);
    metrics::histogram!("lyss_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// Routes probed every few seconds by orchestrators: their access lines are at debug.
const PROBES: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// One access line per request, target `lyss::access`, at info: a request with a ledger row
/// has its row's line (written by lyss-core, with model and tokens, when the row is final);
/// every other request — admin and dashboard calls, model lists, a key that does not check
/// out, a body that does not parse, a throttled caller, an unknown route — gets this one
/// (request id, key id if it authenticated, method, route pattern, status, latency). Never a
/// secret, a raw path or a body.
pub async fn access(req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let method = req.method().clone();
    // A `Router::layer` runs after routing: the pattern is known, also for a throttled caller.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let (resp, seen) = lyss_core::telemetry::watch(next.run(req)).await;
    if seen.ledgered {
        return resp;
    }
    let route = route.as_str();
    let latency_ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
    let key = seen.key_id.as_deref().unwrap_or("-");
    let status = resp.status().as_u16();
    if PROBES.contains(&route) {
        tracing::debug!(target: "lyss::access", %request_id, key, %method, route, status, latency_ms, "request");
    } else {
        tracing::info!(target: "lyss::access", %request_id, key, %method, route, status, latency_ms, "request");
    }
    resp
}
