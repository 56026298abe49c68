//! `GET /metrics`: Prometheus text exposition of everything lyss-core records
//! ([`lyss_core::telemetry`]) and of the HTTP layer (requests by route and status); and the
//! access line of every request that has no ledger row ([`track`]).

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

/// Routes probed every few seconds by orchestrators: their access lines are at debug.
const PROBES: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Observes every request, throttled and unrouted ones too (a `Router::layer` runs after
/// routing, so the route pattern is known):
/// - counts it by route pattern (never the raw path: ids would explode the label set), method
///   and status;
/// - writes its access line, target `lyss::access`, at info — unless it has a ledger row, whose
///   line lyss-core writes (with model and tokens) when the row is final. Every other request —
///   admin and dashboard calls, model lists, a key that does not check out, a body that does
///   not parse, a throttled caller, an unknown route — gets this one: request id, key id if it
///   authenticated, method, route pattern, status, latency. Never a secret or a body.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let request_id = req.headers().get("x-request-id").cloned();
    let method = req.method().clone();
    let started = Instant::now();
    let (resp, seen) = lyss_core::telemetry::watch(next.run(req)).await;
    let took = started.elapsed();
    let status = resp.status().as_u16();
    metrics::counter!("lyss_http_requests_total",
        "route" => route.to_owned(), "method" => method.to_string(), "status" => status.to_string())
    .increment(1);
    metrics::histogram!("lyss_http_request_duration_seconds", "route" => route.to_owned())
        .record(took.as_secs_f64());
    if seen.ledgered {
        return resp;
    }
    let request_id = request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let key = seen.key_id.as_deref().unwrap_or("-");
    let latency_ms = (took.as_secs_f64() * 10_000.0).round() / 10.0;
    if PROBES.contains(&route) {
        tracing::debug!(target: "lyss::access", request_id, key, %method, route, status, latency_ms, "request");
    } else {
        tracing::info!(target: "lyss::access", request_id, key, %method, route, status, latency_ms, "request");
    }
    resp
}
