//! The counters' calls, one Lua script each: admission and top-ups, settlement, the reaper,
//! and the overlay that shows budgets their live counts.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{ATTEMPTS, ROW_GRACE_SECS, RedisCounters, Said, field, not_ready, unavailable};
use crate::error::{Error, Result};
use crate::policy::budget::state::{self, HoldRow, State, UsageKey};
use crate::policy::budget::writer::{Job, submit};
use crate::policy::budget::{self, Ask, BudgetStatus};
use crate::policy::counters::{Counters, budgets_of};
use crate::policy::{BudgetLeft, LedgerEntry, Payer, Reservation};
use crate::price::Price;

#[async_trait]
impl Counters for RedisCounters {
    async fn reserve(
        &self,
        payer: Payer<'_>,
        ask: &Ask,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<Reservation> {
        let now = self.on_redis_clock(now);
        let pool = &self.pool;
        let definitions = self
            .definitions
            .get(|| crate::policy::postgres::all_budgets(pool))
            .await?;
        let budgets = budgets_of(&definitions, payer);
        // A bad time zone surfaces as the admission's own refusal.
        let keys: Vec<UsageKey> = budgets
            .iter()
            .filter_map(|b| {
                let (start, _) = b.period.bounds(now, b.tz.as_deref()).ok()?;
                Some((b.id.clone(), start))
            })
            .collect();
        if keys.is_empty() {
            return state::reserve_in(&mut State::default(), budgets, payer, ask, now, ttl);
        }
        let (mut counts, mut fresh) = match self.guess(&keys) {
            Some(c) => (c, false),
            None => (self.read(&keys).await?, true),
        };
        let mut id: Option<String> = None;
        for _ in 0..ATTEMPTS {
            let mut state = State::default();
            state
                .rows
                .extend(keys.iter().cloned().zip(counts.iter().copied()));
            let decided = state::reserve_in(&mut state, budgets.clone(), payer, ask, now, ttl);
            let mut reservation = match decided {
                // Refused on counters last seen: ask Redis before saying no.
                Err(Error::BudgetExceeded(_)) if !fresh => {
                    counts = self.read(&keys).await?;
                    fresh = true;
                    continue;
                }
                Err(e) => {
                    if let Some(id) = id {
                        self.forget_holds(id);
                    }
                    return Err(e);
                }
                Ok(r) => r,
            };
            // One id for every round: its rows are rewritten, not added to.
            match &id {
                Some(id) => reservation.id.clone_from(id),
                None => id = Some(reservation.id.clone()),
            }
            let expires_at = state
                .holds
                .values()
                .map(|h| h.expires_at)
                .max()
                .unwrap_or_default();
            // The row and the Redis hold at once (see `HOLD_ROW_DEADLINE`); the holds are
            // the budgets of `keys`, in its order.
            let script = self.reserve_call(&reservation, expires_at);
            let (written, said) = tokio::join!(
                self.write_holds_in_time(&reservation, expires_at),
                self.run(&script),
            );
            if let Err(e) = written {
                if matches!(said, Ok(Said::Done(_))) {
                    self.release_in_background(&reservation);
                }
                self.forget_holds(reservation.id);
                return Err(e);
            }
            match said {
                Ok(Said::Done(c)) => {
                    self.note(&keys, &c);
                    let mut left = BudgetLeft::default();
                    for (h, (s, r)) in reservation.holds.iter().zip(&c) {
                        left.note(h.unit, h.limit - s - r);
                    }
                    reservation.left = left;
                    return Ok(reservation);
                }
                Ok(Said::Refused(c)) => {
                    self.note(&keys, &c);
                    counts = c;
                    fresh = true;
                }
                Ok(Said::NotReady) => self.rebuild().await?,
                Ok(Said::Gone) => {}
                Err(e) => {
                    self.forget_holds(reservation.id);
                    return Err(e);
                }
            }
        }
        if let Some(id) = id {
            self.forget_holds(id);
        }
        Err(Error::Unavailable {
            backend: "redis",
            message: "budget counters kept moving; try again".into(),
            contended: false,
        })
    }

    async fn top_up(&self, reservation: &Reservation, price: Price, want: u32) -> Result<u32> {
        let keys: Vec<UsageKey> = reservation
            .holds
            .iter()
            .map(|h| (h.budget_id.clone(), h.period_start))
            .collect();
        let mut counts = match self.guess(&keys) {
            Some(c) => c,
            None => self.read(&keys).await?,
        };
        for _ in 0..ATTEMPTS {
            let mut state = State::default();
            state
                .rows
                .extend(keys.iter().cloned().zip(counts.iter().copied()));
            for h in &reservation.holds {
                state.holds.insert(
                    (reservation.id.clone(), h.budget_id.clone()),
                    HoldRow {
                        reservation_id: reservation.id.clone(),
                        budget_id: h.budget_id.clone(),
                        period_start: h.period_start,
                        amount: h.amount,
                        expires_at: 0,
                    },
                );
            }
            let granted = state::top_up_in(&mut state, reservation, &price, want);
            if granted == 0 {
                return Ok(0);
            }
            let by: Vec<i64> = reservation
                .holds
                .iter()
                .map(|h| {
                    i64::from(granted).saturating_mul(budget::per_output_token(h.unit, &price))
                })
                .collect();
            // The row first: a rebuild never holds less than Redis did.
            let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                "UPDATE reservations SET amount = reservations.amount + v.by FROM (",
            );
            q.push_values(reservation.holds.iter().zip(&by), |mut row, (h, by)| {
                row.push_bind(&h.budget_id).push_bind(*by);
            });
            q.push(") AS v (budget_id, by) WHERE reservations.id = ");
            q.push_bind(&reservation.id);
            q.push(" AND reservations.budget_id = v.budget_id");
            q.build().execute(&self.holds).await?;
            let mut inv = self.scripts.top_up.prepare_invoke();
            inv.key(self.ready_key())
                .key(self.record_key(&reservation.id));
            for (h, by) in reservation.holds.iter().zip(&by) {
                inv.key(self.counter_key(&h.budget_id, h.period_start))
                    .arg(field(&h.budget_id, h.period_start))
                    .arg(h.limit)
                    .arg(*by);
            }
            match self.run(&inv).await? {
                Said::Done(c) => {
                    self.note(&keys, &c);
                    return Ok(granted);
                }
                Said::Refused(c) => {
                    self.note(&keys, &c);
                    counts = c;
                }
                Said::Gone => return Ok(0),
                Said::NotReady => {
                    self.rebuild().await?;
                    counts = self.read(&keys).await?;
                }
            }
        }
        Ok(0)
    }

