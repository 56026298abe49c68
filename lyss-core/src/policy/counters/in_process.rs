//! In-process budgets: the embedded tier's reservations, held in the serving process.
//!
//! When one process serves a database file — enforced by an exclusive lock on
//! `<file>.server.lock` — the budget counters need no database round trip to stay true:
//! admission, top-ups and the reaper decide in memory under one mutex (microseconds), and only a settlement writes:
//! its spend and its ledger row, in one commit of the writer's group commit, durable before
//! the response completes. The file's `spent` therefore always equals what its ledger rows
//! spent. A crash loses only the holds of requests in flight — the reaper would have
//! released them — never recorded spend. While the database refuses writes (a full disk),
//! admission is closed — nothing is spent that cannot be recorded — and checks once a second
//! whether it takes them again.
//!
//! Budget definitions are read from the file and kept for at most
//! [`DEFINITIONS_FRESH`](crate::policy::counters::DEFINITIONS_FRESH), so a limit the admin's
//! `lyss` (another process) lowers applies within a second; changes made through this policy
//! apply at once.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::SqlitePool;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::policy::budget::state::{self, State, UsageKey};
use crate::policy::budget::writer::{Job, submit};
use crate::policy::budget::{Ask, BudgetStatus};
use crate::policy::counters::{Counters, DefinitionCache, budgets_of};
use crate::policy::{BudgetLeft, LedgerEntry, Payer, Reservation};
use crate::price::Price;

/// How often a closed admission checks whether the file takes writes again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Reservations and usage counters of one database file, held by the one process serving it.
pub(crate) struct Books {
    pool: SqlitePool,
    writer: mpsc::Sender<Job>,
    held: Mutex<Held>,
    definitions: DefinitionCache,
    /// Set when a settlement could not be written; cleared by the next commit, or by a probe.
    failing: AtomicBool,
    /// When admission last probed whether the file takes writes again.
    probed: Mutex<Option<Instant>>,
    /// The exclusive lock on `<file>.server.lock`, held while this lives (none for `:memory:`).
    _lock: Option<File>,
}

#[derive(Default)]
struct Held {
    state: State,
    /// Reservations settled in memory whose ledger row could not be written: settling one
    /// again (the caller retrying) writes its row without spending twice.
    unwritten: HashSet<String>,
}

impl Books {
    /// Takes `lock` (see [`lock`]) and starts from the file: spend as recorded, no holds (a
    /// previous process's requests are over).
    pub(crate) async fn open(
        pool: SqlitePool,
        writer: mpsc::Sender<Job>,
        lock: Option<File>,
    ) -> Result<Self> {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM reservations")
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE budget_usage SET reserved = 0 WHERE reserved <> 0")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Self {
            pool,
            writer,
            held: Mutex::default(),
            definitions: DefinitionCache::default(),
            failing: AtomicBool::new(false),
            probed: Mutex::new(None),
            _lock: lock,
        })
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // A panic while holding the lock leaves plain numbers behind, never a torn invariant
        // check (each operation decides before it changes anything): keep going.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails closed while settlements cannot be written: nothing more may be spent.
    fn open_for_spending(&self) -> Result<()> {
        if self.failing.load(Ordering::Acquire) {
            return Err(Error::Unavailable {
                backend: "database",
                message: "settlements cannot be written; nothing more is admitted until they are"
                    .into(),
                contended: false,
            });
        }
        Ok(())
    }

    /// Whether the file takes a write again (probed at most once a second), reopening
    /// admission if so — whether or not anyone still retries the settlement that failed.
    async fn takes_writes_again(&self) -> bool {
        {
            let mut probed = self.probed.lock().unwrap_or_else(|e| e.into_inner());
            if probed.is_some_and(|at| at.elapsed() < PROBE_EVERY) {
                return false;
            }
            *probed = Some(Instant::now());
        }
        let probe = probe_writes(&self.pool);
        match probe.await {
            Ok(()) => {
                self.failing.store(false, Ordering::Release);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "the database still refuses writes");
                false
            }
        }
    }

    async fn recorded_spend(&self, keys: &[UsageKey]) -> Result<HashMap<UsageKey, i64>> {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT budget_id, period_start, spent FROM budget_usage WHERE ",
        );
        let mut any = q.separated(" OR ");
        for (budget_id, start) in keys {
            any.push("(budget_id = ");
            any.push_bind_unseparated(budget_id);
            any.push_unseparated(" AND period_start = ");
            any.push_bind_unseparated(*start);
            any.push_unseparated(")");
        }
        let rows = q
            .build_query_as::<(String, i64, i64)>()
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(b, p, s)| ((b, p), s)).collect())
    }
}

