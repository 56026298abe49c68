//! `Router`: one model's targets (provider + upstream model + weight) behind the `Provider`
//! seam, with per-target timeouts, retries with backoff and jitter, fallback to the next
//! target, and a circuit breaker per target.
//!
//! What is retried: connection failures, timeouts, unreadable answers, 429 and 5xx — never a
//! 4xx that says the request itself is wrong. A stream is retried only until its first chunk:
//! once anything reached the caller, a failure is the caller's to see. Failed attempts cost
//! nothing, so only the answer that is served is billed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt as _;
use parking_lot::Mutex;
use rand::Rng as _;

use super::{ChunkStream, Provider};
use crate::config::RouterConfig;
use crate::error::{Error, Result};
use crate::wire::{ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse};

/// One place a model can be served from.
pub struct Target {
    pub provider: Arc<dyn Provider>,
    /// The model name this provider knows.
    pub upstream: String,
    /// Share of traffic when several targets are healthy; 0: a standby, tried only as a
    /// fallback.
    pub weight: u32,
    /// A whole attempt (a non-streaming answer, or a whole stream).
    pub timeout: Duration,
    /// A stream's first chunk.
    pub first_byte_timeout: Duration,
    breaker: Breaker,
}

impl Target {
    pub fn new(provider: Arc<dyn Provider>, upstream: String, weight: u32) -> Self {
        Self {
            provider,
            upstream,
            weight,
            timeout: Duration::from_secs(600),
            first_byte_timeout: Duration::from_secs(600),
            breaker: Breaker::default(),
        }
    }

    pub fn with_timeouts(mut self, timeout: Duration, first_byte: Duration) -> Self {
        self.timeout = timeout;
        self.first_byte_timeout = first_byte.min(timeout);
        self
    }

    fn label(&self) -> String {
        format!("{}/{}", self.provider.name(), self.upstream)
    }
}

/// A target's circuit breaker: open after `failures` consecutive failures, closed again by
/// one successful probe after `cooldown`.
#[derive(Default)]
struct Breaker {
    consecutive: AtomicU32,
    state: Mutex<BreakerState>,
}

#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
enum BreakerState {
    #[default]
    Closed,
    /// Refusing until this instant.
    Open(Instant),
    /// One probe is on its way, since this instant (a probe whose caller went away is
    /// replaced after a cooldown, so the target is never stuck).
    Probing(Instant),
}

/// What a breaker's state is, for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerStatus {
    Closed,
    Open,
    HalfOpen,
}

impl Breaker {
    /// Whether a request may go to this target now (taking the probe slot when half-open).
    fn admit(&self, config: &RouterConfig) -> bool {
        let now = Instant::now();
        let mut state = self.state.lock();
        match *state {
            BreakerState::Closed => true,
            BreakerState::Open(until) if now >= until => {
                *state = BreakerState::Probing(now);
                true
            }
            BreakerState::Probing(since)
                if now.duration_since(since)
                    >= Duration::from_secs(config.breaker_cooldown_secs) =>
            {
                *state = BreakerState::Probing(now);
                true
            }
            BreakerState::Open(_) | BreakerState::Probing(_) => false,
        }
    }

    /// Records a success; says whether this closed an open circuit.
    fn succeeded(&self) -> bool {
        self.consecutive.store(0, Ordering::Relaxed);
        let mut state = self.state.lock();
        let was_open = *state != BreakerState::Closed;
        *state = BreakerState::Closed;
        was_open
    }

    fn failed(&self, config: &RouterConfig) -> bool {
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        let mut state = self.state.lock();
        let opens =
            matches!(*state, BreakerState::Probing(_)) || n >= config.breaker_failures.max(1);
        if opens {
            *state = BreakerState::Open(
                Instant::now() + Duration::from_secs(config.breaker_cooldown_secs),
            );
        }
        opens
    }

    fn status(&self) -> BreakerStatus {
        match *self.state.lock() {
            BreakerState::Closed => BreakerStatus::Closed,
            BreakerState::Open(until) if Instant::now() >= until => BreakerStatus::HalfOpen,
            BreakerState::Open(_) => BreakerStatus::Open,
            BreakerState::Probing(_) => BreakerStatus::HalfOpen,
        }
    }
}

/// An attempt's outcome as a metric label.
fn outcome<T>(result: &Result<T>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(Error::Upstream { status, .. }) => status.to_string(),
        Err(Error::UpstreamTimeout { .. }) => "timeout".into(),
        Err(Error::UpstreamUnavailable { .. }) => "unavailable".into(),
        Err(_) => "refused".into(),
    }
}

/// Whether an error is worth another attempt (here or at another target).
pub fn retryable(e: &Error) -> bool {
    match e {
        Error::Upstream { status, .. } => *status == 408 || *status == 429 || *status >= 500,
        Error::UpstreamUnavailable { .. } | Error::UpstreamTimeout { .. } => true,
        _ => false,
    }
}

