//! Client-facing dialects: the APIs clients speak to lyss besides chat completions, each
//! translated to a chat request that runs through the one pipeline (keys, allow-lists,
//! budgets, limits, memory, cache, ledger) and reaches every upstream kind, and its answer
//! translated back.
//!
//! - [`messages`]: Anthropic's Messages API (`POST /v1/messages`; Claude Code, the `anthropic`
//!   SDKs).
//! - [`responses`]: OpenAI's Responses API (`POST /v1/responses`; Codex CLI, the `openai`
//!   SDKs' `responses`), with the conversations lyss keeps for `previous_response_id`.
//!
//! A new dialect goes here, as a module of its own; `provider/` holds only what lyss speaks
//! to upstreams.

pub mod messages;
pub mod responses;
