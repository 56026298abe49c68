//! The `Policy` conformance suite. Each function panics on a contract violation.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use crate::error::Error;
use crate::policy::{LedgerEntry, LedgerQuery, NewKey, Policy};

/// Generates one test per case for a policy backend, given an `async` block that returns a
/// fresh, empty `Arc<dyn Policy>` (or `Arc<impl Policy>`).
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
        );
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let policy: ::std::sync::Arc<dyn $crate::policy::Policy> = $factory.await;
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
        key_id: if i % 2 == 0 { "even" } else { "odd" }.into(),
        endpoint: "chat".into(),
        model: "m1".into(),
        provider: "p".into(),
        upstream_model: "up".into(),
        stream: i % 3 == 0,
        prompt_tokens: i,
        completion_tokens: 2 * i,
        cached_tokens: 0,
        cost_nusd: 1000 * i as i64,
        latency_ms: 1.5,
        status: 200,
        error: None,
    };
    // Many concurrent writers: every row lands exactly once.
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let policy = policy.clone();
            tokio::spawn(async move { policy.record(&entry(i)).await })
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
}
