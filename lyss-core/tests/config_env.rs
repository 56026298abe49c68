//! Every configuration key is reachable from the environment (`LYSS_<KEY>`, sections joined by
//! `__`), derived from the configuration itself. Its own test binary: it sets environment
//! variables, which every test of a process would see.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// `Jail` takes a closure returning its own (large) error type.
#![allow(clippy::result_large_err)]

use lyss_core::config::{CacheMode, LogFormat, MemoryMode};
use lyss_core::setup::{Overrides, env_keys, load_config};

#[test]
fn every_configuration_key_is_reachable_from_the_environment() {
    let keys = env_keys();
    // Top-level settings, and each section's.
    for key in [
        "bind",
        "data_dir",
        "admin_token",
        "metrics_token",
        "max_header_bytes",
        "cors_origins",
        "memory.enabled",
        "memory.history_tokens",
        "memory.memory_tokens",
        "cache.mode",
        "cache.ttl_secs",
        "embedder.kind",
        "embedder.models_dir",
        "router.retries",
        "budget_counters.store",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} is not in {keys:?}");
    }
    figment::Jail::expect_with(|jail| {
        jail.set_env("LYSS_LOG_FORMAT", "json");
        jail.set_env("LYSS_ADMIN_TOKEN", "from-the-environment-0123456789");
        jail.set_env("LYSS_MEMORY__ENABLED", "false");
        jail.set_env("LYSS_MEMORY__HISTORY_TOKENS", "777");
        jail.set_env("LYSS_CACHE__MODE", "exact");
        jail.set_env("LYSS_ROUTER__RETRIES", "5");
        jail.set_env("LYSS_CORS_ORIGINS", "[\"https://chat.example\"]");
        // Not configuration: left alone, and refused by nothing.
        jail.set_env("LYSS_TEST_SOMETHING_ELSE", "1");
        let config = load_config(&Overrides::default()).expect("config");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(
            config.admin_token.as_ref().map(|s| s.expose().to_owned()),
            Some("from-the-environment-0123456789".to_owned())
        );
        assert_eq!(config.memory.enabled, MemoryMode::Off);
        assert_eq!(config.memory.history_tokens, 777);
        assert_eq!(config.cache.mode, CacheMode::Exact);
        assert_eq!(config.router.retries, 5);
        assert_eq!(config.cors_origins, vec!["https://chat.example".to_owned()]);
        Ok(())
    });
}