#[async_trait]
impl Counters for Books {
    async fn reserve(
        &self,
        payer: Payer<'_>,
        ask: &Ask,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<Reservation> {
        if self.open_for_spending().is_err() && !self.takes_writes_again().await {
            self.open_for_spending()?;
        }
        let pool = &self.pool;
        let definitions = self
            .definitions
            .get(|| crate::policy::sqlite::all_budgets(pool))
            .await?;
        let budgets = budgets_of(&definitions, payer);
        // Counters not seen since this process started come from the file, once.
        let missing: Vec<UsageKey> = {
            let held = self.held();
            // A bad time zone surfaces as the admission's own refusal below.
            budgets
                .iter()
                .filter_map(|b| {
                    let (start, _) = b.period.bounds(now, b.tz.as_deref()).ok()?;
                    Some((b.id.clone(), start))
                })
                .filter(|k| !held.state.rows.contains_key(k))
                .collect()
        };
        if !missing.is_empty() {
            let spent = self.recorded_spend(&missing).await?;
            let mut held = self.held();
            for key in missing {
                let s = spent.get(&key).copied().unwrap_or(0);
                held.state.rows.entry(key).or_insert((s, 0));
            }
        }
        let mut held = self.held();
        let reserved = state::reserve_in(&mut held.state, budgets, payer, ask, now, ttl);
        held.state.forget_changes();
        reserved
    }

    async fn top_up(&self, reservation: &Reservation, price: Price, want: u32) -> Result<u32> {
        self.open_for_spending()?;
        let mut held = self.held();
        let granted = state::top_up_in(&mut held.state, reservation, &price, want);
        held.state.forget_changes();
        Ok(granted)
    }

    async fn settle(&self, reservation: &Reservation, entry: &LedgerEntry) -> Result<BudgetLeft> {
        let (again, left, spend) = {
            let mut held = self.held();
            let again = held.unwritten.contains(&reservation.id);
            let left = if again {
                left_after(&held.state, reservation)
            } else {
                state::settle_in(&mut held.state, reservation, entry)
            };
            held.state.forget_changes();
            let spend: Vec<(UsageKey, i64)> = reservation
                .holds
                .iter()
                .map(|h| {
                    let key = (h.budget_id.clone(), h.period_start);
                    (key, state::spend_on(h, entry))
                })
                .collect();
            (again, left, spend)
        };
        let written = submit(&self.writer, |done| Job::Persist {
            spend,
            entry: Box::new(entry.clone()),
            release: None,
            done,
        })
        .await;
        match written {
            Ok(_) => {
                self.failing.store(false, Ordering::Release);
                if again {
                    self.held().unwritten.remove(&reservation.id);
                }
                Ok(left)
            }
            Err(e) => {
                self.failing.store(true, Ordering::Release);
                // Only the caller settles this reservation again, and only after this error.
                if !reservation.holds.is_empty() {
                    self.held().unwritten.insert(reservation.id.clone());
                }
                Err(e)
            }
        }
    }

    async fn release_expired(&self, now: OffsetDateTime) -> Result<u64> {
        let mut held = self.held();
        let now = now.unix_timestamp();
        let expired: Vec<(String, String, i64)> = held
            .state
            .holds
            .values()
            .filter(|h| h.expires_at <= now)
            .map(|h| {
                (
                    h.reservation_id.clone(),
                    h.budget_id.clone(),
                    h.period_start,
                )
            })
            .collect();
        let released = state::reap_in(&mut held.state, &expired);
        held.state.forget_changes();
        Ok(released)
    }

    /// Replaces what the file says is reserved with what this process holds.
    async fn overlay(&self, statuses: &mut [BudgetStatus]) -> Result<()> {
        let held = self.held();
        for s in statuses {
            if let Some(&(spent, reserved)) =
                held.state.rows.get(&(s.budget.id.clone(), s.period_start))
            {
                (s.spent, s.reserved) = (spent, reserved);
            }
        }
        Ok(())
    }

    fn definitions_changed(&self) {
        self.definitions.changed();
    }
}

/// What is left on each budget of a reservation already settled.
fn left_after(state: &State, reservation: &Reservation) -> BudgetLeft {
    let mut left = BudgetLeft::default();
    for h in &reservation.holds {
        let (spent, reserved) = state.usage(&h.budget_id, h.period_start);
        left.note(h.unit, h.limit - spent - reserved);
    }
    left
}

/// Takes the exclusive lock on `<db>.server.lock` that makes this process the only one serving
/// `db`'s budgets, and writes its pid there for whoever is refused next. (`<db>.lock` is the
/// migration lock, held only while opening.)
pub(crate) fn lock(db: &Path) -> Result<File> {
    use std::io::{Read as _, Seek as _, Write as _};
    let path = crate::sqlite::lock_path(db, "server.lock");
    let mut file = open_lock(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(", last served by process {pid}"),
            };
            return Err(Error::Config(format!(
                "{} is in use by another process that serves it or reserves budgets in it \
                 (lock file {}{holder}): one process serves a SQLite database; run replicas \
                 on Postgres",
                db.display(),
                path.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(Error::Config(format!(
                "{}: cannot lock: {e}",
                path.display()
            )));
        }
    }
    let pid = std::process::id().to_string();
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(pid.as_bytes()));
    Ok(file)
}

fn open_lock(path: &Path) -> Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
        .open(path)
        .map_err(|e| Error::Config(format!("{}: cannot open: {e}", path.display())))
}

