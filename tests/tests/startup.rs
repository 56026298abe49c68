//! Processes sharing one data directory: the server starting while an admin runs `lyss`, on a
//! directory neither has created yet, and what a server that cannot start prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use lyss_tests::{command, free_port};

/// Rounds of the race; each is a fresh directory, so every round races on migration 1.
const ROUNDS: usize = 6;

/// A child process killed when the test ends, passing or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_server_and_admin_commands_open_a_new_data_directory_at_once() {
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        let bind = format!("127.0.0.1:{}", free_port());
        let logs = dir.path().join("server.log");
        let mut server = Killed(
            command("lyss-server")
                .args(["--data-dir", data, "--bind", &bind])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&logs).unwrap())
                .spawn()
                .unwrap(),
        );
        // Three admin commands started in the same instant as the server.
        let admins: Vec<_> = (0..3)
            .map(|i| {
                command("lyss")
                    .args(["--data-dir", data, "--json", "workspace", "create"])
                    .arg(format!("team-{i}"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for admin in admins {
            let out = admin.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: lyss failed beside a starting server: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.0.try_wait().unwrap() {
                panic!(
                    "round {round}: lyss-server exited ({status}) beside lyss: {}",
                    std::fs::read_to_string(&logs).unwrap_or_default()
                );
            }
            if let Ok(r) = reqwest::get(format!("http://{bind}/readyz")).await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: server not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(server);
        // All three workspaces were created, once each.
        let out = command("lyss")
            .args(["--data-dir", data, "--json", "workspace", "list"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut names: Vec<_> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| w["name"].as_str())
            .filter(|n| n.starts_with("team-"))
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["team-0", "team-1", "team-2"], "round {round}");
    }
}

#[tokio::test]
async fn a_server_that_cannot_open_its_store_says_why_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the data directory should be: the store cannot be created.
    let data = dir.path().join("data");
    std::fs::write(&data, "not a directory").unwrap();
    let stderr = refused_start(data.to_str().unwrap());
    assert!(stderr.starts_with("lyss-server: "), "{stderr}");
    assert!(stderr.contains("data"), "no path in: {stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

#[tokio::test]
async fn a_second_server_on_a_data_directory_refuses_to_start_and_names_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let bind = format!("127.0.0.1:{}", free_port());
    let first = Killed(
        command("lyss-server")
            .args(["--data-dir", data, "--bind", &bind])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(reqwest::get(format!("http://{bind}/readyz")).await, Ok(r) if r.status().is_success())
    {
        assert!(Instant::now() < deadline, "first server not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stderr = refused_start(data);
    assert!(
        stderr.contains("lyss.db.server.lock")
            && stderr.contains(&format!("process {}", first.0.id())),
        "{stderr}"
    );
    // An admin's `lyss` still works beside the first server.
    let out = command("lyss")
        .args(["--data-dir", data, "workspace", "create", "team"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `lyss-server` on `data`, which must refuse to start with one line on stderr: that line.
fn refused_start(data: &str) -> String {
    let out = command("lyss-server")
        .args(["--data-dir", data])
        .args(["--bind", &format!("127.0.0.1:{}", free_port())])
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    stderr
}
