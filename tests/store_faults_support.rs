//! What the fault tests of the embedded store share: a stopped store with several
//! completed runs made by real `sluice` processes, cheap clones of a store's
//! directory, what a store holds (its runs and streams) for comparison, files half
//! written by sled's snapshot, and a process or an open under a deadline.
//!
//! A clone hard-links the hub's blobs (`blobs/*`): sled creates each blob file once
//! (`create_new`), never writes it again, and only ever removes it, so a clone opened
//! — or a process killed on the original — cannot change the other's. Every other
//! file is copied. A file a test is about to damage is copied too (`own`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sluice_store::copy::{StreamFacts, stream_facts};
use sluice_store::log::{RunFilter, RunSummary, StatusKind, fold};
use sluice_store::{Location, RunEvent, RunId, Store};

use crate::crash_support::{TestStore, block_on, sluice_run};

/// Where sled keeps values too big for its log, one file each.
pub const BLOBS: &str = "blobs";

/// Records per stream of the base store's `shop` connection (three streams).
pub const SHOP_RECORDS: u64 = 20_000;
/// Records of the `tiny` workflow's one stream.
pub const TINY_RECORDS: u64 = 10;
/// The connection and workflow whose runs the fault tests add.
pub const TINY: &str = "tiny";
/// The connection and workflow of the base store's big runs.
pub const SHOP: &str = "shop";

/// The definitions the base store was made with, last version first: `shop` (a full
/// refresh of three sample streams, its second run rewriting every tenth record and
/// leaving out every tenth) and `tiny` (ten records).
fn definitions(generation: u64) -> serde_json::Value {
    let stream = |name: &str| serde_json::json!({"name": name, "mode": "full_refresh"});
    let mut shop = serde_json::json!({"records": SHOP_RECORDS, "record_bytes": 200, "seed": 3});
    if generation > 0 {
        shop["generation"] = generation.into();
        shop["delete_every"] = 10.into();
    }
    serde_json::json!({
        "connections": [
            {"name": SHOP, "connector": "sample", "tenant": "acme", "config": shop},
            {"name": TINY, "connector": "sample", "config": {"records": TINY_RECORDS}},
        ],
        "workflows": [
            {"name": SHOP, "connection": SHOP, "batch_size": 1000,
             "streams": [stream("users"), stream("orders"), stream("events")]},
            {"name": TINY, "connection": TINY, "batch_size": 10,
             "streams": [{"name": "users"}]},
        ]
    })
}

/// A run as `sluice run --json` reported it.
#[derive(Clone, Debug)]
pub struct Reported {
    /// The run.
    pub run: RunId,
    /// Its workflow.
    pub workflow: String,
    /// Records it committed, over every stream.
    pub records: u64,
}

/// The base store: its directory, the definitions file its latest runs used, and the
/// runs the processes reported completed.
pub struct BaseStore {
    /// The store (the node's data directory).
    pub store: TestStore,
    /// The definitions of the latest runs; `--workflow tiny` runs only `tiny`.
    pub definitions: PathBuf,
    /// Every run made, each reported completed.
    pub runs: Vec<Reported>,
}

/// The runs one `sluice run --json` reported, each of which must have completed.
fn completed_runs(out: &Output) -> Vec<Reported> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sluice run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            assert_eq!(v["status"], "completed", "{line}");
            Reported {
                run: v["run"]
                    .as_str()
                    .expect("run id")
                    .parse()
                    .expect("a run id"),
                workflow: v["workflow"].as_str().expect("workflow").to_owned(),
                records: v["records"].as_u64().expect("records"),
            }
        })
        .collect()
}

/// Makes a stopped store in `root/store` with four completed runs by two `sluice
/// run`s: `shop` and `tiny`; then `shop` again with records changed and left out
/// (updates and deletions in the hub) and `tiny` again. sled snapshots only at open,
/// so half the store's log lies past its last snapshot, as in a node that ran for a
/// while: damage there is what sled takes for a crash's torn tail.
pub fn make_base_store(root: &Path) -> BaseStore {
    let store = TestStore::create(crate::crash_support::Backend::Sled, root.join("store"));
    let first = root.join("first.json");
    let definitions = root.join("definitions.json");
    std::fs::write(&first, definitions_text(0)).expect("write definitions");
    std::fs::write(&definitions, definitions_text(1)).expect("write definitions");
    let mut runs = Vec::new();
    for file in [&first, &definitions] {
        let out = sluice_run(file, &store, &[]).output().expect("run sluice");
        runs.extend(completed_runs(&out));
    }
    assert_eq!(runs.len(), 4, "{runs:?}");
    BaseStore {
        store,
        definitions,
        runs,
    }
}

fn definitions_text(generation: u64) -> String {
    definitions(generation).to_string()
}