/// A model's targets, as one provider.
pub struct Router {
    name: String,
    targets: Vec<Target>,
    config: RouterConfig,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("name", &self.name)
            .field(
                "targets",
                &self.targets.iter().map(Target::label).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Router {
    /// A router over `targets` (at least one; the first is also the fallback order's head).
    pub fn new(targets: Vec<Target>, config: RouterConfig) -> Result<Self> {
        if targets.is_empty() {
            return Err(Error::Config("a model needs at least one target".into()));
        }
        let mut names: Vec<&str> = targets.iter().map(|t| t.provider.name()).collect();
        names.dedup();
        Ok(Self {
            name: names.join(","),
            targets,
            config,
        })
    }

    /// Each target's label and breaker state.
    pub fn breakers(&self) -> Vec<(String, BreakerStatus)> {
        self.targets
            .iter()
            .map(|t| (t.label(), t.breaker.status()))
            .collect()
    }

    /// The order to try targets in (indices): one picked by weight, then the rest in
    /// configured order.
    fn order(&self) -> Vec<usize> {
        let total: u32 = self.targets.iter().map(|t| t.weight).sum();
        let first = if total == 0 {
            0
        } else {
            let mut pick = rand::rng().random_range(0..total);
            self.targets
                .iter()
                .position(|t| {
                    if pick < t.weight {
                        return true;
                    }
                    pick -= t.weight;
                    false
                })
                .unwrap_or(0)
        };
        std::iter::once(first)
            .chain((0..self.targets.len()).filter(|i| *i != first))
            .collect()
    }

    /// How long to wait before retry `attempt` (1-based): exponential with full jitter, or
    /// what the upstream asked for.
    fn backoff(&self, attempt: u32, e: &Error) -> Duration {
        if let Error::Upstream {
            retry_after: Some(wait),
            ..
        } = e
        {
            return *wait;
        }
        let cap = self
            .config
            .backoff_ms
            .saturating_mul(1 << attempt.min(16))
            .min(self.config.max_backoff_ms);
        Duration::from_millis(rand::rng().random_range(cap / 2..=cap.max(1)))
    }

    /// Runs `call` against targets until one answers: retries on the same target, then the
    /// next; a target whose breaker is open is skipped.
    async fn route<'a, T, F, Fut>(&'a self, call: F) -> Result<T>
    where
        F: Fn(&'a Target) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + 'a,
    {
        let mut last: Option<Error> = None;
        for i in self.order() {
            let target = &self.targets[i];
            for attempt in 0..=self.config.retries {
                if !target.breaker.admit(&self.config) {
                    tracing::debug!(target = %target.label(), "circuit open; skipping target");
                    break;
                }
                if attempt > 0 || last.is_some() {
                    crate::telemetry::retry(target.provider.name());
                }
                let asked = Instant::now();
                let result = call(target).await;
                crate::telemetry::upstream_attempt(
                    target.provider.name(),
                    &outcome(&result),
                    asked.elapsed(),
                );
                match result {
                    Ok(v) => {
                        if target.breaker.succeeded() {
                            crate::telemetry::breaker(&target.label(), false);
                        }
                        return Ok(v);
                    }
                    Err(e) if retryable(&e) => {
                        if target.breaker.failed(&self.config) {
                            tracing::warn!(target = %target.label(), error = %e, "circuit opened");
                            crate::telemetry::breaker(&target.label(), true);
                        }
                        let wait = self.backoff(attempt + 1, &e);
                        let give_up_here = attempt == self.config.retries
                            || wait > Duration::from_millis(self.config.max_backoff_ms);
                        tracing::warn!(target = %target.label(), error = %e, attempt, "upstream attempt failed");
                        last = Some(e);
                        if give_up_here {
                            break;
                        }
                        tokio::time::sleep(wait).await;
                    }
                    // The request itself is wrong: no other target will like it more.
                    Err(e) => {
                        if target.breaker.succeeded() {
                            crate::telemetry::breaker(&target.label(), false);
                        }
                        return Err(e);
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::UpstreamUnavailable {
            provider: self.name.clone(),
            message: "every target of this model is failing (circuits open); retry later".into(),
        }))
    }
}

/// The request with the target's model name (copied only when the name differs: prompts
/// can be large).
fn for_target<'r>(req: &'r ChatRequest, target: &Target) -> std::borrow::Cow<'r, ChatRequest> {
    if req.model == target.upstream {
        return std::borrow::Cow::Borrowed(req);
    }
    let mut req = req.clone();
    req.model = target.upstream.clone();
    std::borrow::Cow::Owned(req)
}

#[async_trait]
impl Provider for Router {
    fn name(&self) -> &str {
        &self.name
    }

    /// Only a model served by one target (standbys aside) finds its cache where it left it.
    fn caches_prompts(&self) -> bool {
        let mut serving = self.targets.iter().filter(|t| t.weight > 0);
        matches!((serving.next(), serving.next()), (Some(t), None) if t.provider.caches_prompts())
    }

    /// Only when every target runs them: a fallback must be able to answer the same request.
    fn runs_builtin_tools(&self) -> bool {
        !self.targets.is_empty() && self.targets.iter().all(|t| t.provider.runs_builtin_tools())
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse> {
        self.route(|t| async move {
            let req = for_target(req, t);
            tokio::time::timeout(t.timeout, t.provider.chat(&req))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::UpstreamTimeout {
                        provider: t.provider.name().to_owned(),
                    })
                })
        })
        .await
    }

