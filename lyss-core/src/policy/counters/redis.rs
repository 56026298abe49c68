//! Budget counters in Redis, for every replica of a Postgres cluster.
//!
//! **What lives where.** Redis holds, per (budget, period), the counters `spent` and
//! `reserved`, and per open reservation its holds; admission, top-ups and the release of
//! expired holds are one Lua script each, atomic across every budget of a request. Postgres
//! keeps what the counters are rebuilt from: the spend (`budget_usage.spent`, written with the
//! ledger row in one commit) and one row per open hold (`reservations`), written while the
//! hold reaches Redis (in batches, without waiting for the disk: they are read back only
//! after Redis lost its counters; a request whose row is not acknowledged within
//! [`HOLD_ROW_DEADLINE`] is refused) and deleted by the settlement's commit. So a hold a
//! request goes on with has its row, and a spend in Postgres is either in the Redis counters
//! or still has the hold record that its settlement script will turn into spend. Periods and
//! hold expiries follow Redis's clock (each replica measures its skew once a second), so
//! replicas whose clocks disagree still agree on when a period starts.
//!
//! **Losing Redis.** Every script first checks the key `<prefix>ready`; a Redis that
//! restarted empty has none, and a restarted one that reloaded a snapshot is caught by a check
//! of its `run_id` once a second. Until the counters are rebuilt, every reservation is refused
//! (fail closed) and settlements commit to Postgres and wait to reach Redis. One replica (a
//! Postgres advisory lock) waits until [`HOLD_ROW_DEADLINE`] has passed since they were lost
//! (since Redis started, or since a replica found them stale) — every hold taken on the lost
//! counters then has its row, or its request gave up — and rebuilds from one snapshot: spend
//! from `budget_usage`, holds from `reservations`, then sets `ready`. A settlement that
//! committed before the snapshot is in its spend and finds no hold record; one that committed
//! after finds its hold and applies — so nothing is counted twice or lost. (A settlement's
//! script runs beside its commit; one that reached the lost counters before a commit the
//! snapshot missed leaves the rebuilt hold to the reaper, which counts it whole as spent.) A
//! hold row written before the snapshot whose script had not run yet stands only if its
//! budgets are within their limits.
//!
//! **Requests that die.** The reaper releases expired holds in Redis, leaving a marker so a
//! late settlement still adds its spend. A released hold whose row is already gone belonged
//! to a settlement that committed but never reached Redis (its replica was killed in between):
//! the whole hold is counted as spent — never less than was spent. Hold rows of dead requests
//! are deleted a few seconds after Redis released them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::policy::budget::{self, Ask, BudgetStatus};
use crate::policy::counters::{Counters, DefinitionCache, budgets_of};
use crate::policy::store::{self, HoldRow, State, UsageKey};
use crate::policy::store::{Job, submit};
use crate::policy::{BudgetLeft, LedgerEntry, Payer, Reservation};
use crate::price::Price;

use super::redis_scripts::Scripts;

/// Rounds of admission against counters that moved in between before giving up (503).
const ATTEMPTS: usize = 8;

/// How long after Redis released a dead request's hold its row may be deleted: a replica that
/// released holds checks which still have rows right after (see the module docs), and must
/// not find one gone because another replica deleted it meanwhile.
const ROW_GRACE_SECS: i64 = 5;

/// How long a new hold row may take to be acknowledged. It is written at the same time as its
/// Redis hold (not before it: a round trip saved), and a request whose row took longer is
/// refused; a rebuild reads the rows only once this long has passed since the counters were
/// lost, so every hold taken on them by a request that went on has its row in the rebuild's
/// snapshot.
const HOLD_ROW_DEADLINE: Duration = Duration::from_secs(1);

/// How often Redis's `run_id` is compared with the one the counters were built on.
const RESTART_CHECK: Duration = Duration::from_secs(1);

/// What a counting script said.
enum Said {
    /// Applied; the counters of its budgets after it.
    Done(Vec<(i64, i64)>),
    /// Does not fit; the counters now.
    Refused(Vec<(i64, i64)>),
    /// The reservation is gone (settled or released): a top-up grants nothing.
    Gone,
    /// The counters are not known: rebuild them first.
    NotReady,
}

