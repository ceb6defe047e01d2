//! Crash safety with real processes: a `sluice run` syncing into its store is killed
//! with SIGKILL at random moments, restarted each time, and at the end the hub holds
//! exactly the source's records — none lost, none twice — the change feed agrees, and
//! the one run is completed with every record counted once. A second full refresh
//! that finds records gone is killed the same way, and also at its deletions, which
//! the embedded store commits piece by piece: it still completes, each record gone is
//! deleted and counted once. Each scenario runs on the embedded sled store (`sled_*`)
//! and on PostgreSQL (`postgres_*`, a schema per store).
//!
//! Kill points are random; the seed is printed and `SLUICE_CRASH_SEED` replays it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test"
)]

mod crash_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crash_support::{Backend, TestStore, assert_exactly_once, assert_refreshed_once, sluice_run};
use sluice_store::log::{RunFilter, RunId, StatusKind};
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

/// What the store showed of the refresh under test when a kill landed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RefreshPoint {
    /// Records its committed batches read.
    records: u64,
    /// Records its committed pieces of deletions marked deleted.
    deleted: u64,
    /// Whether the refresh completed.
    complete: bool,
}

fn refresh_point(store: &TestStore, run: RunId, stream: &str) -> RefreshPoint {
    store.with(async |store| {
        let state = store.log().state(run).await.expect("fold");
        let p = state.progress.get(stream).cloned().unwrap_or_default();
        RefreshPoint {
            records: p.records,
            deleted: p.deleted,
            complete: state.status.kind() == StatusKind::Completed,
        }
    })
}

/// What the embedded store logs (at debug, `sluice_store::sled::store`) for each piece
/// of a refresh's deletions it commits.
const PIECE_LINE: &str = "committed a piece of a refresh's deletions";

/// `sluice` spawned, with a message on `pieces` for each piece of deletions its store
/// commits (hung up when the process ends) and its stderr, whole, from `stderr`.
struct Watched {
    child: Child,
    pieces: mpsc::Receiver<()>,
    stderr: std::thread::JoinHandle<String>,
}

