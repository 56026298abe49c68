//! `/healthz` (the process is up) and `/readyz` (its store answers).

use axum::extract::State;
use axum::http::StatusCode;

use crate::AppState;
use crate::error::ApiError;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<AppState>) -> Result<(StatusCode, &'static str), ApiError> {
    state.lyss.policy().ping().await?;
    Ok((StatusCode::OK, "ready"))
}
