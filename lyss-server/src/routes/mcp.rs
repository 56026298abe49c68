//! `/mcp`: the person's memory as an MCP server (streamable HTTP, the official SDK, stateless),
//! for the clients they already use — LobeChat's MCP plugins, Claude Code, Codex CLI, opencode
//! — to search what lyss remembers about them, remember something on request, read their
//! profile, correct a memory and forget one.
//!
//! A call is authenticated by the lyss key and scoped exactly as that key's chat requests are:
//! the key's user, narrowed to an end-user by the `x-lyss-user` header as a chat body's `user`
//! field narrows it. Each tool call is a ledger row (endpoint `mcp`, the tool's name as its
//! model, no tokens) and counts against the key's request rate limits. Stateless (no
//! `Mcp-Session-Id`): any replica answers any call, and nothing is kept between calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lyss_core::memory::{self, Memory, MemoryScope, MemoryStore, NewMemory, SearchQuery};
use lyss_core::pipeline::Endpoint;
use lyss_core::{Call, Error};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::schemars;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use serde::Deserialize;

use super::{bearer, call};
use crate::AppState;
use crate::error::{ApiError, status_and_message};

/// The header naming the app end-user a call is for, as a chat request's `user` field does.
pub const END_USER_HEADER: &str = "x-lyss-user";

/// Results a search returns unless asked for fewer or more (at most [`MAX_RESULTS`]).
const RESULTS: usize = 10;
const MAX_RESULTS: usize = 50;
/// A memory's text in a tool's answer is cut at this many characters: results stay small.
const SHOWN_CHARS: usize = 400;

