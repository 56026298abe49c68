//! `GET /v1/models`: exactly the models the caller's key may use (fills LobeChat's picker);
//! `GET /v1/models/{id}`: one of them (the OpenAI SDKs' `models.retrieve`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use lyss_core::wire::{ModelList, ModelObject};

use super::call;
use crate::AppState;
use crate::error::ApiError;

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ModelList>, ApiError> {
    Ok(Json(state.lyss.list_models(&call(&headers)).await?))
}

pub async fn retrieve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    Ok(Json(state.lyss.get_model(&call(&headers), &id).await?))
}
