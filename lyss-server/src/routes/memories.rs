//! `/v1/memories`: the caller's own long-term memories (scope from the key; `user` narrows it
//! to an app end-user). Nothing here can name another user.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use lyss_core::memory::{HistoryEntry, Hit, Memory, NewMemory, SearchQuery};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{call, json_body};
use crate::AppState;
use crate::error::ApiError;

#[derive(Deserialize)]
pub struct Params {
    /// The app's end-user (OpenAI's `user`), narrowing the scope.
    user: Option<String>,
    limit: Option<usize>,
    /// Search text.
    q: Option<String>,
    min_similarity: Option<f32>,
}

/// `{"object":"list","data":[…]}`, like OpenAI's lists.
fn list<T: serde::Serialize>(data: Vec<T>) -> Json<Value> {
    Json(json!({"object": "list", "data": data}))
}

pub async fn list_or_search(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let (store, scope) = s.lyss.memory_scope(&call(&headers), p.user).await?;
    let limit = p.limit.unwrap_or(100).min(1000);
    match p.q {
        Some(q) => {
            let hits: Vec<Hit> = store
                .search(
                    &scope,
                    &SearchQuery {
                        text: q,
                        limit,
                        min_similarity: p.min_similarity.unwrap_or(0.3),
                    },
                )
                .await?;
            Ok(list(hits))
        }
        None => Ok(list(store.list(&scope, limit).await?)),
    }
}

#[derive(Deserialize)]
pub struct NewMemoryBody {
    #[serde(flatten)]
    memory: NewMemory,
    user: Option<String>,
}

pub async fn add(
    State(s): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Memory>), ApiError> {
    let call = call(&headers);
    let body: NewMemoryBody = json_body(&s, &call, raw).await?;
    let (store, scope) = s.lyss.memory_scope(&call, body.user).await?;
    let mut new = body.memory;
    new.source.get_or_insert_with(|| "api".into());
    Ok((StatusCode::CREATED, Json(store.add(&scope, &new).await?)))
}

pub async fn get(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(p): Query<Params>,
) -> Result<Json<Memory>, ApiError> {
    let (store, scope) = s.lyss.memory_scope(&call(&headers), p.user).await?;
    Ok(Json(store.get(&scope, &id).await?))
}

#[derive(Deserialize)]
pub struct UpdateBody {
    text: String,
    user: Option<String>,
}

pub async fn update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Memory>, ApiError> {
    let call = call(&headers);
    let body: UpdateBody = json_body(&s, &call, raw).await?;
    let (store, scope) = s.lyss.memory_scope(&call, body.user).await?;
    Ok(Json(store.update(&scope, &id, &body.text).await?))
}

pub async fn delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(p): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let (store, scope) = s.lyss.memory_scope(&call(&headers), p.user).await?;
    store.delete(&scope, &id).await?;
    Ok(Json(json!({"id": id, "object": "memory", "deleted": true})))
}

/// "Forget me": every memory of the caller, in every narrowed scope, and their history.
pub async fn forget(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (store, scope) = s.lyss.memory_scope(&call(&headers), None).await?;
    let deleted = store.forget(&scope).await?;
    Ok(Json(json!({"object": "list", "deleted": deleted})))
}

pub async fn history(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(p): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let (store, scope) = s.lyss.memory_scope(&call(&headers), p.user).await?;
    let entries: Vec<HistoryEntry> = store.history(&scope, &id).await?;
    Ok(list(entries))
}
