//! The `Policy` conformance suite, one file per part of the policy (`directory.rs`,
//! `budgets.rs`, `ledger.rs`, `conversations.rs`, `providers.rs`). Each function panics on a
//! contract violation.

mod budgets;
mod conversations;
mod directory;
mod ledger;
mod providers;

pub use self::budgets::*;
pub use self::conversations::*;
pub use self::directory::*;
pub use self::ledger::*;
pub use self::providers::*;

use time::OffsetDateTime;

use crate::error::Error;
use crate::policy::{Ask, LedgerEntry, NewBudget, NewKey, Period, Policy, Principal, Scope, Unit};
use crate::price::Price;

/// Generates one test per case for a policy backend, given an `async` block that returns a
/// fresh, empty `Some(Arc<dyn Policy>)`, or `None` to skip.
#[macro_export]
macro_rules! policy_conformance {
    ($factory:expr) => {
        $crate::policy_conformance!(@cases $factory;
            keys_authenticate_until_revoked,
            admin_sessions_end_when_signed_out_or_expired,
            bad_keys_are_unauthenticated,
            expired_keys_are_unauthenticated,
            names_are_unique_and_resolve_by_name_or_id,
            key_lists_never_show_secrets,
            ledger_rows_are_durable_and_read_back,
            reservation_is_all_or_nothing_across_budgets,
            concurrent_reservations_never_exceed_a_limit,
            settlement_spends_actual_usage_and_releases_the_rest,
            max_tokens_is_capped_to_what_the_tightest_budget_allows,
            the_reaper_releases_reservations_of_dead_requests,
            periods_roll_over_and_reservations_settle_where_made,
            lowering_a_limit_applies_at_once,
            expired_budgets_admit_nothing,
            top_ups_grow_a_reservation_only_as_far_as_every_budget_allows,
            a_budget_deleted_while_its_request_runs_still_gets_its_ledger_row,
            usage_reports_group_the_ledger,
            rate_limits_and_budgets_reach_the_principal,
            workspace_updates_change_only_what_they_name,
            responses_are_kept_for_their_user_only,
            stored_providers_are_replaced_by_name_and_deleted,
        );
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some(policy): Option<::std::sync::Arc<dyn $crate::policy::Policy>> = $factory.await else {
                    return;
                };
                $crate::testing::policy::$case(policy).await;
            }
        )+
    };
}

pub(super) const TTL: std::time::Duration = std::time::Duration::from_secs(60);

pub(super) async fn setup(policy: &dyn Policy, ws: &str, user: &str) {
    policy
        .create_workspace(ws, &["m1".into(), "m2".into()])
        .await
        .expect("create workspace");
    policy.create_user(user, ws).await.expect("create user");
}

pub(super) fn assert_unauthenticated(r: crate::Result<impl std::fmt::Debug>) {
    match r {
        Err(Error::Unauthenticated(_)) => {}
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
}

/// A principal for `ann` in `team`, and its key.
pub async fn principal(policy: &dyn Policy) -> (Principal, String) {
    setup(policy, "team", "ann").await;
    let key = policy
        .create_key(&NewKey {
            user: "ann".into(),
            ..NewKey::default()
        })
        .await
        .expect("key")
        .key;
    (policy.authenticate(&key).await.expect("authenticate"), key)
}

/// Sets a budget on `target`; its id.
pub async fn budget(
    policy: &dyn Policy,
    scope: Scope,
    target: &str,
    unit: Unit,
    limit: i64,
    period: Period,
) -> String {
    policy
        .set_budget(&NewBudget {
            scope,
            target: target.into(),
            unit,
            limit,
            period,
            tz: None,
            expires_at: None,
        })
        .await
        .expect("set budget")
        .id
}

/// (spent, reserved) of a budget in the period containing `now`.
pub async fn usage_of(policy: &dyn Policy, id: &str, now: OffsetDateTime) -> (i64, i64) {
    let all = policy.budgets(now).await.expect("budgets");
    let b = all
        .iter()
        .find(|b| b.budget.id == id)
        .expect("budget listed");
    (b.spent, b.reserved)
}

/// An ask of `prompt` tokens and at most `output` more, at [`price`], reserved whole.
pub fn ask(prompt: u64, output: Option<u32>) -> Ask {
    Ask {
        prompt_tokens: prompt,
        requested_output: output,
        output_cap: 1000,
        price: price(),
        grows: None,
    }
}

/// The price the suite's asks and ledger entries use (nano-USD: 1,000 in, 2,000 out).
pub fn price() -> Price {
    Price::per_mtok(1.0, 2.0, 1.0)
}

/// A ledger entry for `who` that used `prompt` and `completion` tokens at [`price`].
pub fn spent_entry(who: &Principal, prompt: u64, completion: u64) -> LedgerEntry {
    let price = price();
    LedgerEntry {
        provider: "p".into(),
        upstream_model: "m1".into(),
        prompt_tokens: prompt,
        prompt_tokens_original: prompt,
        completion_tokens: completion,
        cost_nusd: prompt as i64 * price.input + completion as i64 * price.output,
        latency_ms: 1.0,
        ..LedgerEntry::new(who.payer(), "r", "chat", "m1", std::time::Instant::now())
    }
}
