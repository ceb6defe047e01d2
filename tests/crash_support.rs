//! What the tests that run `sluice` as a real process against a store share: the
//! store under test (the embedded sled store in a directory, or a PostgreSQL schema of
//! its own), `sluice run` on it, and the exactly-once checks of a finished sync and of
//! a second full refresh that found records gone.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sluice_store::hub::ChangeKind;
use sluice_store::log::{RunFilter, StatusKind};
use sluice_store::{Location, Store};
use sluice_testkit::pg::TestSchema;

/// Where a test's stores are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded sled store, in the node's data directory.
    Sled,
    /// A PostgreSQL schema of the test database, one per store.
    Postgres,
}

/// One store under test: the node's data directory and, on PostgreSQL, the store's
/// schema (dropped with the value).
pub struct TestStore {
    data: PathBuf,
    schema: Option<TestSchema>,
}

impl TestStore {
    /// A new, empty store on `backend`, for a node whose files are in `data`.
    pub fn create(backend: Backend, data: PathBuf) -> TestStore {
        let schema = match backend {
            Backend::Sled => None,
            Backend::Postgres => Some(block_on(TestSchema::create())),
        };
        TestStore { data, schema }
    }

    /// Where the store is, as `sluice` names it.
    pub fn location(&self) -> Location {
        match &self.schema {
            Some(schema) => Location::parse(schema.url()),
            None => Location::Dir(self.data.clone()),
        }
    }

    /// The arguments that point `sluice run` at this store.
    pub fn args(&self) -> Vec<OsString> {
        let mut args = vec![
            OsString::from("--data-dir"),
            self.data.clone().into_os_string(),
        ];
        if let Some(schema) = &self.schema {
            args.push("--store".into());
            args.push(schema.url().into());
        }
        args
    }

    /// Opens the store (an embedded one only while no `sluice` uses it) and runs `f`
    /// on it, on a runtime of its own.
    pub fn with<T>(&self, f: impl AsyncFnOnce(&Store) -> T) -> T {
        block_on(async {
            let store = self
                .location()
                .open(&self.data)
                .await
                .unwrap_or_else(|e| panic!("the store at {} opens: {e}", self.location()));
            f(&store).await
        })
    }
}

/// Runs `future` to its end on a runtime of its own.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// `sluice run definitions` on `store`, quiet, with `extra` arguments; stdout and
/// stderr piped.
pub fn sluice_run(definitions: &Path, store: &TestStore, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("run")
        .arg(definitions)
        .args(store.args())
        .arg("--quiet")
        .arg("--json")
        .args(extra)
        // Only the arguments say where the store is.
        .env_remove("SLUICE_STORE")
        .env_remove("SLUICE_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The hub holds exactly ids 1..=n, the feed has one creation per record
/// and nothing else, and the one run completed with each record counted once.
pub fn assert_exactly_once(
    store: &TestStore,
    workflow: &str,
    connection: &str,
    stream: &str,
    n: u64,
) {
    store.with(async |store| {
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

/// After a first full sync of ids 1..=n and a second full refresh that no longer saw
/// the ids `gone` picks: the hub holds exactly the rest, the feed has one creation per
/// record and one deletion (version 2) per record gone and nothing else, and the
/// workflow's two runs completed, the second counting each record it read and each
/// record it deleted once.
pub fn assert_refreshed_once(
    store: &TestStore,
    workflow: &str,
    connection: &str,
    stream: &str,
    n: u64,
    gone: impl Fn(u64) -> bool,
) {
    let deleted = (1..=n).filter(|id| gone(*id)).count() as u64;
    store.with(async |store| {
        let hub = store.hub();
        assert_eq!(
            hub.count(connection, stream).await.expect("count"),
            n - deleted
        );
        let mut changes: HashMap<String, Vec<(ChangeKind, u64)>> = HashMap::new();
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
                changes
                    .entry(change.primary_key)
                    .or_default()
                    .push((change.kind, change.version));
            }
            after = next;
        }
        assert_eq!(changes.len() as u64, n, "records in the feed");
        for id in 1..=n {
            let expected: &[(ChangeKind, u64)] = if gone(id) {
                &[(ChangeKind::Created, 1), (ChangeKind::Deleted, 2)]
            } else {
                &[(ChangeKind::Created, 1)]
            };
            let pk = format!("[{id}]");
            assert_eq!(
                changes.get(&pk).map(Vec::as_slice),
                Some(expected),
                "changes of record {id}"
            );
        }
        let filter = RunFilter {
            workflow: Some(workflow.to_owned()),
            ..RunFilter::default()
        };
        let runs = store.log().list(&filter).await.expect("list");
        assert_eq!(
            runs.len(),
            2,
            "every restart resumed the one refresh: {runs:?}"
        );
        let mut progress = Vec::new();
        for run in &runs {
            assert_eq!(run.status, StatusKind::Completed, "{run:?}");
            let state = store.log().state(run.run_id).await.expect("fold");
            let p = state.progress[stream].clone();
            assert!(p.complete, "{p:?}");
            progress.push((
                run.created_at_unix_ms,
                (p.records, p.created, p.updated, p.unchanged, p.deleted),
            ));
        }
        progress.sort();
        let kept = n - deleted;
        assert_eq!(
            [progress[0].1, progress[1].1],
            [(n, n, 0, 0, 0), (kept, 0, 0, kept, deleted)],
            "(records, created, updated, unchanged, deleted) of the first sync and the refresh"
        );
    });
}
