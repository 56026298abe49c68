//! `/dashboard`: server-rendered admin pages — spend and savings over time, budgets and what is
//! left of them, and forms for everything an admin does with `lyss` (workspaces, users, keys,
//! budgets). Signed in with the admin token, then a signed, HttpOnly, SameSite=Strict session
//! cookie; every form carries a CSRF token. No script and no front-end build: charts are SVG.

mod charts;
pub(crate) mod me;
mod memories;
mod session;

use axum::Router;
use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use lyss_core::policy::{Bucket, GroupBy, NewBudget, NewKey, Period, Scope, Unit, UsageQuery};
use lyss_core::price::nano_to_usd;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;

use self::charts::{Series, bars};
use self::session::{COOKIE, LIFETIME_SECS, Sessions, cookie};
use crate::AppState;

/// The dashboard's routes (mounted at `/dashboard`), and the key holder's page (`/me`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(overview))
        .route("/dashboard/login", post(login))
        .route("/dashboard/logout", post(logout))
        .route(
            "/dashboard/workspaces",
            get(workspaces).post(create_workspace),
        )
        .route("/dashboard/users", get(users).post(create_user))
        .route("/dashboard/keys", get(keys).post(create_key))
        .route("/dashboard/keys/{id}/revoke", post(revoke_key))
        .route("/dashboard/budgets", get(budgets).post(set_budget))
        .route("/dashboard/budgets/{id}/delete", post(delete_budget))
        .route("/dashboard/memories", get(memories::list))
        .route("/dashboard/memories/{id}/delete", post(memories::delete))
        .merge(me::routes())
        .layer(axum::middleware::map_response(headers))
}

/// Every dashboard response: never cached (pages show keys once, and usage), never framed
/// (clickjacking), no script or outside resource at all (the pages have none).
async fn headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

