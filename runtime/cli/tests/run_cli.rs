//! `sluice run FILE` as a user meets it: the real binary against a real embedded store;
//! outcomes as JSON lines, exit codes, and errors that name the field at fault.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use sluice_testkit::process::stderr;

fn sluice_run(definitions: &serde_json::Value, data: &Path, extra: &[&str]) -> Output {
    let file = data.with_extension("json");
    std::fs::write(&file, definitions.to_string()).unwrap();
    let cache = std::env::temp_dir().join(format!("sluice-run-test-cache-{}", std::process::id()));
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(&file)
        .arg("--data-dir")
        .arg(data)
        .args(["--json", "--quiet"])
        .args(extra)
        .env("SLUICE_CACHE_DIR", cache)
        .output()
        .expect("run sluice")
}

fn outcomes(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line per run"))
        .collect()
}

fn sample(records: u64, generation: u64) -> serde_json::Value {
    serde_json::json!({
        "connections": [{"name": "sample", "connector": "sample",
                         "config": {"records": records, "generation": generation}}],
        "workflows": [
            {"name": "users", "connection": "sample", "streams": [{"name": "users"}],
             "batch_size": 100},
            {"name": "orders", "connection": "sample",
             "streams": [{"name": "orders", "mode": "incremental"}]}
        ]
    })
}

#[test]
fn runs_every_workflow_and_reports_each_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = sluice_run(&sample(1_000, 0), &data, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = outcomes(&o);
    assert_eq!(runs.len(), 2, "{runs:?}");
    for run in &runs {
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["records"], 1_000, "{run}");
    }
    let users = runs.iter().find(|r| r["workflow"] == "users").unwrap();
    assert_eq!(users["streams"]["users"]["batches"], 10);
    assert_eq!(users["streams"]["users"]["created"], 1_000);

    // Again with every tenth record rewritten: the full refresh sees them updated;
    // the incremental stream reads nothing it already has.
    let o = sluice_run(&sample(1_000, 1), &data, &["--workflow", "users"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = outcomes(&o);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["streams"]["users"]["updated"], 100);
    assert_eq!(runs[0]["streams"]["users"]["unchanged"], 900);
}

#[test]
fn a_bad_definition_names_the_field_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut defs = sample(10, 0);
    defs["workflows"][1]["streams"][0]["mode"] = "sometimes".into();
    let o = sluice_run(&defs, &data, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown variant `sometimes`"),
        "{}",
        stderr(&o)
    );
    assert!(!data.exists(), "nothing may be written for a bad file");

    let mut defs = sample(10, 0);
    defs["workflows"][0]["batch_size"] = 0.into();
    let o = sluice_run(&defs, &data, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("workflows[0].batch_size: must be at least 1"),
        "{}",
        stderr(&o)
    );

    let o = sluice_run(&sample(10, 0), &data, &["--workflow", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--workflow nope"), "{}", stderr(&o));
}

#[test]
fn a_dead_lettered_run_exits_5_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The sample connector offers no stream called `invoices`.
    let defs = serde_json::json!({
        "connections": [{"name": "sample", "connector": "sample"}],
        "workflows": [{"name": "w", "connection": "sample", "streams": [{"name": "invoices"}]}]
    });
    let o = sluice_run(&defs, &data, &[]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let runs = outcomes(&o);
    assert_eq!(runs[0]["status"], "dead_lettered", "{runs:?}");
    let error = runs[0]["error"].as_str().unwrap();
    assert!(error.contains("offers no such stream"), "{error}");
}
