//! `POST /v1/chat/completions`, streaming and not.

use std::convert::Infallible;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt as _;
use lyss_core::wire::ChatRequest;
use lyss_core::{ChatBody, ChatStream};

use super::{call, json_body};
use crate::AppState;
use crate::error::{ApiError, body};

pub async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let call = call(&headers);
    let req: ChatRequest = json_body(&state, &call, raw).await?;
    let reply = state.lyss.chat(&call, req).await?;
    let resp = match reply.body {
        ChatBody::Complete(c) => axum::Json(c).into_response(),
        ChatBody::Stream(s) => Sse::new(sse_events(s)).into_response(),
    };
    Ok(super::with_headers(resp, reply.headers))
}

/// Chunks as OpenAI's SSE: one `data:` event per chunk, then `data: [DONE]` — unless the
/// stream failed, in which case an OpenAI error object is the last event.
fn sse_events(stream: ChatStream) -> impl futures::Stream<Item = Result<Event, Infallible>> + Send {
    futures::stream::unfold(Some(stream), |state| async move {
        let mut stream = state?;
        match stream.next().await {
            Some(Ok(chunk)) => {
                let ev = Event::default()
                    .json_data(&chunk)
                    .unwrap_or_else(|_| Event::default().data("{}"));
                Some((Ok(ev), Some(stream)))
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "stream failed after it started");
                let (_, err) = body(&e);
                Some((Ok(Event::default().data(err.to_string())), None))
            }
            None => Some((Ok(Event::default().data("[DONE]")), None)),
        }
    })
}