const STYLE: &str = r#"
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.2rem;align-items:center}
header a{color:#cfd6e4;text-decoration:none}header a.on{color:#fff;font-weight:600}
header form{margin-left:auto}main{max-width:1100px;margin:1.2rem auto;padding:0 1rem}
h1{font-size:1.3rem}section{background:#fff;border-radius:8px;padding:1rem 1.2rem;margin:0 0 1rem;box-shadow:0 1px 2px #0001}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #eceef2}
th{font-weight:600;color:#5a6272;font-size:.85rem}.num{text-align:right;font-variant-numeric:tabular-nums}
form.row{display:flex;gap:.5rem;flex-wrap:wrap;align-items:end}label{display:flex;flex-direction:column;font-size:.8rem;color:#5a6272}
input,select,button{font:inherit;padding:.3rem .5rem}button{background:#2f6fed;color:#fff;border:0;border-radius:5px;cursor:pointer}
button.danger{background:#c53030}.msg{background:#e8f5e9;padding:.6rem 1rem;border-radius:6px}.err{background:#fdecea}
.secret{font-family:monospace;background:#fff8e1;padding:.5rem;display:block;word-break:break-all}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem}.chart{margin:0}.chart svg{width:100%;height:auto}
figcaption{font-weight:600;margin-bottom:.3rem}.total{font-weight:400;color:#5a6272}
.tick{font-size:10px;fill:#5a6272}.axis{stroke:#ccd}.spend{fill:#2f6fed}.memory{fill:#2e9e6b}.cache{fill:#8fd694}.provider{fill:#d4a72c}
.requests{fill:#6b7a99}.errors{fill:#c53030}.legend{font-size:.8rem;color:#5a6272}
.key{display:inline-block;width:.7rem;height:.7rem;margin:0 .3rem 0 .6rem;border-radius:2px}
.key.memory{background:#2e9e6b}.key.cache{background:#8fd694}.key.provider{background:#d4a72c}.key.requests{background:#6b7a99}.key.errors{background:#c53030}
.bar{background:#eceef2;border-radius:3px;height:.5rem;min-width:6rem}.bar i{display:block;height:100%;background:#2f6fed;border-radius:3px}
"#;

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn sessions(state: &AppState) -> Sessions {
    Sessions::new(state.admin_token.expose())
}

/// The signed-in session's cookie, if the request has one that is signed, unexpired and not
/// signed out. A store that cannot say counts as signed out (fail closed).
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let c = cookie(headers, COOKIE)?;
    let id = sessions(state).check(&c, now())?;
    match state
        .lyss
        .policy()
        .session_open(&id, OffsetDateTime::now_utc())
        .await
    {
        Ok(true) => Some(c),
        Ok(false) => None,
        Err(e) => {
            tracing::warn!(error = %e, "dashboard session check failed; signed out");
            None
        }
    }
}

fn page(title: &str, active: &str, csrf: &str, body: Markup) -> Html<String> {
    let nav = [
        ("/dashboard", "Overview"),
        ("/dashboard/workspaces", "Workspaces"),
        ("/dashboard/users", "Users"),
        ("/dashboard/keys", "Keys"),
        ("/dashboard/budgets", "Budgets"),
        ("/dashboard/memories", "Memories"),
    ];
    shell(title, &nav, active, Some(("/dashboard/logout", csrf)), body)
}

/// A page of the dashboard or of `/me`: the header's links (`active` marked), a sign-out form
/// (its action and CSRF token) when signed in, the title and the body.
fn shell(
    title: &str,
    nav: &[(&str, &str)],
    active: &str,
    sign_out: Option<(&str, &str)>,
    body: Markup,
) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · lyss" }
                    style { (PreEscaped(STYLE)) }
                }
                body {
                    header {
                        strong { "lyss" }
                        @for (href, name) in nav {
                            a href=(href) class=[(*href == active).then_some("on")] { (name) }
                        }
                        @if let Some((action, csrf)) = sign_out {
                            form method="post" action=(action) {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                    main { h1 { (title) } (body) }
                }
            }
        }
        .into_string(),
    )
}

fn login_page(error: Option<&str>) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Sign in · lyss" } style { (PreEscaped(STYLE)) } }
            body { main {
                h1 { "lyss dashboard" }
                section {
                    @if let Some(e) = error { p.msg.err { (e) } }
                    form.row method="post" action="/dashboard/login" {
                        label { "Admin token" input type="password" name="token" autocomplete="current-password" autofocus required; }
                        button type="submit" { "Sign in" }
                    }
                    p.legend { "The admin token is in the data directory's " code { "admin_token" } " file, or your configuration." }
                }
            } }
        }
    };
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    (status, Html(body.into_string())).into_response()
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
}

async fn login(State(state): State<AppState>, Form(f): Form<Login>) -> Response {
    let ok: bool = f
        .token
        .trim()
        .as_bytes()
        .ct_eq(state.admin_token.expose().as_bytes())
        .into();
    if !ok {
        return login_page(Some("That is not the admin token."));
    }
    let (id, value) = sessions(&state).issue(now());
    let expires = OffsetDateTime::now_utc() + time::Duration::seconds(LIFETIME_SECS);
    if let Err(e) = state.lyss.policy().open_session(&id, expires).await {
        tracing::warn!(error = %e, "could not open a dashboard session");
        return login_page(Some("The store is unavailable; try again."));
    }
    // Secure: browsers keep it over HTTPS and on localhost; HttpOnly: no script reads it;
    // SameSite=Strict: no other site's form sends it.
    let set = format!(
        "{COOKIE}={value}; Path=/dashboard; HttpOnly; Secure; SameSite=Strict; Max-Age={LIFETIME_SECS}"
    );
    let mut resp = Redirect::to("/dashboard").into_response();
    if let Ok(v) = HeaderValue::from_str(&set) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Deserialize)]
pub struct Csrf {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<Csrf>,
) -> Response {
    let c = match guard(&state, &headers, &f.csrf).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    // Ended in the store: the cookie stops working everywhere, not only in this browser.
    if let Some(id) = sessions(&state).check(&c, now())
        && let Err(e) = state.lyss.policy().end_session(&id).await
    {
        tracing::warn!(error = %e, "could not end a dashboard session");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "The store is unavailable: you are still signed in. Try again.",
        )
            .into_response();
    }
    let mut resp = Redirect::to("/dashboard").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "lyss_session=; Path=/dashboard; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
        ),
    );
    resp
}

/// Checks the session and the form's CSRF token; the response to send otherwise.
/// (The response is boxed: it is the rare path.)
async fn guard(state: &AppState, headers: &HeaderMap, csrf: &str) -> Result<String, Box<Response>> {
    let Some(c) = signed_in(state, headers).await else {
        return Err(Box::new(Redirect::to("/dashboard").into_response()));
    };
    if !sessions(state).check_csrf(&c, csrf) {
        return Err(Box::new(csrf_refused()));
    }
    Ok(c)
}

/// The answer to a form whose CSRF token is not its session's.
fn csrf_refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        "The form is stale or forged (CSRF check failed). Reload the page and try again.",
    )
        .into_response()
}

