//! Memories on the pages: one table for the admin's view of a user (`/dashboard/memories`,
//! every scope of the user) and the key holder's own page (`/me`), and the admin's handlers.

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use lyss_core::Error;
use lyss_core::memory::{Memory, MemoryScope, MemoryStore, SearchQuery};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Notice, Viewer, back, guard, notices, page, url_encode};
use crate::AppState;
use lyss_core::memory::{MIN_SIMILARITY, clip_query};

/// Memories a page lists at most (newest first, or the best matches of a search).
pub(super) const SHOWN: usize = 200;

/// Where a row's forms post — `{action}/{id}` to correct (when `editable`) and
/// `{action}/{id}/delete` — with the page's CSRF token and these hidden fields.
pub(super) struct Forms<'a> {
    pub action: &'a str,
    pub csrf: &'a str,
    pub hidden: Vec<(&'static str, String)>,
    pub editable: bool,
}

/// The memories with their provenance — who said it (and where in its conversation), when,
/// the request or import it came from, whether it is profile — each with its forms.
pub(super) fn table(memories: &[Memory], forms: &Forms) -> Markup {
    let hidden = html! {
        input type="hidden" name="csrf" value=(forms.csrf);
        @for (name, value) in &forms.hidden { input type="hidden" name=(name) value=(value); }
    };
    html! {
        table {
            tr { th { "memory" } th { "said by" } th { "when" } th { "from" } th {} }
            @for m in memories {
                tr.memory data-id=(m.id) {
                    td {
                        @if forms.editable {
                            form.row method="post" action=(format!("{}/{}", forms.action, m.id)) {
                                (hidden)
                                input name="text" value=(m.text) size="60" required;
                                button type="submit" { "Save" }
                            }
                        } @else { (m.text) }
                    }
                    td {
                        (m.role.map_or("fact", |r| r.as_str()))
                        @if let Some(p) = m.position { span.legend { " · message " (p + 1) } }
                        @if m.profile { " · profile" }
                    }
                    td { (m.occurred_at.unwrap_or(m.created_at).date()) }
                    td.legend { (m.source.as_deref().unwrap_or("")) }
                    td {
                        form method="post" action=(format!("{}/{}/delete", forms.action, m.id)) {
                            (hidden)
                            button.danger type="submit" { "Delete" }
                        }
                    }
                }
            }
        }
    }
}

/// The store's memories of a scope: searched, or the newest.
pub(super) async fn listed(
    store: &dyn MemoryStore,
    scope: &MemoryScope,
    query: Option<&str>,
) -> lyss_core::Result<Vec<Memory>> {
    match query {
        Some(q) => Ok(store
            .search(
                scope,
                &SearchQuery {
                    text: clip_query(q),
                    limit: SHOWN,
                    min_similarity: MIN_SIMILARITY,
                },
            )
            .await?
            .into_iter()
            .map(|h| h.memory)
            .collect()),
        None => store.list(scope, SHOWN).await,
    }
}

/// The memory store and a user's scope (narrowed to `end_user`), for the admin.
async fn user_scope(
    state: &AppState,
    user: &str,
    end_user: Option<String>,
) -> lyss_core::Result<(Arc<dyn MemoryStore>, MemoryScope)> {
    let store = state.lyss.memory_store()?;
    let policy = state.lyss.policy();
    let u = policy
        .list_users(None)
        .await?
        .into_iter()
        .find(|u| u.name == user || u.id == user)
        .ok_or_else(|| Error::NotFound(format!("user `{user}`")))?;
    let ws = policy
        .list_workspaces()
        .await?
        .into_iter()
        .find(|w| w.name == u.workspace)
        .ok_or_else(|| Error::NotFound(format!("workspace `{}`", u.workspace)))?;
    let scope = MemoryScope {
        end_user,
        ..MemoryScope::user(ws.id, u.id)
    };
    Ok((store, scope))
}

