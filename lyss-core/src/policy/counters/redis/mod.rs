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

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::ConnectionManager;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::redis_scripts::Scripts;
use crate::error::{Error, Result};
use crate::policy::budget::state::UsageKey;
use crate::policy::budget::writer::Job;
use crate::policy::counters::DefinitionCache;

mod counting;
mod holds;
mod recovery;

use self::holds::{HoldWrite, hold_writer};

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

#[cfg(test)]
mod tests;
