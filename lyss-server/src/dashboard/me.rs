//! `/me`: a person's own page — what lyss remembers about them, their profile, what their key
//! spent and what memory and the cache saved, the budgets that apply to it — where they
//! correct a memory, delete one or forget everything.
//!
//! Two ways in, each kept in a cookie of the page's own (HttpOnly, Secure, SameSite=Strict,
//! `Path=/me`), every form with a CSRF token bound to it:
//! - **their own key**: the cookie holds a session of the store with the key sealed in it (not
//!   the key in the clear) until the browser closes or 8 hours pass; the key is checked on every
//!   request (a revoked key signs out at once), signing out ends the session, and the page
//!   reaches exactly what the key reaches through `/v1/memories` — the key's own scope and each
//!   end-user scope a client named;
//! - **a link** an app minted with its (shared) key for one of its end-users
//!   (`POST /v1/memories/page`, valid 10 minutes): the page shows that end-user's scope only —
//!   no other scope, and not the key's spend or budgets, which are the whole app's — for 8
//!   hours at most, a session of the store, as long as the key lives.

use axum::Router;
use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use lyss_core::memory::{Memory, MemoryScope, MemoryStore};
use lyss_core::policy::{GroupBy, Principal, Scope, UsageQuery};
use lyss_core::{Call, Error};
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

use super::memories::{Forms, listed, table};
use super::{LIFETIME_SECS, Notice, budget_table, notices, session, sessions, url_encode, usd};
use crate::AppState;

/// The page's cookie: the signed-in key, or a link's session.
const COOKIE: &str = "lyss_me";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/me", get(overview))
        .route("/me/login", post(login))
        .route("/me/open", get(confirm_open).post(open))
        .route("/me/logout", post(logout))
        .route("/me/memories/{id}", post(correct))
        .route("/me/memories/{id}/delete", post(delete))
        .route("/me/forget", post(forget))
}

fn csrf(state: &AppState, cookie: &str) -> String {
    sessions(state).csrf(&format!("me|{cookie}"))
}

/// How long a minted link may wait to be opened.
const LINK_SECS: i64 = 600;
/// What a link, and the session it opens, are signed for.
const LINK: &str = "me-link";
const LINK_SESSION: &str = "me-link-session";
/// The cookie value of a session opened by a link starts with this.
const LINK_PREFIX: &str = "link.";
/// What a key's sign-in is sealed for, and how its cookie value starts.
const KEY_SESSION: &str = "me-key-session";
const KEY_PREFIX: &str = "key.";

/// A key's sign-in, sealed into its cookie: the key (so that it is checked on every request
/// and revoking it signs out, without a key lookup by id the Policy does not offer) and the id
/// of a session of the store (so that signing out ends every copy of the cookie). The cookie
/// never holds the key in the clear: one lifted from a browser opens this page until sign-out
/// or [`LIFETIME_SECS`], but is not a key to chat or spend with.
#[derive(serde::Serialize, Deserialize)]
struct KeySession {
    id: String,
    key: String,
    until: i64,
}

/// What a link and the session it opens carry: whose key minted it, for which end-user, until
/// when, and a random id — the link's (opened once: its id becomes a row of the session store)
/// or the session's (a row of the store, so that signing out ends it everywhere).
#[derive(serde::Serialize, Deserialize)]
struct Link {
    id: String,
    key: String,
    workspace: String,
    user: String,
    end_user: String,
    until: i64,
}

impl Link {
    fn scope(&self) -> MemoryScope {
        MemoryScope {
            end_user: Some(self.end_user.clone()),
            ..MemoryScope::user(self.workspace.clone(), self.user.clone())
        }
    }
}

/// Who the page is for.
enum Signed {
    /// Their own key: everything it reaches, in the session with this id.
    Key {
        key: String,
        who: Arc<Principal>,
        session: String,
    },
    /// A link's end-user: that scope only, in the session with this id.
    Link { scope: MemoryScope, session: String },
}

