//! The `Cache` seam: answers stored by key, each with its own time to live, so an identical
//! request is not paid for twice.
//!
//! Keys are built by [`exact_key`]: a scope (a workspace by default — one tenant never sees
//! another's answer) and a hash of the final upstream request. The semantic cache finds an
//! answer by the embedding of the last user message within a [`semantic_partition`]: the same
//! scope and a hash of everything else in the request. Backends: [`InMemoryCache`] (one
//! process, bounded by bytes) and `RedisCache` (shared by replicas).

pub mod answer;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod semantic;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::memory::InMemoryCache;
#[cfg(feature = "redis")]
pub use self::redis::RedisCache;
use crate::error::{Error, Result};
use crate::wire::{ChatRequest, Content, ContentPart, KnownPart, Role};

/// What a cache holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    pub entries: u64,
    /// Bytes held, when the backend knows them cheaply.
    pub bytes: Option<u64>,
}

/// An answer found by similarity.
#[derive(Debug, Clone, PartialEq)]
pub struct Similar {
    pub value: Vec<u8>,
    /// Cosine similarity of the cached question to the one asked.
    pub similarity: f32,
}

/// Bytes by key with a time to live, and lookup by vector within a partition.
///
/// # Contract
/// - `get` returns the value of the last `put` of a key until that put's `ttl` has passed,
///   then nothing. A bounded backend may evict earlier; it never returns another key's value.
/// - `put_vector` files an already `put` key under a vector in a partition, for `ttl`.
///   `get_similar` returns the value of a live key of that partition whose vector has cosine
///   similarity ≥ `min_similarity` to the query, the most similar one it finds (above a few
///   thousand vectors per partition the search is approximate), with that similarity; never
///   a key of another partition, never one whose value has gone. An answer filed through one
///   handle is found through every handle that shares the backend (replicas sharing Redis).
/// - `clear` removes every entry and partition whose name starts with `prefix` (an empty
///   prefix: all of this cache's) and returns how many entries went; others stay.
/// - Failures are [`Error::Unavailable`]. Callers treat them as misses: a cache never fails a
///   request.
#[async_trait]
pub trait Cache: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<()>;
    async fn put_vector(
        &self,
        partition: &str,
        key: &str,
        vector: &[f32],
        ttl: Duration,
    ) -> Result<()>;
    async fn get_similar(
        &self,
        partition: &str,
        vector: &[f32],
        min_similarity: f32,
    ) -> Result<Option<Similar>>;
    async fn clear(&self, prefix: &str) -> Result<u64>;
    async fn stats(&self) -> Result<CacheStats>;
}

/// The exact-cache key of a request in a scope (a prefix ending in `:`): the scope, then a 128-bit hash of everything
/// in the final upstream request that can change the answer — `upstream_model`, the messages
/// (after memory assembly), tools, and every parameter. Only what changes the delivery, not the
/// answer, is left out: `stream`, `stream_options` and the end-user id `user`.
pub fn exact_key(scope: &str, upstream_model: &str, req: &ChatRequest) -> Result<String> {
    let mut canonical = req.clone();
    canonical.model = upstream_model.to_owned();
    Ok(format!("{scope}x:{:032x}", request_hash(canonical)?))
}

/// Where a request's question is looked up by meaning, and the question: the partition is the
/// scope and a hash of everything in the final upstream request but the last user message's
/// text (system prompt, earlier turns, tools, model, parameters) and of the embedder's name,
/// so only questions asked in the same context can match, by vectors of the same model (a
/// cache kept in Redis across an embedder change never compares two models' vectors). `None` when the request does not end with a user message of
/// text alone (an image or a tool result is not a question to compare by meaning).
pub fn semantic_partition(
    scope: &str,
    upstream_model: &str,
    embedder: &str,
    req: &ChatRequest,
) -> Result<Option<(String, String)>> {
    let Some(last) = req.messages.last() else {
        return Ok(None);
    };
    if last.role != Role::User {
        return Ok(None);
    }
    let question = match &last.content {
        Some(Content::Text(t)) => t.clone(),
        Some(c @ Content::Parts(parts))
            if parts
                .iter()
                .all(|p| matches!(p, ContentPart::Known(KnownPart::Text { .. }))) =>
        {
            c.text()
        }
        _ => return Ok(None),
    };
    if question.trim().is_empty() {
        return Ok(None);
    }
    let mut context = req.clone();
    context.model = format!("{upstream_model}\n{embedder}");
    if let Some(m) = context.messages.last_mut() {
        m.content = None;
    }
    Ok(Some((
        format!("{scope}s:{:032x}", request_hash(context)?),
        question,
    )))
}

