//! The budget algorithm, written once for every SQL backend.
//!
//! A backend provides [`BudgetTx`]: a handful of statements run inside *one* of its write
//! transactions. [`run_jobs`] composes them for a batch of jobs, so a reservation is
//! all-or-nothing across budgets and a settlement commits together with its ledger row
//! (durable before acknowledged).
//!
//! Lock order: before any job runs, the batch locks every budget-usage row it will touch, in
//! one global order (budget id, period). Replicas that run batches at the same time therefore
//! wait for each other but never deadlock — a deadlock would stall both for the database's
//! detection timeout, long enough for reservations to outlive their requests.

use std::collections::{BTreeSet, HashMap};

use time::OffsetDateTime;

use super::budget::{self, Ask, Budget, BudgetStatus};
use super::sql::{Job, Outcome};
use super::{BudgetLeft, Hold, LedgerEntry, Principal, Reservation};
use crate::error::Result;
use crate::models::Price;

/// Statements of one write transaction. Row-locking backends lock the usage rows they read.
#[allow(async_fn_in_trait)]
pub(crate) trait BudgetTx: Send {
    /// Whether concurrent transactions can touch the same rows (Postgres), so that a batch must
    /// lock its usage rows up front in one global order. SQLite's `BEGIN IMMEDIATE` already
    /// serializes writers.
    const LOCKS_ROWS: bool;

    /// Budgets attached to any of these scope ids (workspace, user, key), ordered by id.
    async fn budgets_for(&mut self, scope_ids: &[&str]) -> Result<Vec<Budget>>;
    /// `(spent, reserved)` of a budget's period, creating the row at zero if needed.
    async fn usage_row(&mut self, budget_id: &str, period_start: i64) -> Result<(i64, i64)>;
    /// Adds to `spent` and `reserved` (either may be negative); returns the new pair.
    async fn add_usage(
        &mut self,
        budget_id: &str,
        period_start: i64,
        spent: i64,
        reserved: i64,
    ) -> Result<(i64, i64)>;
    /// Records a reservation's holds (one statement).
    async fn insert_holds(
        &mut self,
        reservation_id: &str,
        holds: &[Hold],
        expires_at: i64,
    ) -> Result<()>;
    /// Adds to one hold's amount and returns the new one; `None` if it was already released.
    async fn grow_hold(
        &mut self,
        reservation_id: &str,
        budget_id: &str,
        by: i64,
    ) -> Result<Option<i64>>;
    /// Removes one hold and returns its amount; `None` if it was already released.
    async fn take_hold(&mut self, reservation_id: &str, budget_id: &str) -> Result<Option<i64>>;
    /// Removes all holds of a reservation: `(budget_id, amount)` of those still there.
    async fn take_holds(&mut self, reservation_id: &str) -> Result<Vec<(String, i64)>>;
    /// Holds that expired at or before `now` (read only): `(reservation id, budget_id,
    /// period_start)`.
    async fn expired_holds(&mut self, now: i64) -> Result<Vec<(String, String, i64)>>;
    async fn insert_ledger(&mut self, entry: &LedgerEntry) -> Result<()>;
}

/// The usage rows a batch has read or written, so a job sees the ones before it without
/// reading them again.
#[derive(Default)]
struct Rows(HashMap<(String, i64), (i64, i64)>);

impl Rows {
    async fn get<T: BudgetTx>(
        &mut self,
        tx: &mut T,
        budget_id: &str,
        start: i64,
    ) -> Result<(i64, i64)> {
        if let Some(v) = self.0.get(&(budget_id.to_owned(), start)) {
            return Ok(*v);
        }
        let v = tx.usage_row(budget_id, start).await?;
        self.0.insert((budget_id.to_owned(), start), v);
        Ok(v)
    }

    async fn add<T: BudgetTx>(
        &mut self,
        tx: &mut T,
        budget_id: &str,
        start: i64,
        spent: i64,
        reserved: i64,
    ) -> Result<(i64, i64)> {
        let v = tx.add_usage(budget_id, start, spent, reserved).await?;
        self.0.insert((budget_id.to_owned(), start), v);
        Ok(v)
    }
}