/// A signed-in person and the page's CSRF token.
pub struct Holder {
    signed: Signed,
    csrf: String,
}

impl FromRequestParts<AppState> for Holder {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(cookie) = session::cookie(&parts.headers, COOKIE) else {
            return Err(login_page(None));
        };
        let csrf = csrf(state, &cookie);
        if let Some(sealed) = cookie.strip_prefix(LINK_PREFIX) {
            let link = unseal_link(state, LINK_SESSION, sealed)
                .ok_or_else(|| login_page(Some(LINK_GONE)))?;
            if let Some(refused) = over_link_rate(&link.id) {
                return Err(refused);
            }
            key_lives(state, &link).await?;
            let open = state
                .lyss
                .policy()
                .session_open(&link.id, OffsetDateTime::now_utc())
                .await
                .map_err(|e| crate::error::status_and_message(&e).into_response())?;
            if !open {
                return Err(login_page(Some(LINK_GONE)));
            }
            return Ok(Holder {
                signed: Signed::Link {
                    scope: link.scope(),
                    session: link.id,
                },
                csrf,
            });
        }
        let now = OffsetDateTime::now_utc();
        let signed_in: KeySession = cookie
            .strip_prefix(KEY_PREFIX)
            .and_then(|sealed| sessions(state).unseal(KEY_SESSION, sealed))
            .and_then(|p| serde_json::from_str(&p).ok())
            .filter(|s: &KeySession| s.until > now.unix_timestamp())
            .ok_or_else(|| login_page(Some(SIGNED_OUT)))?;
        let open = state
            .lyss
            .policy()
            .session_open(&signed_in.id, now)
            .await
            .map_err(|e| crate::error::status_and_message(&e).into_response())?;
        if !open {
            return Err(login_page(Some(SIGNED_OUT)));
        }
        match state.lyss.authenticate(&signed_in.key).await {
            Ok(who) => Ok(Holder {
                signed: Signed::Key {
                    key: signed_in.key,
                    who,
                    session: signed_in.id,
                },
                csrf,
            }),
            Err(Error::Unauthenticated(_)) => Err(login_page(Some(
                "That key no longer works (revoked or expired). Sign in with another.",
            ))),
            Err(e) => Err(crate::error::status_and_message(&e).into_response()),
        }
    }
}

const SIGNED_OUT: &str =
    "You are signed out (or were never signed in here): sign in with your key.";

const LINK_GONE: &str =
    "That link has expired, was used already or is not valid: ask the app for a new one.";

/// Requests a link session may make per minute, in each process. A link session has no key
/// of its own to hold rate limits (it acts for the app's key, whose secret it never sees), and
/// each of its searches embeds a query: a script holding a session could otherwise keep a core
/// of every replica busy. A person clicking through their page makes a few a minute.
pub const LINK_REQUESTS_PER_MINUTE: u32 = 60;

/// Requests per link session in the current minute (from its first), as the failed-key
/// throttle counts failures.
static LINK_REQUESTS: std::sync::LazyLock<moka::sync::Cache<String, Arc<AtomicU32>>> =
    std::sync::LazyLock::new(|| {
        moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(Duration::from_secs(60))
            .build()
    });

/// Counts a request of link session `id`; past [`LINK_REQUESTS_PER_MINUTE`], the 429 (with
/// `Retry-After`) to answer, before the store is asked anything.
fn over_link_rate(id: &str) -> Option<Response> {
    let n = LINK_REQUESTS
        .get_with(id.to_owned(), || Arc::new(AtomicU32::new(0)))
        .fetch_add(1, Ordering::Relaxed);
    if n < LINK_REQUESTS_PER_MINUTE {
        return None;
    }
    let e = Error::RateLimited {
        scope: format!("this page ({LINK_REQUESTS_PER_MINUTE} requests per minute)"),
        retry_after: Duration::from_secs(60),
    };
    let mut resp = crate::error::status_and_message(&e).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    Some(resp)
}