/// Copies the store directory `from` to `to` (which must not exist): blobs
/// hard-linked, every other file copied; `own` (a path relative to `from`), if
/// given, is copied even under `blobs/`.
pub fn clone_store(from: &Path, to: &Path, own: Option<&Path>) {
    clone_dir(from, to, Path::new(""), own);
}

fn clone_dir(from: &Path, to: &Path, rel: &Path, own: Option<&Path>) {
    std::fs::create_dir_all(to.join(rel)).expect("create the clone's directory");
    let mut entries: Vec<_> = std::fs::read_dir(from.join(rel))
        .expect("read the store's directory")
        .map(|e| e.expect("a directory entry"))
        .collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let rel = rel.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            clone_dir(from, to, &rel, own);
        } else if rel.starts_with(BLOBS) && Some(rel.as_path()) != own {
            std::fs::hard_link(from.join(&rel), to.join(&rel)).expect("hard-link a blob");
        } else {
            std::fs::copy(from.join(&rel), to.join(&rel)).expect("copy a store file");
        }
    }
}

/// The files of the store in `dir`, relative to it (sorted), with their sizes.
pub fn store_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        for entry in std::fs::read_dir(dir.join(&rel)).expect("read the store's directory") {
            let entry = entry.expect("a directory entry");
            let rel = rel.join(entry.file_name());
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                dirs.push(rel);
            } else {
                files.push((rel, meta.len()));
            }
        }
    }
    files.sort();
    files
}

/// Snapshots sled left unfinished in `dir` (`snap.<lsn>.generating`): name and size.
/// A directory being changed under the read may miss an entry; a file gone between
/// the listing and its size counts as size 0.
pub fn unfinished_snapshots(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with("snap.") && name.ends_with(".generating")).then(|| {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                (name, len)
            })
        })
        .collect()
}

/// What a store holds, as the fault tests compare it: every run's summary, events
/// and total records, every stream's facts (cursor, counts, digests of the feed and
/// the live records) and every catalog document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holdings {
    /// Every run: its summary, its events and the records they count.
    pub runs: BTreeMap<RunId, StoredRun>,
    /// Every stream of the hub by (connection, stream).
    pub streams: BTreeMap<(String, String), StreamFacts>,
    /// Every catalog document by (kind, name).
    pub catalog: BTreeMap<(String, String), Vec<u8>>,
}

/// One run as a store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRun {
    /// Its summary.
    pub summary: RunSummary,
    /// Its events.
    pub events: Vec<RunEvent>,
    /// Records its events count, over every stream.
    pub records: u64,
}

impl Holdings {
    /// How `self` (what a store held before) and `now` differ, in a line or two per
    /// run, stream or document; empty when they do not.
    pub fn differences(&self, now: &Holdings) -> Vec<String> {
        let mut out = Vec::new();
        for (id, run) in &self.runs {
            match now.runs.get(id) {
                None => out.push(format!(
                    "run {id} ({}, {:?}, {} records) is missing",
                    run.summary.workflow, run.summary.status, run.records
                )),
                Some(n) if n != run => out.push(format!(
                    "run {id} ({}) was {:?} with {} events and {} records, is {:?} with {} \
                     events and {} records",
                    run.summary.workflow,
                    run.summary.status,
                    run.events.len(),
                    run.records,
                    n.summary.status,
                    n.events.len(),
                    n.records
                )),
                Some(_) => {}
            }
        }
        for id in now.runs.keys().filter(|id| !self.runs.contains_key(*id)) {
            out.push(format!("run {id} appeared"));
        }
        for (key, facts) in &self.streams {
            match now.streams.get(key) {
                None => out.push(format!("stream {}/{} is missing", key.0, key.1)),
                Some(n) if n != facts => out.push(format!(
                    "stream {}/{} held {} live records ({} feed entries, cursor {:?}), holds \
                     {} ({} listed, {} feed entries, cursor {:?}){}",
                    key.0,
                    key.1,
                    facts.live,
                    facts.changes,
                    facts.cursor,
                    n.live,
                    n.live_listed,
                    n.changes,
                    n.cursor,
                    if (n.live, n.changes) == (facts.live, facts.changes) {
                        " with other digests"
                    } else {
                        ""
                    }
                )),
                Some(_) => {}
            }
        }
        for key in now
            .streams
            .keys()
            .filter(|k| !self.streams.contains_key(*k))
        {
            out.push(format!("stream {}/{} appeared", key.0, key.1));
        }
        for (key, doc) in &self.catalog {
            if now.catalog.get(key) != Some(doc) {
                out.push(format!(
                    "catalog document {}/{} differs or is missing",
                    key.0, key.1
                ));
            }
        }
        for key in now
            .catalog
            .keys()
            .filter(|k| !self.catalog.contains_key(*k))
        {
            out.push(format!("catalog document {}/{} appeared", key.0, key.1));
        }
        out
    }
}

