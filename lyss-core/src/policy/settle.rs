//! Settlement on the policy side: a finished request's ledger row, written so that it lands.
//! The request path and memory extraction both settle through here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::policy::{BudgetLeft, LedgerEntry, Policy, Reservation};
use crate::wire::Usage;

/// The ledger status and billed usage of an upstream call that failed with `e`. A call that
/// timed out may have been processed (and billed) upstream: its prompt counts. Refused or
/// unreachable calls cost nothing.
pub(crate) fn failure(e: &Error, prompt_tokens: u64) -> (u16, Usage) {
    match e {
        Error::Upstream { status, .. } => (*status, Usage::default()),
        Error::UpstreamTimeout { .. } => (
            504,
            Usage {
                prompt_tokens,
                ..Usage::default()
            },
        ),
        // One the upstream's translation cannot carry: the client was told 400.
        Error::InvalidRequest { .. } => (400, Usage::default()),
        _ => (502, Usage::default()),
    }
}

/// How long a settlement that found the database down keeps trying in the background.
const SETTLE_RETRY_FOR: Duration = Duration::from_secs(15 * 60);

/// Settles; when the database is unreachable, keeps trying in the background instead of
/// failing the request. The upstream has spent the tokens already: withholding the answer
/// saves nothing, and the row must land to keep the budget true. A late settlement still adds
/// its spend if the reaper released the hold meanwhile. Admission stays closed while the
/// database is down (reservations fail), so nothing new is spent unrecorded.
pub(crate) async fn settle_or_retry(
    policy: &Arc<dyn Policy>,
    reservation: &Reservation,
    entry: &LedgerEntry,
) -> Result<BudgetLeft> {
    match policy.settle(reservation, entry).await {
        Err(e @ Error::Unavailable { .. }) => {
            tracing::warn!(error = %e, request_id = %entry.request_id, "ledger unavailable: settling in the background");
            crate::telemetry::settlement_deferred();
            tokio::spawn(retry_settle(
                policy.clone(),
                reservation.clone(),
                entry.clone(),
            ));
            Ok(BudgetLeft::default())
        }
        other => other,
    }
}

async fn retry_settle(policy: Arc<dyn Policy>, reservation: Reservation, entry: LedgerEntry) {
    let deadline = Instant::now() + SETTLE_RETRY_FOR;
    let mut wait = Duration::from_millis(100);
    loop {
        tokio::time::sleep(wait).await;
        // The failed attempt may have committed with its acknowledgement lost: never twice.
        let settled = match already_recorded(policy.as_ref(), &entry).await {
            Ok(true) => Ok(()),
            Ok(false) => policy.settle(&reservation, &entry).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match settled {
            Ok(()) => {
                tracing::info!(request_id = %entry.request_id, "settled after the database came back");
                return;
            }
            Err(Error::Unavailable { .. }) if Instant::now() < deadline => {
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                let row = serde_json::to_string(&entry).unwrap_or_default();
                tracing::error!(error = %e, row = %row, "gave up settling: the ledger row is lost");
                return;
            }
        }
    }
}

/// Whether the ledger holds this entry (same request, endpoint and millisecond).
async fn already_recorded(policy: &dyn Policy, entry: &LedgerEntry) -> Result<bool> {
    let rows = policy
        .ledger(&crate::policy::LedgerQuery {
            since: Some(entry.at - Duration::from_millis(1)),
            until: Some(entry.at + Duration::from_millis(1)),
            key_id: Some(entry.key_id.clone()),
            limit: Some(10_000),
        })
        .await?;
    let ms = crate::clock::unix_ms;
    Ok(rows.iter().any(|r| {
        r.request_id == entry.request_id && r.endpoint == entry.endpoint && ms(r.at) == ms(entry.at)
    }))
}