/// A sealed link (or link session) that is unexpired and whose key still lives.
async fn live_link(state: &AppState, purpose: &str, sealed: &str) -> Result<Link, Response> {
    let link = unseal_link(state, purpose, sealed).ok_or_else(|| login_page(Some(LINK_GONE)))?;
    key_lives(state, &link).await?;
    Ok(link)
}

/// A link (or link session) this server sealed for `purpose`, unexpired.
fn unseal_link(state: &AppState, purpose: &str, sealed: &str) -> Option<Link> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    sessions(state)
        .unseal(purpose, sealed)
        .and_then(|p| serde_json::from_str(&p).ok())
        .filter(|l: &Link| l.until > now)
}

/// Refuses a link whose key was revoked or expired since it was minted.
async fn key_lives(state: &AppState, link: &Link) -> Result<(), Response> {
    let now = OffsetDateTime::now_utc();
    let keys = state
        .lyss
        .policy()
        .list_keys(Some(&link.user))
        .await
        .map_err(|e| crate::error::status_and_message(&e).into_response())?;
    let live = keys.iter().any(|k| {
        k.id == link.key && k.revoked_at.is_none() && k.expires_at.is_none_or(|t| t > now)
    });
    if !live {
        return Err(login_page(Some(LINK_GONE)));
    }
    Ok(())
}

/// A link for one end-user of `who`'s key, valid [`LINK_SECS`]: the path to open it, and when
/// it stops working.
pub fn mint_link(state: &AppState, who: &Principal, end_user: &str) -> (String, OffsetDateTime) {
    let until = OffsetDateTime::now_utc() + time::Duration::seconds(LINK_SECS);
    let link = Link {
        id: lyss_core::policy::keys::random_token(32),
        key: who.key_id.clone(),
        workspace: who.workspace_id.clone(),
        user: who.user_id.clone(),
        end_user: end_user.to_owned(),
        until: until.unix_timestamp(),
    };
    let payload = serde_json::to_string(&link).unwrap_or_default();
    let token = sessions(state).seal(LINK, &payload);
    (format!("/me/open?token={token}"), until)
}

#[derive(Deserialize)]
pub struct Open {
    #[serde(default)]
    token: String,
}

/// `GET /me/open?token=…`: the link checked but not used — a page whose button opens it. Mail
/// and chat apps fetch a link to preview it and mail scanners follow it before the person
/// does: a GET that used the link up would leave the person "link gone".
async fn confirm_open(State(state): State<AppState>, Query(o): Query<Open>) -> Response {
    let link = match live_link(&state, LINK, &o.token).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    match state
        .lyss
        .policy()
        .session_open(&link.id, OffsetDateTime::now_utc())
        .await
    {
        Ok(false) => {}
        Ok(true) => return login_page(Some(LINK_GONE)),
        Err(e) => return crate::error::status_and_message(&e).into_response(),
    }
    shell(
        "What lyss remembers about you",
        None,
        html! {
            section {
                p { "This link opens, once, the page of what lyss remembers about you in the app that sent it." }
                form method="post" action="/me/open" {
                    input type="hidden" name="token" value=(o.token);
                    button type="submit" { "Open my page" }
                }
            }
        },
    )
    .into_response()
}

