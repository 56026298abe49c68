//! Budget counters kept outside the database's tables, so that admission costs no database
//! transaction: in the one process serving a SQLite file ([`in_process::Books`]), or in
//! Redis for every replica of a Postgres cluster ([`redis::RedisCounters`], its Lua in
//! [`redis_scripts`]). The SQL policy hands its budget calls to them when present; the database
//! stays the record of spend (settlements and their ledger rows) either way.

pub(crate) mod in_process;
#[cfg(all(feature = "postgres", feature = "redis"))]
pub(crate) mod redis;
#[cfg(all(feature = "postgres", feature = "redis"))]
mod redis_scripts;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::budget::{Ask, Budget, BudgetStatus};
use super::{BudgetLeft, LedgerEntry, Payer, Reservation};
use crate::error::Result;
use crate::price::Price;

/// How long budget definitions read from the database are used before being read again: a
/// limit lowered elsewhere (the admin's `lyss`, another replica) applies within a second.
pub(crate) const DEFINITIONS_FRESH: Duration = Duration::from_millis(500);

/// Reservations and usage counters held outside the database's tables.
///
/// # Contract
/// The [`super::Budgets`] contract for these calls — the invariant `spent + reserved ≤ limit`
/// on every budget, all-or-nothing admission, settlement durable (spend and ledger row in the
/// database) before it returns — plus: [`Counters::definitions_changed`] makes the next
/// admission read budget definitions again.
#[async_trait]
pub(crate) trait Counters: Send + Sync {
    async fn reserve(
        &self,
        payer: Payer<'_>,
        ask: &Ask,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<Reservation>;
    async fn top_up(&self, reservation: &Reservation, price: Price, want: u32) -> Result<u32>;
    async fn settle(&self, reservation: &Reservation, entry: &LedgerEntry) -> Result<BudgetLeft>;
    async fn release_expired(&self, now: OffsetDateTime) -> Result<u64>;
    /// Replaces the database's `spent`/`reserved` with what the counters hold.
    async fn overlay(&self, statuses: &mut [BudgetStatus]) -> Result<()>;
    /// Budget definitions changed through this process.
    fn definitions_changed(&self);
}

/// Budgets by the scope id (workspace, user or key) they are attached to.
pub(crate) type Definitions = Arc<HashMap<String, Vec<Budget>>>;

/// Budget definitions read at most every [`DEFINITIONS_FRESH`], and again at once after a
/// change made through this process.
#[derive(Default)]
pub(crate) struct DefinitionCache {
    /// When read, at which [`Self::changes`], and what.
    read: RwLock<Option<(Instant, u64, Definitions)>>,
    /// Changes made through this process: a read that overlapped one is not reused.
    changes: AtomicU64,
}

impl DefinitionCache {
    pub(crate) fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// The definitions, from `load` (every budget) when those held are too old.
    pub(crate) async fn get<F>(&self, load: impl FnOnce() -> F) -> Result<Definitions>
    where
        F: Future<Output = Result<Vec<Budget>>>,
    {
        let changes = self.changes.load(Ordering::Acquire);
        if let Some((at, seen, defs)) = &*self.read.read().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < DEFINITIONS_FRESH
            && *seen == changes
        {
            return Ok(defs.clone());
        }
        let read_at = Instant::now();
        let mut by_scope: HashMap<String, Vec<Budget>> = HashMap::new();
        for b in load().await? {
            by_scope.entry(b.scope_id.clone()).or_default().push(b);
        }
        let defs = Arc::new(by_scope);
        *self.read.write().unwrap_or_else(|e| e.into_inner()) =
            Some((read_at, changes, defs.clone()));
        Ok(defs)
    }
}

/// The budgets that apply to `payer`, in id order (the order holds are taken in).
pub(crate) fn budgets_of(definitions: &Definitions, payer: Payer<'_>) -> Vec<Budget> {
    let mut budgets: Vec<Budget> = [payer.workspace_id, payer.user_id, payer.key_id]
        .into_iter()
        .flat_map(|id| definitions.get(id).into_iter().flatten())
        .cloned()
        .collect();
    budgets.sort_by(|a, b| a.id.cmp(&b.id));
    budgets.dedup_by(|a, b| a.id == b.id);
    budgets
}
