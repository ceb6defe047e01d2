//! `sluice serve FILE` as an operator meets it: a node that runs each workflow at
//! start, then on its schedule, reports each run as it ends, and stops cleanly on
//! SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn a_node_runs_workflows_on_their_schedule_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("defs.json");
    let defs = serde_json::json!({
        "connections": [{"name": "sample", "connector": "sample", "config": {"records": 100}}],
        "workflows": [{"name": "users", "connection": "sample", "streams": [{"name": "users"}],
                       "schedule": {"trigger": {"kind": "interval", "every_secs": 1}}}]
    });
    std::fs::write(&file, defs.to_string()).unwrap();
    let cache =
        std::env::temp_dir().join(format!("sluice-serve-test-cache-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--json")
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .env("SLUICE_CACHE_DIR", cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut runs = Vec::new();
    for line in stdout.lines() {
        let outcome: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        assert_eq!(outcome["status"], "completed", "{outcome}");
        assert_eq!(outcome["records"], 100);
        runs.push(outcome["run"].as_str().unwrap().to_owned());
        if runs.len() == 3 {
            break;
        }
    }
    // The run at start, then two on the schedule: three different runs.
    runs.sort();
    runs.dedup();
    assert_eq!(runs.len(), 3);
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "a stopped node exits cleanly: {status:?}");
}

#[test]
fn a_second_process_on_the_same_data_dir_is_told_another_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("defs.json");
    let defs = serde_json::json!({
        "connections": [{"name": "sample", "connector": "sample", "config": {"records": 10}}],
        "workflows": [{"name": "users", "connection": "sample", "streams": [{"name": "users"}]}]
    });
    std::fs::write(&file, defs.to_string()).unwrap();
    let data = dir.path().join("data");
    let mut node = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .arg("--json")
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first outcome: the node holds its store.
    let mut stdout = BufReader::new(node.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("completed"), "{line}");
    let second = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        said.contains("another process holds the store"),
        "the second process says why it cannot open the store: {said}"
    );
    let pid = node.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(node.wait().unwrap().success());
}