/// `POST /me/open` (the button of [`confirm_open`]): a minted link, opened once within its 10
/// minutes, becomes a session of the page for its end-user. Answered with a page that moves on
/// to `/me` rather than a redirect, so the cookie (SameSite=Strict) goes with a navigation of
/// lyss's own whatever site the link was followed from.
async fn open(State(state): State<AppState>, headers: HeaderMap, Form(o): Form<Open>) -> Response {
    if session::from_another_site(&headers) {
        return from_elsewhere();
    }
    let link = match live_link(&state, LINK, &o.token).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let (link_id, link_until) = (link.id.clone(), link.until);
    let policy = state.lyss.policy();
    let now = OffsetDateTime::now_utc();
    let session = Link {
        id: lyss_core::policy::keys::random_token(32),
        until: now.unix_timestamp() + LIFETIME_SECS,
        ..link
    };
    // Once: the link's id becomes a row of the session store when it is opened (one insert,
    // so two openings at once cannot both pass); the session it opens is another.
    let opened = async {
        let until = OffsetDateTime::from_unix_timestamp(link_until).unwrap_or(now);
        match policy.open_session(&link_id, until).await {
            Err(Error::Conflict(_)) => return Ok(false),
            claimed => claimed?,
        }
        let expires = now + time::Duration::seconds(LIFETIME_SECS);
        policy.open_session(&session.id, expires).await?;
        Ok::<_, Error>(true)
    }
    .await;
    match opened {
        Ok(true) => {}
        Ok(false) => return login_page(Some(LINK_GONE)),
        Err(e) => return crate::error::status_and_message(&e).into_response(),
    }
    let payload = serde_json::to_string(&session).unwrap_or_default();
    let value = format!(
        "{LINK_PREFIX}{}",
        sessions(&state).seal(LINK_SESSION, &payload)
    );
    let page = shell(
        "What lyss remembers about you",
        None,
        html! {
            meta http-equiv="refresh" content="0; url=/me";
            section { p { "Opening your page… " a href="/me" { "Continue" } } }
        },
    );
    with_cookie(page.into_response(), &value, Some(LIFETIME_SECS))
}

/// `resp` keeping `value` in the page's cookie: for `max_age` seconds, or (`None`) until the
/// browser closes — a key is not written to disk for later.
fn with_cookie(mut resp: Response, value: &str, max_age: Option<i64>) -> Response {
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    let set = format!("{COOKIE}={value}; Path=/me; HttpOnly; Secure; SameSite=Strict{age}");
    match HeaderValue::from_str(&set) {
        Ok(v) => {
            resp.headers_mut().insert(header::SET_COOKIE, v);
            resp
        }
        Err(_) => login_page(Some("That key does not work: check it, or ask your admin.")),
    }
}

impl Holder {
    /// The store and the scope shown: for a key, the one `end_user` names (the key's own when
    /// `None`); for a link, its end-user's whatever is asked.
    async fn scope(
        &self,
        state: &AppState,
        end_user: Option<String>,
    ) -> lyss_core::Result<(Arc<dyn MemoryStore>, MemoryScope)> {
        match &self.signed {
            Signed::Key { key, .. } => {
                let call = Call {
                    api_key: key.clone(),
                    ..Call::default()
                };
                state.lyss.memory_scope(&call, end_user).await
            }
            Signed::Link { scope, .. } => Ok((state.lyss.memory_store()?, scope.clone())),
        }
    }

    /// Forgets everything the page reaches: for a key, every memory of its user ("forget
    /// me"); for a link, its end-user's scope only.
    async fn forget(&self, state: &AppState) -> lyss_core::Result<u64> {
        let (store, scope) = self.scope(state, None).await?;
        match self.signed {
            Signed::Key { .. } => store.forget(&scope).await,
            Signed::Link { .. } => store.forget_scope(&scope).await,
        }
    }

    fn check(&self, token: &str) -> Result<(), Box<Response>> {
        use subtle::ConstantTimeEq as _;
        if bool::from(self.csrf.as_bytes().ct_eq(token.as_bytes())) {
            return Ok(());
        }
        Err(Box::new(super::csrf_refused()))
    }
}

fn shell(title: &str, csrf: Option<&str>, body: Markup) -> Html<String> {
    let nav = [("/me", "My memory")];
    super::shell(title, &nav, "/me", csrf.map(|c| ("/me/logout", c)), body)
}

