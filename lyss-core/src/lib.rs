//! # lyss-core
//!
//! A cost-first LLM gateway as a library: virtual keys and allow-lists, a usage ledger, and an
//! OpenAI-compatible request pipeline in front of upstream providers. `lyss-server` (HTTP) and
//! `lyss` (admin CLI) are thin apps over this crate; a Rust program can embed it the same way.
//!
//! ## The seams
//! | trait | contract | backends here |
//! |---|---|---|
//! | [`Policy`] | keys → principal, allow-lists, budgets (reserve/settle), durable ledger | [`SqlitePolicy`], `PostgresPolicy` |
//! | [`ratelimit::RateLimiter`] | requests/tokens per minute, all limits or none | in process, Redis |
//! | [`memory::MemoryStore`] | scoped long-term memories, hybrid search, history | SQLite or Postgres + in-process HNSW/BM25 |
//! | [`cache::Cache`] | answers by key with a TTL, never across scopes | [`cache::InMemoryCache`] (bounded by bytes), `cache::RedisCache` |
//! | [`embed::Embedder`] | texts → unit vectors of one dimension | local ONNX model, OpenAI-compatible, hash |
//! | [`Provider`] | one upstream API in OpenAI's shapes | [`OpenAiProvider`] (any OpenAI-compatible API) |
//!
//! [`Lyss`] composes them into the one request path ([`pipeline`]); [`setup`] builds it from
//! [`Config`]. Each trait has a conformance suite in `testing` that every backend runs.
//!
//! ## Cargo features
//! On by default, but `testing` (`lyss-server` and `lyss` use all the others). With
//! `default-features = false` an app gets SQLite and the in-process parts (HNSW/BM25 memory, cache, rate limits), with no
//! Postgres driver, Redis client or ONNX Runtime compiled in; a config that asks for one of
//! them is refused at start with the feature to turn on.
//! - `postgres`: `PostgresPolicy`, `memory::PostgresMemoryStore` (`postgres://` URLs)
//! - `redis`: `ratelimit::RedisRateLimiter`, `cache::RedisCache` (`redis_url`)
//! - `local-embeddings`: `embed::LocalEmbedder` (`[embedder] kind = "local"`; without it,
//!   memory recalls by keywords)
//! - `testing` (off by default; tests turn it on): the conformance suites and the helpers that
//!   reach test services
//!
//! ```no_run
//! # async fn demo() -> lyss_core::Result<()> {
//! use std::sync::Arc;
//! use lyss_core::{Lyss, SqlitePolicy};
//! // This process serves the file: reservations held in memory, settlements on disk.
//! let policy = Arc::new(SqlitePolicy::serve("sqlite://lyss.db").await?);
//! let lyss = Lyss::builder(policy).build();
//! # Ok(()) }
//! ```

pub mod cache;
pub mod clock;
pub mod config;
pub mod dialects;
pub mod embed;
pub mod error;
pub mod memory;
pub mod models;
pub mod pipeline;
pub mod policy;
pub mod price;
pub mod provider;
pub mod ratelimit;
#[cfg(feature = "redis")]
mod redis_conn;
pub mod secrets;
mod settlement;
pub mod setup;
mod sqlite;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokens;
pub mod vectors;
pub mod wire;

pub use config::Config;
pub use error::{Error, Result};
pub use models::{Model, ModelRegistry};
pub use pipeline::{Call, ChatBody, ChatReply, ChatStream, Lyss};
#[cfg(feature = "postgres")]
pub use policy::PostgresPolicy;
pub use policy::{Policy, Principal, SqlitePolicy};
pub use price::Price;
pub use provider::{OpenAiProvider, Provider};
