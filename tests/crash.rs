//! Crash safety with real processes: a `sluice run` syncing into its embedded store is
//! killed with SIGKILL at random moments, restarted each time, and at the end the hub
//! holds exactly the source's records — none lost, none twice — the change feed agrees,
//! and the one run is completed with every record counted once.
//!
//! Kill points are random; the seed is printed and `SLUICE_CRASH_SEED` replays it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test"
)]

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_store::Store;
use sluice_store::hub::ChangeKind;
use sluice_store::log::{RunFilter, StatusKind};
use sluice_testkit::process::{stderr, stdout};

/// Kills per test, as the guarantee demands at least twenty.
const KILLS: usize = 20;

fn seed() -> u64 {
    let seed = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash test seed: {seed} (replay with SLUICE_CRASH_SEED={seed})");
    seed
}

fn sluice(definitions: &Path, data: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("run")
        .arg(definitions)
        .arg("--data-dir")
        .arg(data)
        .arg("--quiet")
        .arg("--json")
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Committed records of the runs so far, and how many runs completed (the store is
/// closed in between).
fn committed(data: &Path) -> (u64, usize) {
    let store = Store::open(data).expect("the store opens after a kill");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut total = 0;
        let mut completed = 0;
        for r in store.log().list(&RunFilter::default()).await.expect("list") {
            total += store
                .log()
                .state(r.run_id)
                .await
                .expect("fold")
                .total_records();
            completed += usize::from(r.status == StatusKind::Completed);
        }
        (total, completed)
    })
}

/// One crash scenario: how `sluice run` is started, and what must hold at the end.
struct Scenario<'a> {
    definitions: &'a Path,
    /// Arguments of every `sluice run` under test.
    args: &'a [&'a str],
    /// Arguments of one `sluice run` made (not killed) before the first, if any.
    prelude: Option<&'a [&'a str]>,
    /// Records the sync commits in all.
    records: u64,
    /// Runs that complete when the sync is done.
    runs: usize,
}

/// Runs `sluice run` under random SIGKILLs, restarting it each time, until it has
/// been killed `KILLS` times; then to the end. `verify` checks each completed sync's
/// store. Returns the kill points (records committed when each kill landed).
///
/// Delays are uniform in `0..=max_delay`; when the last kill moved the sync along so
/// far that the remaining kills would not fit in what is left of it, the range is
/// halved, and when it landed before any progress, the range grows. Should a sync
/// still complete before all kills have landed (a fast machine), it is verified and
/// the kills go on against a fresh store.
fn kill_and_restart(scenario: &Scenario<'_>, root: &Path, verify: impl Fn(&Path)) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(seed());
    let mut max_delay_ms = 1_500;
    let mut points: Vec<u64> = Vec::new();
    for episode in 0.. {
        let data = root.join(format!("store-{episode}"));
        if let Some(prelude) = scenario.prelude {
            let out = sluice(scenario.definitions, &data, prelude)
                .output()
                .expect("run the prelude");
            assert!(out.status.success(), "{}", stderr(&out));
        }
        let mut before = 0;
        let mut completed = false;
        while points.len() < KILLS && !completed {
            let mut child = sluice(scenario.definitions, &data, scenario.args)
                .spawn()
                .expect("spawn sluice");
            std::thread::sleep(Duration::from_millis(rng.u64(0..=max_delay_ms)));
            if child.try_wait().expect("poll sluice").is_some() {
                let out = child.wait_with_output().expect("output");
                assert!(
                    out.status.success(),
                    "sluice failed between kills: {}",
                    stderr(&out)
                );
                completed = true;
                break;
            }
            child.kill().expect("SIGKILL sluice");
            child.wait().expect("reap sluice");
            let (now, runs_done) = committed(&data);
            assert!(
                now >= before,
                "committed records went back: {before} -> {now}"
            );
            points.push(now);
            completed = runs_done >= scenario.runs;
            let left = (KILLS - points.len()) as u64;
            if now == before {
                max_delay_ms = (max_delay_ms * 3 / 2).min(3_000);
            } else if (now - before) * left * 2 > scenario.records.saturating_sub(now) {
                max_delay_ms = (max_delay_ms / 2).max(100);
            }
            before = now;
        }
        if !completed {
            let out = sluice(scenario.definitions, &data, scenario.args)
                .output()
                .expect("run sluice to the end");
            assert!(
                out.status.success(),
                "the final run failed: {}\n{}",
                stdout(&out),
                stderr(&out)
            );
        }
        verify(&data);
        if points.len() >= KILLS {
            break;
        }
        eprintln!(
            "sync {episode} completed after {} kills; more on a fresh store",
            points.len()
        );
        max_delay_ms = (max_delay_ms / 2).max(100);
    }
    eprintln!("records committed at each kill: {points:?}");
    points
}

