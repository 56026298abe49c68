//! Conformance suites: the behaviour every backend of a seam must have, written once.
//!
//! A backend's test file applies the suite's macro with a factory that returns a fresh,
//! empty store, which generates one `#[tokio::test]` per case:
//!
//! ```ignore
//! lyss_core::policy_conformance!(async { Some(std::sync::Arc::new(
//!     lyss_core::SqlitePolicy::connect("sqlite::memory:").await.unwrap())) });
//! ```
//!
//! A factory returns `None` to skip (a service URL unset outside CI, see [`services`]).

#![allow(clippy::expect_used, clippy::unwrap_used)] // Suites panic on purpose: they are tests.

pub mod cache;
pub mod embed;
pub mod memory;
pub mod policy;
pub mod provider;
pub mod ratelimit;
pub mod services;
