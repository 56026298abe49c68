//! `POST /v1/embeddings`, float or base64 (both official SDKs ask for base64 by default).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use bytes::Bytes;
use lyss_core::wire::{EmbeddingsRequest, EmbeddingsResponse};

use super::{call, json_body};
use crate::AppState;
use crate::error::ApiError;

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<EmbeddingsResponse>, ApiError> {
    let call = call(&headers);
    let req: EmbeddingsRequest = json_body(&state, &call, raw).await?;
    Ok(Json(state.lyss.embeddings(&call, req).await?))
}
