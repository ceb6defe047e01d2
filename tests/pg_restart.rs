//! PostgreSQL restarted under a running sync: one `sluice run` on a PostgreSQL store
//! keeps going while the server is restarted twice with records partly committed,
//! waits for it each time, and completes by itself — the same process, never
//! restarted — with every record in the hub exactly once.
//!
//! Restarting the server breaks every other connection to it, so this is a test
//! binary of its own with this one test: cargo runs test binaries one at a time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test"
)]

#[allow(
    dead_code,
    reason = "shared with the crash tests; this test needs only part of it"
)]
mod crash_support;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crash_support::{Backend, TestStore, assert_exactly_once, sluice_run};
use sluice_store::log::RunFilter;

/// Records of the sync: enough that it lasts through both restarts.
const RECORDS: u64 = 1_000_000;

/// Records committed before each restart begins.
const RESTART_AT: [u64; 2] = [RECORDS / 5, RECORDS / 2];

/// Longest wait for the server to accept connections again, and for the sync to end:
/// beyond them the test reports a hang instead of waiting forever.
const SERVER_PATIENCE: Duration = Duration::from_secs(120);
const SYNC_PATIENCE: Duration = Duration::from_secs(30 * 60);

/// The machine's PostgreSQL cluster that serves the test database
/// (`SLUICE_TEST_PG_CLUSTER`, as `VERSION/NAME`; by default the `main` cluster of the
/// first installed version). Dropped, it makes sure the server is up again, whatever
/// happened to the test.
struct Cluster {
    version: String,
    name: String,
}

/// The variable naming the cluster to restart, as `VERSION/NAME`.
const CLUSTER_VAR: &str = "SLUICE_TEST_PG_CLUSTER";

impl Cluster {
    fn local() -> Cluster {
        if let Ok(named) = std::env::var(CLUSTER_VAR)
            && let Some((version, name)) = named.split_once('/')
        {
            return Cluster {
                version: version.to_owned(),
                name: name.to_owned(),
            };
        }
        let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
            .expect("PostgreSQL's clusters are in /etc/postgresql")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        versions.sort();
        let version = versions
            .into_iter()
            .next()
            .expect("a PostgreSQL version in /etc/postgresql");
        Cluster {
            version,
            name: "main".to_owned(),
        }
    }

    fn ctl(&self, action: &str) -> Output {
        Command::new("pg_ctlcluster")
            .args([
                "--skip-systemctl-redirect",
                &self.version,
                &self.name,
                action,
            ])
            .output()
            .expect("run pg_ctlcluster")
    }

    /// Whether the server accepts connections.
    fn ready() -> bool {
        Command::new("pg_isready")
            .args(["-q", "-d", &sluice_testkit::pg::database_url()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits for the server to accept connections; whether it does in time.
    fn wait_ready() -> bool {
        let began = Instant::now();
        while !Cluster::ready() {
            if began.elapsed() > SERVER_PATIENCE {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    /// Restarts the server (a fast shutdown: every session is cut off) and waits for
    /// it to accept connections again.
    fn restart(&self) {
        let out = self.ctl("restart");
        assert!(
            out.status.success(),
            "pg_ctlcluster {} {} restart failed: {}{}",
            self.version,
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(Cluster::wait_ready(), "the server did not come back");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if Cluster::ready() {
            return;
        }
        let out = self.ctl("start");
        if !Cluster::wait_ready() {
            eprintln!(
                "PostgreSQL {}/{} did not come back up: {}{}",
                self.version,
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The `sluice` under test, its output in files; killed if the test ends first.
struct Sluice {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Sluice {
    fn output(&self) -> String {
        let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "stdout:\n{}\nstderr:\n{}",
            read(&self.stdout),
            read(&self.stderr)
        )
    }

    /// Whether it is still going; panics with its output if it ended.
    fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().expect("poll sluice") {
            panic!("sluice ended ({status}) {when}\n{}", self.output());
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn postgres_restarted_twice_mid_sync_the_run_waits_and_completes_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let definitions = dir.path().join("sync.json");
    let defs = serde_json::json!({
        "connections": [{"name": "sample", "connector": "sample",
                         "config": {"records": RECORDS, "record_bytes": 200}}],
        "workflows": [{"name": "users", "connection": "sample",
                       "streams": [{"name": "users"}], "batch_size": 2000}]
    });
    std::fs::write(&definitions, defs.to_string()).expect("write definitions");
    let store = TestStore::create(Backend::Postgres, dir.path().join("node"));
    // Dropped before the store (whose schema is dropped on the server) and after
    // `sluice` (killed if still going).
    let cluster = Cluster::local();
    assert!(
        Cluster::wait_ready(),
        "PostgreSQL is not up before the test"
    );

    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let began = Instant::now();
    let child = sluice_run(&definitions, &store, &[])
        .stdout(Stdio::from(File::create(&stdout).expect("stdout file")))
        .stderr(Stdio::from(File::create(&stderr).expect("stderr file")))
        .spawn()
        .expect("spawn sluice");
    let mut sluice = Sluice {
        child,
        stdout,
        stderr,
    };

    // The test watches the hub through a store of its own, which waits out the
    // restarts like any node's.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let probe = rt
        .block_on(store.location().open(&dir.path().join("probe")))
        .expect("open the store to watch it");
    let count = || {
        rt.block_on(probe.hub().count("sample", "users"))
            .expect("count the hub's records")
    };

    let mut restarts = Vec::new();
    for at in RESTART_AT {
        let before = loop {
            let now = count();
            if now >= at {
                break now;
            }
            sluice.assert_running(&format!("with {now} records committed, before {at}"));
            std::thread::sleep(Duration::from_millis(50));
        };
        sluice.assert_running("just before the restart");
        assert!(
            before < RECORDS,
            "the sync was done before the restart: {before}"
        );
        let down = Instant::now();
        cluster.restart();
        let took = down.elapsed();
        let after = count();
        eprintln!(
            "restarted PostgreSQL at {before} records committed ({took:.1?}); {after} once it was back"
        );
        restarts.push((before, after));
    }

    // Wait for sluice to exit; a watchdog kills it only if it hangs past
    // SYNC_PATIENCE (no word from this thread by then).
    let pid = sluice.child.id();
    let (exited, watch) = std::sync::mpsc::channel::<()>();
    let left = SYNC_PATIENCE.saturating_sub(began.elapsed());
    let watchdog = std::thread::spawn(move || {
        let hung = matches!(
            watch.recv_timeout(left),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        );
        if hung {
            sluice_testkit::process::send_signal(pid, "-KILL");
        }
        hung
    });
    let status = sluice.child.wait().expect("wait for sluice");
    let _ = exited.send(());
    let hung = watchdog.join().unwrap_or(false);
    assert!(
        !hung,
        "the sync did not end after the restarts ({restarts:?})\n{}",
        sluice.output()
    );
    let output = sluice.output();
    assert!(
        status.success(),
        "sluice failed after the restarts {restarts:?}: {status}\n{output}"
    );
    eprintln!(
        "the sync completed {:.1?} after it began, across restarts at {restarts:?}\n{output}",
        began.elapsed()
    );
    let attempts = rt.block_on(async {
        let runs = probe.log().list(&RunFilter::default()).await.expect("list");
        let state = probe.log().state(runs[0].run_id).await.expect("fold");
        state.attempts
    });
    eprintln!("the run took {attempts} attempt(s)");
    drop(probe);
    drop(rt);

    assert_exactly_once(&store, "users", "sample", "users", RECORDS);
}
