//! `[router]`: retries, backoff, circuit breakers, and built-in tools an upstream cannot run.

use serde::{Deserialize, Serialize};

/// How a request reaches a model's targets when one fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Further attempts at one target after a retryable failure (connection, timeout, 429,
    /// 5xx) before falling back to the next target. Default 2.
    pub retries: u32,
    /// First backoff in milliseconds; doubles each attempt, with jitter. Default 100.
    pub backoff_ms: u64,
    /// Longest backoff. A `Retry-After` longer than this moves on to the next target instead
    /// of waiting. Default 2,000.
    pub max_backoff_ms: u64,
    /// Consecutive failures that open a target's circuit (it is skipped). Default 5.
    pub breaker_failures: u32,
    /// Seconds an open circuit waits before one probe request may try the target again.
    /// Default 30.
    pub breaker_cooldown_secs: u64,
    /// What a request with OpenAI's built-in tools (web search) gets from a model whose
    /// upstream cannot run them (anything but OpenAI's Responses API): `"drop"` (default) — an
    /// answer without the tool, the response saying so in `x-lyss-dropped` — or `"refuse"`
    /// (400).
    pub builtin_tools: BuiltinTools,
}

/// What happens to built-in tools an upstream cannot run ([`RouterConfig::builtin_tools`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuiltinTools {
    /// Answered without them, and said so (a coding agent's default web search should not
    /// fail every turn behind a local model).
    #[default]
    Drop,
    /// Refused with 400.
    Refuse,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            retries: 2,
            backoff_ms: 100,
            max_backoff_ms: 2_000,
            breaker_failures: 5,
            breaker_cooldown_secs: 30,
            builtin_tools: BuiltinTools::Drop,
        }
    }
}
