//! Crash safety with real processes: a `sluice run` syncing into its store is killed
//! with SIGKILL at random moments, restarted each time, and at the end the hub holds
//! exactly the source's records — none lost, none twice — the change feed agrees, and
//! the one run is completed with every record counted once. Each scenario runs on the
//! embedded sled store (`sled_*`) and on PostgreSQL (`postgres_*`, a schema per store).
//!
//! Kill points are random; the seed is printed and `SLUICE_CRASH_SEED` replays it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test"
)]

mod crash_support;

use std::path::Path;
use std::time::Duration;

use crash_support::{Backend, TestStore, assert_exactly_once, sluice_run};
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

/// Committed records of the runs so far, and how many runs completed (no `sluice`
/// uses the store in between).
fn committed(store: &TestStore) -> (u64, usize) {
    store.with(async |store| {
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
/// been killed `KILLS` times; then to the end. Every sync starts on a fresh store on
/// `backend`; `verify` checks each completed sync's store. Returns the kill points
/// (records committed when each kill landed).
///
/// Delays are uniform in `0..=max_delay`; when the last kill moved the sync along so
/// far that the remaining kills would not fit in what is left of it, the range is
/// halved, and when it landed before any progress, the range grows. Should a sync
/// still complete before all kills have landed (a fast machine), it is verified and
/// the kills go on against a fresh store.
fn kill_and_restart(
    scenario: &Scenario<'_>,
    backend: Backend,
    root: &Path,
    verify: impl Fn(&TestStore),
) -> Vec<u64> {
    let began = std::time::Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed());
    let mut max_delay_ms = 1_500;
    let mut points: Vec<u64> = Vec::new();
    for episode in 0.. {
        let store = TestStore::create(backend, root.join(format!("store-{episode}")));
        if let Some(prelude) = scenario.prelude {
            let out = sluice_run(scenario.definitions, &store, prelude)
                .output()
                .expect("run the prelude");
            assert!(out.status.success(), "{}", stderr(&out));
        }
        let mut before = 0;
        let mut completed = false;
        while points.len() < KILLS && !completed {
            let mut child = sluice_run(scenario.definitions, &store, scenario.args)
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
            let (now, runs_done) = committed(&store);
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
            let out = sluice_run(scenario.definitions, &store, scenario.args)
                .output()
                .expect("run sluice to the end");
            assert!(
                out.status.success(),
                "the final run failed: {}\n{}",
                stdout(&out),
                stderr(&out)
            );
        }
        verify(&store);
        if points.len() >= KILLS {
            break;
        }
        eprintln!(
            "sync {episode} completed after {} kills; more on a fresh store",
            points.len()
        );
        max_delay_ms = (max_delay_ms / 2).max(100);
    }
    eprintln!(
        "{backend:?}: records committed at each kill: {points:?} ({:.1?} in all)",
        began.elapsed()
    );
    points
}

/// A sample sync of a million records.
fn sample_sync(backend: Backend) {
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
    let points = kill_and_restart(&scenario, backend, dir.path(), |store| {
        assert_exactly_once(store, "users", "sample", "users", RECORDS)
    });
    assert!(
        points.iter().any(|p| *p > 0 && *p < RECORDS),
        "no kill landed mid-sync: {points:?}"
    );
}

/// A REST sync of 200,000 records from a local API.
fn rest_sync(backend: Backend) {
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
    let points = kill_and_restart(&scenario, backend, dir.path(), |store| {
        assert_exactly_once(store, "contacts", "contacts-api", "contacts", RECORDS)
    });
    assert!(
        points.iter().any(|p| *p > 0 && *p < RECORDS),
        "no kill landed mid-sync: {points:?}"
    );
}

/// Five workflows, one slot: at any kill, one run is going and the rest wait in the
/// queue (durably: as scheduled runs in the log).
fn queued_and_running_runs(backend: Backend) {
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
    let points = kill_and_restart(&scenario, backend, dir.path(), |store| {
        for n in &names {
            assert_exactly_once(store, n, n, "users", RECORDS);
        }
    });
    assert!(
        points.iter().any(|p| *p > 0 && *p < total),
        "no kill landed mid-sync: {points:?}"
    );
}

#[test]
fn sled_sample_sync_survives_sigkill_at_random_moments() {
    sample_sync(Backend::Sled);
}

#[test]
fn postgres_sample_sync_survives_sigkill_at_random_moments() {
    sample_sync(Backend::Postgres);
}

#[test]
fn sled_rest_sync_survives_sigkill_at_random_moments() {
    rest_sync(Backend::Sled);
}

#[test]
fn postgres_rest_sync_survives_sigkill_at_random_moments() {
    rest_sync(Backend::Postgres);
}

#[test]
fn sled_queued_and_running_runs_all_finish_once_across_sigkills() {
    queued_and_running_runs(Backend::Sled);
}

#[test]
fn postgres_queued_and_running_runs_all_finish_once_across_sigkills() {
    queued_and_running_runs(Backend::Postgres);
}
