//! Rate limits: requests and tokens per minute on workspace, user and key.
//!
//! The algorithm is GCRA (a leaky bucket kept as one timestamp per bucket): a limit of N per
//! minute lets a full minute's N through at once and refills continuously. A request is
//! charged on all of its buckets or on none. Limiters fail closed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::{Error, Result};

#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
pub use self::redis::RedisRateLimiter;

const MINUTE_US: i64 = 60_000_000;

/// One bucket to charge: `cost` units against `per_minute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// Bucket name, e.g. `key:abc:rpm`.
    pub bucket: String,
    /// What to name in a refusal, e.g. `user ann (requests per minute)`.
    pub label: String,
    pub per_minute: u32,
    pub cost: u64,
}

/// Requests and tokens per minute, shared by every replica that shares the limiter's store.
///
/// # Contract
/// - `charge` admits all charges or none; a refusal is [`Error::RateLimited`] with the time
///   after which the same request would pass.
/// - A charge larger than a whole minute's allowance is refused (it could never pass).
/// - If the store cannot be reached the call fails with [`Error::Unavailable`] (fail closed).
#[async_trait]
pub trait RateLimiter: Send + Sync {
    async fn charge(&self, charges: &[Charge], now: OffsetDateTime) -> Result<()>;
}

/// GCRA step for one bucket: the new theoretical arrival time, or how long to wait.
/// Times in microseconds.
pub fn gcra(
    tat: Option<i64>,
    now: i64,
    per_minute: u32,
    cost: u64,
) -> std::result::Result<i64, i64> {
    let interval = MINUTE_US / i64::from(per_minute.max(1));
    let cost = i64::try_from(cost).unwrap_or(i64::MAX);
    let new_tat = tat
        .unwrap_or(now)
        .max(now)
        .saturating_add(cost.saturating_mul(interval));
    let over = new_tat - now - MINUTE_US;
    if over > 0 { Err(over) } else { Ok(new_tat) }
}

pub(crate) fn refused(label: &str, wait_us: i64) -> Error {
    Error::RateLimited {
        scope: label.to_owned(),
        retry_after: Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
    }
}

pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// Rate limits in this process only: right for one node (the embedded default).
#[derive(Debug, Default)]
pub struct InMemoryRateLimiter {
    tats: Mutex<HashMap<String, i64>>,
}

impl InMemoryRateLimiter {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RateLimiter for InMemoryRateLimiter {
    async fn charge(&self, charges: &[Charge], now: OffsetDateTime) -> Result<()> {
        let now = micros(now);
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Vec::with_capacity(charges.len());
        for c in charges {
            match gcra(tats.get(&c.bucket).copied(), now, c.per_minute, c.cost) {
                Ok(t) => next.push(t),
                Err(wait) => return Err(refused(&c.label, wait)),
            }
        }
        for (c, t) in charges.iter().zip(next) {
            tats.insert(c.bucket.clone(), t);
        }
        // A bucket whose time has passed is the same as no bucket: drop them now and then.
        if tats.len() > 100_000 {
            tats.retain(|_, t| *t > now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_minute_passes_at_once_then_it_refills() {
        let mut tat = None;
        for _ in 0..60 {
            tat = Some(gcra(tat, 0, 60, 1).unwrap());
        }
        let wait = gcra(tat, 0, 60, 1).unwrap_err();
        assert_eq!(wait, 1_000_000);
        assert!(gcra(tat, 1_000_000, 60, 1).is_ok());
        assert!(gcra(None, 0, 100, 101).is_err());
    }
}
