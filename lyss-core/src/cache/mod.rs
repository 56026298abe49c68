//! The `Cache` seam: answers stored by key, each with its own time to live, so an identical
//! request is not paid for twice.
//!
//! Keys are built by [`exact_key`]: a scope (a workspace by default — one tenant never sees
//! another's answer) and a hash of the final upstream request. Backends: [`InMemoryCache`]
//! (one process, bounded by bytes) and [`RedisCache`] (shared by replicas).

pub mod answer;
mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::memory::InMemoryCache;
pub use self::redis::RedisCache;
use crate::error::{Error, Result};
use crate::openai::ChatRequest;

/// What a cache holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    pub entries: u64,
    /// Bytes held, when the backend knows them cheaply.
    pub bytes: Option<u64>,
}

/// Bytes by key with a time to live.
///
/// # Contract
/// - `get` returns the value of the last `put` of a key until that put's `ttl` has passed,
///   then nothing. A bounded backend may evict earlier; it never returns another key's value.
/// - `clear` removes every entry whose key starts with `prefix` (an empty prefix: all of
///   this cache's entries) and returns how many went; entries of other prefixes stay.
/// - Failures are [`Error::Unavailable`]. Callers treat them as misses: a cache never fails a
///   request.
#[async_trait]
pub trait Cache: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<()>;
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
    canonical.stream = None;
    canonical.stream_options = None;
    canonical.user = None;
    // serde_json's map is ordered by key, so equal requests serialize equally.
    let bytes = serde_json::to_vec(&canonical).map_err(|e| Error::Internal(e.to_string()))?;
    let hash = xxhash_rust::xxh3::xxh3_128(&bytes);
    Ok(format!("{scope}x:{hash:032x}"))
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
}
