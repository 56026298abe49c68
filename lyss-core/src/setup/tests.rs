use figment::Figment;
use figment::providers::{Format as _, Serialized, Toml};

use super::*;

/// Built without a backend's feature, a config that asks for it is refused at start,
/// naming the feature (run by CI's minimal-feature tests).
#[cfg(not(all(feature = "postgres", feature = "redis")))]
#[tokio::test]
async fn a_backend_left_out_of_the_build_is_refused_naming_its_feature() {
    let config = Config {
        database_url: Some("postgres://lyss@127.0.0.1/lyss".into()),
        redis_url: Some("redis://127.0.0.1:6379".into()),
        ..Config::default()
    };
    for (opened, feature) in [
        (open_policy(&config).await.map(|_| ()), "postgres"),
        (open_rate_limiter(&config).await.map(|_| ()), "redis"),
    ] {
        if cfg!(feature = "postgres") && feature == "postgres"
            || cfg!(feature = "redis") && feature == "redis"
        {
            continue;
        }
        match opened {
            Err(Error::Config(m)) => {
                assert!(m.contains(&format!("`{feature}` feature")), "{m}")
            }
            other => panic!("{feature}: expected a config error, got {:?}", other.err()),
        }
    }
}

#[test]
fn openai_env_adds_a_provider_and_its_models() {
    let mut c = Config::default();
    add_env_providers(&mut c, |k| match k {
        "OPENAI_API_KEY" => Some("sk-x".into()),
        "OLLAMA_BASE_URL" => Some("http://127.0.0.1:11434".into()),
        _ => None,
    });
    assert_eq!(c.providers[0].base_url, "https://api.openai.com/v1");
    assert!(c.models.iter().any(|m| m.name == "gpt-5-mini"));
    assert_eq!(c.providers[1].base_url, "http://127.0.0.1:11434/v1");
    assert!(c.providers[1].discover_models);
}

#[test]
fn issue_example_file_parses() {
    let toml = r#"
        [[providers]]
        name = "local"
        kind = "openai"
        base_url = "http://127.0.0.1:9000/v1"
        api_key_env = "LOCAL_API_KEY"

        [[models]]
        name = "gpt-4o-mini"
        provider = "local"
        upstream = "gpt-4o-mini"
        aliases = ["gpt-5-mini"]
        input_per_mtok = 0.15
        output_per_mtok = 0.60
    "#;
    let c: Config = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string(toml))
        .extract()
        .unwrap();
    assert_eq!(c.models[0].aliases, vec!["gpt-5-mini"]);
    assert_eq!(c.providers[0].api_key_env.as_deref(), Some("LOCAL_API_KEY"));
    validate(&c).unwrap();
}

#[test]
fn memory_is_switched_and_budgeted_per_workspace() {
    use crate::config::{MemoryBudgets, MemoryConfig, MemoryMode};
    let toml = r#"
        [memory]
        enabled = true
        history_tokens = 3000
        workspaces.legal = false
        workspaces.chat = "auto"
        [memory.workspaces.support]
        memory_tokens = 256
        [memory.workspaces.research]
        enabled = false
    "#;
    let c: Config = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string(toml))
        .extract()
        .unwrap();
    let m = &c.memory;
    let budgets = |mode, history_tokens, memory_tokens| {
        Some(MemoryBudgets {
            mode,
            history_tokens,
            memory_tokens,
        })
    };
    assert_eq!(m.budgets_for("anyone"), budgets(MemoryMode::On, 3000, 1400));
    assert_eq!(m.budgets_for("support"), budgets(MemoryMode::On, 3000, 256));
    assert_eq!(m.budgets_for("chat"), budgets(MemoryMode::Auto, 3000, 1400));
    assert_eq!(m.budgets_for("legal"), None);
    assert_eq!(m.budgets_for("research"), None);
    let off = MemoryConfig {
        enabled: MemoryMode::Off,
        ..m.clone()
    };
    assert_eq!(off.budgets_for("anyone"), None);
    assert_eq!(
        off.budgets_for("support"),
        budgets(MemoryMode::On, 3000, 256)
    );
    assert!(off.any_enabled());

    // The default: auto for everyone, and the strings an environment variable sets.
    let d = Config::default().memory;
    assert_eq!(
        d.budgets_for("anyone"),
        budgets(MemoryMode::Auto, 256, 1400)
    );
    for (text, mode) in [
        ("\"auto\"", MemoryMode::Auto),
        ("\"off\"", MemoryMode::Off),
        ("\"true\"", MemoryMode::On),
    ] {
        let c: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(&format!("[memory]\nenabled = {text}")))
            .extract()
            .unwrap();
        assert_eq!(c.memory.enabled, mode, "{text}");
    }
    let bad = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string("[memory]\nenabled = \"sometimes\""))
        .extract::<Config>()
        .unwrap_err()
        .to_string();
    assert!(bad.contains("sometimes"), "{bad}");
}

