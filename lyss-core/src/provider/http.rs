//! What every HTTP provider shares: one client with the configured timeouts, statuses mapped
//! to errors with the upstream's own message and `Retry-After`, and server-sent events turned
//! into a [`ChunkStream`] by a per-vendor translator.

use std::collections::VecDeque;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource as _};
use futures::StreamExt as _;
use serde::Deserialize;

use super::ChunkStream;
use crate::config::ProviderConfig;
use crate::error::{Error, Result};
use crate::wire::ChatChunk;

/// How a vendor wants its API key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Auth {
    /// `Authorization: Bearer KEY` (OpenAI and the compatible family).
    Bearer,
    /// The key in a header of its own (`x-api-key`, `api-key`, `x-goog-api-key`).
    Header(&'static str),
}

/// An upstream HTTP API: its name for errors and logs, its base URL, a pooled client, and the
/// API key (never printed: `Debug` leaves it out).
pub(crate) struct Http {
    pub name: String,
    pub base_url: String,
    client: reqwest::Client,
    timeout: Duration,
    api_key: Option<String>,
    auth: Auth,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// Now, in unix seconds (the `created` of translated answers).
pub(crate) fn now() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

/// The API key of a provider: `api_key`, else the variable `api_key_env` names (a warning
/// when it is unset: local servers need no key, hosted ones will answer 401).
fn api_key(cfg: &ProviderConfig) -> Option<String> {
    match (&cfg.api_key, &cfg.api_key_env) {
        (Some(k), _) => Some(k.expose().to_owned()),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                tracing::warn!(provider = %cfg.name, env = %var, "API key variable is not set; calling without a key");
                None
            }
        },
        (None, None) => None,
    }
}

impl Http {
    /// The client for a provider; its API key is resolved now and sent as `auth` says.
    pub fn new(cfg: &ProviderConfig, auth: Auth) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Config(format!("providers.{}: {e}", cfg.name)))?;
        Ok(Self {
            name: cfg.name.clone(),
            base_url: cfg.base_url.trim_end_matches('/').to_owned(),
            client,
            timeout: Duration::from_secs(cfg.timeout_secs),
            api_key: api_key(cfg),
            auth,
        })
    }

    /// A request to `base_url` + `path`, with the API key.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self
            .client
            .request(method, format!("{}{path}", self.base_url));
        match (&self.api_key, self.auth) {
            (Some(k), Auth::Bearer) => rb.bearer_auth(k),
            (Some(k), Auth::Header(name)) => rb.header(name, k),
            (None, _) => rb,
        }
    }

    /// Sends the request and waits for the response head within the timeout; non-2xx
    /// statuses become [`Error::Upstream`] with the upstream's message and `Retry-After`.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = tokio::time::timeout(self.timeout, rb.send())
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.transport(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        let body = resp.bytes().await.unwrap_or_default();
        Err(Error::Upstream {
            provider: self.name.clone(),
            status,
            message: upstream_message(&body),
            retry_after,
        })
    }

    /// Reads and parses a whole JSON body within the timeout.
    pub async fn json<T: serde::de::DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T> {
        let body = tokio::time::timeout(self.timeout, resp.bytes())
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.transport(e))?;
        serde_json::from_slice(&body).map_err(|e| self.malformed(format!("response body: {e}")))
    }

    /// An answer that cannot be understood.
    pub fn malformed(&self, what: impl std::fmt::Display) -> Error {
        Error::UpstreamUnavailable {
            provider: self.name.clone(),
            message: format!("malformed {what}"),
        }
    }

    pub fn timed_out(&self) -> Error {
        Error::UpstreamTimeout {
            provider: self.name.clone(),
        }
    }

    fn transport(&self, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            return self.timed_out();
        }
        Error::UpstreamUnavailable {
            provider: self.name.clone(),
            message: e.to_string(),
        }
    }

    /// Turns an SSE body into chat chunks with `translate`, which sees each event and says
    /// what to yield and whether the stream is over. A body that ends early just ends (callers
    /// tell a finished answer from a cut one by its `finish_reason`); a transport error or a
    /// translation error is yielded once, then the stream ends. No task in between: dropping
    /// the stream drops the upstream body at once.
    pub fn chunks<F>(&self, resp: reqwest::Response, translate: F) -> ChunkStream
    where
        F: FnMut(&Event) -> Result<Step> + Send + 'static,
    {
        struct State<F> {
            events: std::pin::Pin<
                Box<
                    dyn futures::Stream<
                            Item = std::result::Result<
                                Event,
                                eventsource_stream::EventStreamError<reqwest::Error>,
                            >,
                        > + Send,
                >,
            >,
            translate: F,
            pending: VecDeque<ChatChunk>,
            done: bool,
            provider: String,
        }
        let state = State {
            events: Box::pin(resp.bytes_stream().eventsource()),
            translate,
            pending: VecDeque::new(),
            done: false,
            provider: self.name.clone(),
        };
        Box::pin(futures::stream::unfold(Some(state), |state| async move {
            let mut s = state?;
            loop {
                if let Some(c) = s.pending.pop_front() {
                    return Some((Ok(c), Some(s)));
                }
                if s.done {
                    return None;
                }
                match s.events.next().await {
                    None => return None,
                    Some(Ok(ev)) => match (s.translate)(&ev) {
                        Ok(step) => {
                            s.pending.extend(step.chunks);
                            s.done = step.done;
                        }
                        Err(e) => return Some((Err(e), None)),
                    },
                    Some(Err(e)) => {
                        let e = Error::UpstreamUnavailable {
                            provider: s.provider.clone(),
                            message: format!("stream broke: {e}"),
                        };
                        return Some((Err(e), None));
                    }
                }
            }
        }))
    }
}

/// What one upstream event turns into.
#[derive(Debug, Default)]
pub(crate) struct Step {
    pub chunks: Vec<ChatChunk>,
    /// The upstream said the stream is complete.
    pub done: bool,
}

impl Step {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn chunks(chunks: Vec<ChatChunk>) -> Self {
        Self {
            chunks,
            done: false,
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from APIs and ignored).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: f64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// The `error.message` of an error body (OpenAI's, Anthropic's and Google's shapes all have
/// one), else the body's start.
pub(crate) fn upstream_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Inner {
        Object { message: String },
        Text(String),
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body {
            error: Inner::Object { message } | Inner::Text(message),
        }) => message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    }
}