/// Budget counters in Redis; see the module docs.
pub(crate) struct RedisCounters {
    pool: PgPool,
    /// Hold rows, written without waiting for the disk (top-ups, refusals).
    holds: PgPool,
    /// New hold rows, written in batches by [`hold_writer`].
    hold_writer: mpsc::Sender<HoldWrite>,
    writer: mpsc::Sender<Job>,
    redis: ConnectionManager,
    prefix: String,
    scripts: Scripts,
    definitions: DefinitionCache,
    /// The counters each script last returned: the first guess of the next admission.
    seen: Mutex<HashMap<UsageKey, (i64, i64)>>,
    rebuilding: tokio::sync::Mutex<()>,
    /// Redis's clock minus this replica's, in microseconds (measured once a second).
    skew_us: AtomicI64,
    /// For background work that outlives a call (retried settlements, the restart check).
    me: Weak<RedisCounters>,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    crate::redis_conn::unavailable("redis", e)
}

impl RedisCounters {
    pub(crate) async fn connect(
        pool: PgPool,
        holds: PgPool,
        writer: mpsc::Sender<Job>,
        redis_url: &str,
        prefix: &str,
    ) -> Result<Arc<Self>> {
        let redis = crate::redis_conn::connect(redis_url, Duration::from_secs(1), "redis").await?;
        let (hold_tx, hold_rx) = mpsc::channel(1024);
        tokio::spawn(hold_writer(holds.clone(), hold_rx));
        let counters = Arc::new_cyclic(|me| Self {
            pool,
            holds,
            hold_writer: hold_tx,
            writer,
            redis,
            prefix: prefix.to_owned(),
            scripts: Scripts::new(),
            definitions: DefinitionCache::default(),
            seen: Mutex::default(),
            rebuilding: tokio::sync::Mutex::new(()),
            skew_us: AtomicI64::new(0),
            me: me.clone(),
        });
        counters.check_restart().await?;
        counters.measure_skew().await?;
        counters.watch();
        Ok(counters)
    }

