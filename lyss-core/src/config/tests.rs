use super::*;

#[test]
fn stored_workspace_settings_override_the_config_which_overrides_the_default() {
    let mut c = CacheConfig::default();
    let none = WorkspaceCache::default();
    assert_eq!(c.policy_for("team", &none), None, "off by default");
    c.workspaces.insert(
        "team".into(),
        WorkspaceCache {
            mode: Some(CacheMode::Semantic),
            ttl_secs: Some(60),
            ..Default::default()
        },
    );
    let p = c.policy_for("team", &none).unwrap();
    assert_eq!(p.ttl, std::time::Duration::from_secs(60));
    assert_eq!(p.semantic_threshold, Some(0.95));
    assert_eq!(p.scope, CacheScope::Workspace);
    let stored = WorkspaceCache {
        mode: Some(CacheMode::Exact),
        scope: Some(CacheScope::User),
        ..Default::default()
    };
    let p = c.policy_for("team", &stored).unwrap();
    assert_eq!(p.semantic_threshold, None, "exact now");
    assert_eq!(
        (p.ttl.as_secs(), p.scope),
        (60, CacheScope::User),
        "the config's ttl stays"
    );
    let off = WorkspaceCache {
        mode: Some(CacheMode::Off),
        ..Default::default()
    };
    assert_eq!(c.policy_for("team", &off), None);
    assert_eq!(c.policy_for("others", &none), None);
}

#[test]
fn responses_only_models_and_prompt_caching_default_by_provider() {
    let provider = |kind: &str, base_url: &str| -> ProviderConfig {
        serde_json::from_value(serde_json::json!({
            "name": "p", "kind": kind, "base_url": base_url
        }))
        .unwrap()
    };
    let openai = provider("openai", "https://api.openai.com/v1");
    assert!(openai.responses_models().includes("gpt-5-pro"));
    assert!(openai.responses_models().includes("gpt-5-pro-2025-10-06"));
    assert!(openai.responses_models().includes("gpt-5-codex"));
    assert!(!openai.responses_models().includes("gpt-5-mini"));
    assert!(openai.prompt_cache());
    let vllm = provider("openai", "http://gpu:8000/v1");
    assert!(!vllm.responses_models().includes("my-codex-finetune"));
    assert!(!vllm.prompt_cache());
    assert!(provider("anthropic", "https://api.anthropic.com/v1").prompt_cache());
    let listed = ProviderConfig {
        responses_models: Some(vec!["o3-deep-research".into()]),
        ..vllm
    };
    assert!(listed.responses_models().includes("o3-deep-research"));
}

#[test]
fn thresholds_and_ttls_are_checked() {
    for bad in [0.0, 1.01, f32::NAN, -0.5] {
        let w = WorkspaceCache {
            semantic_threshold: Some(bad),
            ..Default::default()
        };
        assert!(w.validate().is_err(), "{bad}");
    }
    let zero = WorkspaceCache {
        ttl_secs: Some(0),
        ..Default::default()
    };
    assert!(zero.validate().is_err());
    let fine = WorkspaceCache {
        ttl_secs: Some(1),
        semantic_threshold: Some(1.0),
        ..Default::default()
    };
    assert!(fine.validate().is_ok());
}
