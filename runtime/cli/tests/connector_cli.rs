//! `sluice connector …` as a connector author meets it: the real binary, real
//! components, exit codes and output formats.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use sluice_testkit::process::{stderr, stdout};

fn sluice(args: &[&str]) -> Output {
    let cache = std::env::temp_dir().join(format!("sluice-cli-test-cache-{}", std::process::id()));
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("SLUICE_CACHE_DIR", cache)
        .output()
        .expect("run sluice")
}

#[test]
fn spec_prints_the_config_schema() {
    let o = sluice(&["connector", "spec", "--wasm", "sample"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let spec: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(spec["type"], "object");
    assert!(spec["properties"]["records"].is_object());
}

#[test]
fn discover_lists_streams_as_a_table_and_as_json() {
    let o = sluice(&["connector", "discover", "--wasm", "sample"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("STREAM"), "{out}");
    for s in ["users", "orders", "events"] {
        assert!(out.contains(s), "{out}");
    }
    let o = sluice(&["connector", "discover", "--wasm", "sample", "--json"]);
    let streams: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(streams.len(), 3);
    assert_eq!(streams[0]["primary_key"], serde_json::json!(["id"]));
}

#[test]
fn read_prints_ndjson_then_the_checkpoint_and_resumes_from_it() {
    let dir = std::env::temp_dir().join(format!("sluice-cli-read-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint_file = dir.join("checkpoint");
    let cfg = r#"{"records": 25, "record_bytes": 100}"#;
    let o = sluice(&[
        "connector",
        "read",
        "--wasm",
        "sample",
        "--config-json",
        cfg,
        "--stream",
        "orders",
        "--limit",
        "10",
        "--batch-size",
        "4",
        "--checkpoint-file",
        checkpoint_file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: Vec<u64> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
    assert!(stderr(&o).contains("checkpoint: 10"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&checkpoint_file).unwrap(), "10");

    let o = sluice(&[
        "connector",
        "read",
        "--wasm",
        "sample",
        "--config-json",
        cfg,
        "--stream",
        "orders",
        "--checkpoint",
        "10",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: Vec<u64> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, (11..=25).collect::<Vec<_>>());
    assert!(stderr(&o).contains("stream complete"), "{}", stderr(&o));
}

#[test]
fn a_bad_config_is_a_connector_error_naming_the_field() {
    let o = sluice(&[
        "connector",
        "check",
        "--wasm",
        "sample",
        "--config-json",
        r#"{"recordz": 5}"#,
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("recordz"), "{}", stderr(&o));
}

#[test]
fn config_that_is_not_json_is_refused_before_running_anything() {
    let o = sluice(&[
        "connector",
        "check",
        "--wasm",
        "sample",
        "--config-json",
        "{nope",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not valid JSON"), "{}", stderr(&o));
}

#[test]
fn a_connector_that_breaks_the_sandbox_exits_4() {
    let o = sluice(&[
        "connector",
        "read",
        "--wasm",
        sluice_artifacts::TEST_HOSTILE,
        "--config-json",
        r#"{"mode": "panic"}"#,
        "--stream",
        "items",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("panicked on purpose"), "{}", stderr(&o));
}

#[test]
fn a_component_that_is_not_a_connector_is_named_as_such() {
    let o = sluice(&[
        "connector",
        "spec",
        "--wasm",
        sluice_artifacts::TEST_NOT_A_CONNECTOR,
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not a Sluice connector"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_missing_file_says_which() {
    let o = sluice(&["connector", "spec", "--wasm", "/nonexistent/x.wasm"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent/x.wasm"), "{}", stderr(&o));
}

#[test]
fn limits_prints_what_the_connector_declares_for_a_config() {
    let config = serde_json::json!({
        "base_url": "http://api.example.com:8080/v2",
        "rate_limit": {"requests": 100, "per_ms": 60000, "concurrent": 4},
        "streams": [{"name": "items", "path": "/items", "primary_key": ["id"]}]
    })
    .to_string();
    let o = sluice(&[
        "connector",
        "limits",
        "--wasm",
        "rest",
        "--config-json",
        &config,
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rules: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        rules,
        serde_json::json!([{"endpoint": "api.example.com:8080", "requests": 100,
                            "per_ms": 60000, "concurrent": 4}])
    );
    let o = sluice(&[
        "connector",
        "limits",
        "--wasm",
        "rest",
        "--config-json",
        &config,
    ]);
    assert!(
        stdout(&o).contains("api.example.com:8080"),
        "{}",
        stdout(&o)
    );
    // A source that declares nothing says so; a bad declaration config is the
    // connector's config error.
    let o = sluice(&["connector", "limits", "--wasm", "sample"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("declares no rate limits"),
        "{}",
        stdout(&o)
    );
    let bad = r#"{"base_url": "http://x", "streams": [], "rate_limit": {"requests": "many"}}"#;
    let o = sluice(&[
        "connector",
        "limits",
        "--wasm",
        "rest",
        "--config-json",
        bad,
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("\"many\""), "{}", stderr(&o));
}

#[test]
fn a_binary_copied_elsewhere_still_reads_its_first_party_connectors() {
    // The first-party connectors travel inside the binary: a copy in a directory
    // of its own, run from there, needs neither the build tree nor its cwd.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("sluice");
    std::fs::copy(env!("CARGO_BIN_EXE_sluice"), &copy).unwrap();
    let o = Command::new(&copy)
        .current_dir(dir.path())
        .args([
            "connector",
            "read",
            "--wasm",
            "sample",
            "--config-json",
            r#"{"records": 10}"#,
            "--stream",
            "users",
        ])
        .env("SLUICE_CACHE_DIR", dir.path().join("cache"))
        .output()
        .expect("run the copied sluice");
    assert!(o.status.success(), "{}", stderr(&o));
    let records: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 10, "{}", stdout(&o));
    assert!(stderr(&o).contains("stream complete"), "{}", stderr(&o));
}
