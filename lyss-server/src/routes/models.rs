//! `GET /v1/models`: exactly the models the caller's key may use (fills LobeChat's picker).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use lyss_core::openai::ModelList;

use super::call;
use crate::AppState;
use crate::error::ApiError;

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ModelList>, ApiError> {
    Ok(Json(state.lyss.list_models(&call(&headers)).await?))
}