/// A signed-in admin, with the CSRF token for the page's forms; anyone else gets the sign-in
/// page.
pub struct Viewer(String);

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match signed_in(state, &parts.headers).await {
            Some(c) => Ok(Viewer(sessions(state).csrf(&c))),
            None => Err(login_page(None)),
        }
    }
}

/// A page's message after an action, carried in the URL it redirects to (`?note=…`) and sealed
/// for the viewer's session (its CSRF token) under the admin token's key: a note made for one
/// session — a link made elsewhere, another person's or another page's — shows nothing on
/// another's page.
#[derive(Deserialize, Default)]
pub struct Notice {
    note: Option<String>,
}

/// What a viewer's [`Notice`]s are sealed for.
fn notice_purpose(csrf: &str) -> String {
    format!("notice|{csrf}")
}

impl Notice {
    /// The notice of an action's outcome (an error as its status message) for the session
    /// whose CSRF token is `csrf`.
    fn of(state: &AppState, csrf: &str, result: lyss_core::Result<String>) -> Self {
        let note = match result {
            Ok(m) => format!("msg\n{m}"),
            Err(e) => format!("err\n{}", crate::error::status_and_message(&e).1),
        };
        Self {
            note: Some(sessions(state).seal(&notice_purpose(csrf), &note)),
        }
    }
}

/// The notice of a page viewed by the session whose CSRF token is `csrf`, if sealed for it.
fn notices(state: &AppState, csrf: &str, n: &Notice) -> Markup {
    let shown = n
        .note
        .as_deref()
        .and_then(|sealed| sessions(state).unseal(&notice_purpose(csrf), sealed));
    html! {
        @match shown.as_deref().and_then(|s| s.split_once('\n')) {
            Some(("msg", m)) => p.msg { (m) },
            Some(("err", e)) => p.msg.err { (e) },
            _ => {},
        }
    }
}

/// Back to a page with a message for the session that acted (`csrf`, checked already); errors
/// of the store are shown, not thrown.
fn back(state: &AppState, csrf: &str, to: &str, result: lyss_core::Result<String>) -> Response {
    let Notice { note } = Notice::of(state, csrf, result);
    let sep = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{sep}note={}", note.unwrap_or_default())).into_response()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn usd(n: i64) -> String {
    let v = nano_to_usd(n);
    if v != 0.0 && v.abs() < 0.01 {
        format!("${v:.4}")
    } else {
        format!("${v:.2}")
    }
}

async fn overview(
    State(state): State<AppState>,
    Viewer(csrf): Viewer,
    Query(n): Query<Notice>,
) -> Response {
    let policy = state.lyss.policy();
    let until = OffsetDateTime::now_utc();
    let days = 14i64;
    let since = until - time::Duration::days(days - 1);
    let since = since.replace_time(time::Time::MIDNIGHT);
    let rows = match policy
        .usage(&UsageQuery {
            by: GroupBy::Workspace,
            since: Some(since),
            bucket: Some(Bucket::Day),
            ..Default::default()
        })
        .await
    {
        Ok(r) => r,
        Err(e) => return crate::error::status_and_message(&e).into_response(),
    };
    let labels: Vec<String> = (0..days)
        .map(|i| {
            let d = (since + time::Duration::days(i)).date();
            format!("{:02}-{:02}", u8::from(d.month()), d.day())
        })
        .collect();
    let mut series = vec![vec![0.0f64; days as usize]; 6];
    let (mut spent, mut saved_memory, mut saved_cache, mut saved_provider) = (0, 0, 0, 0);
    let (mut requests, mut errors) = (0, 0);
    for r in &rows {
        let Some(b) = r.bucket else { continue };
        let i = (b - since).whole_days();
        let Ok(i) = usize::try_from(i) else { continue };
        if i >= days as usize {
            continue;
        }
        series[0][i] += nano_to_usd(r.cost_nusd);
        series[1][i] += nano_to_usd(r.memory_saved_nusd);
        series[2][i] += nano_to_usd(r.cache_saved_nusd);
        series[3][i] += (r.requests - r.errors) as f64;
        series[4][i] += r.errors as f64;
        series[5][i] += nano_to_usd(r.prompt_cache_saved_nusd);
        spent += r.cost_nusd;
        saved_provider += r.prompt_cache_saved_nusd;
        saved_memory += r.memory_saved_nusd;
        saved_cache += r.cache_saved_nusd;
        requests += r.requests;
        errors += r.errors;
    }
    let money = |v: f64| {
        if v != 0.0 && v.abs() < 0.01 {
            format!("${v:.4}")
        } else {
            format!("${v:.2}")
        }
    };
    let count = |v: f64| format!("{v:.0}");
    let [spend, memory, cache, ok, failed, provider]: [Vec<f64>; 6] = series
        .try_into()
        .unwrap_or_else(|_| unreachable!("six series"));
    let budgets = policy.budgets(until).await.unwrap_or_default();
    let body = html! {
        (notices(&state, &csrf, &n))
        section {
            p { "Last " (days) " days: " strong { (usd(spent)) } " spent on " (requests) " requests ("
                (errors) " failed); memory saved " strong { (usd(saved_memory)) } ", the cache " strong { (usd(saved_cache)) } ", the providers' prompt caches " strong { (usd(saved_provider)) } "." }
            div.grid {
                (bars("Spend per day", &labels, &[Series { label: "spend", class: "spend", values: spend }], &money))
                (bars("Saved per day", &labels, &[
                    Series { label: "memory", class: "memory", values: memory },
                    Series { label: "cache", class: "cache", values: cache },
                    Series { label: "provider cache", class: "provider", values: provider },
                ], &money))
                (bars("Requests per day", &labels, &[
                    Series { label: "answered", class: "requests", values: ok },
                    Series { label: "errors", class: "errors", values: failed },
                ], &count))
            }
        }
        section {
            h2 { "Budgets" }
            (budget_table(&budgets, &csrf, false))
        }
    };
    page("Overview", "/dashboard", &csrf, body).into_response()
}

