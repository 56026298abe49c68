//! `/v1/memories`: the caller's own long-term memories (scope from the key; `user` narrows it
//! to an app end-user). Nothing here can name another user.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use lyss_core::memory::{
    HistoryEntry, Hit, MIN_SIMILARITY, Memory, NewMemory, SearchQuery, clip_query, text_fits,
};
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
                        text: clip_query(&q),
                        limit,
                        min_similarity: p.min_similarity.unwrap_or(MIN_SIMILARITY),
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
    text_fits(&body.memory.text)?;
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
    text_fits(&body.text)?;
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

#[derive(Deserialize)]
pub struct PageLinkBody {
    /// The app's end-user the page is for (as its chat requests' `user`).
    user: String,
}

/// `POST /v1/memories/page` `{"user": …}`: a link to `/me` for one end-user of the caller's
/// key, valid 10 minutes — how an app that shares one key among its people lets one of them
/// see and steer their own memories (and nobody else's) without handing out the key. The app
/// vouches for who the person is, as it does for every chat request's `user`.
pub async fn page_link(
    State(s): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let call = call(&headers);
    let body: PageLinkBody = json_body(&s, &call, raw).await?;
    // The key checks out, within its rate limits, and the id is one a memory API takes.
    let (_, scope) = s.lyss.memory_scope(&call, Some(body.user)).await?;
    let Some(user) = scope.end_user else {
        return Err(lyss_core::Error::invalid_param(
            "`user` names the end-user the page is for",
            "user",
        )
        .into());
    };
    let who = s.lyss.authenticate(&call.api_key).await?;
    let (url, expires) = crate::dashboard::me::mint_link(&s, &who, &user);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "object": "memory.page_link",
            "url": url,
            "user": user,
            "expires_at": expires.unix_timestamp(),
        })),
    ))
}