/// The right of a process that keeps reservations in the file ([`crate::policy::SqlitePolicy::connect`])
/// to reserve: a shared lock on `<db>.server.lock`, taken at its first reservation and kept.
/// A server cannot start beside it, and it cannot reserve beside a server, whose holds it
/// could not see. (The admin's `lyss` never reserves, so never takes it.)
pub(crate) struct Claim {
    path: PathBuf,
    held: Mutex<Option<File>>,
}

impl Claim {
    pub(crate) fn new(db: &Path) -> Self {
        Self {
            path: crate::sqlite::lock_path(db, "server.lock"),
            held: Mutex::new(None),
        }
    }

    pub(crate) fn take(&self) -> Result<()> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_some() {
            return Ok(());
        }
        let file = open_lock(&self.path)?;
        match file.try_lock_shared() {
            Ok(()) => {
                *held = Some(file);
                Ok(())
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Unavailable {
                backend: "database",
                message: format!(
                    "a server holds this database's reservations ({}): reserve through it",
                    self.path.display()
                ),
                contended: false,
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::Unavailable {
                backend: "database",
                message: format!("{}: cannot lock: {e}", self.path.display()),
                contended: false,
            }),
        }
    }
}

/// What a settlement does, minus the rows: its statements run against the tables it writes, and
/// the file takes a write (SQLite rewrites the header page — a WAL frame — on
/// `PRAGMA user_version = …` even when the value does not change).
async fn probe_writes(pool: &SqlitePool) -> std::result::Result<(), sqlx::Error> {
    let v: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(pool)
        .await?;
    // Dropped without a commit, the transaction rolls back.
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE budget_usage SET spent = spent WHERE 0")
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE usage_ledger SET status = status WHERE 0")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("PRAGMA user_version = {v}"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
