//! Recovery: noticing that Redis lost its counters (a restart, a stale snapshot) and
//! rebuilding them from Postgres once every hold taken on the lost ones has its row.

use std::time::Duration;

use redis::aio::ConnectionManager;
use time::OffsetDateTime;

use super::{HOLD_ROW_DEADLINE, RedisCounters, field, unavailable};
use crate::error::Result;

impl RedisCounters {
    /// How long ago the counters were lost, at least: since Redis started (an empty Redis lost
    /// them when it started), or since a replica forgot them, whichever is shorter.
    pub(super) async fn since_lost(&self, conn: &mut ConnectionManager) -> Result<Duration> {
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

    /// Forgets counters built on another Redis process than the one answering now (it
    /// restarted, and may have reloaded old counters from a snapshot).
    pub(super) async fn check_restart(&self) -> Result<()> {
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

    /// Rebuilds the counters from Postgres if Redis has none (see the module docs).
    pub(super) async fn rebuild(&self) -> Result<()> {
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

    pub(super) async fn rebuild_locked(
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
}

/// The advisory lock that lets one replica at a time rebuild the counters under `prefix`.
pub(super) fn advisory_key(prefix: &str) -> i64 {
    // FNV-1a: stable across processes and builds (unlike `DefaultHasher`).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"lyss-budget-counters:".iter().chain(prefix.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// The Redis process answering.
pub(super) struct Server {
    /// New at every start.
    run_id: String,
    /// Whole seconds since it started.
    uptime_secs: u64,
}

pub(super) async fn server(conn: &mut ConnectionManager) -> Result<Server> {
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
