//! The budget algorithm, written once for every backend: admit and reserve, top up, settle and
//! reap, decided in memory over a [`State`] — the usage rows and holds a batch read (SQL
//! backends, through [`super::writer`]) or the counters a process keeps ([`crate::policy::counters`]).
//! Nothing here touches a database; the arithmetic itself is in [`super`].

use std::collections::{BTreeSet, HashMap};

use time::OffsetDateTime;

use super::{self as budget, Ask, Budget, BudgetStatus};
use crate::error::Result;
use crate::policy::{BudgetLeft, Hold, LedgerEntry, Payer, Reservation};
use crate::price::Price;

/// A usage row's key: (budget id, period start).
pub(crate) type UsageKey = (String, i64);

/// A hold as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HoldRow {
    pub reservation_id: String,
    pub budget_id: String,
    pub period_start: i64,
    pub amount: i64,
    pub expires_at: i64,
}

/// What a batch has read, and what its jobs changed, until it is written back. (In-process
/// budgets keep one for the life of the process: see `crate::policy::counters::in_process`.)
#[derive(Default)]
pub(crate) struct State {
    pub(crate) rows: HashMap<UsageKey, (i64, i64)>,
    pub(super) dirty: BTreeSet<UsageKey>,
    /// Holds that exist (read, or made by an earlier job of the batch), by (reservation, budget).
    pub(crate) holds: HashMap<(String, String), HoldRow>,
    pub(super) put: BTreeSet<(String, String)>,
    pub(super) gone: BTreeSet<(String, String)>,
}

impl State {
    pub(crate) fn usage(&self, budget_id: &str, start: i64) -> (i64, i64) {
        self.rows
            .get(&(budget_id.to_owned(), start))
            .copied()
            .unwrap_or((0, 0))
    }

    pub(crate) fn add(
        &mut self,
        budget_id: &str,
        start: i64,
        spent: i64,
        reserved: i64,
    ) -> (i64, i64) {
        let key = (budget_id.to_owned(), start);
        let row = self.rows.entry(key.clone()).or_insert((0, 0));
        row.0 = row.0.saturating_add(spent);
        row.1 = row.1.saturating_add(reserved);
        let now = *row;
        self.dirty.insert(key);
        now
    }

    fn put_hold(&mut self, hold: HoldRow) {
        let key = (hold.reservation_id.clone(), hold.budget_id.clone());
        self.gone.remove(&key);
        self.put.insert(key.clone());
        self.holds.insert(key, hold);
    }

    /// Forgets what changed (state that is never written back).
    pub(crate) fn forget_changes(&mut self) {
        self.dirty.clear();
        self.put.clear();
        self.gone.clear();
    }

    /// Removes a hold; its amount, or `None` if it was already released.
    pub(super) fn take_hold(&mut self, reservation_id: &str, budget_id: &str) -> Option<i64> {
        let key = (reservation_id.to_owned(), budget_id.to_owned());
        let hold = self.holds.remove(&key)?;
        self.put.remove(&key);
        self.gone.insert(key);
        Some(hold.amount)
    }
}