/// Admits and reserves, or refuses. The outer error is a store failure (roll back); the inner
/// one a refusal (nothing was written).
async fn reserve_in<T: BudgetTx>(
    tx: &mut T,
    rows: &mut Rows,
    budgets: Vec<Budget>,
    who: &Principal,
    ask: &Ask,
    now: OffsetDateTime,
    ttl: std::time::Duration,
) -> Result<Result<Reservation>> {
    let mut states = Vec::with_capacity(budgets.len());
    for mut b in budgets {
        b.scope_name = match b.scope {
            budget::Scope::Workspace => who.workspace_name.clone(),
            budget::Scope::User => who.user_name.clone(),
            budget::Scope::Key => who.key_id.clone(),
        };
        let (period_start, resets) = match b.period.bounds(now, b.tz.as_deref()) {
            Ok(bounds) => bounds,
            Err(e) => return Ok(Err(e)),
        };
        let (spent, reserved) = rows.get(tx, &b.id, period_start).await?;
        states.push(BudgetStatus {
            period_start,
            resets_at: resets.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok()),
            spent,
            reserved,
            budget: b,
        });
    }
    let admitted = match budget::admit(&states, ask, now) {
        Ok(a) => a,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let id = uuid::Uuid::now_v7().to_string();
    // Rounded up: a hold never expires before `ttl` has passed.
    let deadline = now + ttl;
    let expires_at = deadline.unix_timestamp() + i64::from(deadline.nanosecond() > 0);
    let mut holds = Vec::with_capacity(states.len());
    let mut left = BudgetLeft::default();
    for (s, amount) in states.iter().zip(&admitted.amounts) {
        let hold = Hold {
            budget_id: s.budget.id.clone(),
            unit: s.budget.unit,
            period_start: s.period_start,
            amount: *amount,
            limit: s.budget.limit,
        };
        let (spent, reserved) = rows
            .add(tx, &hold.budget_id, hold.period_start, 0, *amount)
            .await?;
        left.note(hold.unit, hold.limit - spent - reserved);
        holds.push(hold);
    }
    if !holds.is_empty() {
        tx.insert_holds(&id, &holds, expires_at).await?;
    }
    Ok(Ok(Reservation {
        id,
        holds,
        set_max_tokens: admitted.set_max_tokens,
        output: admitted.output,
        ceiling: admitted.ceiling,
        left,
    }))
}

/// Grows every hold of a reservation by `want` output tokens, or as many as the tightest of
/// its budgets can still take; returns the tokens granted. A released hold (settled, reaped)
/// grants nothing: the request it belonged to is over.
async fn top_up_in<T: BudgetTx>(
    tx: &mut T,
    rows: &mut Rows,
    reservation: &Reservation,
    price: &Price,
    want: u32,
) -> Result<u32> {
    let mut rooms = Vec::with_capacity(reservation.holds.len());
    for h in &reservation.holds {
        let (spent, reserved) = rows.get(tx, &h.budget_id, h.period_start).await?;
        rooms.push((h.unit, h.limit - spent - reserved));
    }
    let granted = budget::grant(&rooms, price, want);
    if granted == 0 {
        return Ok(0);
    }
    let mut all_held = true;
    for h in &reservation.holds {
        let by = i64::from(granted).saturating_mul(budget::per_output_token(h.unit, price));
        if tx
            .grow_hold(&reservation.id, &h.budget_id, by)
            .await?
            .is_some()
        {
            rows.add(tx, &h.budget_id, h.period_start, 0, by).await?;
        } else {
            all_held = false;
        }
    }
    Ok(if all_held { granted } else { 0 })
}

/// Turns a reservation into spend (what the entry says was used), releases the rest, and
/// appends the ledger row — in the caller's transaction. A hold the reaper already released
/// still gets its spend: tokens that flowed are never dropped.
async fn settle_in<T: BudgetTx>(
    tx: &mut T,
    rows: &mut Rows,
    reservation: &Reservation,
    entry: &LedgerEntry,
) -> Result<BudgetLeft> {
    let mut left = BudgetLeft::default();
    let held: HashMap<String, i64> = if reservation.holds.is_empty() {
        HashMap::new()
    } else {
        tx.take_holds(&reservation.id).await?.into_iter().collect()
    };
    for hold in &reservation.holds {
        let spent = budget::spend(
            hold.unit,
            entry.cost_nusd,
            entry.prompt_tokens,
            entry.completion_tokens,
        );
        let held = held.get(&hold.budget_id).copied().unwrap_or(0);
        let (s, r) = rows
            .add(tx, &hold.budget_id, hold.period_start, spent, -held)
            .await?;
        left.note(hold.unit, hold.limit - s - r);
    }
    tx.insert_ledger(entry).await?;
    Ok(left)
}

