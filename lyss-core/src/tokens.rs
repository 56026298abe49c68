//! Token counting with the model family's real tokenizer: prompts at budget admission, and
//! answers when an upstream does not report usage (tokens that flowed are never recorded as
//! zero).
//!
//! The encodings are OpenAI's `o200k_base` and `cl100k_base` as implemented by `bpe-openai`,
//! whose counts equal tiktoken's (checked on every text of the LOCOMO dev split and the client
//! fixtures) but whose time is linear in the text whatever it holds: tiktoken's byte-pair merge
//! is quadratic on a long run of one character (150,000 × "a" took 4–14 s) and its regex
//! overflowed its stack on a megabyte of them. Hostile text is a prompt like any other.
//!
//! A long text (over [`INLINE_BYTES`]) is counted with `block_in_place` when the caller runs on
//! a multi-threaded Tokio runtime, so the worker's other tasks move to another thread instead
//! of waiting for it (a 2 MB prompt takes ~20 ms).
//!
//! Chat clients resend the whole conversation every turn, so the same message texts are counted
//! again and again; counts are remembered by a 128-bit hash of the text, which makes
//! re-counting a history (or a system prompt sent with every request) cost a hash instead of a
//! tokenization.

use std::sync::OnceLock;

use bpe_openai::Tokenizer;

use crate::wire::{ChatRequest, Content, ContentPart, KnownPart, Message};

/// What an image in a prompt is assumed to cost before the provider says: a high-detail
/// 1024×1024 tile set on GPT-4o-class models. Settlement uses the provider's real count.
pub const IMAGE_TOKENS: u64 = 1_105;

/// The encoding for an upstream model: `o200k_base` for the GPT-4o/4.1/5 and o-series
/// families, `cl100k_base` (the closest public approximation) for everything else.
fn bpe_for(model: &str) -> &'static Tokenizer {
    if is_o200k(model) {
        bpe_openai::o200k_base()
    } else {
        bpe_openai::cl100k_base()
    }
}

fn is_o200k(model: &str) -> bool {
    let m = model.rsplit('/').next().unwrap_or(model);
    m.starts_with("gpt-4o")
        || m.starts_with("gpt-4.1")
        || m.starts_with("gpt-4.5")
        || m.starts_with("gpt-5")
        || m.starts_with("chatgpt-4o")
        || (m.starts_with('o') && m[1..].starts_with(|c: char| c.is_ascii_digit()))
}

/// Whether the count is the model's own: OpenAI's families. Others (Claude, Gemini, Llama …)
/// are counted with `cl100k_base`, an approximation that can fall short of their tokenizers.
pub fn is_exact(model: &str) -> bool {
    let m = model.rsplit('/').next().unwrap_or(model);
    is_o200k(m) || m.starts_with("gpt-4") || m.starts_with("gpt-3.5")
}

/// Loads both tokenizers now (≈70 ms), so that the first request that needs a count does not
/// wait for them. Blocking: call from `spawn_blocking`.
pub fn warm_up() {
    let _ = (bpe_openai::o200k_base(), bpe_openai::cl100k_base());
}

/// Texts longer than this are counted off the async worker (`block_in_place`): about 0.3 ms
/// of tokenizer time.
pub const INLINE_BYTES: usize = 32 * 1024;

fn counts() -> &'static moka::sync::Cache<(bool, u128), u64> {
    static CACHE: OnceLock<moka::sync::Cache<(bool, u128), u64>> = OnceLock::new();
    CACHE.get_or_init(|| moka::sync::Cache::new(200_000))
}

/// Tokens in a piece of text, remembered by its hash: even a short text costs the tokenizer
/// microseconds, a lookup nanoseconds.
pub fn count_text(model: &str, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    let key = (
        is_o200k(model),
        xxhash_rust::xxh3::xxh3_128(text.as_bytes()),
    );
    if let Some(n) = counts().get(&key) {
        return n;
    }
    let n = count_text_uncached(model, text);
    counts().insert(key, n);
    n
}

/// [`count_text`] without the cache. Linear in the text's length; a long text is counted off
/// the async worker when there is one to hand the worker's tasks to.
pub fn count_text_uncached(model: &str, text: &str) -> u64 {
    let count = || bpe_for(model).count(text) as u64;
    let threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if text.len() > INLINE_BYTES && threaded {
        tokio::task::block_in_place(count)
    } else {
        count()
    }
}