    async fn settle(&self, reservation: &Reservation, entry: &LedgerEntry) -> Result<BudgetLeft> {
        let spend: Vec<i64> = reservation
            .holds
            .iter()
            .map(|h| state::spend_on(h, entry))
            .collect();
        let keyed: Vec<(UsageKey, i64)> = reservation
            .holds
            .iter()
            .zip(&spend)
            .map(|(h, s)| ((h.budget_id.clone(), h.period_start), *s))
            .collect();
        // The spend, the ledger row, the hold rows gone — one commit, durable before this
        // returns.
        let persist = submit(&self.writer, |done| Job::Persist {
            spend: keyed,
            entry: Box::new(entry.clone()),
            release: (!reservation.holds.is_empty()).then(|| reservation.id.clone()),
            done,
        });
        if reservation.holds.is_empty() {
            persist.await?;
            return Ok(BudgetLeft::default());
        }
        // Redis at the same time, not after: if Redis is lost and rebuilt from a snapshot that
        // the commit missed, the snapshot still has the hold rows, and the reaper counts that
        // hold whole as spent once it expires — more than was spent, never less.
        let (persisted, counted) = tokio::join!(persist, self.settle_counters(reservation, &spend));
        persisted?;
        match counted {
            Ok(c) => {
                let keys: Vec<UsageKey> = reservation
                    .holds
                    .iter()
                    .map(|h| (h.budget_id.clone(), h.period_start))
                    .collect();
                self.note(&keys, &c);
                let mut left = BudgetLeft::default();
                for (h, (s, r)) in reservation.holds.iter().zip(&c) {
                    left.note(h.unit, h.limit - s - r);
                }
                Ok(left)
            }
            Err(e) => {
                // Recorded: the counters catch up in the background. Until then they hold
                // more than is left (the hold), never less.
                tracing::warn!(error = %e, "budget counters: settlement not yet in Redis; retrying");
                let me = self.me.clone();
                let (reservation, spend) = (reservation.clone(), spend);
                tokio::spawn(async move {
                    for attempt in 1..=60u64 {
                        tokio::time::sleep(Duration::from_millis(250 * attempt.min(8))).await;
                        let Some(me) = me.upgrade() else { return };
                        if me.settle_counters(&reservation, &spend).await.is_ok() {
                            return;
                        }
                    }
                    tracing::error!(
                        reservation = %reservation.id,
                        "budget counters: settlement never reached Redis; its hold counts as spent when it expires"
                    );
                });
                Ok(BudgetLeft::default())
            }
        }
    }