fn spawn_watched(mut cmd: Command) -> Watched {
    let mut child = cmd.spawn().expect("spawn sluice");
    let lines = BufReader::new(child.stderr.take().expect("stderr is piped"));
    let (tx, pieces) = mpsc::channel();
    // Reads to the end whoever listens, so the process never blocks on a full pipe.
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        for line in lines.lines() {
            let Ok(line) = line else { break };
            if line.contains(PIECE_LINE) {
                let _ = tx.send(());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    Watched {
        child,
        pieces,
        stderr,
    }
}

/// A first full sync of the sample's records, then a second full refresh that no
/// longer sees every other one, queued and then only ever resumed under SIGKILLs:
/// first at random moments while it reads (spread over the read), then, once it has
/// read everything, at its deletions — every other restart at a random moment before
/// its first piece would commit, the others just after a piece committed. On the
/// embedded store, which logs each piece, no restart goes past its first piece (a
/// random kill lands there at the latest); PostgreSQL commits its deletions at once,
/// so there every kill lands at random. Kills go on against a fresh store until
/// `KILLS` have landed, `AT_DELETIONS` of them (one on PostgreSQL) after the read
/// and before the refresh completed; each completed refresh is checked exactly once.
fn refresh_with_deletions(backend: Backend) {
    const RECORDS: u64 = 300_000;
    const DELETE_EVERY: u64 = 2;
    const GONE: u64 = RECORDS / DELETE_EVERY;
    const KEPT: u64 = RECORDS - GONE;
    // Kills kept for the deletions, the rest land while the refresh reads; one on
    // PostgreSQL, where they land at random.
    const AT_DELETIONS: usize = 4;
    let sled = backend == Backend::Sled;
    let want_at_deletions = if sled { AT_DELETIONS } else { 1 };
    let dir = tempfile::tempdir().expect("tempdir");
    let defs = |delete_every: Option<u64>| {
        serde_json::json!({
            "connections": [{"name": "sample", "connector": "sample",
                "config": {"records": RECORDS, "record_bytes": 200, "delete_every": delete_every}}],
            "workflows": [{"name": "users", "connection": "sample",
                           "streams": [{"name": "users"}], "batch_size": 2000}]
        })
        .to_string()
    };
    let first = dir.path().join("first.json");
    let second = dir.path().join("second.json");
    std::fs::write(&first, defs(None)).expect("write definitions");
    std::fs::write(&second, defs(Some(DELETE_EVERY))).expect("write definitions");
    let resume = ["--resume-only", "--log", "sluice_store::sled::store=debug"];
    let began = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed());
    let mut points: Vec<RefreshPoint> = Vec::new();
    let mut max_delay_ms = 1_000;
    // How long a restart takes to its first piece of deletions (learned on the way).
    let mut to_deletions_ms = 1_000;
    let mut at_deletions = 0usize;
    let enough = |points: &[RefreshPoint], at_deletions: usize| {
        points.len() >= KILLS && at_deletions >= want_at_deletions
    };
    for episode in 0.. {
        let store = TestStore::create(backend, dir.path().join(format!("store-{episode}")));
        for (definitions, args) in [(&first, &[][..]), (&second, &["--enqueue-only"][..])] {
            let out = sluice_run(definitions, &store, args)
                .output()
                .expect("run sluice");
            assert!(out.status.success(), "{}", stderr(&out));
        }
        let refresh = store.with(async |store| {
            let runs = store.log().list(&RunFilter::default()).await.expect("list");
            let queued: Vec<_> = runs
                .iter()
                .filter(|r| r.status != StatusKind::Completed)
                .collect();
            assert_eq!(queued.len(), 1, "{runs:?}");
            queued[0].run_id
        });
        let mut before = RefreshPoint::default();
        while !before.complete && !enough(&points, at_deletions) {
            let read = before.records == KEPT;
            // Past the kills the read may take, the next one waits for the deletions.
            let reading_done_with = !read && points.len() + want_at_deletions >= KILLS;
            let mut sluice = spawn_watched(sluice_run(&second, &store, &resume));
            let started = Instant::now();
            let after_piece = sled && ((read && at_deletions % 2 == 1) || reading_done_with);
            let wait = if after_piece {
                Duration::from_secs(300)
            } else if read {
                Duration::from_millis(rng.u64(0..=to_deletions_ms))
            } else {
                Duration::from_millis(rng.u64(0..=max_delay_ms))
            };
            // A kill at random lands at the first piece at the latest: one restart
            // never completes the whole refresh unseen.
            match sluice.pieces.recv_timeout(wait) {
                Ok(()) => {
                    to_deletions_ms = started.elapsed().as_millis() as u64;
                    std::thread::sleep(Duration::from_millis(rng.u64(0..=20)));
                }
                Err(mpsc::RecvTimeoutError::Timeout) if after_piece => {
                    panic!("a resumed refresh committed no piece of deletions in 300 s")
                }
                Err(_) => {}
            }
            if sluice.child.try_wait().expect("poll sluice").is_some() {
                let status = sluice.child.wait().expect("reap sluice");
                let text = sluice.stderr.join().expect("stderr");
                assert!(status.success(), "sluice failed between kills: {text}");
                before = refresh_point(&store, refresh, "users");
                assert!(
                    before.complete,
                    "a resume ended before the refresh did: {text}"
                );
                break;
            }
            sluice.child.kill().expect("SIGKILL sluice");
            sluice.child.wait().expect("reap sluice");
            let now = refresh_point(&store, refresh, "users");
            assert!(
                now.records >= before.records && now.deleted >= before.deleted,
                "committed work went back: {before:?} -> {now:?}"
            );
            assert!(now.records <= KEPT && now.deleted <= GONE, "{now:?}");
            points.push(now);
            if now.records == KEPT && !now.complete {
                at_deletions += 1;
            }
            if read {
                if !sled && !now.complete {
                    to_deletions_ms = (to_deletions_ms * 3 / 2).min(10_000);
                }
            } else {
                let left = (KILLS - want_at_deletions)
                    .saturating_sub(points.len())
                    .max(1) as u64;
                if now.records == before.records {
                    max_delay_ms = (max_delay_ms * 3 / 2).min(3_000);
                } else if (now.records - before.records) * left * 2 > KEPT - now.records {
                    max_delay_ms = (max_delay_ms / 2).max(100);
                }
            }
            before = now;
        }
        if !before.complete {
            let out = sluice_run(&second, &store, &resume)
                .output()
                .expect("run sluice to the end");
            assert!(
                out.status.success(),
                "the final run failed: {}\n{}",
                stdout(&out),
                stderr(&out)
            );
        }
        assert_refreshed_once(&store, "users", "sample", "users", RECORDS, |id| {
            id.is_multiple_of(DELETE_EVERY)
        });
        if enough(&points, at_deletions) {
            break;
        }
        eprintln!(
            "refresh {episode} completed after {} kills; more on a fresh store",
            points.len()
        );
    }
    eprintln!(
        "{backend:?}: (records read, records deleted) at each kill: {:?} ({:.1?} in all)",
        points
            .iter()
            .map(|p| (p.records, p.deleted))
            .collect::<Vec<_>>(),
        began.elapsed()
    );
    assert!(
        points.iter().any(|p| p.records > 0 && p.records < KEPT),
        "no kill landed while the refresh read: {points:?}"
    );
    if sled {
        // Kills that landed after a piece and before the last: resumed runs that
        // found part of the deletions committed.
        let between = points
            .iter()
            .filter(|p| p.deleted > 0 && p.deleted < GONE)
            .count();
        assert!(
            between >= 2,
            "{between} kills landed between pieces of deletions: {points:?}"
        );
    }
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

#[test]
fn sled_refresh_with_deletions_completes_once_across_sigkills_at_its_deletions() {
    refresh_with_deletions(Backend::Sled);
}

#[test]
fn postgres_refresh_with_deletions_completes_once_across_sigkills() {
    refresh_with_deletions(Backend::Postgres);
}