fn budget_table(budgets: &[lyss_core::policy::BudgetStatus], csrf: &str, actions: bool) -> Markup {
    let amount = |unit: Unit, v: i64| match unit {
        Unit::Usd => usd(v),
        Unit::Tokens => format!("{v} tokens"),
    };
    html! {
        @if budgets.is_empty() { p { "No budgets yet." } }
        @else {
            table {
                tr { th { "scope" } th { "name" } th { "period" } th.num { "limit" } th.num { "spent" } th.num { "left" } th { "used" } th { "resets" } @if actions { th {} } }
                @for b in budgets {
                    @let limit = b.budget.limit.max(1);
                    @let used = ((b.spent + b.reserved) * 100 / limit).clamp(0, 100);
                    tr {
                        td { (b.budget.scope.as_str()) }
                        td { (b.budget.scope_name) }
                        td { (format!("{:?}", b.budget.period).to_lowercase()) }
                        td.num { (amount(b.budget.unit, b.budget.limit)) }
                        td.num { (amount(b.budget.unit, b.spent)) }
                        td.num { (amount(b.budget.unit, b.remaining().max(0))) }
                        td { div.bar title=(format!("{used}%")) { i style=(format!("width:{used}%")) {} } }
                        td { (b.resets_at.map(|t| t.date().to_string()).unwrap_or_else(|| "—".into())) }
                        @if actions {
                            td { form method="post" action=(format!("/dashboard/budgets/{}/delete", b.budget.id)) {
                                input type="hidden" name="csrf" value=(csrf);
                                button.danger type="submit" { "Delete" }
                            } }
                        }
                    }
                }
            }
        }
    }
}

async fn workspaces(
    State(state): State<AppState>,
    Viewer(csrf): Viewer,
    Query(n): Query<Notice>,
) -> Response {
    let all = state
        .lyss
        .policy()
        .list_workspaces()
        .await
        .unwrap_or_default();
    let models: Vec<String> = state.lyss.models().iter().map(|m| m.name.clone()).collect();
    let body = html! {
        (notices(&state, &csrf, &n))
        section {
            form.row method="post" action="/dashboard/workspaces" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Name" input name="name" required pattern="[A-Za-z0-9._-]+"; }
                label { "Models (comma-separated, * for all)" input name="models" placeholder=(models.join(",")); }
                button type="submit" { "Create workspace" }
            }
        }
        section {
            table {
                tr { th { "name" } th { "models" } th { "cache" } th { "created" } }
                @for w in &all {
                    tr {
                        td { (w.name) }
                        td { (w.models.join(", ")) }
                        td { (w.cache.mode.map(|m| format!("{m:?}").to_lowercase()).unwrap_or_else(|| "config".into())) }
                        td { (w.created_at.date()) }
                    }
                }
            }
        }
    };
    page("Workspaces", "/dashboard/workspaces", &csrf, body).into_response()
}