/// A sign-in (a key, a link's button) posted from another site's page: refused, so that no
/// page elsewhere signs this browser in as someone else.
fn from_elsewhere() -> Response {
    let mut page = login_page(Some(
        "Sign in from this page: a form on another site cannot.",
    ));
    *page.status_mut() = StatusCode::FORBIDDEN;
    page
}

fn login_page(error: Option<&str>) -> Response {
    let body = html! {
        section {
            @if let Some(e) = error { p.msg.err { (e) } }
            form.row method="post" action="/me/login" {
                label { "Your lyss key" input type="password" name="key" autocomplete="current-password" placeholder="lyss-sk-…" autofocus required; }
                button type="submit" { "Sign in" }
            }
            p.legend { "The key you chat with. This page shows what lyss remembers about you, what you spent and saved, and lets you correct or delete it." }
        }
    };
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    (status, shell("What lyss remembers about you", None, body)).into_response()
}

#[derive(Deserialize)]
pub struct Login {
    key: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<Login>,
) -> Response {
    if session::from_another_site(&headers) {
        return from_elsewhere();
    }
    let key = f.key.trim();
    match state.lyss.authenticate(key).await {
        Ok(_) => {}
        Err(Error::Unauthenticated(_)) => {
            return login_page(Some("That key does not work: check it, or ask your admin."));
        }
        Err(e) => return crate::error::status_and_message(&e).into_response(),
    }
    let now = OffsetDateTime::now_utc();
    let signed_in = KeySession {
        id: lyss_core::policy::keys::random_token(32),
        key: key.to_owned(),
        until: now.unix_timestamp() + LIFETIME_SECS,
    };
    let expires = now + time::Duration::seconds(LIFETIME_SECS);
    if let Err(e) = state
        .lyss
        .policy()
        .open_session(&signed_in.id, expires)
        .await
    {
        return crate::error::status_and_message(&e).into_response();
    }
    let payload = serde_json::to_string(&signed_in).unwrap_or_default();
    let value = format!(
        "{KEY_PREFIX}{}",
        sessions(&state).seal(KEY_SESSION, &payload)
    );
    with_cookie(Redirect::to("/me").into_response(), &value, None)
}

#[derive(Deserialize)]
pub struct Csrf {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(state): State<AppState>, holder: Holder, Form(f): Form<Csrf>) -> Response {
    if let Err(r) = holder.check(&f.csrf) {
        return *r;
    }
    // The session ends in the store: a copy of the cookie stops working too.
    let (Signed::Key { session, .. } | Signed::Link { session, .. }) = &holder.signed;
    if let Err(e) = state.lyss.policy().end_session(session).await {
        return crate::error::status_and_message(&e).into_response();
    }
    let mut resp = Redirect::to("/me").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "lyss_me=; Path=/me; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
        ),
    );
    resp
}

#[derive(Deserialize, Default)]
pub struct View {
    /// The end-user scope shown (the key's own when absent).
    end_user: Option<String>,
    /// Search text.
    q: Option<String>,
    #[serde(flatten)]
    notice: Notice,
}

/// `/me?end_user=…` (the end-user kept, or not, in links back to the page).
fn page_url(end_user: Option<&str>) -> String {
    match end_user {
        Some(u) => format!("/me?end_user={}", url_encode(u)),
        None => "/me".into(),
    }
}