#[test]
fn an_unknown_extraction_model_is_a_config_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config {
        data_dir: Some(dir.path().to_owned()),
        ..Config::default()
    };
    c.memory.extraction_model = Some("nope".into());
    let err = rt.block_on(build(&c)).err().unwrap().to_string();
    assert!(err.contains("memory.extraction_model"), "{err}");
}

#[test]
fn unknown_keys_are_named() {
    let err = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string("bnid = \"x\""))
        .extract::<Config>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("bnid"), "{err}");
}

#[test]
fn output_reservation_settings_are_checked() {
    for (tokens, share, bad) in [
        (512, 0.0, Some("reserve_output_share")),
        (512, 1.5, Some("reserve_output_share")),
        (8, 0.05, Some("reserve_output_tokens")),
        (64, 1.0, None),
    ] {
        let c = Config {
            reserve_output_tokens: tokens,
            reserve_output_share: share,
            ..Config::default()
        };
        match (validate(&c), bad) {
            (Err(Error::Config(m)), Some(field)) => assert!(m.contains(field), "{m}"),
            (Ok(()), None) => {}
            (other, _) => panic!("{tokens}, {share}: {other:?}"),
        }
    }
}

/// Budget counters asked of Redis with no Redis to keep them: refused at start, saying why.
#[cfg(all(feature = "postgres", feature = "testing"))]
#[tokio::test]
async fn redis_budget_counters_without_redis_url_are_refused_at_start() {
    use crate::config::{BudgetCountersConfig, CounterStore};
    let Some(db) = crate::testing::services::postgres().await else {
        return;
    };
    let config = Config {
        database_url: Some(db),
        budget_counters: BudgetCountersConfig {
            store: Some(CounterStore::Redis),
            ..BudgetCountersConfig::default()
        },
        ..Config::default()
    };
    match open_serving_policy(&config).await {
        Err(Error::Config(m)) => assert!(m.contains("needs redis_url"), "{m}"),
        other => panic!("expected a config error, got {:?}", other.err()),
    }
}

/// The data directory, the database and its WAL are the owner's alone: they hold key hashes,
/// ledgers and memories.
#[cfg(unix)]
#[tokio::test]
async fn a_new_data_directory_and_its_database_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("lyss");
    let config = Config {
        data_dir: Some(dir.clone()),
        ..Config::default()
    };
    let policy = open_serving_policy(&config).await.unwrap();
    policy
        .create_workspace("team", &["*".into()])
        .await
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let db = dir.join("lyss.db");
    for file in [db.clone(), dir.join("lyss.db-wal")] {
        assert!(file.exists(), "{}", file.display());
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let (_, source) = admin_token(&config).unwrap();
    let AdminTokenSource::Generated(path) = source else {
        panic!("a generated token")
    };
    assert_eq!(mode(&path), 0o600);
}
