//! `/admin/…`: what `lyss` does, over HTTP, behind the admin token.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use lyss_core::Error;
use lyss_core::policy::{
    Budget, BudgetStatus, CreatedKey, KeyInfo, LedgerEntry, LedgerQuery, NewBudget, NewKey, Scope,
    UsageQuery, UsageRow, User, Workspace, WorkspaceUpdate,
};
use serde::{Deserialize, Serialize};

use super::bearer_is;
use crate::AppState;
use crate::error::ApiError;

/// Refuses admin routes without the admin token (constant-time comparison).
pub async fn require_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !bearer_is(req.headers(), &state.admin_token) {
        return Err(Error::Unauthenticated("A valid admin token is required.".into()).into());
    }
    Ok(next.run(req).await)
}

fn parse<T: serde::de::DeserializeOwned>(
    state: &AppState,
    raw: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let raw = raw.map_err(|r| {
        if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge {
                limit: state.body_limit,
            }
        } else {
            Error::invalid(r.body_text())
        }
    })?;
    serde_json::from_slice(&raw)
        .map_err(|e| Error::invalid(format!("invalid JSON body: {e}")).into())
}

#[derive(Deserialize)]
pub struct NewWorkspace {
    name: String,
    #[serde(default)]
    models: Vec<String>,
}

pub async fn list_workspaces(State(s): State<AppState>) -> Result<Json<Vec<Workspace>>, ApiError> {
    Ok(Json(s.lyss.policy().list_workspaces().await?))
}

pub async fn create_workspace(
    State(s): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Workspace>, ApiError> {
    let w: NewWorkspace = parse(&s, raw)?;
    Ok(Json(
        s.lyss.policy().create_workspace(&w.name, &w.models).await?,
    ))
}

/// `PATCH /admin/workspaces/{name or id}`: `{"models": […], "cache": {"mode", "ttl_secs",
/// "scope", "semantic_threshold"}}`, every field optional.
pub async fn update_workspace(
    State(s): State<AppState>,
    Path(workspace): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Workspace>, ApiError> {
    let update: WorkspaceUpdate = parse(&s, raw)?;
    Ok(Json(
        s.lyss
            .policy()
            .update_workspace(&workspace, &update)
            .await?,
    ))
}

#[derive(Deserialize)]
pub struct NewUser {
    name: String,
    workspace: String,
}

#[derive(Deserialize)]
pub struct UserFilter {
    workspace: Option<String>,
}

pub async fn list_users(
    State(s): State<AppState>,
    Query(f): Query<UserFilter>,
) -> Result<Json<Vec<User>>, ApiError> {
    Ok(Json(
        s.lyss.policy().list_users(f.workspace.as_deref()).await?,
    ))
}

pub async fn create_user(
    State(s): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<User>, ApiError> {
    let u: NewUser = parse(&s, raw)?;
    Ok(Json(
        s.lyss.policy().create_user(&u.name, &u.workspace).await?,
    ))
}

#[derive(Deserialize)]
pub struct KeyFilter {
    user: Option<String>,
}

pub async fn list_keys(
    State(s): State<AppState>,
    Query(f): Query<KeyFilter>,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    Ok(Json(s.lyss.policy().list_keys(f.user.as_deref()).await?))
}

pub async fn create_key(
    State(s): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<CreatedKey>, ApiError> {
    let k: NewKey = parse(&s, raw)?;
    Ok(Json(s.lyss.policy().create_key(&k).await?))
}

pub async fn revoke_key(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    Ok(Json(s.lyss.policy().revoke_key(&id).await?))
}

pub async fn ledger(
    State(s): State<AppState>,
    Query(q): Query<LedgerQuery>,
) -> Result<Json<Vec<LedgerEntry>>, ApiError> {
    Ok(Json(s.lyss.policy().ledger(&q).await?))
}

/// A configured model as the admin sees it.
#[derive(Serialize)]
pub struct ModelInfo {
    name: String,
    aliases: Vec<String>,
    provider: String,
    upstream: String,
    input_per_mtok: f64,
    output_per_mtok: f64,
    cached_input_per_mtok: f64,
    cache_write_per_mtok: f64,
}

pub async fn models(State(s): State<AppState>) -> Json<Vec<ModelInfo>> {
    Json(
        s.lyss
            .models()
            .iter()
            .map(|m| {
                let (i, o, c) = m.price.as_per_mtok();
                ModelInfo {
                    name: m.name.clone(),
                    aliases: m.aliases.clone(),
                    provider: m.provider.name().to_owned(),
                    upstream: m.upstream.clone(),
                    input_per_mtok: i,
                    output_per_mtok: o,
                    cached_input_per_mtok: c,
                    cache_write_per_mtok: m.price.cache_write_per_mtok(),
                }
            })
            .collect(),
    )
}

pub async fn usage(
    State(s): State<AppState>,
    Query(q): Query<UsageQuery>,
) -> Result<Json<Vec<UsageRow>>, ApiError> {
    Ok(Json(s.lyss.policy().usage(&q).await?))
}

pub async fn list_budgets(State(s): State<AppState>) -> Result<Json<Vec<BudgetStatus>>, ApiError> {
    Ok(Json(
        s.lyss
            .policy()
            .budgets(time::OffsetDateTime::now_utc())
            .await?,
    ))
}

pub async fn set_budget(
    State(s): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Budget>, ApiError> {
    let b: NewBudget = parse(&s, raw)?;
    Ok(Json(s.lyss.policy().set_budget(&b).await?))
}

pub async fn delete_budget(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    s.lyss.policy().delete_budget(&id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct NewLimit {
    scope: Scope,
    target: String,
    rpm: Option<u32>,
    tpm: Option<u32>,
}

pub async fn set_limit(
    State(s): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<axum::http::StatusCode, ApiError> {
    let l: NewLimit = parse(&s, raw)?;
    s.lyss
        .policy()
        .set_rate_limit(l.scope, &l.target, l.rpm, l.tpm)
        .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `GET /admin/cache`: what the answer cache holds (`enabled: false` when the pipeline has none).
pub async fn cache_stats(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(match s.lyss.cache_stats().await? {
        Some(stats) => {
            serde_json::json!({"enabled": true, "entries": stats.entries, "bytes": stats.bytes})
        }
        None => serde_json::json!({"enabled": false, "entries": 0, "bytes": null}),
    }))
}

#[derive(serde::Deserialize)]
pub struct CacheClear {
    /// A workspace name or id; none clears everything.
    workspace: Option<String>,
}

/// `DELETE /admin/cache[?workspace=W]`: drops cached answers; says how many went.
pub async fn cache_clear(
    State(s): State<AppState>,
    Query(q): Query<CacheClear>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let workspace_id = match &q.workspace {
        Some(w) => Some(
            s.lyss
                .policy()
                .list_workspaces()
                .await?
                .into_iter()
                .find(|ws| &ws.name == w || &ws.id == w)
                .ok_or_else(|| Error::NotFound(format!("workspace `{w}`")))?
                .id,
        ),
        None => None,
    };
    let cleared = s.lyss.cache_clear(workspace_id.as_deref()).await?;
    Ok(Json(serde_json::json!({"cleared": cleared})))
}
