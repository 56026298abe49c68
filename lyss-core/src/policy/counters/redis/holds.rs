//! Hold rows: written to Postgres beside each Redis hold (in batches, without waiting for
//! the disk), deleted by the settlement's commit or, for dead requests, after the reaper.

use std::time::Instant;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::{HOLD_ROW_DEADLINE, RedisCounters};
use crate::error::{Error, Result};
use crate::policy::Reservation;
use crate::policy::budget::state::HoldRow;

impl RedisCounters {
    /// Writes (or rewrites the amounts of) a reservation's hold rows, in the hold writer's
    /// next batch.
    pub(super) async fn write_holds(
        &self,
        reservation: &Reservation,
        expires_at: i64,
    ) -> Result<()> {
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
    pub(super) async fn write_holds_in_time(
        &self,
        reservation: &Reservation,
        expires_at: i64,
    ) -> Result<()> {
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
    pub(super) fn release_in_background(&self, reservation: &Reservation) {
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
    pub(super) fn forget_holds(&self, reservation_id: String) {
        let holds = self.holds.clone();
        tokio::spawn(async move {
            let _ = sqlx::query("DELETE FROM reservations WHERE id = $1")
                .bind(reservation_id)
                .execute(&holds)
                .await;
        });
    }
}

/// Hold rows to write, and who waits for them.
pub(super) struct HoldWrite {
    rows: Vec<HoldRow>,
    done: oneshot::Sender<Result<()>>,
}

/// Writes the hold rows of every reservation waiting at that moment in one statement (one
/// transaction, committed without waiting for the disk): a reservation costs Postgres a
/// share of a statement, not one.
pub(super) async fn hold_writer(pool: PgPool, mut rx: mpsc::Receiver<HoldWrite>) {
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
