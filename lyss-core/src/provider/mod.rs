//! The `Provider` seam: one upstream LLM API each, spoken in OpenAI's shapes.

pub mod anthropic;
pub mod gemini;
mod http;
mod kind;
pub mod openai;
mod router;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

pub use self::anthropic::AnthropicProvider;
pub use self::gemini::GeminiProvider;
pub use self::openai::OpenAiProvider;
pub use self::router::{BreakerStatus, Router, Target, retryable};
pub use crate::config::ProviderKind;
use crate::error::Result;
use crate::wire::{ChatChunk, ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse};

/// Refuses a request with OpenAI's built-in tools (web search): only an OpenAI upstream's
/// Responses API runs them.
pub(crate) fn no_builtin_tools(req: &ChatRequest) -> Result<()> {
    match &req.builtin_tools {
        Some(_) => Err(crate::Error::invalid_param(
            "built-in tools (web search) run only on an OpenAI upstream; this model's provider has none",
            "tools",
        )),
        None => Ok(()),
    }
}

/// A stream of chat chunks from upstream.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk>> + Send>>;

/// One upstream API (OpenAI-compatible, Anthropic, …) behind OpenAI's request and response types.
///
/// # Contract
/// - `req.model` is already the *upstream* model name; the provider sends it as is.
/// - Errors the upstream reports before any output (bad status, refused connection, timeout
///   waiting for the response head) are returned as `Err` from the call itself, never inside a
///   stream, so the server can still answer with an HTTP status.
///   Upstream status codes become [`crate::Error::Upstream`], unreachable upstreams and bodies
///   that cannot be parsed [`crate::Error::UpstreamUnavailable`], timeouts
///   [`crate::Error::UpstreamTimeout`].
/// - `chat_stream` yields chunks in upstream order and ends after the upstream's last chunk.
///   A failure mid-stream is yielded once as `Err`, after which the stream ends. If the request
///   has `stream_options.include_usage`, the final usage chunk is passed on when the upstream
///   sends one; providers never invent usage.
/// - Dropping a stream cancels the upstream request.
/// - Implementations hold no per-request state and are shared across tasks (`Arc<dyn Provider>`).
#[async_trait]
pub trait Provider: Send + Sync {
    /// The configured provider name (for logs and the ledger).
    fn name(&self) -> &str;

    /// A non-streaming chat completion.
    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse>;

    /// A streaming chat completion.
    async fn chat_stream(&self, req: &ChatRequest) -> Result<ChunkStream>;

    /// Embeddings; the response always carries float vectors.
    async fn embeddings(&self, req: &EmbeddingsRequest) -> Result<EmbeddingsResponse>;

    /// The upstream's model ids.
    async fn list_models(&self) -> Result<Vec<String>>;

    /// Whether the upstream keeps a repeated prompt prefix in a prompt cache that lyss helps
    /// (breakpoints, a cache key) and bills it cheaper: the memory stage then weighs what a
    /// warm cache makes cheap against what compressing saves. Default: no.
    fn caches_prompts(&self) -> bool {
        false
    }

    /// Whether the upstream runs OpenAI's built-in tools (web search) itself: only OpenAI's
    /// Responses API does. Without it, the pipeline drops them (or refuses the request, as
    /// configured). Default: no.
    fn runs_builtin_tools(&self) -> bool {
        false
    }
}
