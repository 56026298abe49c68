//! `RedisRateLimiter`: rate limits shared by every replica that shares one Redis.
//!
//! The GCRA step of [`super::gcra`] runs as one Lua script over all buckets of a
//! request, so a request is charged on all of them or none, atomically. Time is Redis's own
//! clock (`TIME`), so replicas with skewed clocks still agree. Fails closed.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use time::OffsetDateTime;

use super::{Charge, RateLimiter, refused};
use crate::error::{Error, Result};

const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local minute = 60000000
local next = {}
for i = 1, #KEYS do
  local per_minute = tonumber(ARGV[2 * i - 1])
  local cost = tonumber(ARGV[2 * i])
  local interval = math.floor(minute / per_minute)
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  if new_tat - now > minute then
    return {i, new_tat - now - minute}
  end
  next[i] = new_tat
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%d', next[i]), 'PX', math.ceil((next[i] - now) / 1000) + 1000)
end
return {0, 0}
"#;

/// Rate limits in Redis.
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: ConnectionManager,
    script: redis::Script,
    prefix: String,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    crate::redis_conn::unavailable("redis", e)
}

impl RedisRateLimiter {
    /// Connects to `url` (`redis://host:port/db`); bucket keys start with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let conn = crate::redis_conn::connect(url, Duration::from_secs(1), "redis").await?;
        Ok(Self {
            conn,
            script: redis::Script::new(GCRA),
            prefix: prefix.to_owned(),
        })
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn charge(&self, charges: &[Charge], _now: OffsetDateTime) -> Result<()> {
        if charges.is_empty() {
            return Ok(());
        }
        let mut inv = self.script.prepare_invoke();
        for c in charges {
            inv.key(format!("{}{}", self.prefix, c.bucket))
                .arg(c.per_minute.max(1))
                .arg(c.cost);
        }
        let mut conn = self.conn.clone();
        let (index, wait): (usize, i64) = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        match index.checked_sub(1).and_then(|i| charges.get(i)) {
            Some(c) => Err(refused(&c.label, wait)),
            None => Ok(()),
        }
    }
}