/// Reads what `store` holds (see [`Holdings`]).
pub async fn holdings(store: &Store) -> Result<Holdings, String> {
    let mut runs = BTreeMap::new();
    let listed = store
        .log()
        .list(&RunFilter::default())
        .await
        .map_err(|e| format!("listing runs: {e}"))?;
    for summary in listed {
        let events = store
            .log()
            .read(summary.run_id)
            .await
            .map_err(|e| format!("reading run {}: {e}", summary.run_id))?;
        let records = fold(&events)
            .map_err(|e| format!("folding run {}: {e}", summary.run_id))?
            .total_records();
        runs.insert(
            summary.run_id,
            StoredRun {
                summary,
                events,
                records,
            },
        );
    }
    let mut streams = BTreeMap::new();
    for (connection, stream) in store
        .hub_bulk()
        .streams()
        .await
        .map_err(|e| format!("listing streams: {e}"))?
    {
        let facts = stream_facts(store, &connection, &stream)
            .await
            .map_err(|e| format!("reading stream {connection}/{stream}: {e}"))?;
        streams.insert((connection, stream), facts);
    }
    let mut catalog = BTreeMap::new();
    let kinds = store
        .catalog()
        .kinds()
        .await
        .map_err(|e| format!("listing the catalog's kinds: {e}"))?;
    for kind in kinds {
        for (name, doc) in store
            .catalog()
            .list(&kind)
            .await
            .map_err(|e| format!("listing the catalog's {kind} documents: {e}"))?
        {
            catalog.insert((kind.clone(), name), doc);
        }
    }
    Ok(Holdings {
        runs,
        streams,
        catalog,
    })
}

/// Checks `base` is what the processes reported: each reported run completed with
/// its records, the `shop` streams hold their records less those left out.
pub fn check_base(base: &Holdings, reported: &[Reported]) {
    assert_eq!(base.runs.len(), reported.len(), "{:?}", base.runs.keys());
    for r in reported {
        let run = base.runs.get(&r.run).expect("a reported run is stored");
        assert_eq!(
            run.summary.status,
            StatusKind::Completed,
            "{:?}",
            run.summary
        );
        assert_eq!(run.summary.workflow, r.workflow);
        assert_eq!(run.records, r.records, "records of run {}", r.run);
    }
    let kept = SHOP_RECORDS - SHOP_RECORDS / 10;
    for stream in ["users", "orders", "events"] {
        let facts = &base.streams[&(SHOP.to_owned(), stream.to_owned())];
        assert_eq!((facts.live, facts.live_listed), (kept, kept), "{facts:?}");
    }
    let tiny = &base.streams[&(TINY.to_owned(), "users".to_owned())];
    assert_eq!(tiny.live, TINY_RECORDS, "{tiny:?}");
}

/// Error text with its causes, as an operator would read it.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Whether an error says the store is damaged (or corrupt) or rolled back.
pub fn names_damage(text: &str) -> bool {
    let text = text.to_lowercase();
    ["damaged", "corrupt", "rolled back"]
        .iter()
        .any(|w| text.contains(w))
}

/// How opening a store (and reading it) ended.
#[derive(Debug)]
pub enum Opened<T> {
    /// It opened and `read` returned.
    Read(T),
    /// The open failed: the error with its causes.
    Refused(String),
    /// Something panicked: its message.
    Panicked(String),
    /// Nothing came back within the deadline.
    Hung,
}

/// Opens the embedded store in `dir` on a thread of its own and runs `read` on it;
/// gives up waiting after `deadline` (the thread, if hung, is left behind).
pub fn open_within<T: Send + 'static>(
    dir: &Path,
    deadline: Duration,
    read: impl AsyncFnOnce(&Store) -> T + Send + 'static,
) -> Opened<T> {
    let dir = dir.to_owned();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            block_on(async {
                match Location::Dir(dir.clone()).open(&dir).await {
                    Ok(store) => Opened::Read(read(&store).await),
                    Err(e) => Opened::Refused(error_chain(&e)),
                }
            })
        }));
        let _ = tx.send(outcome.unwrap_or_else(|p| {
            let message = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Opened::Panicked(message)
        }));
    });
    rx.recv_timeout(deadline).unwrap_or(Opened::Hung)
}

/// Runs `cmd` to its end (stdin closed, output captured); `None` if it was still
/// running after `deadline`, when it is killed.
pub fn output_or_hang(mut cmd: Command, deadline: Duration) -> Option<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(output) => Some(output.expect("sluice's output")),
        Err(_) => {
            sluice_testkit::process::send_signal(pid, "-KILL");
            None
        }
    }
}

/// The seed of a test's random choices: `SLUICE_FAULT_SEED` if set, else a new one;
/// printed either way.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("SLUICE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{test}: seed {seed} (replay with SLUICE_FAULT_SEED={seed})");
    seed
}
