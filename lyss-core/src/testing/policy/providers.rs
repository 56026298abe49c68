//! The stored providers' part of the `Policy` conformance suite.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::config::ProviderKind;
use crate::error::Error;
use crate::policy::{Policy, StoredProvider};

pub async fn stored_providers_are_replaced_by_name_and_deleted(policy: Arc<dyn Policy>) {
    let provider = |base_url: &str, key: &[u8]| StoredProvider {
        name: "claude".into(),
        kind: ProviderKind::Anthropic,
        base_url: base_url.into(),
        api_key_env: None,
        sealed_key: Some(key.to_vec()),
        api_version: None,
        discover_models: false,
        created_at: OffsetDateTime::UNIX_EPOCH,
    };
    assert!(policy.list_providers().await.expect("list").is_empty());
    policy
        .put_provider(&provider("https://api.anthropic.com/v1", b"sealed-1"))
        .await
        .expect("put");
    // A second put of the same name is a key rotation: one provider, the new key.
    policy
        .put_provider(&provider("https://proxy.example/v1", b"sealed-2"))
        .await
        .expect("replace");
    let listed = policy.list_providers().await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    let stored = &listed[0];
    assert_eq!(
        (stored.name.as_str(), stored.kind, stored.base_url.as_str()),
        (
            "claude",
            ProviderKind::Anthropic,
            "https://proxy.example/v1"
        )
    );
    assert_eq!(
        stored.sealed_key.as_deref(),
        Some(&b"sealed-2"[..]),
        "stored as given"
    );

    policy.delete_provider("claude").await.expect("delete");
    assert!(policy.list_providers().await.expect("list").is_empty());
    assert!(matches!(
        policy.delete_provider("claude").await,
        Err(Error::NotFound(_))
    ));
}
