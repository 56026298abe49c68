//! HTTP routes: each turns a request into a pipeline call and the result into a response.

pub mod admin;
pub mod chat;
pub mod embeddings;
pub mod health;
pub mod mcp;
pub mod memories;
pub mod messages;
pub mod metrics;
pub mod models;
pub mod responses;
pub mod throttle;

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use lyss_core::pipeline::{CACHE_HEADER, CACHE_THRESHOLD_HEADER, CacheControl};
use lyss_core::{Call, Error};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// Whether a request's bearer token is `secret`, compared in constant time.
pub fn bearer_is(headers: &HeaderMap, secret: &lyss_core::config::Secret) -> bool {
    use subtle::ConstantTimeEq as _;
    bearer(headers)
        .as_bytes()
        .ct_eq(secret.expose().as_bytes())
        .into()
}

/// The bearer token of a request (empty if none).
pub fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or("")
}

/// The call context: key and request id (set by the request-id layer).
pub fn call(headers: &HeaderMap) -> Call {
    Call {
        api_key: bearer(headers).to_owned(),
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        no_memory: headers
            .get("x-lyss-memory")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("off")),
        cache: headers
            .get(CACHE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(CacheControl::parse)
            .unwrap_or_default(),
        // Not a number → NaN, which the pipeline refuses with a 400 once the key checks out.
        cache_threshold: headers.get(CACHE_THRESHOLD_HEADER).map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(f32::NAN)
        }),
        ..Call::default()
    }
}

/// A response with the pipeline's headers (budget left, tokens sent, cache) added.
pub fn with_headers(mut resp: Response, headers: Vec<(&'static str, String)>) -> Response {
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(HeaderName::from_static(name), v);
        }
    }
    resp
}

/// `(event name, data)` pairs as named server-sent events (Anthropic's and the Responses
/// API's streams name every event).
pub fn named_events(
    events: Vec<(&'static str, serde_json::Value)>,
) -> Vec<Result<axum::response::sse::Event, std::convert::Infallible>> {
    use axum::response::sse::Event;
    events
        .into_iter()
        .map(|(name, data)| {
            Ok(Event::default()
                .event(name)
                .json_data(&data)
                .unwrap_or_else(|_| Event::default().event(name).data("{}")))
        })
        .collect()
}

/// Parses a JSON body. A body that is too large is 413; malformed JSON is 400 — but only
/// after the key checks out, so that unauthenticated callers learn nothing but 401.
pub async fn json_body<T: DeserializeOwned>(
    state: &AppState,
    call: &Call,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(Error::PayloadTooLarge {
                limit: state.body_limit,
            }
            .into());
        }
        Err(r) => return Err(Error::invalid(r.body_text()).into()),
    };
    match serde_json::from_slice(&body) {
        Ok(v) => Ok(v),
        Err(e) => {
            state.lyss.authenticate(&call.api_key).await?;
            Err(Error::invalid(format!(
                "We could not parse the JSON body of your request: {e}"
            ))
            .into())
        }
    }
}