    /// Starts the once-a-second check for a Redis that restarted from a snapshot (its
    /// counters would be old) and of Redis's clock; it stops when the counters are dropped.
    fn watch(&self) {
        let weak = self.me.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RESTART_CHECK);
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                if let Err(e) = me.check_restart().await {
                    tracing::debug!(error = %e, "budget counters: Redis restart check failed");
                }
                if let Err(e) = me.measure_skew().await {
                    tracing::debug!(error = %e, "budget counters: Redis clock not read");
                }
            }
        });
    }

    /// Measures how far Redis's clock is from this replica's. Budget periods and hold expiries
    /// follow Redis's clock, so replicas whose clocks disagree still agree on when a period
    /// starts (to within a round trip).
    async fn measure_skew(&self) -> Result<()> {
        let mut conn = self.redis.clone();
        let before = OffsetDateTime::now_utc();
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let after = OffsetDateTime::now_utc();
        let redis_us = secs.saturating_mul(1_000_000).saturating_add(micros);
        self.skew_us
            .store(skew_us(before, redis_us, after), Ordering::Relaxed);
        Ok(())
    }

    /// `now` on Redis's clock.
    fn on_redis_clock(&self, now: OffsetDateTime) -> OffsetDateTime {
        now + time::Duration::microseconds(self.skew_us.load(Ordering::Relaxed))
    }

    /// Exists while the counters are known; its value is the `run_id` they were built on.
    fn ready_key(&self) -> String {
        format!("{}ready", self.prefix)
    }

    /// When a replica last forgot the counters (milliseconds of Redis's clock).
    fn lost_key(&self) -> String {
        format!("{}lost", self.prefix)
    }

    /// How long ago the counters were lost, at least: since Redis started (an empty Redis lost
    /// them when it started), or since a replica forgot them, whichever is shorter.
    async fn since_lost(&self, conn: &mut ConnectionManager) -> Result<Duration> {
        let started = Duration::from_secs(server(conn).await?.uptime_secs);
        let ((secs, micros), lost): ((u64, u64), Option<u64>) = redis::pipe()
            .cmd("TIME")
            .get(self.lost_key())
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        let now_ms = secs * 1000 + micros / 1000;
        Ok(match lost {
            Some(at) => started.min(Duration::from_millis(now_ms.saturating_sub(at))),
            None => started,
        })
    }

    fn counter_key(&self, budget_id: &str, start: i64) -> String {
        format!("{}u:{}", self.prefix, field(budget_id, start))
    }

    fn record_key(&self, reservation_id: &str) -> String {
        format!("{}h:{reservation_id}", self.prefix)
    }

    fn expiries_key(&self) -> String {
        format!("{}exp", self.prefix)
    }

    fn released_key(&self) -> String {
        format!("{}released", self.prefix)
    }

    /// Forgets counters built on another Redis process than the one answering now (it
    /// restarted, and may have reloaded old counters from a snapshot).
    async fn check_restart(&self) -> Result<()> {
        let mut conn = self.redis.clone();
        let built_on: Option<String> = redis::cmd("GET")
            .arg(self.ready_key())
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let Some(built_on) = built_on else {
            return Ok(());
        };
        if built_on != server(&mut conn).await?.run_id {
            tracing::warn!("budget counters: Redis restarted; rebuilding them from Postgres");
            let mut inv = self.scripts.forget.prepare_invoke();
            inv.key(self.ready_key())
                .key(self.lost_key())
                .arg(&built_on);
            inv.invoke_async::<redis::Value>(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Runs a counting script; parses its status and counters.
    async fn run(&self, inv: &redis::ScriptInvocation<'_>) -> Result<Said> {
        let mut conn = self.redis.clone();
        let out: Vec<i64> = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        let counts = |rest: &[i64]| rest.chunks_exact(2).map(|c| (c[0], c[1])).collect();
        Ok(match out.split_first() {
            Some((-1, _)) => Said::NotReady,
            Some((1, rest)) => Said::Done(counts(rest)),
            Some((0, rest)) => Said::Refused(counts(rest)),
            Some((2, _)) => Said::Gone,
            _ => {
                return Err(Error::Internal(
                    "budget counters: unexpected script reply".into(),
                ));
            }
        })
    }

    /// Notes the counters a script returned for `keys` (a key is copied only the first time).
    fn note(&self, keys: &[UsageKey], counts: &[(i64, i64)]) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for (k, c) in keys.iter().zip(counts) {
            match seen.get_mut(k) {
                Some(v) => *v = *c,
                None => {
                    seen.insert(k.clone(), *c);
                }
            }
        }
    }

    /// The counters last seen for every key, if all were.
    fn guess(&self, keys: &[UsageKey]) -> Option<Vec<(i64, i64)>> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter().map(|k| seen.get(k).copied()).collect()
    }

    /// The counters of `keys` now, rebuilding them first if Redis lost them.
    async fn read(&self, keys: &[UsageKey]) -> Result<Vec<(i64, i64)>> {
        for _ in 0..2 {
            let mut inv = self.scripts.read.prepare_invoke();
            inv.key(self.ready_key());
            for (b, start) in keys {
                inv.key(self.counter_key(b, *start));
            }
            match self.run(&inv).await? {
                Said::Done(c) => {
                    self.note(keys, &c);
                    return Ok(c);
                }
                Said::NotReady => self.rebuild().await?,
                Said::Refused(_) | Said::Gone => break,
            }
        }
        Err(not_ready())
    }

    /// Writes (or rewrites the amounts of) a reservation's hold rows, in the hold writer's
    /// next batch.
    async fn write_holds(&self, reservation: &Reservation, expires_at: i64) -> Result<()> {
        let rows = reservation
            .holds
            .iter()
            .map(|h| HoldRow {
                reservation_id: reservation.id.clone(),
                budget_id: h.budget_id.clone(),
                period_start: h.period_start,
                amount: h.amount,
                expires_at,
            })
            .collect();
        let stopped = || Error::Unavailable {
            backend: "database",
            message: "the hold writer stopped".into(),
            contended: false,
        };
        let (done, written) = oneshot::channel();
        self.hold_writer
            .send(HoldWrite { rows, done })
            .await
            .map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())?
    }

    /// [`Self::write_holds`], acknowledged within [`HOLD_ROW_DEADLINE`] of the call by this
    /// replica's clock, or an error.
    async fn write_holds_in_time(&self, reservation: &Reservation, expires_at: i64) -> Result<()> {
        let started = Instant::now();
        match tokio::time::timeout(HOLD_ROW_DEADLINE, self.write_holds(reservation, expires_at))
            .await
        {
            Ok(Ok(())) if started.elapsed() < HOLD_ROW_DEADLINE => Ok(()),
            Ok(Err(e)) => Err(e),
            _ => Err(Error::Unavailable {
                backend: "database",
                message: "a reservation's hold row took too long to write".into(),
                contended: false,
            }),
        }
    }

    /// Gives back a reservation's Redis holds without spending anything (its request is
    /// refused after all), in the background: one left behind is released when it expires.
    fn release_in_background(&self, reservation: &Reservation) {
        let me = self.me.clone();
        let reservation = reservation.clone();
        tokio::spawn(async move {
            let Some(me) = me.upgrade() else { return };
            let nothing = vec![0; reservation.holds.len()];
            if let Err(e) = me.settle_counters(&reservation, &nothing).await {
                tracing::debug!(error = %e, "budget counters: an unused hold waits for its expiry");
            }
        });
    }

    /// Deletes the hold rows of a reservation that was refused (in the background: a row
    /// left behind only makes a rebuild hold a little more until it expires).
    fn forget_holds(&self, reservation_id: String) {
        let holds = self.holds.clone();
        tokio::spawn(async move {
            let _ = sqlx::query("DELETE FROM reservations WHERE id = $1")
                .bind(reservation_id)
                .execute(&holds)
                .await;
        });
    }

    /// Rebuilds the counters from Postgres if Redis has none (see the module docs).
    async fn rebuild(&self) -> Result<()> {
        let _one = self.rebuilding.lock().await;
        let mut conn = self.redis.clone();
        let ready: bool = redis::cmd("EXISTS")
            .arg(self.ready_key())
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if ready {
            return Ok(());
        }
        let mut db = self.pool.acquire().await?;
        let lock = advisory_key(&self.prefix);
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(lock)
            .execute(&mut *db)
            .await?;
        let rebuilt = self.rebuild_locked(&mut db, &mut conn).await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(lock)
            .execute(&mut *db)
            .await;
        if rebuilt.is_err() || unlocked.is_err() {
            // Never hand back a connection that may still hold the lock or a transaction.
            db.close_on_drop();
        }
        rebuilt
    }

    async fn rebuild_locked(
        &self,
        db: &mut sqlx::PgConnection,
        conn: &mut ConnectionManager,
    ) -> Result<()> {
        // Another replica may have rebuilt them while this one waited for the lock.
        let ready: bool = redis::cmd("EXISTS")
            .arg(self.ready_key())
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        if ready {
            return Ok(());
        }
        // Every request that took a hold on the lost counters has its row by now, or has
        // given up (`HOLD_ROW_DEADLINE`).
        if let Some(rest) = HOLD_ROW_DEADLINE.checked_sub(self.since_lost(conn).await?) {
            tokio::time::sleep(rest).await;
        }
        // One snapshot, taken after the lock: what every settlement committed so far spent,
        // and every hold not yet settled.
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *db)
            .await?;
        let usage = sqlx::query_as::<_, (String, i64, i64)>(
            "SELECT budget_id, period_start, spent FROM budget_usage",
        )
        .fetch_all(&mut *db)
        .await;
        let holds = sqlx::query_as::<_, (String, String, i64, i64, i64)>(
            "SELECT id, budget_id, period_start, amount, expires_at FROM reservations",
        )
        .fetch_all(&mut *db)
        .await;
        sqlx::query("COMMIT").execute(&mut *db).await?;
        let (usage, holds) = (usage?, holds?);
        let built_on = server(conn).await?.run_id;
        let now = OffsetDateTime::now_utc().unix_timestamp();

        // Whatever is left under the prefix (a partial loss) is replaced, not added to.
        let stale = crate::redis_conn::keys_under(conn, &self.prefix, "redis").await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for chunk in stale.chunks(500) {
            pipe.del(chunk).ignore();
        }
        for (budget_id, start, spent) in &usage {
            pipe.hset(self.counter_key(budget_id, *start), "s", *spent)
                .ignore();
        }
        for (id, budget_id, start, amount, expires_at) in &holds {
            if *expires_at <= now {
                // A dead request's: released, but a late settlement still adds its spend.
                pipe.zadd(self.released_key(), id, now).ignore();
                continue;
            }
            pipe.hincr(self.counter_key(budget_id, *start), "r", *amount)
                .ignore()
                .hset(self.record_key(id), field(budget_id, *start), *amount)
                .ignore()
                .zadd(self.expiries_key(), id, *expires_at)
                .ignore();
        }
        pipe.set(self.ready_key(), &built_on).ignore();
        pipe.query_async::<()>(conn).await.map_err(unavailable)?;
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
        tracing::info!(
            budgets = usage.len(),
            holds = holds.len(),
            "budget counters rebuilt from Postgres"
        );
        Ok(())
    }

    /// The reservation script for `reservation`; its hold `field`s and counters in order.
    fn reserve_call(
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
    async fn settle_counters(
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
            return store::reserve_in(&mut State::default(), budgets, payer, ask, now, ttl);
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
            let decided = store::reserve_in(&mut state, budgets.clone(), payer, ask, now, ttl);
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
            let granted = store::top_up_in(&mut state, reservation, &price, want);
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
            .map(|h| store::spend_on(h, entry))
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

/// Hold rows to write, and who waits for them.
struct HoldWrite {
    rows: Vec<HoldRow>,
    done: oneshot::Sender<Result<()>>,
}

/// Writes the hold rows of every reservation waiting at that moment in one statement (one
/// transaction, committed without waiting for the disk): a reservation costs Postgres a
/// share of a statement, not one.
async fn hold_writer(pool: PgPool, mut rx: mpsc::Receiver<HoldWrite>) {
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        // One row per hold (a statement may not upsert a row twice).
        let rows: std::collections::BTreeMap<(&str, &str), &HoldRow> = batch
            .iter()
            .flat_map(|w: &HoldWrite| &w.rows)
            .map(|h| ((h.reservation_id.as_str(), h.budget_id.as_str()), h))
            .collect();
        let rows: Vec<&HoldRow> = rows.into_values().collect();
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new("");
        crate::policy::postgres::push_put_holds(&mut q, &rows);
        let result = q.build().execute(&pool).await.map(|_| ());
        drop(q);
        drop(rows);
        let failed = result.err().map(|e| Error::from(e).to_string());
        for w in batch.drain(..) {
            let _ = w.done.send(match &failed {
                None => Ok(()),
                Some(message) => Err(Error::Unavailable {
                    backend: "database",
                    message: message.clone(),
                    contended: false,
                }),
            });
        }
    }
}

/// Deletes the `ready` key under `prefix`: the counters there are rebuilt before next use.
pub(crate) async fn forget(redis_url: &str, prefix: &str) -> Result<()> {
    let mut conn = crate::redis_conn::connect(redis_url, Duration::from_secs(1), "redis").await?;
    redis::Script::new(super::redis_scripts::FORGET)
        .key(format!("{prefix}ready"))
        .key(format!("{prefix}lost"))
        .invoke_async::<redis::Value>(&mut conn)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// Redis's time minus the middle of the round trip that read it, in microseconds — or none
/// when Redis's time falls within the round trip (a skew that small cannot be told from none).
fn skew_us(before: OffsetDateTime, redis_us: i64, after: OffsetDateTime) -> i64 {
    let us =
        |t: OffsetDateTime| i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX);
    let (before, after) = (us(before), us(after));
    if (before..=after).contains(&redis_us) {
        return 0;
    }
    redis_us.saturating_sub(before / 2 + after / 2)
}

/// A hold's field in its reservation record, and the suffix of its counter's key.
fn field(budget_id: &str, start: i64) -> String {
    format!("{budget_id}:{start}")
}

fn not_ready() -> Error {
    Error::Unavailable {
        backend: "redis",
        message: "budget counters are being rebuilt".into(),
        contended: false,
    }
}

/// The advisory lock that lets one replica at a time rebuild the counters under `prefix`.
fn advisory_key(prefix: &str) -> i64 {
    // FNV-1a: stable across processes and builds (unlike `DefaultHasher`).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"lyss-budget-counters:".iter().chain(prefix.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// The Redis process answering.
struct Server {
    /// New at every start.
    run_id: String,
    /// Whole seconds since it started.
    uptime_secs: u64,
}

async fn server(conn: &mut ConnectionManager) -> Result<Server> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .ok_or_else(|| unavailable(format!("INFO server has no {name}")))
    };
    Ok(Server {
        run_id: field("run_id")?.to_owned(),
        uptime_secs: field("uptime_in_seconds")?
            .parse()
            .map_err(|_| unavailable("INFO server: uptime_in_seconds is not a number"))?,
    })
}

/// The reaper script's reply: `None` when the counters are not ready, else each released
/// reservation with its (field, amount) holds.
#[allow(clippy::type_complexity)]
fn parse_reaped(out: redis::Value) -> Result<Option<Vec<(String, Vec<(String, i64)>)>>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_clock_skew_is_taken_from_the_middle_of_the_round_trip() {
        let before = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        let after = before + time::Duration::milliseconds(2);
        // Redis answered 1,000.061 s: 60 ms ahead of the trip's middle (1,000.001 s).
        assert_eq!(skew_us(before, 1_000_061_000, after), 60_000);
        assert_eq!(skew_us(before, 999_000_000, after), -1_001_000);
        // Within the round trip: no skew that could be told.
        assert_eq!(skew_us(before, 1_000_000_500, after), 0);
        assert_eq!(skew_us(before, 1_000_002_000, after), 0);
    }
}