async fn overview(
    State(state): State<AppState>,
    holder: Holder,
    Query(v): Query<View>,
) -> Response {
    // A link's end-user sees their scope only: no other, and nothing of the app's key.
    let (who, end_user) = match &holder.signed {
        Signed::Key { who, .. } => (
            Some(who),
            lyss_core::memory::end_user(v.end_user.as_deref()),
        ),
        Signed::Link { .. } => (None, None),
    };
    let (store, scope) = match holder.scope(&state, end_user.clone()).await {
        Ok(s) => s,
        Err(e) => return crate::error::status_and_message(&e).into_response(),
    };
    // A store that cannot answer says so: "nothing remembered" would be untrue on this page.
    let query = v.q.filter(|q| !q.trim().is_empty());
    let shown = async {
        let profile = store.profile(&scope).await?;
        let memories = listed(store.as_ref(), &scope, query.as_deref()).await?;
        Ok::<_, Error>((profile, memories))
    };
    let (profile, memories) = match shown.await {
        Ok(shown) => shown,
        Err(e) => return crate::error::status_and_message(&e).into_response(),
    };
    let key = match who {
        Some(who) => Some(KeyView::of(&state, who, store.as_ref()).await),
        None => None,
    };

    let csrf = &holder.csrf;
    let day = |m: &Memory| m.occurred_at.unwrap_or(m.created_at).date().to_string();
    let body = html! {
        (notices(&state, csrf, &v.notice))
        section {
            @match (who, &scope.end_user) {
                (Some(who), _) => p { "Signed in as " strong { (who.user_name) } " (" (who.workspace_name) ")"
                    @if let Some(name) = &who.key_name { ", key " em { (name) } } "." },
                (None, Some(u)) => p { "Signed in through an app's link, as " strong { (u) } "." },
                (None, None) => {},
            }
            @if let Some(k) = &key {
                @if end_user.is_some() || k.scopes.iter().any(|(s, _)| s.end_user.is_some()) {
                    p { "Memories kept for: "
                        a href="/me" class=[end_user.is_none().then_some("on")] { "you" }
                        @for (s, n) in k.scopes.iter().filter(|(s, _)| s.agent.is_none()) {
                            @if let Some(u) = &s.end_user {
                                " · " a href=(page_url(Some(u))) { (u) } " (" (n) ")"
                            }
                        }
                    }
                    p.legend { "A chat app that sends its own user id (LobeChat does) keeps your memories under that id." }
                }
            }
        }
        section id="profile" {
            h2 { "Your profile" }
            p.legend { "What you said about yourself that shapes every answer (it reaches every new chat)." }
            @if profile.is_empty() { p { "Nothing yet." } }
            @else { ul { @for m in &profile { li { (m.text) " " span.legend { (day(m)) } } } } }
        }
        section id="memories" {
            h2 { "What lyss remembers" }
            form.row method="get" action="/me" {
                @if let Some(u) = &end_user { input type="hidden" name="end_user" value=(u); }
                label { "Search" input type="search" name="q" value=[query.as_deref()]; }
                button type="submit" { "Search" }
            }
            @if memories.is_empty() { p { "Nothing remembered" @if query.is_some() { " matches" } "." } }
            @else {
                (table(&memories, &Forms {
                    action: "/me/memories",
                    csrf,
                    hidden: end_user.iter().map(|u| ("end_user", u.clone())).collect(),
                    editable: true,
                }))
            }
        }
        @if let Some(k) = &key {
            section id="usage" {
                h2 { "This key, last 30 days" }
                @match &k.usage {
                    Some(u) => p { (u.requests) @if u.requests == 1 { " request, " } @else { " requests, " } strong { (usd(u.cost_nusd)) } " spent; memory saved "
                        strong { (usd(u.memory_saved_nusd)) } " (" (u.memory_saved_tokens) " prompt tokens), the cache "
                        strong { (usd(u.cache_saved_nusd)) } " (" (u.cache_hits) " answers)." },
                    None => p { "No requests yet." },
                }
                h2 { "Budgets" }
                (budget_table(&k.budgets, csrf, false))
            }
        }
        section id="forget" {
            h2 { "Forget me" }
            form.row method="post" action="/me/forget" {
                input type="hidden" name="csrf" value=(csrf);
                label {
                    @if key.is_some() { "Type FORGET to delete everything lyss remembers about you (every scope above), for good" }
                    @else { "Type FORGET to delete everything lyss remembers about you, for good" }
                    input name="confirm" required pattern="FORGET";
                }
                button.danger type="submit" { "Forget everything" }
            }
        }
    };
    shell("What lyss remembers about you", Some(csrf), body).into_response()
}

