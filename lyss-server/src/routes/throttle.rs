//! Failed key checks are limited per client address: after `limit` answers of 401 to one
//! address within a minute, its requests are refused with 429 for the rest of that minute —
//! keys and the admin token cannot be guessed at speed. Clients behind one NAT share the
//! allowance; behind a reverse proxy every client is the proxy's address (put the limit there).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Failures per address in the current minute.
#[derive(Clone)]
pub struct AuthThrottle {
    limit: u32,
    failures: moka::sync::Cache<IpAddr, Arc<AtomicU32>>,
}

/// The window failures are counted in (from an address's first failure).
const WINDOW: Duration = Duration::from_secs(60);

impl AuthThrottle {
    /// `limit` failed checks per address and minute; 0 turns the limit off.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(WINDOW)
                .build(),
        }
    }

    fn blocked(&self, ip: IpAddr) -> bool {
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

pub async fn limit(State(throttle): State<AuthThrottle>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = ip
        && throttle.blocked(ip)
    {
        tracing::warn!(%ip, "too many failed key checks; refusing");
        return ApiError(lyss_core::Error::RateLimited {
            scope: "failed key checks from your address".into(),
            retry_after: WINDOW,
        })
        .into_response();
    }
    let resp = next.run(req).await;
    if let Some(ip) = ip
        && resp.status() == StatusCode::UNAUTHORIZED
    {
        throttle.failed(ip);
    }
    resp
}