#[derive(Deserialize)]
pub struct NewWorkspaceForm {
    csrf: String,
    name: String,
    #[serde(default)]
    models: String,
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn create_workspace(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<NewWorkspaceForm>,
) -> Response {
    if let Err(r) = guard(&state, &headers, &f.csrf).await {
        return *r;
    }
    let done = state
        .lyss
        .policy()
        .create_workspace(f.name.trim(), &list(&f.models))
        .await;
    back(
        &state,
        &f.csrf,
        "/dashboard/workspaces",
        done.map(|w| format!("Workspace {} created.", w.name)),
    )
}

async fn users(
    State(state): State<AppState>,
    Viewer(csrf): Viewer,
    Query(n): Query<Notice>,
) -> Response {
    let policy = state.lyss.policy();
    let all = policy.list_users(None).await.unwrap_or_default();
    let workspaces = policy.list_workspaces().await.unwrap_or_default();
    let body = html! {
        (notices(&state, &csrf, &n))
        section {
            form.row method="post" action="/dashboard/users" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Name" input name="name" required pattern="[A-Za-z0-9._-]+"; }
                label { "Workspace" select name="workspace" { @for w in &workspaces { option value=(w.name) { (w.name) } } } }
                button type="submit" { "Create user" }
            }
        }
        section {
            table {
                tr { th { "name" } th { "workspace" } th { "created" } }
                @for u in &all { tr {
                    td { a href=(format!("/dashboard/memories?user={}", url_encode(&u.name))) title="Memories" { (u.name) } }
                    td { (u.workspace) } td { (u.created_at.date()) }
                } }
            }
        }
    };
    page("Users", "/dashboard/users", &csrf, body).into_response()
}

#[derive(Deserialize)]
pub struct NewUserForm {
    csrf: String,
    name: String,
    workspace: String,
}

async fn create_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<NewUserForm>,
) -> Response {
    if let Err(r) = guard(&state, &headers, &f.csrf).await {
        return *r;
    }
    let done = state
        .lyss
        .policy()
        .create_user(f.name.trim(), &f.workspace)
        .await;
    back(
        &state,
        &f.csrf,
        "/dashboard/users",
        done.map(|u| format!("User {} created in {}.", u.name, u.workspace)),
    )
}

async fn keys_page(state: &AppState, csrf: &str, n: &Notice, created: Option<&str>) -> Response {
    let policy = state.lyss.policy();
    let all = policy.list_keys(None).await.unwrap_or_default();
    let users = policy.list_users(None).await.unwrap_or_default();
    let body = html! {
        (notices(state, csrf, n))
        @if let Some(key) = created {
            section {
                p { strong { "New key — copy it now: it is shown only once." } }
                code.secret id="new-key" { (key) }
            }
        }
        section {
            form.row method="post" action="/dashboard/keys" {
                input type="hidden" name="csrf" value=(csrf);
                label { "User" select name="user" { @for u in &users { option value=(u.name) { (u.name) " (" (u.workspace) ")" } } } }
                label { "Name (optional)" input name="name"; }
                button type="submit" { "Create key" }
            }
        }
        section {
            table {
                tr { th { "id" } th { "name" } th { "user" } th { "workspace" } th { "created" } th { "status" } th {} }
                @for k in &all {
                    tr {
                        td { code { (k.id) } }
                        td { (k.name.clone().unwrap_or_default()) }
                        td { (k.user) }
                        td { (k.workspace) }
                        td { (k.created_at.date()) }
                        td { @if k.revoked_at.is_some() { "revoked" } @else { "active" } }
                        td { @if k.revoked_at.is_none() {
                            form method="post" action=(format!("/dashboard/keys/{}/revoke", k.id)) {
                                input type="hidden" name="csrf" value=(csrf);
                                button.danger type="submit" { "Revoke" }
                            }
                        } }
                    }
                }
            }
        }
    };
    page("Keys", "/dashboard/keys", csrf, body).into_response()
}

async fn keys(
    State(state): State<AppState>,
    Viewer(csrf): Viewer,
    Query(n): Query<Notice>,
) -> Response {
    keys_page(&state, &csrf, &n, None).await
}

