//! The directory's part of the `Policy` conformance suite: keys, names, limits.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::*;
use crate::error::Error;
use crate::policy::{NewKey, Policy, Scope};

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

pub async fn admin_sessions_end_when_signed_out_or_expired(policy: Arc<dyn Policy>) {
    let now = OffsetDateTime::now_utc();
    let hour = Duration::hours(1);
    policy.open_session("s-1", now + hour).await.expect("open");
    policy.open_session("s-2", now + hour).await.expect("open");
    policy
        .open_session("s-old", now - hour)
        .await
        .expect("open");
    assert!(policy.session_open("s-1", now).await.expect("read"));
    assert!(
        !policy.session_open("s-1", now + hour).await.expect("read"),
        "expired"
    );
    assert!(!policy.session_open("s-old", now).await.expect("read"));
    assert!(!policy.session_open("never", now).await.expect("read"));
    policy.end_session("s-1").await.expect("end");
    policy
        .end_session("s-1")
        .await
        .expect("ending twice is fine");
    assert!(
        !policy.session_open("s-1", now).await.expect("read"),
        "signed out"
    );
    assert!(
        policy.session_open("s-2", now).await.expect("read"),
        "only that one"
    );
    // An id is opened once: the second opening of a live one is a conflict (a link claimed by
    // two requests at once opens one session).
    assert!(matches!(
        policy.open_session("s-2", now + hour).await,
        Err(Error::Conflict(_))
    ));
}
