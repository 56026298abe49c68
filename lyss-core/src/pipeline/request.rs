//! The pipeline's surface: what an API call brings ([`Call`], its [`Endpoint`], its
//! [`CacheControl`]), what a chat gets back ([`ChatReply`]), and the `x-lyss-*` headers that
//! say what lyss did.

use std::pin::Pin;

use futures::Stream;

use crate::error::Result;
use crate::wire::{ChatChunk, ChatResponse};

/// The response header that tells a caller what is left of its tightest budget.
pub const BUDGET_REMAINING_HEADER: &str = "x-lyss-budget-remaining";

/// Who is calling and how to name the request in logs and the ledger.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// The bearer key as presented (without `Bearer `).
    pub api_key: String,
    pub request_id: String,
    /// The caller opted out of memory for this request (`x-lyss-memory: off`).
    pub no_memory: bool,
    /// The caller's cache instructions (`x-lyss-cache`).
    pub cache: CacheControl,
    /// The similarity a semantic hit needs, if the caller asks for more than its workspace
    /// (`x-lyss-cache-threshold`); a lower value changes nothing.
    pub cache_threshold: Option<f32>,
    /// The API the request came through (the ledger's `endpoint`).
    pub endpoint: Endpoint,
    /// What the request's dialect could not carry to a chat request (fields, tools): said in
    /// `x-lyss-dropped`, never dropped silently.
    pub dropped: Vec<String>,
}

/// The API a request came through (the ledger's `endpoint`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    #[default]
    Chat,
    /// `/v1/responses`.
    Responses,
    /// `/v1/messages`.
    Messages,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/mcp`: a memory tool's call (the row's model is the tool's name).
    Mcp,
}

impl Endpoint {
    /// As the ledger names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Responses => "responses",
            Self::Messages => "messages",
            Self::Embeddings => "embeddings",
            Self::Mcp => "mcp",
        }
    }
}

/// The response header that lists what lyss could not carry to the upstream (fields a client
/// sent that the upstream's API has no place for, tools it cannot run), comma-separated.
pub const DROPPED_HEADER: &str = "x-lyss-dropped";
/// The response header saying a request's output cap was lowered to the model's own
/// (`max_output_tokens`): `asked=…, sent=…`.
pub const OUTPUT_CAPPED_HEADER: &str = "x-lyss-max-tokens-capped";

/// What a request asks of the cache (`x-lyss-cache: no-cache | no-store | refresh`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheControl {
    /// Serve from the cache when possible; store the answer otherwise.
    #[default]
    Default,
    /// Neither read nor store: the cache is skipped.
    NoCache,
    /// Serve from the cache when possible, but do not store a new answer.
    NoStore,
    /// Do not serve from the cache; store the fresh answer (replacing the cached one).
    Refresh,
}

impl CacheControl {
    /// Parses the header value; anything else is the default.
    pub fn parse(value: &str) -> Self {
        match value.trim().to_ascii_lowercase().as_str() {
            "no-cache" => Self::NoCache,
            "no-store" => Self::NoStore,
            "refresh" => Self::Refresh,
            _ => Self::Default,
        }
    }
}

/// The response header that says how the cache answered: `hit`, `semantic-hit` or `miss`.
pub const CACHE_HEADER: &str = "x-lyss-cache";
/// The response header with a semantic hit's similarity to the question asked.
pub const CACHE_SIMILARITY_HEADER: &str = "x-lyss-cache-similarity";
/// The request header that raises the similarity a semantic hit needs.
pub const CACHE_THRESHOLD_HEADER: &str = "x-lyss-cache-threshold";

/// Response headers that report what memory compression saved.
pub const PROMPT_TOKENS_ORIGINAL_HEADER: &str = "x-lyss-prompt-tokens-original";
pub const PROMPT_TOKENS_SENT_HEADER: &str = "x-lyss-prompt-tokens-sent";

/// A chat answer: a whole completion or a stream, plus headers to return to the caller.
pub struct ChatReply {
    pub body: ChatBody,
    /// `x-lyss-*` response headers.
    pub headers: Vec<(&'static str, String)>,
}

/// The body of a chat answer.
pub enum ChatBody {
    Complete(ChatResponse),
    Stream(ChatStream),
}

/// Chunks for the client. Ends after the ledger row is written; a mid-stream failure is
/// yielded once as `Err`, then the stream ends.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatChunk>> + Send>>;
