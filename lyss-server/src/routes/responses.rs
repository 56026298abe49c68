//! `POST /v1/responses`: OpenAI's Responses API, streaming and not, on the chat pipeline (keys,
//! allow-lists, budgets, limits, memory, cache, ledger) and so in front of every upstream kind.
//! Lyss keeps each answered conversation (unless `store: false`) so that
//! `previous_response_id` works whatever the upstream, and `GET`/`DELETE /v1/responses/{id}`
//! read and delete it, for its user only; errors have OpenAI's shape.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt as _;
use lyss_core::openai::Message;
use lyss_core::pipeline::Endpoint;
use lyss_core::policy::Policy;
use lyss_core::responses::{
    Echo, Events, ResponsesRequest, StreamToResponses, from_chat, input_messages, output_message,
    to_chat,
};
use lyss_core::{Call, ChatBody, ChatStream, Error};

use super::{call, json_body};
use crate::AppState;
use crate::error::{ApiError, body};

/// Where an answered conversation is kept: the user it belongs to and its turns so far.
struct Keep {
    policy: Arc<dyn Policy>,
    user_id: String,
    conversation: Vec<Message>,
}

impl Keep {
    /// Saves the conversation with the response's output under the response's id. A failure
    /// is logged, not returned: the answer is paid for and delivered either way.
    async fn save(mut self, response: &serde_json::Value) {
        self.conversation.push(output_message(response));
        let id = response["id"].as_str().unwrap_or_default();
        let saved = match serde_json::to_string(&self.conversation) {
            Ok(json) => {
                self.policy
                    .save_response(id, &self.user_id, &json, &response.to_string())
                    .await
            }
            Err(e) => Err(Error::Internal(e.to_string())),
        };
        if let Err(e) = saved {
            tracing::error!(error = %e, response = id, "could not keep the conversation for previous_response_id");
        }
    }
}

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let call = call(&headers);
    let req: ResponsesRequest = json_body(&state, &call, raw).await?;
    let who = state.lyss.authenticate(&call.api_key).await?;
    let policy = state.lyss.policy().clone();
    let history: Vec<Message> = match &req.previous_response_id {
        Some(id) => {
            let saved = policy
                .load_response(id, &who.user_id)
                .await
                .map_err(|e| match e {
                    Error::NotFound(_) => Error::invalid_param(
                        format!("Previous response with id '{id}' not found."),
                        "previous_response_id",
                    ),
                    other => other,
                })?;
            serde_json::from_str(&saved)
                .map_err(|e| Error::Internal(format!("stored response {id}: {e}")))?
        }
        None => Vec::new(),
    };
    let keep = req.stores().then(|| -> Result<Keep, Error> {
        let mut conversation = history.clone();
        conversation.extend(input_messages(&req)?);
        Ok(Keep {
            policy,
            user_id: who.user_id.clone(),
            conversation,
        })
    });
    let keep = keep.transpose()?;
    let translated = match to_chat(&req, history) {
        Ok(t) => t,
        Err(e) => {
            let call = Call {
                endpoint: Endpoint::Responses,
                ..call
            };
            state
                .lyss
                .record_refusal(&call, &req.model, &e, std::time::Instant::now())
                .await;
            return Err(e.into());
        }
    };
    let created_at = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let echo = Echo::new(&req, created_at, translated.tools);
    let call = Call {
        endpoint: Endpoint::Responses,
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