/// The hub holds exactly ids 1..=n (by `id_of`), the feed has one creation per record
/// and nothing else, and the one run completed with each record counted once.
fn assert_exactly_once(data: &Path, workflow: &str, connection: &str, stream: &str, n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Store::open(data).expect("open the store");
        let hub = store.hub();
        assert_eq!(hub.count(connection, stream).await.expect("count"), n);
        let mut seen = HashSet::with_capacity(n as usize);
        let mut after = 0;
        loop {
            let (page, next) = hub
                .feed(connection, stream, after, 50_000)
                .await
                .expect("feed");
            if page.is_empty() {
                break;
            }
            for change in page {
                assert_eq!(change.kind, ChangeKind::Created, "{change:?}");
                assert_eq!(change.version, 1, "{change:?}");
                assert!(seen.insert(change.primary_key.clone()), "twice: {change:?}");
            }
            after = next;
        }
        assert_eq!(seen.len() as u64, n, "feed entries");
        for id in 1..=n {
            assert!(seen.contains(&format!("[{id}]")), "record {id} is missing");
        }
        let filter = RunFilter {
            workflow: Some(workflow.to_owned()),
            ..RunFilter::default()
        };
        let runs = store.log().list(&filter).await.expect("list");
        assert_eq!(runs.len(), 1, "every restart resumed the one run: {runs:?}");
        assert_eq!(runs[0].status, StatusKind::Completed);
        let state = store.log().state(runs[0].run_id).await.expect("fold");
        let p = &state.progress[stream];
        assert!(p.complete);
        assert_eq!((p.records, p.created, p.unchanged, p.updated), (n, n, 0, 0));
    });
}

#[test]
fn sample_sync_survives_sigkill_at_random_moments() {
    const RECORDS: u64 = 1_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let definitions = dir.path().join("sync.json");
    let defs = serde_json::json!({
        "connections": [{"name": "sample", "connector": "sample",
                         "config": {"records": RECORDS, "record_bytes": 200}}],
        "workflows": [{"name": "users", "connection": "sample",
                       "streams": [{"name": "users"}], "batch_size": 2000}]
    });
    std::fs::write(&definitions, defs.to_string()).expect("write definitions");
    let scenario = Scenario {
        definitions: &definitions,
        args: &[],
        prelude: None,
        records: RECORDS,
        runs: 1,
    };
    let points = kill_and_restart(&scenario, dir.path(), |data| {
        assert_exactly_once(data, "users", "sample", "users", RECORDS)
    });
    assert!(
        points.iter().any(|p| *p > 0 && *p < RECORDS),
        "no kill landed mid-sync: {points:?}"
    );
}

#[test]
fn rest_sync_survives_sigkill_at_random_moments() {
    const RECORDS: u64 = 200_000;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (app, _contacts) = sluice_testkit::servers::contacts::router(RECORDS);
    let addr = rt.block_on(sluice_testkit::serve(app));
    let dir = tempfile::tempdir().expect("tempdir");
    let definitions = dir.path().join("sync.json");
    let defs = serde_json::json!({
        "connections": [{"name": "contacts-api", "connector": "rest",
            "allowed_hosts": [addr.to_string()],
            "config": sluice_testkit::servers::contacts::rest_config(addr)}],
        "workflows": [{"name": "contacts", "connection": "contacts-api",
                       "streams": [{"name": "contacts"}], "batch_size": 1000}]
    });
    std::fs::write(&definitions, defs.to_string()).expect("write definitions");
    let scenario = Scenario {
        definitions: &definitions,
        args: &[],
        prelude: None,
        records: RECORDS,
        runs: 1,
    };
    let points = kill_and_restart(&scenario, dir.path(), |data| {
        assert_exactly_once(data, "contacts", "contacts-api", "contacts", RECORDS)
    });
    assert!(
        points.iter().any(|p| *p > 0 && *p < RECORDS),
        "no kill landed mid-sync: {points:?}"
    );
}

#[test]
fn queued_and_running_runs_all_finish_once_across_sigkills() {
    // Five workflows, one slot: at any kill, one run is going and the rest wait in the
    // queue (durably: as scheduled runs in the log).
    const WORKFLOWS: usize = 5;
    const RECORDS: u64 = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let definitions = dir.path().join("sync.json");
    let names: Vec<String> = (1..=WORKFLOWS).map(|i| format!("w{i}")).collect();
    let defs = serde_json::json!({
        "connections": names.iter().map(|n| serde_json::json!({
            "name": n, "connector": "sample", "tenant": format!("tenant-{n}"),
            "config": {"records": RECORDS, "seed": 7}
        })).collect::<Vec<_>>(),
        "workflows": names.iter().enumerate().map(|(i, n)| serde_json::json!({
            "name": n, "connection": n, "streams": [{"name": "users"}],
            "batch_size": 2000, "priority": i
        })).collect::<Vec<_>>(),
    });
    std::fs::write(&definitions, defs.to_string()).expect("write definitions");
    let total = RECORDS * WORKFLOWS as u64;
    // Queue one run per workflow, then only ever resume: each workflow runs once.
    let scenario = Scenario {
        definitions: &definitions,
        args: &["--slots", "1", "--resume-only"],
        prelude: Some(&["--enqueue-only"]),
        records: total,
        runs: WORKFLOWS,
    };
    let points = kill_and_restart(&scenario, dir.path(), |data| {
        for n in &names {
            assert_exactly_once(data, n, n, "users", RECORDS);
        }
    });
    assert!(
        points.iter().any(|p| *p > 0 && *p < total),
        "no kill landed mid-sync: {points:?}"
    );
}