    async fn chat_stream(&self, req: &ChatRequest) -> Result<ChunkStream> {
        self.route(|t| async move {
            let req = for_target(req, t);
            let deadline = tokio::time::Instant::now() + t.timeout;
            let timed_out = || Error::UpstreamTimeout {
                provider: t.provider.name().to_owned(),
            };
            let first_byte = tokio::time::Instant::now() + t.first_byte_timeout;
            let mut stream = tokio::time::timeout_at(first_byte, t.provider.chat_stream(&req))
                .await
                .unwrap_or_else(|_| Err(timed_out()))?;
            // Until the first chunk, nothing reached the caller: a failure is retried.
            let first = match tokio::time::timeout_at(first_byte, stream.next()).await {
                Err(_) => return Err(timed_out()),
                Ok(None) => {
                    return Err(Error::UpstreamUnavailable {
                        provider: t.provider.name().to_owned(),
                        message: "the stream ended before its first chunk".into(),
                    });
                }
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(chunk))) => chunk,
            };
            let provider = t.provider.name().to_owned();
            // The rest, within the attempt's deadline.
            let rest = futures::stream::unfold(Some(stream), move |s| {
                let provider = provider.clone();
                async move {
                    let mut s = s?;
                    match tokio::time::timeout_at(deadline, s.next()).await {
                        Ok(Some(item)) => Some((item, Some(s))),
                        Ok(None) => None,
                        Err(_) => Some((Err(Error::UpstreamTimeout { provider }), None)),
                    }
                }
            });
            Ok(
                Box::pin(futures::stream::once(async move { Ok(first) }).chain(rest))
                    as ChunkStream,
            )
        })
        .await
    }

    async fn embeddings(&self, req: &EmbeddingsRequest) -> Result<EmbeddingsResponse> {
        self.route(|t| async move {
            let mut req = req.clone();
            req.model = t.upstream.clone();
            tokio::time::timeout(t.timeout, t.provider.embeddings(&req))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::UpstreamTimeout {
                        provider: t.provider.name().to_owned(),
                    })
                })
        })
        .await
    }

    async fn list_models(&self) -> Result<Vec<String>> {
        Ok(self.targets.iter().map(|t| t.upstream.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_lets_one_probe_through_and_survives_an_abandoned_probe() {
        let config = RouterConfig {
            breaker_failures: 2,
            breaker_cooldown_secs: 1,
            ..RouterConfig::default()
        };
        let b = Breaker::default();
        assert!(b.admit(&config));
        assert!(!b.failed(&config));
        assert!(b.failed(&config), "the second failure in a row opens it");
        assert!(!b.admit(&config));
        assert_eq!(b.status(), BreakerStatus::Open);
        std::thread::sleep(Duration::from_millis(1050));
        assert!(b.admit(&config), "after the cooldown: one probe");
        assert!(!b.admit(&config), "only one");
        // The probe's caller went away without an outcome: after another cooldown, a new probe.
        std::thread::sleep(Duration::from_millis(1050));
        assert!(b.admit(&config));
        assert!(b.succeeded(), "the probe closed it");
        assert!(b.admit(&config) && b.admit(&config));
        assert_eq!(b.status(), BreakerStatus::Closed);
        // A failed probe opens it again at once.
        b.failed(&config);
        b.failed(&config);
        std::thread::sleep(Duration::from_millis(1050));
        assert!(b.admit(&config));
        assert!(b.failed(&config));
        assert!(!b.admit(&config));
    }

    #[test]
    fn what_is_retried() {
        let up = |status| Error::Upstream {
            provider: "p".into(),
            status,
            message: String::new(),
            retry_after: None,
        };
        for s in [408, 429, 500, 502, 503, 529] {
            assert!(retryable(&up(s)), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 422] {
            assert!(!retryable(&up(s)), "{s}");
        }
        assert!(retryable(&Error::UpstreamTimeout {
            provider: "p".into()
        }));
        assert!(!retryable(&Error::invalid("bad")));
    }
}