#[derive(Deserialize, Default)]
pub struct View {
    user: Option<String>,
    end_user: Option<String>,
    q: Option<String>,
    #[serde(flatten)]
    notice: Notice,
}

fn url(user: &str, end_user: Option<&str>) -> String {
    let mut u = format!("/dashboard/memories?user={}", url_encode(user));
    if let Some(e) = end_user {
        u.push_str(&format!("&end_user={}", url_encode(e)));
    }
    u
}

/// `/dashboard/memories?user=…[&end_user=…][&q=…]`: a user's memories, per scope.
pub(super) async fn list(
    State(state): State<AppState>,
    Viewer(csrf): Viewer,
    Query(v): Query<View>,
) -> Response {
    let users = state
        .lyss
        .policy()
        .list_users(None)
        .await
        .unwrap_or_default();
    let user = v.user.filter(|u| !u.is_empty());
    let end_user = lyss_core::memory::end_user(v.end_user.as_deref());
    let query = v.q.filter(|q| !q.trim().is_empty());
    let shown = match &user {
        Some(u) => match user_scope(&state, u, end_user.clone()).await {
            Ok((store, scope)) => {
                let scopes = store
                    .scopes(&scope.workspace_id, &scope.user_id)
                    .await
                    .unwrap_or_default();
                match listed(store.as_ref(), &scope, query.as_deref()).await {
                    Ok(memories) => Some((u.clone(), scopes, memories)),
                    Err(e) => return crate::error::status_and_message(&e).into_response(),
                }
            }
            Err(e) => return crate::error::status_and_message(&e).into_response(),
        },
        None => None,
    };
    let body = html! {
        (notices(&state, &csrf, &v.notice))
        section {
            form.row method="get" action="/dashboard/memories" {
                label { "User" select name="user" {
                    @for u in &users { option value=(u.name) selected[user.as_deref() == Some(u.name.as_str())] { (u.name) " (" (u.workspace) ")" } }
                } }
                label { "Search" input type="search" name="q" value=[query.as_deref()]; }
                button type="submit" { "Show" }
            }
        }
        @if let Some((user, scopes, memories)) = &shown {
            section {
                p { "Scopes: "
                    a href=(url(user, None)) class=[end_user.is_none().then_some("on")] { "own" }
                    @for (s, n) in scopes.iter().filter(|(s, _)| s.agent.is_none()) {
                        @match s.end_user.as_deref() {
                            None => { " (" (n) ")" },
                            Some(name) => {
                                " · " a href=(url(user, Some(name))) class=[(Some(name) == end_user.as_deref()).then_some("on")] { (name) }
                                " (" (n) ")"
                            }
                        }
                    }
                }
                @if memories.is_empty() { p { "Nothing remembered" @if query.is_some() { " matches" } "." } }
                @else {
                    (table(memories, &Forms {
                        action: "/dashboard/memories",
                        csrf: &csrf,
                        hidden: [("user", Some(user.clone())), ("end_user", end_user.clone())]
                            .into_iter()
                            .filter_map(|(k, v)| v.map(|v| (k, v)))
                            .collect(),
                        editable: false,
                    }))
                }
            }
        }
    };
    page("Memories", "/dashboard/memories", &csrf, body).into_response()
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf: String,
    user: String,
    end_user: Option<String>,
}

/// Deletes one memory of a user's scope.
pub(super) async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<DeleteForm>,
) -> Response {
    if let Err(r) = guard(&state, &headers, &f.csrf).await {
        return *r;
    }
    let end_user = lyss_core::memory::end_user(f.end_user.as_deref());
    let done = async {
        let (store, scope) = user_scope(&state, &f.user, end_user.clone()).await?;
        store.delete(&scope, &id).await?;
        Ok(format!("Memory {id} deleted."))
    }
    .await;
    back(&state, &f.csrf, &url(&f.user, end_user.as_deref()), done)
}