    async fn release_expired(&self, now: OffsetDateTime) -> Result<u64> {
        let now = self.on_redis_clock(now).unix_timestamp();
        let mut released = Vec::new();
        for _ in 0..2 {
            let mut inv = self.scripts.reap.prepare_invoke();
            inv.key(self.ready_key())
                .key(self.expiries_key())
                .key(self.released_key())
                .arg(now)
                .arg(&self.prefix)
                .arg(10_000);
            let mut conn = self.redis.clone();
            let out: redis::Value = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
            match parse_reaped(out)? {
                Some(r) => {
                    released = r;
                    break;
                }
                None => self.rebuild().await?,
            }
        }
        if !released.is_empty() {
            // A hold whose rows are gone was settled in Postgres but never in Redis.
            let ids: Vec<&str> = released.iter().map(|(id, _)| id.as_str()).collect();
            let alive: HashSet<String> = sqlx::query_scalar::<_, String>(
                "SELECT DISTINCT id FROM reservations WHERE id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect();
            let mut conn = self.redis.clone();
            for (id, holds) in released.iter().filter(|(id, _)| !alive.contains(id)) {
                tracing::warn!(reservation = %id, "budget counters: a settlement never reached Redis; counting its whole hold as spent");
                let mut inv = self.scripts.claim.prepare_invoke();
                inv.key(self.ready_key())
                    .key(self.released_key())
                    .arg(&self.prefix)
                    .arg(id);
                for (f, amount) in holds {
                    inv.arg(f).arg(*amount);
                }
                inv.invoke_async::<redis::Value>(&mut conn)
                    .await
                    .map_err(unavailable)?;
            }
        }
        sqlx::query("DELETE FROM reservations WHERE expires_at <= $1")
            .bind(now - ROW_GRACE_SECS)
            .execute(&self.pool)
            .await?;
        Ok(released.iter().map(|(_, h)| h.len() as u64).sum())
    }

    async fn overlay(&self, statuses: &mut [BudgetStatus]) -> Result<()> {
        let keys: Vec<UsageKey> = statuses
            .iter()
            .map(|s| (s.budget.id.clone(), s.period_start))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let counts = self.read(&keys).await?;
        for (s, (spent, reserved)) in statuses.iter_mut().zip(counts) {
            // Never below what Postgres recorded (a counter not yet touched reads as zero).
            s.spent = s.spent.max(spent);
            s.reserved = reserved;
        }
        Ok(())
    }

    fn definitions_changed(&self) {
        self.definitions.changed();
    }
}

impl RedisCounters {
    /// The reservation script for `reservation`; its hold `field`s and counters in order.
    pub(super) fn reserve_call(
        &self,
        reservation: &Reservation,
        expires_at: i64,
    ) -> redis::ScriptInvocation<'_> {
        let mut inv = self.scripts.reserve.prepare_invoke();
        inv.key(self.ready_key())
            .key(self.expiries_key())
            .key(self.record_key(&reservation.id))
            .arg(&reservation.id)
            .arg(expires_at);
        for h in &reservation.holds {
            inv.key(self.counter_key(&h.budget_id, h.period_start))
                .arg(field(&h.budget_id, h.period_start))
                .arg(h.limit)
                .arg(h.amount);
        }
        inv
    }

    /// The settlement's Redis part, until it lands (or the counters were rebuilt after it).
    pub(super) async fn settle_counters(
        &self,
        reservation: &Reservation,
        spend: &[i64],
    ) -> Result<Vec<(i64, i64)>> {
        for _ in 0..2 {
            let mut inv = self.scripts.settle.prepare_invoke();
            inv.key(self.ready_key())
                .key(self.expiries_key())
                .key(self.released_key())
                .key(self.record_key(&reservation.id))
                .arg(&reservation.id);
            for (h, s) in reservation.holds.iter().zip(spend) {
                inv.key(self.counter_key(&h.budget_id, h.period_start))
                    .arg(field(&h.budget_id, h.period_start))
                    .arg(*s);
            }
            match self.run(&inv).await? {
                Said::Done(c) => return Ok(c),
                Said::NotReady => self.rebuild().await?,
                Said::Refused(_) | Said::Gone => break,
            }
        }
        Err(not_ready())
    }
}

/// The reaper script's reply: `None` when the counters are not ready, else each released
/// reservation with its (field, amount) holds.
#[allow(clippy::type_complexity)]
pub(super) fn parse_reaped(out: redis::Value) -> Result<Option<Vec<(String, Vec<(String, i64)>)>>> {
    use redis::FromRedisValue as _;
    let bad = || Error::Internal("budget counters: unexpected reaper reply".into());
    let redis::Value::Array(items) = out else {
        return Err(bad());
    };
    let mut items = items.into_iter();
    match items.next().map(|v| i64::from_redis_value(&v)) {
        Some(Ok(1)) => {}
        Some(Ok(-1)) => return Ok(None),
        _ => return Err(bad()),
    }
    let mut released = Vec::new();
    for item in items {
        let parts: Vec<String> = Vec::from_redis_value(&item).map_err(|_| bad())?;
        let mut parts = parts.into_iter();
        let id = parts.next().ok_or_else(bad)?;
        let mut holds = Vec::new();
        while let (Some(f), Some(a)) = (parts.next(), parts.next()) {
            holds.push((f, a.parse().map_err(|_| bad())?));
        }
        released.push((id, holds));
    }
    Ok(Some(released))
}