/// Releases reservations whose request died (client gone, process killed): the holds found
/// by the pre-pass, if nobody settled them meanwhile.
async fn reap_in<T: BudgetTx>(
    tx: &mut T,
    rows: &mut Rows,
    expired: &[(String, String, i64)],
) -> Result<u64> {
    let mut released = 0;
    for (reservation_id, budget_id, period_start) in expired {
        if let Some(amount) = tx.take_hold(reservation_id, budget_id).await? {
            rows.add(tx, budget_id, *period_start, 0, -amount).await?;
            released += 1;
        }
    }
    Ok(released)
}

/// What a job needs that the pre-pass reads before locking.
enum Plan {
    Reserve(Vec<Budget>),
    Settle,
    TopUp,
    Reap(Vec<(String, String, i64)>),
}

/// Runs a batch of jobs in the caller's transaction: reads what they touch, locks every usage
/// row in one global order, then runs each job in turn. Outcomes are only valid once the
/// caller commits.
pub(crate) async fn run_jobs<T: BudgetTx>(tx: &mut T, jobs: &[Job]) -> Result<Vec<Outcome>> {
    let mut plans = Vec::with_capacity(jobs.len());
    let mut rows = BTreeSet::new();
    for job in jobs {
        plans.push(match job {
            Job::Reserve { who, now, .. } => {
                let budgets = tx
                    .budgets_for(&[&who.workspace_id, &who.user_id, &who.key_id])
                    .await?;
                for b in &budgets {
                    // A bad time zone surfaces as the job's own refusal below.
                    if let Ok((start, _)) = b.period.bounds(*now, b.tz.as_deref()) {
                        rows.insert((b.id.clone(), start));
                    }
                }
                Plan::Reserve(budgets)
            }
            Job::Settle { reservation, .. } => {
                for h in &reservation.holds {
                    rows.insert((h.budget_id.clone(), h.period_start));
                }
                Plan::Settle
            }
            Job::TopUp { reservation, .. } => {
                for h in &reservation.holds {
                    rows.insert((h.budget_id.clone(), h.period_start));
                }
                Plan::TopUp
            }
            Job::Reap { now, .. } => {
                let expired = tx.expired_holds(now.unix_timestamp()).await?;
                for (_, budget_id, start) in &expired {
                    rows.insert((budget_id.clone(), *start));
                }
                Plan::Reap(expired)
            }
        });
    }
    let mut cache = Rows::default();
    if T::LOCKS_ROWS {
        for (budget_id, start) in &rows {
            cache.get(tx, budget_id, *start).await?;
        }
    }
    let mut outcomes = Vec::with_capacity(jobs.len());
    for (job, plan) in jobs.iter().zip(plans) {
        outcomes.push(match (job, plan) {
            (
                Job::Reserve {
                    who, ask, now, ttl, ..
                },
                Plan::Reserve(budgets),
            ) => {
                Outcome::Reserved(reserve_in(tx, &mut cache, budgets, who, ask, *now, *ttl).await?)
            }
            (
                Job::Settle {
                    reservation, entry, ..
                },
                Plan::Settle,
            ) => Outcome::Settled(settle_in(tx, &mut cache, reservation, entry).await?),
            (
                Job::TopUp {
                    reservation,
                    price,
                    want,
                    ..
                },
                Plan::TopUp,
            ) => Outcome::ToppedUp(top_up_in(tx, &mut cache, reservation, price, *want).await?),
            (Job::Reap { .. }, Plan::Reap(expired)) => {
                Outcome::Reaped(reap_in(tx, &mut cache, &expired).await?)
            }
            _ => return Err(crate::Error::Internal("job and plan out of step".into())),
        });
    }
    Ok(outcomes)
}
