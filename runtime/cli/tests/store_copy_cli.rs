//! `sluice store copy` as an operator meets it: a node's embedded store, filled by a
//! real sync, copied into PostgreSQL and verified; a sync on the copy finds every
//! record unchanged and the incremental stream where it left off; a target that is
//! not empty is refused with nothing written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use sluice_testkit::pg::TestSchema;
use sluice_testkit::process::{stderr, stdout};

fn sluice(args: &[&str], data: &Path) -> Output {
    let cache = std::env::temp_dir().join(format!("sluice-copy-test-cache-{}", std::process::id()));
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("SLUICE_CACHE_DIR", cache)
        .env("SLUICE_DATA_DIR", data)
        .env_remove("SLUICE_STORE")
        .output()
        .expect("run sluice")
}

const RECORDS: u64 = 3_000;

fn definitions(dir: &Path) -> String {
    let file = dir.join("sync.json");
    let defs = serde_json::json!({
        "connections": [{"name": "sample", "connector": "sample",
                         "config": {"records": RECORDS}}],
        "workflows": [
            {"name": "users", "connection": "sample", "streams": [{"name": "users"}],
             "batch_size": 500},
            {"name": "orders", "connection": "sample",
             "streams": [{"name": "orders", "mode": "incremental"}], "batch_size": 700}
        ]
    });
    std::fs::write(&file, defs.to_string()).unwrap();
    file.to_string_lossy().into_owned()
}

/// The runs' outcomes, by workflow.
fn outcomes(o: &Output) -> std::collections::BTreeMap<String, serde_json::Value> {
    assert!(o.status.success(), "{}", stderr(o));
    stdout(o)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON outcome");
            (v["workflow"].as_str().unwrap_or_default().to_owned(), v)
        })
        .collect()
}

#[tokio::test]
async fn a_node_store_copied_to_postgres_verifies_and_syncs_on_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    let file = definitions(dir.path());
    let first = outcomes(&sluice(
        &[
            "run",
            &file,
            "--data-dir",
            node.to_str().unwrap(),
            "--json",
            "--quiet",
        ],
        &node,
    ));
    assert_eq!(first["users"]["streams"]["users"]["created"], RECORDS);
    assert_eq!(first["orders"]["streams"]["orders"]["created"], RECORDS);

    let schema = TestSchema::create().await;
    let files = dir.path().join("cluster-node");
    let copied = sluice(
        &[
            "store",
            "copy",
            "--from",
            node.to_str().unwrap(),
            "--to",
            schema.url(),
            "--data-dir",
            files.to_str().unwrap(),
            "--json",
        ],
        &files,
    );
    assert!(copied.status.success(), "{}", stderr(&copied));
    let report: serde_json::Value = serde_json::from_str(stdout(&copied).trim()).unwrap();
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["runs"]["runs"], 2, "{report}");
    assert_eq!(report["hub"]["live_records"], 2 * RECORDS, "{report}");
    assert_eq!(report["hub"]["changes"], 2 * RECORDS, "{report}");
    assert!(
        report["catalog"]["documents"].as_u64().unwrap() >= 3,
        "{report}"
    );
    let streams = report["hub"]["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "{report}");
    let orders = streams.iter().find(|s| s["stream"] == "orders").unwrap();
    assert!(orders["cursor"].is_string(), "{report}");
    assert_eq!(orders["feed_sha256"].as_str().unwrap().len(), 64);

    // The text report says the same, for a person.
    let again = TestSchema::create().await;
    let text = sluice(
        &[
            "store",
            "copy",
            "--from",
            node.to_str().unwrap(),
            "--to",
            again.url(),
        ],
        &files,
    );
    assert!(text.status.success(), "{}", stderr(&text));
    let out = stdout(&text);
    assert!(out.contains("verified"), "{out}");
    assert!(out.contains("6,000 live record(s)"), "{out}");

    // Nothing is in flight on the copy; a sync on it finds every record unchanged,
    // and the incremental stream resumes from the copied cursor.
    let resumed = sluice(
        &[
            "run",
            &file,
            "--store",
            schema.url(),
            "--resume-only",
            "--json",
            "--quiet",
        ],
        &files,
    );
    assert!(outcomes(&resumed).is_empty());
    let second = outcomes(&sluice(
        &["run", &file, "--store", schema.url(), "--json", "--quiet"],
        &files,
    ));
    let users = &second["users"]["streams"]["users"];
    assert_eq!(users["unchanged"], RECORDS, "{users}");
    assert_eq!(users["created"], 0, "{users}");
    assert_eq!(users["updated"], 0, "{users}");
    let orders = &second["orders"];
    assert_eq!(orders["status"], "completed", "{orders}");
    assert_eq!(
        orders["records"], 0,
        "nothing new past the cursor: {orders}"
    );
}

#[tokio::test]
async fn a_copy_into_a_store_that_is_not_empty_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    let file = definitions(dir.path());
    outcomes(&sluice(
        &[
            "run",
            &file,
            "--data-dir",
            node.to_str().unwrap(),
            "--json",
            "--quiet",
            "--workflow",
            "orders",
        ],
        &node,
    ));
    let schema = TestSchema::create().await;
    let copy = [
        "store",
        "copy",
        "--from",
        node.to_str().unwrap(),
        "--to",
        schema.url(),
    ];
    let first = sluice(&copy, dir.path());
    assert!(first.status.success(), "{}", stderr(&first));
    let second = sluice(&copy, dir.path());
    assert_eq!(second.status.code(), Some(1), "{}", stdout(&second));
    let err = stderr(&second);
    assert!(err.contains("not empty"), "{err}");
    assert!(err.contains("copy only into an empty store"), "{err}");

    // The other way: into an embedded store that holds a sync of its own.
    let other = dir.path().join("other");
    outcomes(&sluice(
        &[
            "run",
            &file,
            "--data-dir",
            other.to_str().unwrap(),
            "--json",
            "--quiet",
            "--workflow",
            "users",
        ],
        &other,
    ));
    let back = sluice(
        &[
            "store",
            "copy",
            "--from",
            schema.url(),
            "--to",
            other.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(back.status.code(), Some(1), "{}", stdout(&back));
    assert!(stderr(&back).contains("not empty"), "{}", stderr(&back));
    let orders = outcomes(&sluice(
        &[
            "run",
            &file,
            "--data-dir",
            other.to_str().unwrap(),
            "--json",
            "--quiet",
            "--workflow",
            "orders",
        ],
        &other,
    ));
    assert_eq!(
        orders["orders"]["streams"]["orders"]["created"], RECORDS,
        "nothing of the refused copy landed"
    );
}
