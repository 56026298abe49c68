//! The one place where a [`lyss_core::Error`] becomes an HTTP status and an OpenAI-shaped body
//! `{"error":{"message","type","param","code"}}`. 5xx bodies stay generic; details go to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lyss_core::Error;
use serde_json::json;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

/// Status, OpenAI error type and code of an error; `None` message means "use a generic one".
pub fn classify(e: &Error) -> (StatusCode, &'static str, Option<&'static str>) {
    use StatusCode as S;
    match e {
        Error::Unauthenticated(_) => (
            S::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        Error::PermissionDenied(_) => (S::FORBIDDEN, "permission_error", Some("permission_denied")),
        Error::ModelNotFound(_) => (
            S::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
        ),
        Error::InvalidRequest { .. } => (S::BAD_REQUEST, "invalid_request_error", None),
        Error::PayloadTooLarge { .. } => (
            S::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
        ),
        Error::NotFound(_) => (S::NOT_FOUND, "invalid_request_error", Some("not_found")),
        Error::Conflict(_) => (S::CONFLICT, "invalid_request_error", Some("conflict")),
        Error::RateLimited { .. } => (
            S::TOO_MANY_REQUESTS,
            "requests",
            Some("rate_limit_exceeded"),
        ),
        Error::BudgetExceeded(_) => (
            S::TOO_MANY_REQUESTS,
            "insufficient_quota",
            Some("insufficient_quota"),
        ),
        // The upstream refused the request itself: the caller can fix it, so say why.
        Error::Upstream {
            status: 400 | 404 | 422,
            ..
        } => (
            S::BAD_REQUEST,
            "invalid_request_error",
            Some("upstream_rejected"),
        ),
        Error::Upstream { status: 413, .. } => (
            S::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
        ),
        Error::Upstream { status: 429, .. } => (
            S::TOO_MANY_REQUESTS,
            "requests",
            Some("upstream_rate_limited"),
        ),
        Error::Upstream { .. } | Error::UpstreamUnavailable { .. } => {
            (S::BAD_GATEWAY, "api_error", Some("upstream_error"))
        }
        Error::UpstreamTimeout { .. } => {
            (S::GATEWAY_TIMEOUT, "api_error", Some("upstream_timeout"))
        }
        Error::Unavailable { .. } => (
            S::SERVICE_UNAVAILABLE,
            "api_error",
            Some("service_unavailable"),
        ),
        Error::Config(_) | Error::Internal(_) => (
            S::INTERNAL_SERVER_ERROR,
            "api_error",
            Some("internal_error"),
        ),
    }
}

/// The message the client sees: the error's own text for 4xx, a generic sentence for 5xx.
pub fn public_message(e: &Error, status: StatusCode) -> String {
    if !status.is_server_error() {
        return match e {
            Error::Upstream { message, .. } => format!("upstream rejected the request: {message}"),
            other => other.to_string(),
        };
    }
    match e {
        Error::UpstreamTimeout { .. } => "The upstream provider did not answer in time.".into(),
        Error::Upstream { .. } | Error::UpstreamUnavailable { .. } => {
            "The upstream provider failed to answer.".into()
        }
        Error::Unavailable { .. } => {
            "The service is temporarily unavailable; the request was refused.".into()
        }
        _ => "The server had an error while processing your request.".into(),
    }
}

/// The status and the message a person sees for an error (the dashboard shows errors as pages
/// and notices, not JSON); 5xx details go to the log.
pub fn status_and_message(e: &Error) -> (StatusCode, String) {
    let (status, _, _) = classify(e);
    if status.is_server_error() {
        tracing::error!(error = %e, "request failed");
    }
    (status, public_message(e, status))
}

/// Seconds until a refused request may succeed: a rate limit's window, or the refusing
/// budget's next period (none for a budget that does not reset).
fn retry_after(e: &Error) -> Option<u64> {
    match e {
        Error::RateLimited { retry_after, .. } => Some(retry_after.as_secs()),
        Error::BudgetExceeded(refusal) => refusal.resets_at.map(|at| {
            let secs = (at - time::OffsetDateTime::now_utc()).whole_seconds();
            u64::try_from(secs).unwrap_or(0)
        }),
        _ => None,
    }
}

/// The OpenAI error body of an error.
pub fn body(e: &Error) -> (StatusCode, serde_json::Value) {
    let (status, kind, code) = classify(e);
    let param = match e {
        Error::InvalidRequest { param, .. } => param.clone(),
        Error::ModelNotFound(_) => Some("model".into()),
        _ => None,
    };
    let message = public_message(e, status);
    (
        status,
        json!({"error": {"message": message, "type": kind, "param": param, "code": code}}),
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = body(&self.0);
        if status.is_server_error() {
            tracing::error!(error = %self.0, "request failed");
        } else {
            tracing::debug!(error = %self.0, status = status.as_u16(), "request refused");
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after(&self.0) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        no_retry(&self.0, &mut resp);
        resp
    }
}

/// The header OpenAI's and Anthropic's SDKs read before retrying a failed request.
pub const SHOULD_RETRY: &str = "x-should-retry";

/// Whether sending the same request again could succeed: not after a refusal the caller must
/// fix first (bad request, credentials, permission, unknown model, too large, a budget spent).
/// Rate limits and the upstream's or lyss's own failures may clear up.
pub fn retry_cannot_help(e: &Error) -> bool {
    matches!(
        e,
        Error::Unauthenticated(_)
            | Error::PermissionDenied(_)
            | Error::ModelNotFound(_)
            | Error::InvalidRequest { .. }
            | Error::PayloadTooLarge { .. }
            | Error::NotFound(_)
            | Error::Conflict(_)
            | Error::BudgetExceeded(_)
            | Error::Upstream {
                status: 400 | 404 | 413 | 422,
                ..
            }
    )
}

/// Marks a response `x-should-retry: false` when a retry cannot help: the SDKs would otherwise
/// send a refused request three times.
pub fn no_retry(e: &Error, resp: &mut Response) {
    if retry_cannot_help(e) {
        resp.headers_mut()
            .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
    }
}

/// Turns a 4xx that something other than [`ApiError`] answered — a query string, path or
/// header axum could not parse, a method a route does not take, a body over the limit — into
/// OpenAI's error shape, keeping its status and headers and its text as the message. JSON
/// bodies (already shaped) and HTML (the dashboard's pages) pass as they are.
pub async fn openai_shaped(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path();
    let page = path.starts_with("/dashboard") || path == "/me" || path.starts_with("/me/");
    let resp = next.run(req).await;
    if page {
        return resp;
    }
    let status = resp.status();
    let shaped = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json") || t.starts_with("text/html"));
    if !status.is_client_error() || shaped {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("Bad request")
            .to_owned()
    } else {
        text
    };
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_exceeded",
        _ => "invalid_request",
    };
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status != StatusCode::TOO_MANY_REQUESTS {
        parts
            .headers
            .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
    }
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}