/// The `/mcp` service: stateless JSON answers, a body no larger than the API's own limit. The
/// SDK's `Host` check (against DNS rebinding of an unauthenticated local server) is off: every
/// call needs the lyss key, which a rebound page does not have, and lyss is reached by many
/// names behind proxies.
pub fn service(state: AppState) -> StreamableHttpService<MemoryTools, NeverSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(state.body_limit)
        .disable_allowed_hosts();
    StreamableHttpService::new(
        move || Ok(MemoryTools::new(state.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// Set by a tool call once its ledger row (and access line) is written, so that the HTTP layer
/// does not write a second line for the same request.
#[derive(Clone, Default)]
struct Recorded(Arc<AtomicBool>);

/// Refuses a request whose key does not check out before the MCP layer sees it (401 in
/// OpenAI's shape, counted by the failed-key throttle), and marks a request whose tool call
/// wrote its own ledger row.
pub async fn authenticate(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    if let Err(e) = s.lyss.authenticate(bearer(req.headers())).await {
        return ApiError(e).into_response();
    }
    let recorded = Recorded::default();
    req.extensions_mut().insert(recorded.clone());
    let resp = next.run(req).await;
    if recorded.0.load(Ordering::Relaxed) {
        lyss_core::telemetry::ledgered();
    }
    resp
}

/// The memory tools, one instance per request.
#[derive(Clone)]
pub struct MemoryTools {
    state: AppState,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SearchArgs {
    /// What to look for: a few words or a question ("where does the user live?").
    query: String,
    /// At most this many memories (default 10, at most 50).
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RememberArgs {
    /// What to remember, as the user would say it, in the first person ("I am vegetarian",
    /// "My sister Ida lives in Lyon"): one fact per call, at most 2,000 characters.
    text: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CorrectArgs {
    /// The memory's id, as search_memories or get_profile show it (in brackets).
    id: String,
    /// The corrected text, replacing the memory's (at most 2,000 characters).
    text: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ForgetArgs {
    /// The memory's id, as search_memories or get_profile show it (in brackets).
    id: String,
}

#[tool_router]
impl MemoryTools {
    fn new(state: AppState) -> Self {
        Self {
            state,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Search what lyss remembers about the user: their earlier conversations (in any chat) and facts they asked to be remembered. One memory per line, best match first: [id] date (who said it, when not the user): text.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn search_memories(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<SearchArgs>,
    ) -> CallToolResult {
        let limit = args
            .limit
            .map_or(RESULTS, |n| usize::try_from(n).unwrap_or(MAX_RESULTS))
            .clamp(1, MAX_RESULTS);
        self.run(&parts, "search_memories", move |store, scope| async move {
            let query = SearchQuery {
                text: lyss_core::memory::clip_query(&args.query),
                limit,
                min_similarity: lyss_core::memory::MIN_SIMILARITY,
            };
            let hits = store.search(&scope, &query).await?;
            Ok(lines(
                hits.iter().map(|h| &h.memory),
                "Nothing remembered matches.",
            ))
        })
        .await
    }

    #[tool(
        description = "Remember something about the user for later conversations, when they ask you to (\"remember that I…\"). Say it as they would, in the first person. What they say about who they are, how they want answers or a lasting constraint (an allergy, units) joins their profile, which reaches every later chat.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn remember(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<RememberArgs>,
    ) -> CallToolResult {
        let dedupe = self.state.lyss.memory_dedupe_similarity();
        self.run(&parts, "remember", move |store, scope| async move {
            let text = lyss_core::memory::one_memory(&args.text)?;
            let new = NewMemory {
                profile: !memory::profile::statements(&text).is_empty(),
                source: Some("mcp".into()),
                occurred_at: Some(time::OffsetDateTime::now_utc()),
                ..NewMemory::fact(text)
            };
            if memory::is_known_as(store.as_ref(), &scope, &new, dedupe).await? {
                return Ok(format!("Already remembered: {}", new.text));
            }
            let m = store.add(&scope, &new).await?;
            let kind = if m.profile { " (profile)" } else { "" };
            Ok(format!("Remembered{kind}: {}", line(&m)))
        })
        .await
    }

    #[tool(
        description = "The user's profile: what they said about themselves that shapes every answer (who they are, how they want answers, constraints), oldest first: [id] date: text.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_profile(&self, Extension(parts): Extension<Parts>) -> CallToolResult {
        self.run(&parts, "get_profile", move |store, scope| async move {
            let profile = store.profile(&scope).await?;
            Ok(lines(profile.iter(), "No profile yet."))
        })
        .await
    }

    #[tool(
        description = "Correct a memory that is wrong or out of date: its text is replaced (the old text stays in its history).",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn correct_memory(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<CorrectArgs>,
    ) -> CallToolResult {
        self.run(&parts, "correct_memory", move |store, scope| async move {
            let text = lyss_core::memory::one_memory(&args.text)?;
            let m = store.update(&scope, &args.id, &text).await?;
            Ok(format!("Corrected: {}", line(&m)))
        })
        .await
    }

    #[tool(
        description = "Forget one memory, when the user asks you to: it is deleted and never recalled again.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn forget_memory(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<ForgetArgs>,
    ) -> CallToolResult {
        self.run(&parts, "forget_memory", move |store, scope| async move {
            store.delete(&scope, &args.id).await?;
            Ok(format!("Forgot [{}].", args.id))
        })
        .await
    }
}

impl MemoryTools {
    /// One tool call: the caller's scope (key and end-user header), the operation, its ledger
    /// row. An error is the tool's answer (the client's model reads it), never a protocol
    /// error; a server-side one says no more than the API's 5xx bodies do.
    async fn run<F>(
        &self,
        parts: &Parts,
        tool: &str,
        op: impl FnOnce(Arc<dyn MemoryStore>, MemoryScope) -> F,
    ) -> CallToolResult
    where
        F: Future<Output = lyss_core::Result<String>>,
    {
        let started = Instant::now();
        let call = Call {
            endpoint: Endpoint::Mcp,
            ..call(&parts.headers)
        };
        let out = async {
            let (store, scope) = self
                .state
                .lyss
                .memory_scope(&call, end_user(parts)?)
                .await?;
            op(store, scope).await
        }
        .await;
        // What the REST API would answer for the same error: its status for the ledger, its
        // message (generic for a 5xx, whose details go to the log) for the client's model.
        let failed = out
            .as_ref()
            .err()
            .map(|e| (status_and_message(e), e.to_string()));
        let status = failed.as_ref().map_or(200, |((s, _), _)| s.as_u16());
        let error = failed.as_ref().map(|(_, e)| e.clone());
        let recorded = self
            .state
            .lyss
            .record_call(&call, tool, status, error, started)
            .await;
        if recorded && let Some(r) = parts.extensions.get::<Recorded>() {
            r.0.store(true, Ordering::Relaxed);
        }
        match (out, failed) {
            (Ok(text), _) => CallToolResult::success(vec![ContentBlock::text(text)]),
            (Err(_), failed) => {
                let message = failed.map(|((_, m), _)| m).unwrap_or_default();
                CallToolResult::error(vec![ContentBlock::text(message)])
            }
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for MemoryTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "lyss-memory",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "What lyss remembers about the user, across all their chats through lyss. \
                 Search it when the user refers to something from before; remember, correct \
                 or forget only when the user asks.",
            )
    }
}

/// The end-user a call is for (`x-lyss-user`), if any (trimmed and checked as every memory
/// API's is, by [`lyss_core::Lyss::memory_scope`]).
fn end_user(parts: &Parts) -> lyss_core::Result<Option<String>> {
    parts
        .headers
        .get(END_USER_HEADER)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| Error::invalid_param("x-lyss-user must be text", END_USER_HEADER))
        })
        .transpose()
}

/// Memories one per line, or `none` when there are none.
fn lines<'a>(memories: impl Iterator<Item = &'a Memory>, none: &str) -> String {
    let out: Vec<String> = memories.map(line).collect();
    if out.is_empty() {
        none.to_owned()
    } else {
        out.join("\n")
    }
}

/// `[id] 2026-12-01 (assistant): text`: the date the remembered thing was said (else stored),
/// who said it when that was not the user, the text on one line and cut short.
fn line(m: &Memory) -> String {
    let day = m.occurred_at.unwrap_or(m.created_at).date();
    let who = match m.role {
        Some(r @ (memory::TurnRole::Assistant | memory::TurnRole::Tool)) => {
            format!(" ({})", r.as_str())
        }
        _ => String::new(),
    };
    let mut text = lyss_core::memory::one_line(&m.text);
    if let Some((cut, _)) = text.char_indices().nth(SHOWN_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    format!("[{}] {day}{who}: {text}", m.id)
}

#[cfg(test)]
mod tests {
    use super::MemoryTools;

    #[test]
    fn memory_knows_these_tools_by_name() {
        // A chat offering only these stays a conversation for memory (`memory::traffic`).
        let mut served: Vec<String> = MemoryTools::tool_router()
            .list_all()
            .into_iter()
            .map(|t| t.name.into_owned())
            .collect();
        served.sort();
        let mut known: Vec<String> = lyss_core::memory::traffic::MEMORY_TOOLS
            .iter()
            .map(|t| t.to_string())
            .collect();
        known.sort();
        assert_eq!(served, known);
    }
}
