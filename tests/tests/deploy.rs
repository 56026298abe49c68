//! The deployment files, checked without Docker (it cannot run on the CI machine): the compose
//! file parses and wires LobeChat → lyss → Postgres + Redis, the config it mounts loads with
//! lyss's own loader, and the systemd unit starts the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn the_compose_file_parses_and_wires_the_services() {
    let python = std::env::var("LYSS_TEST_PYTHON").ok();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(
            python.is_some(),
            "CI=true needs LYSS_TEST_PYTHON (scripts/test.sh sets it)"
        );
    }
    let Some(python) = python else {
        eprintln!("skipped: LYSS_TEST_PYTHON is not set");
        return;
    };
    let out = Command::new(python)
        .arg(root().join("tests/deploy/check_compose.py"))
        .arg(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_mounted_config_loads() {
    let config = lyss_core::setup::load_config(&lyss_core::setup::Overrides {
        config: Some(root().join("deploy/lyss.toml")),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(config.cache.backend, lyss_core::config::CacheBackend::Redis);
}

#[test]
fn the_systemd_unit_runs_the_installed_binaries() {
    let unit = std::fs::read_to_string(root().join("deploy/lyss.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/lyss-server"));
    assert!(unit.contains("ReadWritePaths=/var/lib/lyss"));
    assert!(unit.contains("[Install]"));
}
