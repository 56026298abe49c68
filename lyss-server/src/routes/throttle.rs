//! Failed credential checks are limited per client address, so that weak secrets (an admin
//! token an operator chose) cannot be guessed at speed: after `limit` answers of 401 to one
//! address within a minute, the address is *slowed*, not shut out, for the rest of that minute:
//!
//! - its requests are checked one at a time, and a failed check is answered 429 after a
//!   [`FAILURE_PAUSE`] — at most one guess per second and address; a request that waits more
//!   than [`LANE_WAIT`] for its turn is answered 429 at once;
//! - a request whose credentials check out is served as usual (an admin behind the same NAT as
//!   a guesser still gets in);
//! - requests that present a lyss key (`lyss-sk-…`, ~190 random bits: no rate makes guessing
//!   one feasible) and the health checks (`/healthz`, `/readyz`) are never held up.
//!
//! Behind a reverse proxy every client is the proxy's address: put the limit there.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Failures per address in the current minute, and each slowed address's lane.
#[derive(Clone)]
pub struct AuthThrottle {
    limit: u32,
    failures: moka::sync::Cache<IpAddr, Arc<AtomicU32>>,
    lanes: moka::sync::Cache<IpAddr, Arc<tokio::sync::Mutex<()>>>,
}

/// The window failures are counted in (from an address's first failure).
const WINDOW: Duration = Duration::from_secs(60);
/// How long a failed check from a slowed address waits before its 429.
pub const FAILURE_PAUSE: Duration = Duration::from_secs(1);
/// How long a request from a slowed address waits for its turn at most.
pub const LANE_WAIT: Duration = Duration::from_secs(5);

impl AuthThrottle {
    /// `limit` failed checks per address and minute; 0 turns the limit off.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(WINDOW)
                .build(),
            lanes: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(WINDOW)
                .build(),
        }
    }

    fn slowed(&self, ip: IpAddr) -> bool {
        self.limit > 0
            && self
                .failures
                .get(&ip)
                .is_some_and(|n| n.load(Ordering::Relaxed) >= self.limit)
    }

    fn failed(&self, ip: IpAddr) {
        if self.limit > 0 {
            self.failures
                .get_with(ip, || Arc::new(AtomicU32::new(0)))
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Whether a request presents a lyss virtual key (as a bearer token or Anthropic's
/// `x-api-key`).
fn presents_lyss_key(req: &Request) -> bool {
    let key = |name: axum::http::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let v = v.trim();
                let v = v
                    .strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .unwrap_or(v);
                v.trim_start().starts_with("lyss-sk-")
            })
    };
    key(axum::http::header::AUTHORIZATION) || key(axum::http::HeaderName::from_static("x-api-key"))
}

fn too_many() -> Response {
    ApiError(lyss_core::Error::RateLimited {
        scope: "failed credential checks from your address".into(),
        retry_after: WINDOW,
    })
    .into_response()
}

pub async fn limit(State(throttle): State<AuthThrottle>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let Some(ip) = ip else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    let exempt = path == "/healthz" || path == "/readyz" || presents_lyss_key(&req);
    if exempt || !throttle.slowed(ip) {
        let resp = next.run(req).await;
        if resp.status() == StatusCode::UNAUTHORIZED {
            throttle.failed(ip);
        }
        return resp;
    }
    let lane = throttle
        .lanes
        .get_with(ip, || Arc::new(tokio::sync::Mutex::new(())));
    let Ok(_turn) = tokio::time::timeout(LANE_WAIT, lane.lock()).await else {
        return too_many();
    };
    let resp = next.run(req).await;
    if resp.status() != StatusCode::UNAUTHORIZED {
        return resp;
    }
    throttle.failed(ip);
    tracing::warn!(%ip, "failed credential check from a slowed address");
    tokio::time::sleep(FAILURE_PAUSE).await;
    too_many()
}
