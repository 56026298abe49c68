//! `POST /v1/responses`: OpenAI's Responses API, streaming and not, on the chat pipeline (keys,
//! allow-lists, budgets, limits, memory, cache, ledger) and so in front of every upstream kind.
//! Lyss keeps each answered conversation (unless `store: false`) so that
//! `previous_response_id` works whatever the upstream, and `GET`/`DELETE /v1/responses/{id}`
//! read and delete it, for its user only; errors have OpenAI's shape.

use std::convert::Infallible;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt as _;
use lyss_core::dialects::responses::{
    Conversation, Echo, Events, Keep, ResponsesRequest, StreamToResponses, from_chat, to_chat,
};
use lyss_core::pipeline::Endpoint;
use lyss_core::{Call, ChatBody, ChatStream, Error};

use super::{call, json_body};
use crate::AppState;
use crate::error::{ApiError, body};

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let call = Call {
        endpoint: Endpoint::Responses,
        ..call(&headers)
    };
    let req: ResponsesRequest = json_body(&state, &call, raw).await?;
    let started = std::time::Instant::now();
    let prepared = async {
        let Conversation { history, keep } = state.lyss.conversation(&call, &req).await?;
        Ok::<_, Error>((keep, to_chat(&req, history)?))
    };
    let (keep, translated) = match prepared.await {
        Ok(p) => p,
        Err(e) => {
            state
                .lyss
                .record_refusal(&call, &req.model, &e, started)
                .await;
            return Err(e.into());
        }
    };
    let created_at = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let echo = Echo::new(&req, created_at, translated.tools);
    let call = Call {
        dropped: translated.dropped,
        ..call
    };
    let reply = state.lyss.chat(&call, translated.chat).await?;
    let resp = match reply.body {
        ChatBody::Complete(c) => {
            let response = from_chat(&c, &echo);
            if let Some(keep) = keep {
                keep.save(&response).await;
            }
            axum::Json(response).into_response()
        }
        ChatBody::Stream(s) => {
            Sse::new(events(s, StreamToResponses::new(echo), keep)).into_response()
        }
    };
    Ok(super::with_headers(resp, reply.headers))
}

/// `GET /v1/responses/{id}`: a kept response, as it was returned.
pub async fn retrieve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = state.lyss.authenticate(&call(&headers).api_key).await?;
    let kept = state
        .lyss
        .policy()
        .get_response(&id, &who.user_id)
        .await
        .map_err(|e| not_found(e, &id))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        kept,
    )
        .into_response())
}

/// `DELETE /v1/responses/{id}`: forgets a kept response (it can no longer be a
/// `previous_response_id`).
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = state.lyss.authenticate(&call(&headers).api_key).await?;
    state
        .lyss
        .policy()
        .delete_response(&id, &who.user_id)
        .await
        .map_err(|e| not_found(e, &id))?;
    Ok(
        axum::Json(serde_json::json!({"id": id, "object": "response", "deleted": true}))
            .into_response(),
    )
}

/// OpenAI's words for a response that is not there (or is another user's).
fn not_found(e: Error, id: &str) -> Error {
    match e {
        Error::NotFound(_) => Error::NotFound(format!("Response with id '{id}'")),
        other => other,
    }
}

/// Chunks as the Responses API's named events; the conversation is kept once the stream has
/// completed. A failure mid-stream is an `error` event, the last.
fn events(
    stream: ChatStream,
    translator: StreamToResponses,
    keep: Option<Keep>,
) -> impl futures::Stream<Item = Result<Event, Infallible>> + Send {
    futures::stream::unfold(Some((stream, translator, keep)), |state| async move {
        let (mut stream, mut translator, keep) = state?;
        let (batch, next): (Events, bool) = match stream.next().await {
            Some(Ok(chunk)) => (translator.on_chunk(&chunk), true),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "stream failed after it started");
                let (_, err) = body(&e);
                let code = err["error"]["code"].as_str().unwrap_or("server_error");
                let message = err["error"]["message"].as_str().unwrap_or("stream failed");
                (translator.error(code, message), false)
            }
            None => {
                let (events, response) = translator.finish();
                if let Some(keep) = keep {
                    keep.save(&response).await;
                }
                return Some((futures::stream::iter(super::named_events(events)), None));
            }
        };
        Some((
            futures::stream::iter(super::named_events(batch)),
            next.then_some((stream, translator, keep)),
        ))
    })
    .flatten()
}