/// What a key's own holder also sees: the scopes their key reaches, what the key spent and
/// saved in the last 30 days, and the budgets that apply to it.
struct KeyView {
    scopes: Vec<(MemoryScope, u64)>,
    usage: Option<lyss_core::policy::UsageRow>,
    budgets: Vec<lyss_core::policy::BudgetStatus>,
}

impl KeyView {
    async fn of(state: &AppState, who: &Principal, store: &dyn MemoryStore) -> Self {
        let now = OffsetDateTime::now_utc();
        let policy = state.lyss.policy();
        let scopes = store
            .scopes(&who.workspace_id, &who.user_id)
            .await
            .unwrap_or_default();
        let usage = policy
            .usage(&UsageQuery {
                by: GroupBy::Key,
                since: Some(now - time::Duration::days(30)),
                key_id: Some(who.key_id.clone()),
                ..Default::default()
            })
            .await
            .unwrap_or_default()
            .into_iter()
            .find(|r| r.group == who.key_id);
        let budgets = policy
            .budgets(now)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|b| match b.budget.scope {
                Scope::Workspace => b.budget.scope_id == who.workspace_id,
                Scope::User => b.budget.scope_id == who.user_id,
                Scope::Key => b.budget.scope_id == who.key_id,
            })
            .collect();
        Self {
            scopes,
            usage,
            budgets,
        }
    }
}

/// Back to the page (and its scope) with a message.
fn back(
    state: &AppState,
    holder: &Holder,
    end_user: Option<&str>,
    result: lyss_core::Result<String>,
) -> Response {
    super::back(state, &holder.csrf, &page_url(end_user), result)
}

#[derive(Deserialize)]
pub struct Correct {
    #[serde(default)]
    csrf: String,
    text: String,
    end_user: Option<String>,
}

async fn correct(
    State(state): State<AppState>,
    holder: Holder,
    Path(id): Path<String>,
    Form(f): Form<Correct>,
) -> Response {
    if let Err(r) = holder.check(&f.csrf) {
        return *r;
    }
    let end_user = lyss_core::memory::end_user(f.end_user.as_deref());
    let result = async {
        let text = lyss_core::memory::one_memory(&f.text)?;
        let (store, scope) = holder.scope(&state, end_user.clone()).await?;
        store.update(&scope, &id, &text).await?;
        Ok("Corrected.".to_owned())
    }
    .await;
    back(&state, &holder, end_user.as_deref(), result)
}

#[derive(Deserialize)]
pub struct Delete {
    #[serde(default)]
    csrf: String,
    end_user: Option<String>,
}

async fn delete(
    State(state): State<AppState>,
    holder: Holder,
    Path(id): Path<String>,
    Form(f): Form<Delete>,
) -> Response {
    if let Err(r) = holder.check(&f.csrf) {
        return *r;
    }
    let end_user = lyss_core::memory::end_user(f.end_user.as_deref());
    let result = async {
        let (store, scope) = holder.scope(&state, end_user.clone()).await?;
        store.delete(&scope, &id).await?;
        Ok("Deleted: it will not be recalled again.".to_owned())
    }
    .await;
    back(&state, &holder, end_user.as_deref(), result)
}

#[derive(Deserialize)]
pub struct Forget {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

async fn forget(State(state): State<AppState>, holder: Holder, Form(f): Form<Forget>) -> Response {
    if let Err(r) = holder.check(&f.csrf) {
        return *r;
    }
    if f.confirm.trim() != "FORGET" {
        return back(
            &state,
            &holder,
            None,
            Ok("Nothing forgotten: type FORGET to confirm.".into()),
        );
    }
    let result = holder
        .forget(&state)
        .await
        .map(|n| format!("Forgot everything: {n} memories deleted, with their history."));
    back(&state, &holder, None, result)
}