#[derive(Deserialize)]
pub struct NewKeyForm {
    csrf: String,
    user: String,
    #[serde(default)]
    name: String,
}

async fn create_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<NewKeyForm>,
) -> Response {
    let session = match guard(&state, &headers, &f.csrf).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let name = f.name.trim();
    let made = state
        .lyss
        .policy()
        .create_key(&NewKey {
            user: f.user,
            name: (!name.is_empty()).then(|| name.to_owned()),
            ..NewKey::default()
        })
        .await;
    match made {
        // Rendered here, never put in a URL: the full key exists only in this response.
        Ok(k) => {
            let csrf = sessions(&state).csrf(&session);
            let n = Notice::of(
                &state,
                &csrf,
                Ok(format!("Key {} created for {}.", k.info.id, k.info.user)),
            );
            keys_page(&state, &csrf, &n, Some(&k.key)).await
        }
        Err(e) => back(&state, &f.csrf, "/dashboard/keys", Err(e)),
    }
}

async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<Csrf>,
) -> Response {
    if let Err(r) = guard(&state, &headers, &f.csrf).await {
        return *r;
    }
    let done = state.lyss.policy().revoke_key(&id).await;
    back(
        &state,
        &f.csrf,
        "/dashboard/keys",
        done.map(|k| format!("Key {} revoked.", k.id)),
    )
}

async fn budgets(
    State(state): State<AppState>,
    Viewer(csrf): Viewer,
    Query(n): Query<Notice>,
) -> Response {
    let all = state
        .lyss
        .policy()
        .budgets(OffsetDateTime::now_utc())
        .await
        .unwrap_or_default();
    let body = html! {
        (notices(&state, &csrf, &n))
        section {
            form.row method="post" action="/dashboard/budgets" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Scope" select name="scope" { option { "workspace" } option { "user" } option { "key" } } }
                label { "Workspace, user or key id" input name="target" required; }
                label { "Unit" select name="unit" { option value="usd" { "USD" } option value="tokens" { "tokens" } } }
                label { "Limit" input name="limit" required inputmode="decimal"; }
                label { "Period" select name="period" { option { "monthly" } option { "weekly" } option { "daily" } option value="none" { "none (total)" } } }
                button type="submit" { "Set budget" }
            }
        }
        section { (budget_table(&all, &csrf, true)) }
    };
    page("Budgets", "/dashboard/budgets", &csrf, body).into_response()
}

#[derive(Deserialize)]
pub struct BudgetForm {
    csrf: String,
    scope: String,
    target: String,
    unit: String,
    limit: String,
    period: String,
}

fn parse_enum<T: serde::de::DeserializeOwned>(v: &str, what: &str) -> lyss_core::Result<T> {
    serde_json::from_value(serde_json::Value::String(v.to_owned()))
        .map_err(|_| lyss_core::Error::invalid(format!("unknown {what} `{v}`")))
}

async fn set_budget(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<BudgetForm>,
) -> Response {
    if let Err(r) = guard(&state, &headers, &f.csrf).await {
        return *r;
    }
    let new = (|| -> lyss_core::Result<NewBudget> {
        let unit: Unit = parse_enum(&f.unit, "unit")?;
        let amount: f64 = f
            .limit
            .trim()
            .parse()
            .map_err(|_| lyss_core::Error::invalid(format!("`{}` is not a number", f.limit)))?;
        Ok(NewBudget {
            scope: parse_enum::<Scope>(&f.scope, "scope")?,
            target: f.target.trim().to_owned(),
            unit,
            limit: match unit {
                Unit::Usd => (amount * 1e9).round() as i64,
                Unit::Tokens => amount.round() as i64,
            },
            period: parse_enum::<Period>(&f.period, "period")?,
            tz: None,
            expires_at: None,
        })
    })();
    let done = match new {
        Ok(b) => state.lyss.policy().set_budget(&b).await,
        Err(e) => Err(e),
    };
    back(
        &state,
        &f.csrf,
        "/dashboard/budgets",
        done.map(|b| format!("Budget set on {} {}.", b.scope.as_str(), b.scope_name)),
    )
}

async fn delete_budget(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<Csrf>,
) -> Response {
    if let Err(r) = guard(&state, &headers, &f.csrf).await {
        return *r;
    }
    let done = state.lyss.policy().delete_budget(&id).await;
    back(
        &state,
        &f.csrf,
        "/dashboard/budgets",
        done.map(|()| "Budget deleted.".to_owned()),
    )
}
