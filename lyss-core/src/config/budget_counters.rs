//! `[budget_counters]`: where a Postgres cluster keeps its budget counters.

use serde::{Deserialize, Serialize};

/// Where a Postgres cluster keeps its budget counters (`spent`, `reserved`, open holds).
/// SQLite's server always keeps them in its own memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetCountersConfig {
    /// `redis` (`redis_url`): admission is one Lua script, Postgres keeps the ledger and
    /// rebuilds the counters if Redis loses them; `database`: a Postgres transaction per
    /// admission. Default: `redis` when `redis_url` is set. Every replica of a database must
    /// use the same.
    pub store: Option<CounterStore>,
    /// Where in Redis this deployment's budget counters live (every key starts with it).
    /// Default `lyss:budget:`; deployments sharing one Redis each need their own.
    pub redis_prefix: String,
}

impl Default for BudgetCountersConfig {
    fn default() -> Self {
        Self {
            store: None,
            redis_prefix: "lyss:budget:".into(),
        }
    }
}

/// Where budget counters live; see [`BudgetCountersConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CounterStore {
    Redis,
    Database,
}
