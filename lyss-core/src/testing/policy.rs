//! The `Policy` conformance suite. Each function panics on a contract violation.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use crate::error::Error;
use crate::models::Price;
use crate::policy::{
    Ask, GroupBy, LedgerEntry, LedgerQuery, NewBudget, NewKey, Period, Policy, Principal,
    Reservation, Scope, Unit, UsageQuery,
};

/// Generates one test per case for a policy backend, given an `async` block that returns a
/// fresh, empty `Some(Arc<dyn Policy>)`, or `None` to skip.
#[macro_export]
macro_rules! policy_conformance {
    ($factory:expr) => {
        $crate::policy_conformance!(@cases $factory;
            keys_authenticate_until_revoked,
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
            usage_reports_group_the_ledger,
            rate_limits_and_budgets_reach_the_principal,
            workspace_updates_change_only_what_they_name,
            responses_are_kept_for_their_user_only,
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

async fn setup(policy: &dyn Policy, ws: &str, user: &str) {
    policy
        .create_workspace(ws, &["m1".into(), "m2".into()])
        .await
        .expect("create workspace");
    policy.create_user(user, ws).await.expect("create user");
}

fn assert_unauthenticated(r: crate::Result<impl std::fmt::Debug>) {
    match r {
        Err(Error::Unauthenticated(_)) => {}
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
}

pub async fn keys_authenticate_until_revoked(policy: Arc<dyn Policy>) {
    setup(policy.as_ref(), "team", "ann").await;
    let created = policy
        .create_key(&NewKey {
            user: "ann".into(),
            name: Some("laptop".into()),
            models: Some(vec!["m1".into()]),
            expires_at: None,
        })
        .await
        .expect("create key");
    assert!(
        created
            .key
            .starts_with(&format!("lyss-sk-{}-", created.info.id))
    );
    let p = policy
        .authenticate(&created.key)
        .await
        .expect("authenticate");
    assert_eq!(p.key_id, created.info.id);
    assert_eq!(p.user_name, "ann");
    assert_eq!(p.workspace_name, "team");
    assert_eq!(p.workspace_models, vec!["m1", "m2"]);
    assert_eq!(p.key_models, Some(vec!["m1".to_string()]));
    let revoked = policy.revoke_key(&created.info.id).await.expect("revoke");
    assert!(revoked.revoked_at.is_some());
    assert_unauthenticated(policy.authenticate(&created.key).await);
    // Revoking again is fine and keeps the first revocation time.
    let again = policy
        .revoke_key(&created.info.id)
        .await
        .expect("revoke again");
    assert_eq!(again.revoked_at, revoked.revoked_at);
}

pub async fn bad_keys_are_unauthenticated(policy: Arc<dyn Policy>) {
    setup(policy.as_ref(), "team", "ann").await;
    let created = policy
        .create_key(&NewKey {
            user: "ann".into(),
            ..NewKey::default()
        })
        .await
        .expect("create key");
    let (head, secret) = created.key.rsplit_once('-').expect("key has a secret");
    let mut wrong: Vec<char> = secret.chars().collect();
    wrong[0] = if wrong[0] == 'a' { 'b' } else { 'a' };
    let wrong = format!("{head}-{}", wrong.into_iter().collect::<String>());
    assert_unauthenticated(policy.authenticate(&wrong).await);
    assert_unauthenticated(policy.authenticate("").await);
    assert_unauthenticated(policy.authenticate("sk-proj-123").await);
    assert_unauthenticated(
        policy
            .authenticate("lyss-sk-zzzzzzzzzzzz-0123456789abcdefghij0123456789AB")
            .await,
    );
    assert_unauthenticated(policy.authenticate("lyss-sk-' OR 1=1 --").await);
}

pub async fn expired_keys_are_unauthenticated(policy: Arc<dyn Policy>) {
    setup(policy.as_ref(), "team", "ann").await;
    let past = policy
        .create_key(&NewKey {
            user: "ann".into(),
            expires_at: Some(OffsetDateTime::now_utc() - Duration::hours(1)),
            ..NewKey::default()
        })
        .await
        .expect("create key");
    assert_unauthenticated(policy.authenticate(&past.key).await);
    let future = policy
        .create_key(&NewKey {
            user: "ann".into(),
            expires_at: Some(OffsetDateTime::now_utc() + Duration::days(1)),
            ..NewKey::default()
        })
        .await
        .expect("create key");
    let p = policy.authenticate(&future.key).await.expect("valid key");
    assert!(p.expires_at.is_some());
}

pub async fn names_are_unique_and_resolve_by_name_or_id(policy: Arc<dyn Policy>) {
    let ws = policy
        .create_workspace("team", &["*".into()])
        .await
        .expect("workspace");
    assert!(matches!(
        policy.create_workspace("team", &[]).await,
        Err(Error::Conflict(_))
    ));
    let by_id = policy
        .create_user("ann", &ws.id)
        .await
        .expect("user by ws id");
    assert_eq!(by_id.workspace, "team");
    assert!(matches!(
        policy.create_user("ann", "team").await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        policy.create_user("bob", "nope").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        policy
            .create_workspace("bad name; DROP TABLE users", &[])
            .await,
        Err(Error::InvalidRequest { .. })
    ));
    policy
        .create_user("bob", "team")
        .await
        .expect("second user");
    let users = policy.list_users(Some("team")).await.expect("list users");
    assert_eq!(
        users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        vec!["ann", "bob"]
    );
    assert!(matches!(
        policy.list_users(Some("nope")).await,
        Err(Error::NotFound(_))
    ));
    let key = policy
        .create_key(&NewKey {
            user: by_id.id.clone(),
            ..NewKey::default()
        })
        .await
        .expect("key by user id");
    assert_eq!(key.info.user, "ann");
    assert!(matches!(
        policy.revoke_key("nope").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(policy.list_workspaces().await.expect("list").len(), 1);
}

pub async fn key_lists_never_show_secrets(policy: Arc<dyn Policy>) {
    setup(policy.as_ref(), "team", "ann").await;
    policy.create_user("bob", "team").await.expect("user");
    let a = policy
        .create_key(&NewKey {
            user: "ann".into(),
            ..NewKey::default()
        })
        .await
        .expect("key");
    policy
        .create_key(&NewKey {
            user: "bob".into(),
            ..NewKey::default()
        })
        .await
        .expect("key");
    let all = policy.list_keys(None).await.expect("list");
    assert_eq!(all.len(), 2);
    let anns = policy.list_keys(Some("ann")).await.expect("list ann");
    assert_eq!(anns.len(), 1);
    assert_eq!(anns[0].id, a.info.id);
    let secret = a.key.rsplit('-').next().expect("secret");
    let listed = format!("{all:?}");
    assert!(!listed.contains(secret), "a key list shows a secret");
}

pub async fn ledger_rows_are_durable_and_read_back(policy: Arc<dyn Policy>) {
    let entry = |i: u64| LedgerEntry {
        at: OffsetDateTime::now_utc(),
        request_id: format!("req-{i}"),
        workspace_id: "ws".into(),
        user_id: "u".into(),
        key_id: if i.is_multiple_of(2) { "even" } else { "odd" }.into(),
        endpoint: "chat".into(),
        model: "m1".into(),
        provider: "p".into(),
        upstream_model: "up".into(),
        stream: i.is_multiple_of(3),
        prompt_tokens: i,
        prompt_tokens_original: i,
        completion_tokens: 2 * i,
        cached_tokens: 0,
        cost_nusd: 1000 * i as i64,
        latency_ms: 1.5,
        status: 200,
        error: None,
        cache: None,
        saved_tokens: 0,
        saved_nusd: 0,
        memory_saved_nusd: 0,
        cache_write_tokens: i / 2,
        prompt_cache_saved_nusd: -(i as i64),
    };
    // Many concurrent writers: every row lands exactly once.
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let policy = policy.clone();
            tokio::spawn(async move { policy.settle(&Reservation::default(), &entry(i)).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("record");
    }
    let rows = policy
        .ledger(&LedgerQuery {
            limit: Some(10_000),
            ..LedgerQuery::default()
        })
        .await
        .expect("read");
    assert_eq!(rows.len(), 200);
    let total: i64 = rows.iter().map(|r| r.cost_nusd).sum();
    assert_eq!(total, 1000 * (0..200).sum::<i64>());
    let odd = policy
        .ledger(&LedgerQuery {
            key_id: Some("odd".into()),
            limit: Some(10_000),
            ..LedgerQuery::default()
        })
        .await
        .expect("read odd");
    assert_eq!(odd.len(), 100);
    let one = rows
        .iter()
        .find(|r| r.request_id == "req-9")
        .expect("row 9");
    assert_eq!(one, &{
        let mut e = entry(9);
        e.at = one.at;
        e
    });
    // A window: `since` inclusive, `until` exclusive, to the millisecond.
    let at = time::macros::datetime!(2020-01-01 00:00:00.5 UTC);
    let old = LedgerEntry {
        at,
        request_id: "req-old".into(),
        ..entry(1)
    };
    policy
        .settle(&Reservation::default(), &old)
        .await
        .expect("record old");
    let ms = Duration::milliseconds(1);
    let window = |since: OffsetDateTime, until: OffsetDateTime| {
        let policy = policy.clone();
        async move {
            policy
                .ledger(&LedgerQuery {
                    since: Some(since),
                    until: Some(until),
                    ..LedgerQuery::default()
                })
                .await
                .expect("window")
                .into_iter()
                .map(|r| r.request_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(window(at, at + ms).await, ["req-old"]);
    assert_eq!(window(at - ms, at).await, Vec::<String>::new());
    assert_eq!(
        window(at + ms, at + Duration::seconds(1)).await,
        Vec::<String>::new()
    );
}

const TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// A principal for `ann` in `team`, and its key.
async fn principal(policy: &dyn Policy) -> (Principal, String) {
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

async fn budget(
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
async fn usage_of(policy: &dyn Policy, id: &str, now: OffsetDateTime) -> (i64, i64) {
    let all = policy.budgets(now).await.expect("budgets");
    let b = all
        .iter()
        .find(|b| b.budget.id == id)
        .expect("budget listed");
    (b.spent, b.reserved)
}

fn ask(prompt: u64, output: Option<u32>) -> Ask {
    Ask {
        prompt_tokens: prompt,
        requested_output: output,
        output_cap: 1000,
        price: Price::per_mtok(1.0, 2.0, 1.0),
    }
}

fn spent_entry(who: &Principal, prompt: u64, completion: u64) -> LedgerEntry {
    let price = Price::per_mtok(1.0, 2.0, 1.0);
    LedgerEntry {
        at: OffsetDateTime::now_utc(),
        request_id: "r".into(),
        workspace_id: who.workspace_id.clone(),
        user_id: who.user_id.clone(),
        key_id: who.key_id.clone(),
        endpoint: "chat".into(),
        model: "m1".into(),
        provider: "p".into(),
        upstream_model: "m1".into(),
        stream: false,
        prompt_tokens: prompt,
        prompt_tokens_original: prompt,
        completion_tokens: completion,
        cached_tokens: 0,
        cost_nusd: prompt as i64 * price.input + completion as i64 * price.output,
        latency_ms: 1.0,
        status: 200,
        error: None,
        cache: None,
        saved_tokens: 0,
        saved_nusd: 0,
        memory_saved_nusd: 0,
        cache_write_tokens: 0,
        prompt_cache_saved_nusd: 0,
    }
}

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
    match policy.reserve(&who, &ask(50, Some(100)), now, TTL).await {
        Err(Error::BudgetExceeded(refusal)) => {
            let msg = &refusal.message;
            assert!(
                msg.contains("user `ann` monthly budget of 100 tokens"),
                "{msg}"
            );
            assert!(msg.contains("resets at"), "{msg}");
            // The same, typed, for callers that act on it.
            assert_eq!(
                (
                    refusal.budget.scope,
                    refusal.budget.unit,
                    refusal.budget.limit
                ),
                (Scope::User, Unit::Tokens, 100)
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
        .reserve(&who, &ask(50, Some(50)), now, TTL)
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
            tokio::spawn(async move { policy.reserve(&who, &ask(50, Some(100)), now, TTL).await })
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
        .reserve(&who, &ask(100, Some(200)), now, TTL)
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
        .reserve(&who, &ask(100, None), now, TTL)
        .await
        .expect("reserve");
    assert_eq!(r.set_max_tokens, Some(300));
    // Without room for a minimal answer: refused.
    assert!(matches!(
        policy.reserve(&who, &ask(100, None), now, TTL).await,
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
        .reserve(&who, &ask(100, Some(100)), now, ttl)
        .await
        .expect("reserve");
    let alive = policy
        .reserve(&who, &ask(100, Some(100)), now + Duration::seconds(4), ttl)
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
        .reserve(&who, &ask(100, Some(300)), before, TTL)
        .await
        .expect("day 1");
    // Day 1 is nearly full...
    assert!(
        policy
            .reserve(&who, &ask(100, Some(300)), before, TTL)
            .await
            .is_err()
    );
    // ...and at the boundary exactly, a fresh day admits again.
    let early = policy
        .reserve(&who, &ask(100, Some(300)), after, TTL)
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
        .reserve(&who, &ask(10, Some(10)), now, TTL)
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
        policy.reserve(&who, &ask(10, Some(10)), now, TTL).await,
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
    match policy.reserve(&who, &ask(1, Some(1)), now, TTL).await {
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

pub async fn usage_reports_group_the_ledger(policy: Arc<dyn Policy>) {
    let (who, _) = principal(policy.as_ref()).await;
    for (p, c) in [(10, 1), (20, 2), (30, 3)] {
        let mut e = spent_entry(&who, p, c);
        if p == 30 {
            e.status = 502;
            e.model = "m2".into();
        }
        policy
            .settle(&Reservation::default(), &e)
            .await
            .expect("record");
    }
    let by_ws = policy
        .usage(&UsageQuery {
            by: GroupBy::Workspace,
            since: None,
            ..Default::default()
        })
        .await
        .expect("usage");
    assert_eq!(by_ws.len(), 1);
    assert_eq!(by_ws[0].group, "team");
    assert_eq!((by_ws[0].requests, by_ws[0].errors), (3, 1));
    assert_eq!(
        (by_ws[0].prompt_tokens, by_ws[0].completion_tokens),
        (60, 6)
    );
    assert_eq!(by_ws[0].cost_nusd, 60 * 1000 + 6 * 2000);
    let by_model = policy
        .usage(&UsageQuery {
            by: GroupBy::Model,
            since: None,
            ..Default::default()
        })
        .await
        .expect("usage");
    assert_eq!(
        by_model
            .iter()
            .map(|r| r.group.as_str())
            .collect::<Vec<_>>(),
        vec!["m1", "m2"]
    );
    let by_user = policy
        .usage(&UsageQuery {
            by: GroupBy::User,
            since: None,
            ..Default::default()
        })
        .await
        .expect("usage");
    assert_eq!(by_user[0].group, "ann");
    let by_day = policy
        .usage(&UsageQuery {
            by: GroupBy::Day,
            since: None,
            ..Default::default()
        })
        .await
        .expect("usage");
    assert_eq!(
        by_day[0].group,
        OffsetDateTime::now_utc().date().to_string()
    );
    let future = policy
        .usage(&UsageQuery {
            by: GroupBy::Key,
            since: Some(OffsetDateTime::now_utc() + Duration::hours(1)),
            ..Default::default()
        })
        .await
        .expect("usage");
    assert!(future.is_empty());

    // A time series: rows an hour apart land in their own hour; `until` bounds it.
    let mut old = spent_entry(&who, 5, 5);
    old.at -= Duration::hours(3);
    old.memory_saved_nusd = 777;
    old.cached_tokens = 3;
    old.cache_write_tokens = 2;
    old.prompt_cache_saved_nusd = -55;
    policy
        .settle(&Reservation::default(), &old)
        .await
        .expect("record");
    let series = policy
        .usage(&UsageQuery {
            by: GroupBy::Model,
            bucket: Some(crate::policy::Bucket::Hour),
            ..Default::default()
        })
        .await
        .expect("usage");
    let hour = |t: OffsetDateTime| {
        t.replace_minute(0)
            .and_then(|t| t.replace_second(0))
            .and_then(|t| t.replace_nanosecond(0))
            .unwrap()
    };
    let first = &series[0];
    assert_eq!(
        (first.bucket, first.requests, first.memory_saved_nusd),
        (Some(hour(old.at)), 1, 777)
    );
    // Provider prompt caching is summed too (a write that saved nothing is a negative saving).
    assert_eq!(
        (
            first.cached_tokens,
            first.cache_write_tokens,
            first.prompt_cache_saved_nusd
        ),
        (3, 2, -55)
    );
    assert!(
        series[1..]
            .iter()
            .all(|r| r.bucket == Some(hour(OffsetDateTime::now_utc()))
                || r.bucket == Some(hour(OffsetDateTime::now_utc() - Duration::minutes(1))))
    );
    assert_eq!(series.iter().map(|r| r.requests).sum::<i64>(), 4);
    let until = policy
        .usage(&UsageQuery {
            by: GroupBy::Workspace,
            until: Some(OffsetDateTime::now_utc() - Duration::hours(1)),
            ..Default::default()
        })
        .await
        .expect("usage");
    assert_eq!(until[0].requests, 1);
}

pub async fn rate_limits_and_budgets_reach_the_principal(policy: Arc<dyn Policy>) {
    let (who, key) = principal(policy.as_ref()).await;
    assert!(!who.budgeted && who.rate_limits.is_empty());
    policy
        .set_rate_limit(Scope::User, "ann", Some(60), None)
        .await
        .expect("user limit");
    policy
        .set_rate_limit(Scope::Key, &who.key_id, None, Some(1000))
        .await
        .expect("key limit");
    let again = policy.authenticate(&key).await.expect("re-authenticate");
    assert_eq!(again.rate_limits.len(), 2);
    let user = again
        .rate_limits
        .iter()
        .find(|l| l.scope == Scope::User)
        .expect("user");
    assert_eq!((user.rpm, user.tpm), (Some(60), None));
    let key_limit = again
        .rate_limits
        .iter()
        .find(|l| l.scope == Scope::Key)
        .expect("key");
    assert_eq!((key_limit.rpm, key_limit.tpm), (None, Some(1000)));
    policy
        .set_rate_limit(Scope::User, "ann", None, None)
        .await
        .expect("clear");
    assert_eq!(
        policy
            .authenticate(&key)
            .await
            .expect("re-authenticate")
            .rate_limits
            .len(),
        1
    );
    assert!(
        policy
            .set_rate_limit(Scope::Workspace, "nope", Some(1), None)
            .await
            .is_err()
    );
}

pub async fn workspace_updates_change_only_what_they_name(policy: Arc<dyn Policy>) {
    use crate::config::{CacheMode, CacheScope, WorkspaceCache};
    use crate::policy::WorkspaceUpdate;
    let ws = policy
        .create_workspace("team", &["a".into()])
        .await
        .unwrap();
    assert_eq!(ws.cache, WorkspaceCache::default());
    policy.create_user("ann", "team").await.unwrap();
    let key = policy
        .create_key(&NewKey {
            user: "ann".into(),
            ..NewKey::default()
        })
        .await
        .unwrap()
        .key;
    let cache = WorkspaceCache {
        mode: Some(CacheMode::Semantic),
        ttl_secs: Some(90),
        scope: Some(CacheScope::User),
        semantic_threshold: Some(0.97),
    };
    let updated = policy
        .update_workspace(
            &ws.id,
            &WorkspaceUpdate {
                models: None,
                cache,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (updated.cache, updated.models.clone()),
        (cache, vec!["a".to_owned()])
    );
    // Fields left out stay as they were.
    let updated = policy
        .update_workspace(
            "team",
            &WorkspaceUpdate {
                models: Some(vec!["a".into(), "b".into()]),
                cache: WorkspaceCache {
                    mode: Some(CacheMode::Exact),
                    ..Default::default()
                },
            },
        )
        .await
        .unwrap();
    let expected = WorkspaceCache {
        mode: Some(CacheMode::Exact),
        ..cache
    };
    assert_eq!(updated.cache, expected);
    assert_eq!(updated.models, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(policy.list_workspaces().await.unwrap()[0], updated);
    let who = policy.authenticate(&key).await.unwrap();
    assert_eq!(who.workspace_cache, expected);
    assert_eq!(who.workspace_models, updated.models);
    // Bad settings and unknown workspaces change nothing.
    let bad = WorkspaceUpdate {
        models: None,
        cache: WorkspaceCache {
            semantic_threshold: Some(2.0),
            ..Default::default()
        },
    };
    assert!(matches!(
        policy.update_workspace("team", &bad).await,
        Err(Error::InvalidRequest { .. })
    ));
    assert!(matches!(
        policy
            .update_workspace("nope", &WorkspaceUpdate::default())
            .await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(policy.list_workspaces().await.unwrap()[0], updated);
}

pub async fn responses_are_kept_for_their_user_only(policy: Arc<dyn Policy>) {
    let messages = r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"Hello!"}]"#;
    policy
        .save_response("resp_1", "u-ann", messages)
        .await
        .expect("save");
    assert_eq!(
        policy.load_response("resp_1", "u-ann").await.expect("load"),
        messages
    );
    // Another user's, or one that never was: the same not found.
    for (id, user) in [("resp_1", "u-bob"), ("resp_2", "u-ann")] {
        assert!(matches!(
            policy.load_response(id, user).await,
            Err(crate::Error::NotFound(_))
        ));
    }
    // An id is kept once.
    assert!(policy.save_response("resp_1", "u-ann", "[]").await.is_err());
}