/// Prompt tokens of a message list, counted the way OpenAI documents for chat models:
/// each message costs its content plus 3 framing tokens (4 with a name), and the reply is
/// primed with 3 more.
pub fn count_messages(model: &str, messages: &[Message]) -> u64 {
    let per_message: u64 = messages
        .iter()
        .map(|m| {
            let content = m.content.as_ref().map(|c| c.text()).unwrap_or_default();
            let tools = m
                .tool_calls
                .as_ref()
                .and_then(|t| serde_json::to_string(t).ok())
                .unwrap_or_default();
            let images = match &m.content {
                Some(Content::Parts(parts)) => parts
                    .iter()
                    .filter(|p| matches!(p, ContentPart::Known(KnownPart::ImageUrl { .. })))
                    .count() as u64,
                _ => 0,
            };
            3 + u64::from(m.name.is_some())
                + count_text(model, &content)
                + count_text(model, &tools)
                + images * IMAGE_TOKENS
        })
        .sum();
    per_message + 3
}

/// Tokens of an embeddings input (pre-tokenized input counts its tokens).
pub fn count_embedding_input(model: &str, input: &crate::wire::EmbeddingInput) -> u64 {
    use crate::wire::EmbeddingInput as I;
    match input {
        I::One(s) => count_text(model, s),
        I::Many(v) => v.iter().map(|s| count_text(model, s)).sum(),
        I::Tokens(t) => t.len() as u64,
        I::ManyTokens(t) => t.iter().map(|v| v.len() as u64).sum(),
    }
}

/// Prompt tokens of a whole request: its messages plus its tool declarations.
pub fn count_request(model: &str, req: &ChatRequest) -> u64 {
    let tools = req
        .tools
        .as_ref()
        .and_then(|t| serde_json::to_string(t).ok())
        .map(|t| count_text(model, &t))
        .unwrap_or(0);
    count_messages(model, &req.messages) + tools
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Role;

    #[test]
    fn counts_with_the_model_family_encoding() {
        // "hello world" is two tokens in both encodings.
        assert_eq!(count_text("gpt-4o-mini", "hello world"), 2);
        assert_eq!(count_text("llama3", "hello world"), 2);
        assert!(count_text("gpt-4o", &"word ".repeat(100)) >= 100);
    }

    #[test]
    fn cached_counts_equal_fresh_ones_per_encoding() {
        let long = "The borrow checker keeps references valid. ".repeat(40);
        let fresh = count_text_uncached("gpt-4o", &long);
        assert_eq!(count_text("gpt-4o", &long), fresh);
        assert_eq!(count_text("gpt-4o", &long), fresh, "second (cached) count");
        // Same text, other encoding: its own entry.
        assert_eq!(
            count_text("llama3", &long),
            count_text_uncached("llama3", &long)
        );
    }

    #[test]
    fn counts_equal_tiktokens_published_ones() {
        // As tiktoken counts them (OpenAI's cookbook examples).
        assert_eq!(count_text_uncached("gpt-4", "hello world"), 2);
        assert_eq!(
            count_text_uncached("gpt-4", "tiktoken is great!"),
            6,
            "cl100k_base"
        );
        assert_eq!(count_text_uncached("gpt-4o", "tiktoken is great!"), 6);
        assert_eq!(
            count_text_uncached("gpt-4", "antidisestablishmentarianism"),
            6
        );
    }

    #[test]
    fn hostile_runs_of_one_character_count_in_linear_time_without_a_panic() {
        // tiktoken took seconds on 150k of these and overflowed its stack on 1 MB.
        let run = "a".repeat(2_000_000);
        assert_eq!(count_text_uncached("gpt-4o", &run), 250_000);
        assert_eq!(count_text_uncached("llama3", &run), 250_000);
        assert!(count_text_uncached("gpt-4o", &" ".repeat(1_000_000)) > 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_text_is_counted_off_the_worker_and_counts_the_same() {
        let long = "word ".repeat(INLINE_BYTES);
        let on_runtime = count_text_uncached("gpt-4o", &long);
        let off = std::thread::spawn(move || count_text_uncached("gpt-4o", &long))
            .join()
            .unwrap();
        assert_eq!(on_runtime, off);
    }

    #[test]
    fn message_framing_is_counted() {
        let msgs = vec![Message::text(Role::User, "hello world")];
        assert_eq!(count_messages("gpt-4o", &msgs), 3 + 2 + 3);
    }
}
