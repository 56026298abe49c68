//! The budgets' part of the `Policy` conformance suite: the invariant under reservations,
//! settlements, concurrency, periods and the reaper.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::*;
use crate::error::Error;
use crate::policy::{Ask, FirstShare, LedgerQuery, NewBudget, Period, Policy, Scope, Unit};

pub async fn reservation_is_all_or_nothing_across_budgets(policy: Arc<dyn Policy>) {
    let (_, key) = principal(policy.as_ref()).await;
    let now = OffsetDateTime::now_utc();
    let roomy = budget(
        policy.as_ref(),
        Scope::Workspace,
        "team",
        Unit::Tokens,
        1_000_000,
        Period::None,
    )
    .await;
    let tight = budget(
        policy.as_ref(),
        Scope::User,
        "ann",
        Unit::Tokens,
        100,
        Period::Monthly,
    )
    .await;
    let who = policy.authenticate(&key).await.expect("re-authenticate");
    assert!(who.budgeted);
    match policy
        .reserve(who.payer(), &ask(50, Some(100)), now, TTL)
        .await
    {
        Err(Error::BudgetExceeded(refusal)) => {
            let msg = &refusal.message;
            assert!(
                msg.contains("user `ann` monthly budget of 100 tokens"),
                "{msg}"
            );
            assert!(msg.contains("resets at"), "{msg}");
            // The same, typed, for callers that act on it.
            assert_eq!(
                (refusal.scope, refusal.unit, refusal.limit),
                ("user", "tokens", 100)
            );
            let resets_at = refusal.resets_at.expect("a monthly budget resets");
            assert!(resets_at > now && resets_at <= now + Duration::days(31));
        }
        other => panic!("expected BudgetExceeded, got {other:?}"),
    }
    // Nothing was held on the budget that would have admitted it.
    assert_eq!(usage_of(policy.as_ref(), &roomy, now).await, (0, 0));
    assert_eq!(usage_of(policy.as_ref(), &tight, now).await, (0, 0));
    let r = policy
        .reserve(who.payer(), &ask(50, Some(50)), now, TTL)
        .await
        .expect("fits");
    assert_eq!(r.holds.len(), 2);
    assert_eq!(usage_of(policy.as_ref(), &roomy, now).await, (0, 100));
    assert_eq!(usage_of(policy.as_ref(), &tight, now).await, (0, 100));
}