/// Admits and reserves, or refuses (the inner error; nothing is changed then).
pub(crate) fn reserve_in(
    state: &mut State,
    budgets: Vec<Budget>,
    payer: Payer<'_>,
    ask: &Ask,
    now: OffsetDateTime,
    ttl: std::time::Duration,
) -> Result<Reservation> {
    let mut states = Vec::with_capacity(budgets.len());
    for mut b in budgets {
        b.scope_name = match b.scope {
            budget::Scope::Workspace => payer.workspace_name.to_owned(),
            budget::Scope::User => payer.user_name.to_owned(),
            budget::Scope::Key => payer.key_id.to_owned(),
        };
        let (period_start, resets) = b.period.bounds(now, b.tz.as_deref())?;
        let (spent, reserved) = state.usage(&b.id, period_start);
        states.push(BudgetStatus {
            period_start,
            resets_at: resets.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok()),
            spent,
            reserved,
            budget: b,
        });
    }
    let admitted = budget::admit(&states, ask, now)?;
    let id = uuid::Uuid::now_v7().to_string();
    // Rounded up: a hold never expires before `ttl` has passed.
    let deadline = now + ttl;
    let expires_at = deadline.unix_timestamp() + i64::from(deadline.nanosecond() > 0);
    let mut holds = Vec::with_capacity(states.len());
    let mut left = BudgetLeft::default();
    for (s, amount) in states.iter().zip(&admitted.amounts) {
        let (spent, reserved) = state.add(&s.budget.id, s.period_start, 0, *amount);
        left.note(s.budget.unit, s.budget.limit - spent - reserved);
        state.put_hold(HoldRow {
            reservation_id: id.clone(),
            budget_id: s.budget.id.clone(),
            period_start: s.period_start,
            amount: *amount,
            expires_at,
        });
        holds.push(Hold {
            budget_id: s.budget.id.clone(),
            unit: s.budget.unit,
            period_start: s.period_start,
            amount: *amount,
            limit: s.budget.limit,
        });
    }
    Ok(Reservation {
        id,
        holds,
        set_max_tokens: admitted.set_max_tokens,
        output: admitted.output,
        ceiling: admitted.ceiling,
        left,
    })
}

/// Turns a reservation into spend (what the entry says was used) and releases the rest. A
/// hold the reaper already released still gets its spend: tokens that flowed are never
/// dropped.
pub(crate) fn settle_in(
    state: &mut State,
    reservation: &Reservation,
    entry: &LedgerEntry,
) -> BudgetLeft {
    let mut left = BudgetLeft::default();
    for hold in &reservation.holds {
        let spent = spend_on(hold, entry);
        let held = state
            .take_hold(&reservation.id, &hold.budget_id)
            .unwrap_or(0);
        let (s, r) = state.add(&hold.budget_id, hold.period_start, spent, -held);
        left.note(hold.unit, hold.limit - s - r);
    }
    left
}

/// What a request's ledger entry spends on the budget of one of its holds.
pub(crate) fn spend_on(hold: &Hold, entry: &LedgerEntry) -> i64 {
    budget::spend(
        hold.unit,
        entry.cost_nusd,
        entry.prompt_tokens,
        entry.completion_tokens,
    )
}

/// Grows every hold of a reservation by `want` output tokens, or as many as the tightest of
/// its budgets can still take; returns the tokens granted. A reservation with a released hold
/// (settled, reaped) grants nothing: the request it belonged to is over.
pub(crate) fn top_up_in(
    state: &mut State,
    reservation: &Reservation,
    price: &Price,
    want: u32,
) -> u32 {
    let key = |h: &Hold| (reservation.id.clone(), h.budget_id.clone());
    if reservation
        .holds
        .iter()
        .any(|h| !state.holds.contains_key(&key(h)))
    {
        return 0;
    }
    let rooms: Vec<_> = reservation
        .holds
        .iter()
        .map(|h| {
            let (spent, reserved) = state.usage(&h.budget_id, h.period_start);
            (h.unit, h.limit - spent - reserved)
        })
        .collect();
    let granted = budget::grant(&rooms, price, want);
    if granted == 0 {
        return 0;
    }
    for h in &reservation.holds {
        let by = i64::from(granted).saturating_mul(budget::per_output_token(h.unit, price));
        state.add(&h.budget_id, h.period_start, 0, by);
        if let Some(mut row) = state.holds.get(&key(h)).cloned() {
            row.amount = row.amount.saturating_add(by);
            state.put_hold(row);
        }
    }
    granted
}

/// Releases reservations whose request died (client gone, process killed): the holds found
/// by the pre-pass, if nobody settled them meanwhile.
pub(crate) fn reap_in(state: &mut State, expired: &[(String, String, i64)]) -> u64 {
    let mut released = 0;
    for (reservation_id, budget_id, period_start) in expired {
        if let Some(amount) = state.take_hold(reservation_id, budget_id) {
            state.add(budget_id, *period_start, 0, -amount);
            released += 1;
        }
    }
    released
}

#[cfg(test)]
mod tests;
