//! `sluice store verify` and `sluice store repair` as an operator meets them: a store
//! filled by real syncs verifies clean (embedded and PostgreSQL); a stopped store
//! damaged underneath (a stored event, a summary, an index entry, written with the
//! storage engine itself) is reported naming each run; repair rebuilds a deleted index
//! entry and removes a half-written snapshot, after which the store verifies clean; a
//! store a running node holds is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sluice_store::sled::layout::{
    EVENTS, RUNS, RUNS_BY_CONNECTION, RUNS_BY_TIME, RUNS_BY_WORKFLOW,
};
use sluice_testkit::pg::TestSchema;
use sluice_testkit::process::{output_within, send_signal, stderr, stdout};

fn command(args: &[&str]) -> Command {
    let cache =
        std::env::temp_dir().join(format!("sluice-verify-test-cache-{}", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args)
        .env("SLUICE_CACHE_DIR", cache)
        .env_remove("SLUICE_STORE")
        .env_remove("SLUICE_DATA_DIR");
    cmd
}

fn sluice(args: &[&str]) -> Output {
    output_within(command(args), Duration::from_secs(120))
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

/// Runs both workflows once on `store` (`--data-dir` or `--store`); returns the run
/// ids by workflow.
fn sync(file: &str, store: &[&str]) -> std::collections::BTreeMap<String, String> {
    let mut args = vec!["run", file, "--json", "--quiet"];
    args.extend_from_slice(store);
    let o = sluice(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON outcome");
            assert_eq!(v["status"], "completed", "{v}");
            (
                v["workflow"].as_str().unwrap().to_owned(),
                v["run"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn run_bytes(run: &str) -> [u8; 16] {
    let hex: String = run.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// Opens the stopped store in `dir` with the storage engine itself.
fn engine(dir: &Path) -> sled::Db {
    sled::Config::new().path(dir).open().unwrap()
}

fn verify_json(store: &str) -> (Output, serde_json::Value) {
    let o = sluice(&["store", "verify", "--store", store, "--json"]);
    let report = serde_json::from_str(stdout(&o).trim())
        .unwrap_or_else(|e| panic!("a JSON report ({e}): {}\n{}", stdout(&o), stderr(&o)));
    (o, report)
}

#[test]
fn a_clean_embedded_store_verifies_and_each_damage_is_named_by_its_run() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    let data = ["--data-dir", node.to_str().unwrap()];
    let file = definitions(dir.path());
    let first = sync(&file, &data);
    let second = sync(&file, &data);
    let store = node.to_str().unwrap();

    let (clean, report) = verify_json(store);
    assert!(clean.status.success(), "{}", stderr(&clean));
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["checked"]["runs"], 4, "{report}");
    assert_eq!(report["checked"]["records"], 2 * RECORDS, "{report}");
    assert_eq!(report["checked"]["changes"], 2 * RECORDS, "{report}");
    assert!(
        report["checked"]["events"].as_u64().unwrap() > 20,
        "{report}"
    );
    assert!(
        report["checked"]["segments"].as_u64().unwrap() >= 11,
        "{report}"
    );
    assert!(
        report["checked"]["index_entries"].as_u64().unwrap() > 0,
        "{report}"
    );
    let text = sluice(&["store", "verify", "--store", store]);
    assert!(text.status.success(), "{}", stderr(&text));
    assert!(
        stdout(&text).contains("no damage found"),
        "{}",
        stdout(&text)
    );

    // Damage written underneath: run A's stored events, run B's summary, run C's
    // entry in the index by workflow.
    let (a, b, c) = (&first["users"], &first["orders"], &second["orders"]);
    {
        let db = engine(&node);
        let events = db.open_tree(EVENTS).unwrap();
        let keys: Vec<_> = events
            .scan_prefix(run_bytes(a))
            .keys()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!keys.is_empty(), "run {a} has events of its own keys");
        for key in keys {
            events.insert(key, &[0x0a, 0x7f, 0x01][..]).unwrap();
        }
        db.open_tree(RUNS)
            .unwrap()
            .insert(run_bytes(b), &[0x0a, 0x7f][..])
            .unwrap();
        let mut entry = b"orders\0".to_vec();
        entry.extend_from_slice(&run_bytes(c));
        let removed = db
            .open_tree(RUNS_BY_WORKFLOW)
            .unwrap()
            .remove(entry)
            .unwrap();
        assert!(removed.is_some(), "run {c} had its own entry");
        db.flush().unwrap();
    }
    let damaged = sluice(&["store", "verify", "--store", store]);
    assert_eq!(damaged.status.code(), Some(1), "{}", stderr(&damaged));
    let out = format!("{}{}", stdout(&damaged), stderr(&damaged));
    assert!(
        out.contains(&format!("damaged: run {a} event 1: cannot be read")),
        "{out}"
    );
    assert!(
        out.contains(&format!("damaged: run {b}: its summary cannot be read")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "damaged: index runs_by_workflow (run {c}): has no entry for the run (under \"orders\")"
        )),
        "{out}"
    );
    assert!(out.contains("damage(s) found"), "{out}");
    assert!(
        stderr(&damaged).contains("sluice store repair"),
        "{}",
        stderr(&damaged)
    );

    let (o, report) = verify_json(store);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(report["clean"], false, "{report}");
    let damage = report["damage"].as_array().unwrap();
    let names = |what: &str, run: &str| damage.iter().any(|d| d["what"][what] == run);
    assert!(
        names("run", a) && names("run", b) && names("run", c),
        "{report}"
    );
    assert!(
        damage
            .iter()
            .any(|d| d["what"]["index"] == RUNS_BY_WORKFLOW && d["what"]["run"] == c.as_str()),
        "{report}"
    );
    assert!(
        damage
            .iter()
            .any(|d| d["what"]["run"] == a.as_str() && d["what"]["seq"] == 1),
        "{report}"
    );
}

#[test]
fn repair_rebuilds_deleted_index_entries_and_removes_a_half_written_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    let file = definitions(dir.path());
    let runs = sync(&file, &["--data-dir", node.to_str().unwrap()]);
    let store = node.to_str().unwrap();
    let users = &runs["users"];
    {
        let db = engine(&node);
        let mut entry = b"users\0".to_vec();
        entry.extend_from_slice(&run_bytes(users));
        assert!(
            db.open_tree(RUNS_BY_WORKFLOW)
                .unwrap()
                .remove(entry)
                .unwrap()
                .is_some()
        );
        db.open_tree(RUNS_BY_CONNECTION).unwrap().clear().unwrap();
        let by_time = db.open_tree(RUNS_BY_TIME).unwrap();
        let time_keys: Vec<_> = by_time.iter().keys().collect::<Result<_, _>>().unwrap();
        for key in time_keys.iter().filter(|k| k.ends_with(&run_bytes(users))) {
            by_time.remove(key).unwrap();
        }
        db.flush().unwrap();
    }
    let damaged = sluice(&["store", "verify", "--store", store]);
    assert_eq!(damaged.status.code(), Some(1), "{}", stderr(&damaged));
    assert!(
        stdout(&damaged).contains(&format!("index runs_by_workflow (run {users})")),
        "{}",
        stdout(&damaged)
    );

    // What a SIGKILL during the storage engine's snapshot leaves.
    let snapshot = node.join(format!("snap.{:016X}.generating", u64::MAX));
    std::fs::write(&snapshot, b"").unwrap();
    let dry = sluice(&["store", "repair", "--store", store, "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let said = stdout(&dry);
    assert!(
        said.contains(&format!("would remove snap.{:016X}.generating", u64::MAX)),
        "{said}"
    );
    assert!(said.contains("would rebuild the runs' indexes"), "{said}");
    assert!(snapshot.exists(), "a dry run changes nothing");

    let repaired = sluice(&["store", "repair", "--store", store]);
    assert!(
        repaired.status.success(),
        "{}\n{}",
        stdout(&repaired),
        stderr(&repaired)
    );
    let said = stdout(&repaired);
    assert!(
        said.contains(&format!("removed snap.{:016X}.generating", u64::MAX)),
        "{said}"
    );
    assert!(
        said.contains("runs_by_workflow: rebuilt from the runs (1 entries written"),
        "{said}"
    );
    assert!(
        said.contains("runs_by_connection: rebuilt from the runs (2 entries written"),
        "{said}"
    );
    assert!(said.contains("no damage found"), "{said}");
    assert!(!snapshot.exists());

    let (clean, report) = verify_json(store);
    assert!(clean.status.success(), "{report}");
    assert_eq!(report["checked"]["runs"], 2, "{report}");

    // A node runs on the repaired store, which stays clean.
    let listed = sluice(&[
        "run",
        &file,
        "--data-dir",
        store,
        "--workflow",
        "users",
        "--json",
        "--quiet",
    ]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let (again, report) = verify_json(store);
    assert!(again.status.success(), "{report}");
    assert_eq!(report["checked"]["runs"], 3, "{report}");
}

#[tokio::test]
async fn a_postgres_store_verifies_clean_and_is_not_repaired_here() {
    let dir = tempfile::tempdir().unwrap();
    let file = definitions(dir.path());
    let schema = TestSchema::create().await;
    let files = dir.path().join("files");
    sync(
        &file,
        &[
            "--store",
            schema.url(),
            "--data-dir",
            files.to_str().unwrap(),
        ],
    );
    let (o, report) = verify_json(schema.url());
    assert!(o.status.success(), "{}\n{report}", stderr(&o));
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["checked"]["runs"], 2, "{report}");
    assert_eq!(report["checked"]["records"], 2 * RECORDS, "{report}");
    assert_eq!(report["checked"]["segments"], 0, "{report}");
    assert!(
        !report["store"].as_str().unwrap().contains("password"),
        "{report}"
    );

    let refused = sluice(&["store", "repair", "--store", schema.url()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("mends the embedded store"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn a_store_a_running_node_holds_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("defs.json");
    let defs = serde_json::json!({
        "connections": [{"name": "sample", "connector": "sample", "config": {"records": 10}}],
        "workflows": [{"name": "users", "connection": "sample", "streams": [{"name": "users"}]}]
    });
    std::fs::write(&file, defs.to_string()).unwrap();
    let data = dir.path().join("data");
    let mut node = command(&["serve"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .arg("--json")
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Its first outcome: the node holds its store.
    let mut line = String::new();
    BufReader::new(node.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("completed"), "{line}");
    let store = data.to_str().unwrap();
    let (o, report) = verify_json(store);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(report["clean"], false, "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("another process holds the store"),
        "{report}"
    );
    for args in [
        &["store", "verify", "--store", store][..],
        &["store", "repair", "--store", store][..],
    ] {
        let refused = sluice(args);
        assert_eq!(
            refused.status.code(),
            Some(1),
            "{args:?}: {}",
            stdout(&refused)
        );
        assert!(
            stderr(&refused).contains("another process holds the store"),
            "{args:?}: {}",
            stderr(&refused)
        );
    }
    send_signal(node.id(), "-TERM");
    assert!(node.wait().unwrap().success());
    // Stopped, it verifies.
    let clean = sluice(&["store", "verify", "--store", store]);
    assert!(clean.status.success(), "{}", stderr(&clean));
}

/// Copies the files of the stopped store in `from` into `to`.
fn copy_store(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_store(&entry.path(), &target, &[]);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A store that came back holding less than it had made durable (here: older files
/// under the store's newer high-water mark, as damage that makes the storage engine
/// drop its log's tail leaves it) is refused by name; `repair --accept-loss`
/// accepts what it holds, and it opens again with the runs it kept.
#[test]
fn a_store_that_lost_durable_writes_is_refused_until_its_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let file = definitions(dir.path());
    let data = dir.path().join("data");
    let data_arg = data.to_string_lossy().into_owned();
    let first = sync(&file, &["--data-dir", &data_arg]);
    let older = dir.path().join("older");
    copy_store(&data, &older, &[]);
    sync(&file, &["--data-dir", &data_arg]);
    // The older files, under the newer mark.
    for entry in std::fs::read_dir(&data).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "high-water" && entry.file_type().unwrap().is_file() {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(data.join("blobs"));
    copy_store(&older, &data, &["high-water"]);

    let refused = sluice(&["run", &file, "--resume-only", "--data-dir", &data_arg]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    let why = stderr(&refused);
    assert!(
        why.contains("damaged") && why.contains("--accept-loss"),
        "{why}"
    );

    let accepted = sluice(&["store", "repair", "--store", &data_arg, "--accept-loss"]);
    assert!(accepted.status.success(), "{}", stderr(&accepted));
    assert!(
        stdout(&accepted).contains("accepted the store as it is"),
        "{}",
        stdout(&accepted)
    );
    let (verified, report) = verify_json(&data_arg);
    assert!(verified.status.success(), "{report}");
    let runs = sluice(&["run", &file, "--resume-only", "--data-dir", &data_arg]);
    assert!(runs.status.success(), "{}", stderr(&runs));
    // The first sync's runs are what the store kept.
    let (_, report) = verify_json(&data_arg);
    assert_eq!(report["checked"]["runs"], first.len(), "{report}");
}