pub async fn concurrent_reservations_never_exceed_a_limit(policy: Arc<dyn Policy>) {
    let who = Arc::new(principal(policy.as_ref()).await.0);
    let now = OffsetDateTime::now_utc();
    let id = budget(
        policy.as_ref(),
        Scope::Key,
        &who.key_id,
        Unit::Tokens,
        10_000,
        Period::Daily,
    )
    .await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (policy, who) = (policy.clone(), who.clone());
            tokio::spawn(async move {
                policy
                    .reserve(who.payer(), &ask(50, Some(100)), now, TTL)
                    .await
            })
        })
        .collect();
    let mut admitted = Vec::new();
    for t in tasks {
        match t.await.expect("join") {
            Ok(r) => admitted.push(r),
            Err(Error::BudgetExceeded(_)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    // 150 tokens each against 10,000: exactly 66 fit.
    assert_eq!(admitted.len(), 66);
    let (spent, reserved) = usage_of(policy.as_ref(), &id, now).await;
    assert_eq!((spent, reserved), (0, 66 * 150));
    let settles: Vec<_> = admitted
        .into_iter()
        .map(|r| {
            let (policy, who) = (policy.clone(), who.clone());
            tokio::spawn(async move { policy.settle(&r, &spent_entry(&who, 50, 70)).await })
        })
        .collect();
    for s in settles {
        s.await.expect("join").expect("settle");
    }
    assert_eq!(usage_of(policy.as_ref(), &id, now).await, (66 * 120, 0));
    let ledger_tokens: u64 = policy
        .ledger(&LedgerQuery {
            limit: Some(10_000),
            ..LedgerQuery::default()
        })
        .await
        .expect("ledger")
        .iter()
        .map(|e| e.prompt_tokens + e.completion_tokens)
        .sum();
    assert_eq!(ledger_tokens, 66 * 120, "the ledger and the budget agree");
}

pub async fn settlement_spends_actual_usage_and_releases_the_rest(policy: Arc<dyn Policy>) {
    let (_, key) = principal(policy.as_ref()).await;
    let now = OffsetDateTime::now_utc();
    let usd = budget(
        policy.as_ref(),
        Scope::Workspace,
        "team",
        Unit::Usd,
        1_000_000_000,
        Period::Monthly,
    )
    .await;
    let who = policy.authenticate(&key).await.expect("re-authenticate");
    let r = policy
        .reserve(who.payer(), &ask(100, Some(200)), now, TTL)
        .await
        .expect("reserve");
    // 100 × 1000 + 200 × 2000 nano-USD held.
    assert_eq!(usage_of(policy.as_ref(), &usd, now).await, (0, 500_000));
    assert_eq!(r.left.usd, Some(1_000_000_000 - 500_000));
    let left = policy
        .settle(&r, &spent_entry(&who, 100, 10))
        .await
        .expect("settle");
    assert_eq!(usage_of(policy.as_ref(), &usd, now).await, (120_000, 0));
    assert_eq!(left.usd, Some(1_000_000_000 - 120_000));
    assert_eq!(left.header_value().as_deref(), Some("usd=0.999880"));
    // Settling twice must not release twice.
    policy
        .settle(&r, &spent_entry(&who, 0, 0))
        .await
        .expect("second settle");
    assert_eq!(usage_of(policy.as_ref(), &usd, now).await, (120_000, 0));
}

pub async fn max_tokens_is_capped_to_what_the_tightest_budget_allows(policy: Arc<dyn Policy>) {
    let (_, key) = principal(policy.as_ref()).await;
    let now = OffsetDateTime::now_utc();
    budget(
        policy.as_ref(),
        Scope::User,
        "ann",
        Unit::Tokens,
        400,
        Period::None,
    )
    .await;
    let who = policy.authenticate(&key).await.expect("re-authenticate");
    let r = policy
        .reserve(who.payer(), &ask(100, None), now, TTL)
        .await
        .expect("reserve");
    assert_eq!(r.set_max_tokens, Some(300));
    // Without room for a minimal answer: refused.
    assert!(matches!(
        policy.reserve(who.payer(), &ask(100, None), now, TTL).await,
        Err(Error::BudgetExceeded(_))
    ));
}

pub async fn the_reaper_releases_reservations_of_dead_requests(policy: Arc<dyn Policy>) {
    let (_, key) = principal(policy.as_ref()).await;
    let now = OffsetDateTime::now_utc();
    let id = budget(
        policy.as_ref(),
        Scope::User,
        "ann",
        Unit::Tokens,
        1_000,
        Period::None,
    )
    .await;
    let who = policy.authenticate(&key).await.expect("re-authenticate");
    let ttl = std::time::Duration::from_secs(5);
    let dead = policy
        .reserve(who.payer(), &ask(100, Some(100)), now, ttl)
        .await
        .expect("reserve");
    let alive = policy
        .reserve(
            who.payer(),
            &ask(100, Some(100)),
            now + Duration::seconds(4),
            ttl,
        )
        .await
        .expect("reserve");
    assert_eq!(
        policy
            .release_expired(now + Duration::seconds(1))
            .await
            .expect("reap"),
        0
    );
    assert_eq!(
        policy
            .release_expired(now + Duration::seconds(6))
            .await
            .expect("reap"),
        1
    );
    assert_eq!(usage_of(policy.as_ref(), &id, now).await, (0, 200));
    // A late settlement of the reaped request still bills what flowed, once.
    policy
        .settle(&dead, &spent_entry(&who, 100, 50))
        .await
        .expect("late settle");
    policy
        .settle(&alive, &spent_entry(&who, 100, 50))
        .await
        .expect("settle");
    assert_eq!(usage_of(policy.as_ref(), &id, now).await, (300, 0));
}

pub async fn periods_roll_over_and_reservations_settle_where_made(policy: Arc<dyn Policy>) {
    use time::macros::datetime;
    let (_, key) = principal(policy.as_ref()).await;
    let id = budget(
        policy.as_ref(),
        Scope::User,
        "ann",
        Unit::Tokens,
        500,
        Period::Daily,
    )
    .await;
    let who = policy.authenticate(&key).await.expect("re-authenticate");
    let before = datetime!(2026-11-27 23:59:59 UTC);
    let after = datetime!(2026-11-28 00:00:00 UTC);
    let late = policy
        .reserve(who.payer(), &ask(100, Some(300)), before, TTL)
        .await
        .expect("day 1");
    // Day 1 is nearly full...
    assert!(
        policy
            .reserve(who.payer(), &ask(100, Some(300)), before, TTL)
            .await
            .is_err()
    );
    // ...and at the boundary exactly, a fresh day admits again.
    let early = policy
        .reserve(who.payer(), &ask(100, Some(300)), after, TTL)
        .await
        .expect("day 2");
    policy
        .settle(&early, &spent_entry(&who, 100, 20))
        .await
        .expect("settle day 2");
    // The in-flight day-1 request settles into day 1, after the rollover.
    policy
        .settle(&late, &spent_entry(&who, 100, 200))
        .await
        .expect("settle day 1");
    assert_eq!(usage_of(policy.as_ref(), &id, before).await, (300, 0));
    assert_eq!(usage_of(policy.as_ref(), &id, after).await, (120, 0));
    let listed = policy.budgets(after).await.expect("budgets");
    assert_eq!(
        listed[0].resets_at,
        Some(datetime!(2026-11-29 00:00:00 UTC)),
    );
}

pub async fn lowering_a_limit_applies_at_once(policy: Arc<dyn Policy>) {
    let (_, key) = principal(policy.as_ref()).await;
    let now = OffsetDateTime::now_utc();
    let first = budget(
        policy.as_ref(),
        Scope::Workspace,
        "team",
        Unit::Tokens,
        10_000,
        Period::Monthly,
    )
    .await;
    let who = policy.authenticate(&key).await.expect("re-authenticate");
    policy
        .reserve(who.payer(), &ask(10, Some(10)), now, TTL)
        .await
        .expect("fits");
    let again = budget(
        policy.as_ref(),
        Scope::Workspace,
        "team",
        Unit::Tokens,
        10,
        Period::Monthly,
    )
    .await;
    assert_eq!(first, again, "setting a budget again replaces it");
    assert!(matches!(
        policy
            .reserve(who.payer(), &ask(10, Some(10)), now, TTL)
            .await,
        Err(Error::BudgetExceeded(_))
    ));
    policy.delete_budget(&first).await.expect("delete");
    assert!(policy.budgets(now).await.expect("list").is_empty());
    assert!(matches!(
        policy.delete_budget(&first).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn expired_budgets_admit_nothing(policy: Arc<dyn Policy>) {
    let (who, key) = principal(policy.as_ref()).await;
    let now = OffsetDateTime::now_utc();
    policy
        .set_budget(&NewBudget {
            scope: Scope::Key,
            target: who.key_id.clone(),
            unit: Unit::Usd,
            limit: 1_000_000_000,
            period: Period::None,
            tz: None,
            expires_at: Some(now - Duration::minutes(1)),
        })
        .await
        .expect("budget");
    let who = policy.authenticate(&key).await.expect("re-authenticate");
    match policy
        .reserve(who.payer(), &ask(1, Some(1)), now, TTL)
        .await
    {
        Err(Error::BudgetExceeded(refusal)) => {
            let msg = &refusal.message;
            assert!(msg.contains("expired"), "{msg}");
            assert_eq!(
                refusal.resets_at, None,
                "an expired budget does not come back"
            );
        }
        other => panic!("expected an expired budget to refuse, got {other:?}"),
    }
    assert!(
        policy
            .set_budget(&NewBudget {
                scope: Scope::User,
                target: "nobody".into(),
                unit: Unit::Usd,
                limit: 1,
                period: Period::None,
                tz: None,
                expires_at: None,
            })
            .await
            .is_err()
    );
}

pub async fn top_ups_grow_a_reservation_only_as_far_as_every_budget_allows(
    policy: Arc<dyn Policy>,
) {
    let (who, key) = principal(policy.as_ref()).await;
    let now = OffsetDateTime::now_utc();
    let tokens = budget(
        policy.as_ref(),
        Scope::Key,
        &who.key_id,
        Unit::Tokens,
        1_000,
        Period::Daily,
    )
    .await;
    let who = policy.authenticate(&key).await.expect("re-authenticate");
    let growing = Ask {
        grows: Some(FirstShare {
            tokens: 50,
            share: 0.5,
        }),
        ..ask(100, None)
    };
    // 100 prompt + 50 output of the 900 that could be written.
    let r = policy
        .reserve(who.payer(), &growing, now, TTL)
        .await
        .expect("reserve");
    assert_eq!((r.output, r.ceiling), (50, 900));
    assert!(r.grows());
    assert_eq!(usage_of(policy.as_ref(), &tokens, now).await, (0, 150));
    // Twenty concurrent top-ups of 100 against the 850 left: exactly 850 granted in all.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (policy, r) = (policy.clone(), r.clone());
            tokio::spawn(async move { policy.top_up(&r, price(), 100).await })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        granted += t.await.expect("join").expect("top up");
    }
    assert_eq!(granted, 850);
    assert_eq!(usage_of(policy.as_ref(), &tokens, now).await, (0, 1_000));
    assert_eq!(policy.top_up(&r, price(), 1).await.expect("full"), 0);
    // Settling releases every topped-up token it did not use.
    policy
        .settle(&r, &spent_entry(&who, 100, 600))
        .await
        .expect("settle");
    assert_eq!(usage_of(policy.as_ref(), &tokens, now).await, (700, 0));
    // A settled reservation grows no more, and holds nothing.
    assert_eq!(policy.top_up(&r, price(), 10).await.expect("settled"), 0);
    assert_eq!(usage_of(policy.as_ref(), &tokens, now).await, (700, 0));
}

pub async fn a_budget_deleted_while_its_request_runs_still_gets_its_ledger_row(
    policy: Arc<dyn Policy>,
) {
    let (who, key) = principal(policy.as_ref()).await;
    let now = OffsetDateTime::now_utc();
    let p = policy.as_ref();
    let gone = budget(
        p,
        Scope::Key,
        &who.key_id,
        Unit::Tokens,
        1_000,
        Period::Monthly,
    )
    .await;
    let kept = budget(p, Scope::User, "ann", Unit::Tokens, 1_000, Period::Monthly).await;
    let who = p.authenticate(&key).await.expect("re-authenticate");
    let r = p
        .reserve(who.payer(), &ask(10, Some(100)), now, TTL)
        .await
        .expect("fits");
    assert_eq!(r.holds.len(), 2);
    p.delete_budget(&gone).await.expect("delete");
    p.settle(&r, &spent_entry(&who, 10, 20))
        .await
        .expect("settled on what is left");
    assert_eq!(usage_of(p, &kept, now).await, (30, 0));
    assert_eq!(p.budgets(now).await.expect("list").len(), 1);
    let rows = p.ledger(&LedgerQuery::default()).await.expect("ledger");
    assert_eq!(rows.len(), 1, "the request is on the books");
    p.reserve(who.payer(), &ask(10, Some(100)), now, TTL)
        .await
        .expect("admission still works");
}
