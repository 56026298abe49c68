//! `PostgresPolicy`: governance shared by every replica of a cluster.
//!
//! Same statements as SQLite ([`super::sql`]). Admission locks each budget's usage row for the
//! period (an `INSERT … ON CONFLICT DO UPDATE` upsert) in budget-id order inside one
//! transaction, so replicas serialize on the budgets they share and `spent + reserved ≤ limit`
//! holds across all of them. Ledger rows commit in the same transaction as their settlement.
//!
//! With [`PostgresPolicy::with_redis_counters`] the budget counters move to Redis
//! ([`super::counters::redis`]): admission is one Lua script instead of a transaction on shared rows, and
//! Postgres keeps the ledger, the spend and the hold rows it rebuilds the counters from.

use std::str::FromStr as _;
#[cfg(feature = "redis")]
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::mpsc;

use super::budget::writer::Job;
use super::sql::impl_sql_policy;
use crate::error::{Error, Result};

#[cfg(feature = "redis")]
use super::counters::redis as counters;

/// Governance in Postgres.
#[derive(Clone)]
pub struct PostgresPolicy {
    pool: PgPool,
    writer: mpsc::Sender<Job>,
    #[cfg(feature = "redis")]
    counters: Option<Arc<counters::RedisCounters>>,
    /// How to connect again (the hold rows' own pool).
    #[cfg(feature = "redis")]
    opts: PgConnectOptions,
}

impl std::fmt::Debug for PostgresPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresPolicy").finish_non_exhaustive()
    }
}

impl PostgresPolicy {
    /// Connects to `url` (`postgres://user@host/db`) and applies migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("database_url: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            // No ping before every checkout (a round trip each): a connection that a Postgres
            // restart broke fails its statement once — refused, or a settlement retried — and
            // sqlx's ping on release drops it.
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let writer = Self::spawn_writer(pool.clone());
        Ok(Self {
            pool,
            writer,
            #[cfg(feature = "redis")]
            counters: None,
            #[cfg(feature = "redis")]
            opts,
        })
    }

    /// Keeps the budget counters in Redis at `redis_url` under keys starting with `prefix`
    /// (one prefix per database: replicas of one cluster share it). Every replica of the
    /// database must use the same counters. What lives where, and how the counters are rebuilt
    /// after Redis loses them: docs/governance.md, "Budget counters in Redis".
    #[cfg(feature = "redis")]
    pub async fn with_redis_counters(mut self, redis_url: &str, prefix: &str) -> Result<Self> {
        let holds = PgPoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .test_before_acquire(false)
            // Hold rows are read back only to rebuild the counters after Redis lost them:
            // they need not wait for the disk (a Postgres crash loses at most the last fraction
            // of a second of them, while Redis still holds them).
            .connect_with(self.opts.clone().options([("synchronous_commit", "off")]))
            .await?;
        self.counters = Some(
            counters::RedisCounters::connect(
                self.pool.clone(),
                holds,
                self.writer.clone(),
                redis_url,
                prefix,
            )
            .await?,
        );
        Ok(self)
    }

    /// Makes the next process with Redis counters under `prefix` rebuild them: a server that
    /// keeps its counters in the database forgets any left in Redis, since they miss what it
    /// spends.
    #[cfg(feature = "redis")]
    pub async fn forget_redis_counters(redis_url: &str, prefix: &str) -> Result<()> {
        counters::forget(redis_url, prefix).await
    }

    /// Budget counters in Redis ([`Self::with_redis_counters`]), else in the database.
    fn counters(&self) -> Option<&dyn super::counters::Counters> {
        #[cfg(feature = "redis")]
        if let Some(c) = &self.counters {
            return Some(&**c);
        }
        None
    }

    /// Any replica may reserve.
    fn may_reserve(&self) -> Result<()> {
        Ok(())
    }
}

impl_sql_policy!(
    PostgresPolicy,
    sqlx::Postgres,
    PgPool,
    sqlx::PgConnection,
    sqlx::postgres::PgRow,
    "BEGIN",
    true
);