/// Whether a backend key names a semantic partition rather than an answer.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn is_partition(key: &str) -> bool {
    key.rsplit(':').nth(1) == Some("s")
}

/// A 128-bit hash of a request without what changes only the delivery: `stream`,
/// `stream_options` and the end-user id `user`.
fn request_hash(mut req: ChatRequest) -> Result<u128> {
    req.stream = None;
    req.stream_options = None;
    req.user = None;
    // serde_json's map is ordered by key, so equal requests serialize equally.
    let bytes = serde_json::to_vec(&req).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(xxhash_rust::xxh3::xxh3_128(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: serde_json::Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn the_key_ignores_delivery_and_sees_everything_that_changes_the_answer() {
        let base = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0});
        let key = exact_key("w:1:", "m", &req(base.clone())).unwrap();
        let mut streamed = base.clone();
        streamed["stream"] = true.into();
        streamed["stream_options"] = serde_json::json!({"include_usage": true});
        streamed["user"] = "end-user-9".into();
        assert_eq!(exact_key("w:1:", "m", &req(streamed)).unwrap(), key);
        assert_ne!(exact_key("w:2:", "m", &req(base.clone())).unwrap(), key);
        // The model upstream decides, not the name or alias the client used.
        assert_ne!(exact_key("w:1:", "m2", &req(base.clone())).unwrap(), key);
        let mut alias = base.clone();
        alias["model"] = "an-alias".into();
        assert_eq!(exact_key("w:1:", "m", &req(alias)).unwrap(), key);
        for (field, value) in [
            ("temperature", serde_json::json!(0.7)),
            ("seed", serde_json::json!(1)),
            ("max_tokens", serde_json::json!(5)),
            (
                "tools",
                serde_json::json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            (
                "messages",
                serde_json::json!([{"role": "user", "content": "hi!"}]),
            ),
        ] {
            let mut changed = base.clone();
            changed[field] = value;
            assert_ne!(
                exact_key("w:1:", "m", &req(changed)).unwrap(),
                key,
                "{field}"
            );
        }
    }

    #[test]
    fn the_partition_is_everything_but_the_question() {
        let ask = |system: &str, question: serde_json::Value| {
            req(
                serde_json::json!({"model": "m", "temperature": 0, "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": question},
                ]}),
            )
        };
        let (p1, q1) = semantic_partition(
            "w:1:",
            "m",
            "e",
            &ask("be brief", "Capital of France?".into()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(q1, "Capital of France?");
        assert!(is_partition(&p1) && p1.starts_with("w:1:s:"));
        let (p2, _) = semantic_partition(
            "w:1:",
            "m",
            "e",
            &ask("be brief", "France's capital?".into()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p1, p2, "another question, same context");
        let (p3, _) = semantic_partition(
            "w:1:",
            "m",
            "e",
            &ask("be verbose", "Capital of France?".into()),
        )
        .unwrap()
        .unwrap();
        assert_ne!(p1, p3, "another system prompt");
        let (p4, _) = semantic_partition(
            "w:1:",
            "m",
            "another-embedder",
            &ask("be brief", "Capital of France?".into()),
        )
        .unwrap()
        .unwrap();
        assert_ne!(p1, p4, "another embedder's vectors");
        assert_ne!(
            semantic_partition("w:1:", "m2", "e", &ask("be brief", "x".into()))
                .unwrap()
                .unwrap()
                .0,
            p1
        );
        let parts = serde_json::json!([{"type": "text", "text": "Capital of France?"}]);
        assert_eq!(
            semantic_partition("w:1:", "m", "e", &ask("be brief", parts))
                .unwrap()
                .unwrap()
                .1,
            "Capital of France?"
        );
        let image = serde_json::json!([{"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]);
        assert!(
            semantic_partition("w:1:", "m", "e", &ask("be brief", image))
                .unwrap()
                .is_none()
        );
        let mut tool_result = ask("be brief", "x".into());
        tool_result.messages.push(
            serde_json::from_value(
                serde_json::json!({"role": "tool", "tool_call_id": "c1", "content": "42"}),
            )
            .unwrap(),
        );
        assert!(
            semantic_partition("w:1:", "m", "e", &tool_result)
                .unwrap()
                .is_none()
        );
        assert!(!is_partition(
            &exact_key("w:1:", "m", &tool_result).unwrap()
        ));
    }
}
