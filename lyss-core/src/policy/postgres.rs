//! `PostgresPolicy`: governance shared by every replica of a cluster.
//!
//! Same statements as SQLite ([`super::sql`]). Admission locks each budget's usage row for the
//! period (an `INSERT … ON CONFLICT DO UPDATE` upsert) in budget-id order inside one
//! transaction, so replicas serialize on the budgets they share and `spent + reserved ≤ limit`
//! holds across all of them. Ledger rows commit in the same transaction as their settlement.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::mpsc;

use super::sql::{Job, impl_sql_policy};
use crate::error::{Error, Result};

/// Governance in Postgres.
#[derive(Clone)]
pub struct PostgresPolicy {
    pool: PgPool,
    writer: mpsc::Sender<Job>,
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
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let writer = Self::spawn_writer(pool.clone());
        Ok(Self { pool, writer })
    }

    /// Replicas share the budgets: every reservation lives in the database.
    fn in_process(&self) -> Option<&super::sqlite::Books> {
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
