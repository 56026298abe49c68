//! `POST /v1/messages`: Anthropic's Messages API in front of every configured model, under
//! the same keys, budgets, memory and cache as the chat completions route. A lyss key goes in
//! `x-api-key` (as Anthropic's SDKs send it) or as a bearer token; errors have Anthropic's
//! shape `{"type":"error","error":{"type","message"}}`.

use std::convert::Infallible;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt as _;
use lyss_core::dialects::messages::{
    MessagesRequest, StreamFromOpenAi, error_body, request_to_openai, response_from_openai,
};
use lyss_core::pipeline::Endpoint;
use lyss_core::{Call, ChatBody, ChatStream, Error};

use super::call;
use crate::AppState;
use crate::error::{classify, public_message};

/// An error on its way to an Anthropic client.
#[derive(Debug)]
pub struct MessagesError(pub Error);

impl From<Error> for MessagesError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

/// Anthropic's error type for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The status and Anthropic body of an error.
fn anthropic_error(e: &Error) -> (StatusCode, serde_json::Value) {
    let (status, _, _) = classify(e);
    (
        status,
        error_body(error_type(status), &public_message(e, status)),
    )
}

impl IntoResponse for MessagesError {
    fn into_response(self) -> Response {
        let (status, body) = anthropic_error(&self.0);
        if status.is_server_error() {
            tracing::error!(error = %self.0, "request failed");
        }
        let mut resp = (status, axum::Json(body)).into_response();
        crate::error::no_retry(&self.0, &mut resp);
        if let Error::RateLimited { retry_after, .. } = &self.0
            && let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string())
        {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        resp
    }
}

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, MessagesError> {
    let mut call = Call {
        endpoint: Endpoint::Messages,
        ..call(&headers)
    };
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        call.api_key = key.trim().to_owned();
    }
    let raw = match raw {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(Error::PayloadTooLarge {
                limit: state.body_limit,
            }
            .into());
        }
        Err(r) => return Err(Error::invalid(r.body_text()).into()),
    };
    // Unauthenticated callers learn nothing but 401, even about their JSON.
    let req: MessagesRequest = match serde_json::from_slice(&raw) {
        Ok(r) => r,
        Err(e) => {
            state.lyss.authenticate(&call.api_key).await?;
            return Err(Error::invalid(format!("could not parse the request body: {e}")).into());
        }
    };
    let model = req.model.clone();
    let (chat, dropped) = match request_to_openai(req) {
        Ok(c) => c,
        Err(e) => {
            state.lyss.authenticate(&call.api_key).await?;
            state
                .lyss
                .record_refusal(&call, &model, &e, std::time::Instant::now())
                .await;
            return Err(e.into());
        }
    };
    // What a stream's `message_start` reports before the upstream says: lyss's count of the
    // prompt (a complete answer carries the upstream's own).
    let input_tokens = match chat.is_stream() {
        true => lyss_core::tokens::count_request(&chat.model, &chat),
        false => 0,
    };
    let call = Call { dropped, ..call };
    let reply = state.lyss.chat(&call, chat).await?;
    let resp = match reply.body {
        ChatBody::Complete(c) => axum::Json(response_from_openai(&c, &model)).into_response(),
        ChatBody::Stream(s) => Sse::new(events(s, model, input_tokens)).into_response(),
    };
    Ok(super::with_headers(resp, reply.headers))
}

/// Chunks as Anthropic's named events; a failure mid-stream is an `error` event, the last.
fn events(
    stream: ChatStream,
    model: String,
    input_tokens: u64,
) -> impl futures::Stream<Item = Result<Event, Infallible>> + Send {
    let translator = StreamFromOpenAi::new(&model).input_tokens(input_tokens);
    futures::stream::unfold(Some((stream, translator)), |state| async move {
        let (mut stream, mut translator) = state?;
        let (batch, next) = match stream.next().await {
            Some(Ok(chunk)) => (translator.on_chunk(&chunk), true),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "stream failed after it started");
                let (_, body) = anthropic_error(&e);
                (vec![("error", body)], false)
            }
            None => (translator.finish(), false),
        };
        Some((
            futures::stream::iter(super::named_events(batch)),
            next.then_some((stream, translator)),
        ))
    })
    .flatten()
}
