//! Verifying an embedded store ([`verify_dir`]): the contract's checks
//! ([`crate::verify`]), with the runs listed from the `runs` tree itself, then what
//! only this backend has — the runs' secondary indexes, the events of runs that have
//! no summary, every hub segment on its own, every run log entry and the log's own
//! facts.
//!
//! The store is opened as a node opens it (`super::open`: an unfinished snapshot is
//! removed, a group of writes a crash interrupted is completed, a store that lost
//! flushes it had made durable is refused; one another process holds is refused
//! naming that), and its log started and stopped as a node's would be (a log that
//! does not start is reported); then it is read behind a backend that refuses every
//! write of the contract, whose run log reads the trees itself.
//!
//! The indexes are checked without a lookup per entry: for each index, the entries the
//! runs call for and the entries found are summed as hashes of their keys (one run
//! each); equal sums and counts mean the same entries. Only an index whose sums differ
//! is looked through entry by entry (and its runs, in chunks of [`CHUNK`]) to name
//! what is wrong. Segments are decoded here rather than by the hub's reader, which
//! skips what it need not read: every change's key and content hashes are checked
//! against its bytes, and the keys seen unchanged and the end of the segment too.
//!
//! The key layouts read here are those documented in `super::log::keys` and
//! `super::hub` (durable formats, never changed); the tests below hold them to the
//! writers. It must never write to the store.

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prost::Message;
use sluice_model::{EventKind, RunEvent, RunId};

use super::catalog::SledCatalog;
use super::hub::SledHub;
use super::layout::{
    ACTIVE_FROM, EVENTS, GROUP_EXTRA, HUB, HUB_CURSOR, HUB_META, HUB_SEGMENT, LOG_META,
    POSTING_SPREAD, RUN_LOGS, RUNS, RUNS_ACTIVE, RUNS_BY_CONNECTION, RUNS_BY_STATUS,
    RUNS_BY_TENANT, RUNS_BY_TIME, RUNS_BY_WORKFLOW,
};
use super::log::{EventLog, LogConfig, decoded, head_of, read_events};
use super::run_logs::SledRunLogs;
use crate::catalog::Catalog;
use crate::codec::{summary_from_wire, v1};
use crate::hub::{Change, Hub, HubBulk, HubError, Record, StreamImport};
use crate::log::{Appending, LogError, RunFilter, RunLog, RunSummary};
use crate::records::hash128;
use crate::run_logs::{LogEntry, MAX_ENTRIES_PER_RUN, RunLogs};
use crate::verify::{
    Findings, Listed, Listen, Progress, Report, RunPages, Subject, VerifyError, check_store,
};
use crate::{Backend, BatchCommit, Committed, Store, StoreError, StreamEnd};

/// Runs read at once from the `runs` tree.
const RUN_PAGE: usize = 1_024;
/// Runs whose expected index entries are held at once when an index is looked
/// through run by run.
const CHUNK: usize = 131_072;
/// sled's page cache while verifying or repairing: everything is read once, in order,
/// so a cache the size of a node's buys nothing but memory.
pub(super) const CACHE_BYTES: u64 = 32 << 20;
/// Damages reported per stream's segments or per index; past it, counted in one more.
const PER_PART: u64 = 1_000;

/// Checks the embedded store in `path` (see the module doc and [`crate::verify`]);
/// `listen` hears each damage as it is found, and progress. The store must be stopped:
/// one another process holds is refused.
pub async fn verify_dir(path: &Path, listen: &Listen<'_>) -> Result<Report, VerifyError> {
    let began = Instant::now();
    if !path.join("db").is_file() {
        return Err(VerifyError::Open(format!(
            "{} holds no store (no `db` file)",
            path.display()
        )));
    }
    let mut f = Findings::new(listen);
    let unfinished = unfinished_snapshots(path);
    let (db, durable) = super::open::open_store_db(path, CACHE_BYTES)
        .map_err(|e| VerifyError::Open(e.to_string()))?;
    for name in unfinished {
        if !path.join(&name).exists() {
            f.note(format!(
                "opening the store removed {name}, a snapshot a killed process left half \
                 written"
            ));
        }
    }
    let open = |e: StoreError| VerifyError::Open(e.to_string());
    // What a node starting on the store meets first: the log's recovery of the runs in
    // flight, which refuses a summary it cannot read. Verifying goes on regardless.
    match EventLog::start(
        db.clone(),
        durable.clone(),
        LogConfig::default(),
        &GROUP_EXTRA,
    ) {
        Ok(log) => drop(log),
        Err(e) => f.damage(
            Subject::Store {
                part: "run log".to_owned(),
            },
            format!("a node cannot start on the store: {e}"),
        ),
    }
    let trees = Trees::open(&db).map_err(|e| VerifyError::Open(e.to_string()))?;
    let backend = Inspect {
        hub: SledHub::open(&db).map_err(|e| open(e.into()))?,
        db: db.clone(),
        indexed: std::sync::Mutex::new(None),
        catalog: SledCatalog::open(&db, durable).map_err(open)?,
        run_logs: SledRunLogs::open(&db).map_err(open)?,
        log: InspectLog {
            trees: trees.clone(),
        },
    };
    let store = Store::with_backend(Arc::new(backend), path);
    let mut pages = SledRunPages::new(&trees)?;
    check_store(&store, &mut pages, &mut f).await?;
    let expected = pages.done.then_some(pages.expected);
    check_parts(&trees, expected.as_ref(), &mut f).map_err(|e| VerifyError::Task(e.to_string()))?;
    drop(store);
    f.report.elapsed = began.elapsed();
    Ok(f.report)
}

/// The unfinished snapshots in the store at `path` (`snap.*.generating`), by name.
pub(super) fn unfinished_snapshots(path: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snap.") && n.ends_with(".generating"))
        .collect();
    names.sort();
    names
}

/// The embedded store's parts behind the contract, every write refused: what a
/// verification reads through. Its run log reads the trees itself, so that a store
/// whose log does not start (a node refuses it) is verified all the same.
struct Inspect {
    log: InspectLog,
    hub: SledHub,
    /// For a hub of the stream being checked.
    db: sled::Db,
    /// The hub that holds the index of the stream being checked: a stream's index is
    /// loaded (and kept) by the hub that counts or lists its records, so one hub per
    /// stream keeps one index in memory at a time.
    indexed: std::sync::Mutex<Option<((String, String), SledHub)>>,
    catalog: SledCatalog,
    run_logs: SledRunLogs,
}

impl Inspect {
    /// The hub for reads that load `connection`'s `stream` index.
    fn indexed(&self, connection: &str, stream: &str) -> Result<SledHub, HubError> {
        let mut held = self.indexed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(((c, s), hub)) = held.as_ref()
            && c == connection
            && s == stream
        {
            return Ok(hub.clone());
        }
        let hub = SledHub::open(&self.db)?;
        *held = Some(((connection.to_owned(), stream.to_owned()), hub.clone()));
        Ok(hub)
    }
}

fn read_only() -> StoreError {
    StoreError::Invalid("the store is open for verification only: nothing is written".into())
}

#[async_trait]
impl Backend for Inspect {
    fn log(&self) -> &dyn RunLog {
        &self.log
    }

    fn hub(&self) -> &dyn Hub {
        self
    }

    fn catalog(&self) -> &dyn Catalog {
        &self.catalog
    }

    fn run_logs(&self) -> &dyn RunLogs {
        &self.run_logs
    }

    fn hub_bulk(&self) -> &dyn HubBulk {
        self
    }

    async fn commit_batch(&self, _: RunId, _: BatchCommit) -> Result<Committed, StoreError> {
        Err(read_only())
    }

    async fn complete_stream(&self, _: RunId, _: StreamEnd) -> Result<u64, StoreError> {
        Err(read_only())
    }

    async fn append_with_document(
        &self,
        _: RunId,
        _: i64,
        _: Vec<EventKind>,
        _: &str,
        _: &str,
        _: Vec<u8>,
    ) -> Result<Vec<u64>, StoreError> {
        Err(read_only())
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        Err(read_only())
    }
}

/// The run log's reads, straight from the trees (the layout of `super::log::keys`,
/// read as `super::log::store` reads it); appends refused.
struct InspectLog {
    trees: Trees,
}

fn refused() -> LogError {
    LogError::Invalid("the store is open for verification only: nothing is written".into())
}

impl InspectLog {
    /// The run's summary and the events its record holds.
    fn head(&self, run: RunId) -> Result<Option<(RunSummary, Vec<v1::RunEvent>)>, LogError> {
        Ok(head_of(&self.trees.runs, run)?.map(|h| (h.summary, h.recent)))
    }
}

#[async_trait]
impl RunLog for InspectLog {
    async fn enqueue_at(&self, _: RunId, _: i64, _: Vec<EventKind>) -> Result<Appending, LogError> {
        Err(refused())
    }

    async fn enqueue_expecting(
        &self,
        _: RunId,
        _: u64,
        _: Vec<EventKind>,
    ) -> Result<Appending, LogError> {
        Err(refused())
    }

    async fn hold_expecting(
        &self,
        _: RunId,
        _: u64,
        _: Vec<EventKind>,
    ) -> Result<Appending, LogError> {
        Err(refused())
    }

    async fn release(&self, _: RunId) -> Result<(), LogError> {
        Ok(())
    }

    /// The events under keys of their own, then those the summary record holds past
    /// them, as the log reads them.
    async fn read(&self, run: RunId) -> Result<Vec<RunEvent>, LogError> {
        decoded(run, read_events(&self.trees.runs, &self.trees.events, run)?)
    }

    async fn summary(&self, run: RunId) -> Result<Option<RunSummary>, LogError> {
        Ok(self.head(run)?.map(|(s, _)| s))
    }

    async fn list(&self, _: &RunFilter) -> Result<Vec<RunSummary>, LogError> {
        Err(LogError::Invalid(
            "a verification lists the runs from the runs tree".into(),
        ))
    }

    async fn list_in_flight(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, LogError> {
        self.list(filter).await
    }

    /// The runs keyed in `runs_active`, then those in flight past the watermark (as a
    /// node finds the runs to resume).
    async fn in_flight(&self) -> Result<Vec<RunId>, LogError> {
        let mut out = Vec::new();
        for key in self.trees.index(Index::Active).iter().keys() {
            let key = key.map_err(LogError::storage)?;
            if let Some(run) = RunId::from_slice(&key) {
                out.push(run);
            }
        }
        let from = self
            .trees
            .watermark()
            .map_err(LogError::storage)?
            .unwrap_or(RunId([0xff; 16]));
        for entry in self.trees.runs.range(from.0..) {
            let (key, raw) = entry.map_err(LogError::storage)?;
            let Some(run) = RunId::from_slice(&key) else {
                continue;
            };
            // A summary that cannot be read is reported with its run (and a node's
            // refusal to start, in `verify_dir`).
            let Ok(s) = decode_summary(run, &raw) else {
                continue;
            };
            if !s.status.is_terminal() {
                out.push(run);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

// A verification is the only thing the process does: the hub's reads run in place.
#[async_trait]
impl Hub for Inspect {
    async fn get(
        &self,
        connection: &str,
        stream: &str,
        primary_key: &[serde_json::Value],
    ) -> Result<Option<Record>, HubError> {
        self.indexed(connection, stream)?
            .get(connection, stream, primary_key)
    }

    async fn stream_cursor(
        &self,
        connection: &str,
        stream: &str,
    ) -> Result<Option<String>, HubError> {
        self.hub.stream_cursor(connection, stream)
    }

    async fn count(&self, connection: &str, stream: &str) -> Result<u64, HubError> {
        self.indexed(connection, stream)?.count(connection, stream)
    }

    async fn feed(
        &self,
        connection: &str,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Change>, u64), HubError> {
        self.hub.feed(connection, stream, after, limit)
    }
}

#[async_trait]
impl HubBulk for Inspect {
    async fn streams(&self) -> Result<Vec<(String, String)>, HubError> {
        self.hub.streams()
    }

    async fn live_records(
        &self,
        connection: &str,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Record>, u64), HubError> {
        self.indexed(connection, stream)?
            .live_records(connection, stream, after, limit)
    }

    async fn import(&self, _: StreamImport) -> Result<(), StoreError> {
        Err(read_only())
    }
}

/// The trees a verification (or a repair) reads.
#[derive(Clone)]
pub(super) struct Trees {
    pub(super) runs: sled::Tree,
    pub(super) events: sled::Tree,
    pub(super) meta: sled::Tree,
    pub(super) hub: sled::Tree,
    pub(super) run_logs: sled::Tree,
    /// The indexes, in the order of [`Index::ALL`].
    pub(super) indexes: Vec<sled::Tree>,
}

impl Trees {
    pub(super) fn open(db: &sled::Db) -> sled::Result<Self> {
        Ok(Trees {
            runs: db.open_tree(RUNS)?,
            events: db.open_tree(EVENTS)?,
            meta: db.open_tree(LOG_META)?,
            hub: db.open_tree(HUB)?,
            run_logs: db.open_tree(RUN_LOGS)?,
            indexes: Index::ALL
                .iter()
                .map(|i| db.open_tree(i.tree()))
                .collect::<sled::Result<_>>()?,
        })
    }

    pub(super) fn index(&self, index: Index) -> &sled::Tree {
        &self.indexes[index as usize]
    }

    /// The watermark below which runs in flight are keyed in `runs_active`, if one is
    /// stored and readable.
    pub(super) fn watermark(&self) -> sled::Result<Option<RunId>> {
        Ok(self
            .meta
            .get(ACTIVE_FROM)?
            .and_then(|v| RunId::from_slice(&v)))
    }
}

/// One of the runs' secondary indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Index {
    Workflow,
    Connection,
    Tenant,
    Status,
    Time,
    Active,
}

impl Index {
    pub(super) const ALL: [Index; 6] = [
        Index::Workflow,
        Index::Connection,
        Index::Tenant,
        Index::Status,
        Index::Time,
        Index::Active,
    ];

    pub(super) fn tree(self) -> &'static str {
        match self {
            Index::Workflow => RUNS_BY_WORKFLOW,
            Index::Connection => RUNS_BY_CONNECTION,
            Index::Tenant => RUNS_BY_TENANT,
            Index::Status => RUNS_BY_STATUS,
            Index::Time => RUNS_BY_TIME,
            Index::Active => RUNS_ACTIVE,
        }
    }

    /// Whether its entries are postings: `prefix ++ first run`, the further runs in
    /// the value (`runs_active` holds one key per run and no value).
    pub(super) fn postings(self) -> bool {
        self != Index::Active
    }

    /// The key prefix under which `s` has an entry in this index, if it has one
    /// (`watermark`: the runs in flight keyed in `runs_active` are those below it).
    pub(super) fn prefix_of(self, s: &RunSummary, watermark: Option<RunId>) -> Option<Vec<u8>> {
        let value = |v: &str| {
            let mut p = Vec::with_capacity(v.len() + 1);
            p.extend_from_slice(v.as_bytes());
            p.push(0);
            p
        };
        match self {
            Index::Workflow => Some(value(&s.workflow)),
            Index::Connection => Some(value(&s.connection)),
            Index::Tenant => Some(value(&s.tenant)),
            Index::Status => s.status.is_terminal().then(|| value(s.status.as_str())),
            Index::Time => Some(time_bytes(s.created_at_unix_ms).to_vec()),
            Index::Active => {
                (!s.status.is_terminal() && watermark.is_some_and(|w| s.run_id < w)).then(Vec::new)
            }
        }
    }

    /// Whether `prefix` is shaped as this index's prefixes are.
    fn prefix_shaped(self, prefix: &[u8]) -> bool {
        match self {
            Index::Time => prefix.len() == 8,
            Index::Active => prefix.is_empty(),
            _ => prefix.last() == Some(&0) && !prefix[..prefix.len() - 1].contains(&0),
        }
    }

    /// A prefix said for a person.
    fn show(self, prefix: &[u8]) -> String {
        match self {
            Index::Time => match <[u8; 8]>::try_from(prefix) {
                Ok(b) => format!(
                    "created at {} ms",
                    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
                ),
                Err(_) => format!("{prefix:?}"),
            },
            Index::Active => "in flight".to_owned(),
            _ => format!(
                "{:?}",
                String::from_utf8_lossy(prefix.strip_suffix(&[0]).unwrap_or(prefix))
            ),
        }
    }
}

/// Order-preserving bytes of a signed time (the `runs_by_time` prefix).
pub(super) fn time_bytes(unix_ms: i64) -> [u8; 8] {
    ((unix_ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// The summary stored under a `runs` key, or why it cannot be read.
pub(super) fn decode_summary(run: RunId, raw: &[u8]) -> Result<RunSummary, String> {
    let stored = v1::StoredRunSummary::decode(raw).map_err(|e| e.to_string())?;
    summary_from_wire(run, stored).ok_or_else(|| "unknown status".to_owned())
}

/// The hash an index entry of one run counts for in the sums.
fn entry_hash(index: Index, prefix: &[u8], run: RunId) -> u128 {
    let mut bytes = Vec::with_capacity(prefix.len() + 17);
    bytes.push(index as u8);
    bytes.extend_from_slice(prefix);
    bytes.extend_from_slice(&run.0);
    hash128(&bytes)
}

/// A multiset of index entries, summed.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Sum {
    sum: u128,
    count: u64,
}

impl Sum {
    fn add(&mut self, h: u128) {
        self.sum = self.sum.wrapping_add(h);
        self.count += 1;
    }
}

/// The entries of every index the runs call for, summed.
#[derive(Default)]
struct Expected {
    sums: [Sum; 6],
}

/// The runs of the `runs` tree, in id order, a page at a time; summing the index
/// entries they call for as they go.
struct SledRunPages<'t> {
    trees: &'t Trees,
    after: Option<sled::IVec>,
    watermark: Option<RunId>,
    expected: Expected,
    done: bool,
}

impl<'t> SledRunPages<'t> {
    fn new(trees: &'t Trees) -> Result<Self, VerifyError> {
        Ok(SledRunPages {
            trees,
            after: None,
            watermark: trees
                .watermark()
                .map_err(|e| VerifyError::Task(e.to_string()))?,
            expected: Expected::default(),
            done: false,
        })
    }
}

#[async_trait]
impl RunPages for SledRunPages<'_> {
    async fn next_page(&mut self) -> Result<Option<Vec<Listed>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let entries = match self.after.take() {
            None => self.trees.runs.iter(),
            Some(after) => self
                .trees
                .runs
                .range::<&[u8], _>((Bound::Excluded(&after[..]), Bound::Unbounded)),
        };
        let mut page = Vec::with_capacity(RUN_PAGE);
        let mut last = None;
        for entry in entries.take(RUN_PAGE) {
            let (key, raw) = entry.map_err(StoreError::storage)?;
            last = Some(key.clone());
            let Some(run) = RunId::from_slice(&key) else {
                // Not a run id: no run can be named; the index checks skip it too.
                continue;
            };
            match decode_summary(run, &raw) {
                Ok(s) => {
                    for index in Index::ALL {
                        if let Some(prefix) = index.prefix_of(&s, self.watermark) {
                            self.expected.sums[index as usize].add(entry_hash(index, &prefix, run));
                        }
                    }
                    page.push(Listed::Run(s));
                }
                Err(reason) => page.push(Listed::Unreadable { run, reason }),
            }
        }
        match last {
            Some(key) => {
                self.after = Some(key);
                Ok(Some(page))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }
}

/// The checks of this backend's own parts, once the contract's are done; `expected`
/// is `None` when the runs could not all be listed (the indexes are then not summed).
fn check_parts(
    trees: &Trees,
    expected: Option<&Expected>,
    f: &mut Findings<'_>,
) -> sled::Result<()> {
    let began = Instant::now();
    f.progress(Progress::Step("indexes"));
    check_run_keys(trees, f)?;
    check_indexes(trees, expected, f)?;
    f.phase("indexes", began);
    let began = Instant::now();
    f.progress(Progress::Step("events"));
    check_event_keys(trees, f)?;
    f.phase("event keys", began);
    let began = Instant::now();
    f.progress(Progress::Step("segments"));
    check_segments(trees, f)?;
    f.phase("segments", began);
    let began = Instant::now();
    f.progress(Progress::Step("run logs"));
    check_run_log_entries(trees, f)?;
    f.phase("run log entries", began);
    Ok(())
}

/// Keys of `runs` that are no run id.
fn check_run_keys(trees: &Trees, f: &mut Findings<'_>) -> sled::Result<()> {
    // Run ids are 16 bytes: a key of another length sorts among them wherever it falls.
    for entry in trees.runs.iter().keys() {
        let key = entry?;
        if key.len() != 16 {
            f.damage(
                Subject::Store {
                    part: RUNS.to_owned(),
                },
                format!("a key of {} bytes is no run id: {:?}", key.len(), &key[..]),
            );
        }
    }
    Ok(())
}

/// Damage of one part, at most [`PER_PART`] of it reported.
struct Capped {
    found: u64,
}

impl Capped {
    fn new() -> Self {
        Capped { found: 0 }
    }

    fn damage(&mut self, f: &mut Findings<'_>, subject: Subject, problem: impl Into<String>) {
        self.found += 1;
        if self.found <= PER_PART {
            f.damage(subject, problem);
        }
    }

    fn finish(self, f: &mut Findings<'_>, subject: Subject) {
        if self.found > PER_PART {
            let more = self.found - PER_PART;
            f.damage(
                subject,
                format!("{more} more damaged entries (not listed one by one)"),
            );
        }
    }
}

fn index_subject(index: Index, run: Option<RunId>) -> Subject {
    Subject::Index {
        index: index.tree().to_owned(),
        run,
    }
}

/// An index entry, split: the prefix and every run it holds, or why it is malformed.
pub(super) fn entry_runs(
    index: Index,
    key: &[u8],
    value: &[u8],
) -> Result<(Vec<u8>, Vec<RunId>), String> {
    let at = key
        .len()
        .checked_sub(16)
        .ok_or_else(|| format!("a key of {} bytes holds no run id", key.len()))?;
    let (prefix, first) = key.split_at(at);
    let first = RunId::from_slice(first).ok_or("no run id")?;
    if !index.prefix_shaped(prefix) {
        return Err(format!("its key is not shaped as {}'s are", index.tree()));
    }
    if !index.postings() && !value.is_empty() {
        return Err(format!(
            "holds a value of {} bytes, none expected",
            value.len()
        ));
    }
    if !value.len().is_multiple_of(16) {
        return Err(format!(
            "its value of {} bytes is no whole number of run ids (readers skip its further runs)",
            value.len()
        ));
    }
    let mut runs = vec![first];
    for id in value.chunks_exact(16) {
        let run = RunId::from_slice(id).ok_or("no run id")?;
        if runs.last().is_some_and(|last| *last >= run) {
            return Err("its runs are not in ascending order".to_owned());
        }
        runs.push(run);
    }
    Ok((prefix.to_vec(), runs))
}

fn check_indexes(
    trees: &Trees,
    expected: Option<&Expected>,
    f: &mut Findings<'_>,
) -> sled::Result<()> {
    let mut widest = 0u128;
    for index in Index::ALL {
        let mut found = Sum::default();
        let mut capped = Capped::new();
        for entry in trees.index(index).iter() {
            let (key, value) = entry?;
            f.checked().index_entries += 1;
            match entry_runs(index, &key, &value) {
                Ok((prefix, runs)) => {
                    if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
                        let d = u128::from_be_bytes(last.0) - u128::from_be_bytes(first.0);
                        widest = widest.max(d);
                    }
                    for run in runs {
                        found.add(entry_hash(index, &prefix, run));
                    }
                }
                Err(why) => {
                    let run = key
                        .len()
                        .checked_sub(16)
                        .and_then(|at| RunId::from_slice(&key[at..]));
                    capped.damage(f, index_subject(index, run), why);
                }
            }
        }
        capped.finish(f, index_subject(index, None));
        if let Some(expected) = expected
            && expected.sums[index as usize] != found
        {
            look_through(trees, index, f)?;
        }
    }
    let spread = trees.meta.get(POSTING_SPREAD)?;
    let log_meta = || Subject::Store {
        part: LOG_META.to_owned(),
    };
    match spread.as_deref().map(<[u8; 16]>::try_from) {
        None => {}
        Some(Ok(b)) if u128::from_be_bytes(b) >= widest => {}
        Some(Ok(b)) => f.damage(
            log_meta(),
            format!(
                "the postings' spread {} is below the widest posting's {widest}: listing \
                 runs newest first may put them out of order",
                u128::from_be_bytes(b)
            ),
        ),
        Some(Err(_)) => f.damage(log_meta(), "the postings' spread is not 16 bytes"),
    }
    match trees.meta.get(ACTIVE_FROM)? {
        Some(v) if v.len() == 16 => {}
        Some(v) => f.damage(
            log_meta(),
            format!(
                "the in-flight watermark holds {} bytes, not a run id",
                v.len()
            ),
        ),
        None => f.damage(log_meta(), "the in-flight watermark is missing"),
    }
    Ok(())
}

/// Names what is wrong in an index whose entries differ from those the runs call
/// for: entries naming a run that is not there or says otherwise, then runs without
/// their entry.
fn look_through(trees: &Trees, index: Index, f: &mut Findings<'_>) -> sled::Result<()> {
    let watermark = trees.watermark()?;
    let mut capped = Capped::new();
    for entry in trees.index(index).iter() {
        let (key, value) = entry?;
        let Ok((prefix, runs)) = entry_runs(index, &key, &value) else {
            continue;
        };
        for run in runs {
            let subject = || index_subject(index, Some(run));
            let Some(raw) = trees.runs.get(run.0)? else {
                capped.damage(f, subject(), "an entry names a run the store does not hold");
                continue;
            };
            // A summary that cannot be read was reported with its run.
            let Ok(s) = decode_summary(run, &raw) else {
                continue;
            };
            let wanted = index.prefix_of(&s, watermark);
            if wanted.as_deref() == Some(prefix.as_slice()) {
                continue;
            }
            // A manual retry of a dead-lettered run leaves it under that status: the
            // summary is the truth, and readers check it.
            if index == Index::Status && prefix == b"dead_lettered\0" {
                continue;
            }
            let problem = match (index, wanted) {
                (Index::Active, _) if s.status.is_terminal() => {
                    format!(
                        "an entry keys the run in flight, but it is {}",
                        s.status.as_str()
                    )
                }
                (Index::Active, _) => {
                    "an entry keys the run, which is past the watermark".to_owned()
                }
                (_, None) => format!(
                    "an entry lists the run under {}, but it is {}",
                    index.show(&prefix),
                    s.status.as_str()
                ),
                (_, Some(wanted)) => format!(
                    "an entry lists the run under {}, its summary says {}",
                    index.show(&prefix),
                    index.show(&wanted)
                ),
            };
            capped.damage(f, subject(), problem);
        }
    }
    // Runs without their entry, a chunk of runs at a time.
    let mut runs = trees.runs.iter();
    loop {
        let mut wanted: HashMap<u128, (RunId, Vec<u8>)> = HashMap::new();
        let mut read = 0;
        for entry in runs.by_ref().take(CHUNK) {
            let (key, raw) = entry?;
            read += 1;
            let Some(run) = RunId::from_slice(&key) else {
                continue;
            };
            let Ok(s) = decode_summary(run, &raw) else {
                continue;
            };
            if let Some(prefix) = index.prefix_of(&s, watermark) {
                wanted.insert(entry_hash(index, &prefix, run), (run, prefix));
            }
        }
        if read == 0 {
            break;
        }
        for entry in trees.index(index).iter() {
            let (key, value) = entry?;
            if let Ok((prefix, runs)) = entry_runs(index, &key, &value) {
                for run in runs {
                    wanted.remove(&entry_hash(index, &prefix, run));
                }
            }
        }
        let mut missing: Vec<(RunId, Vec<u8>)> = wanted.into_values().collect();
        missing.sort();
        for (run, prefix) in missing {
            let problem = match index {
                Index::Active => "has no entry for the run, which is in flight: a node \
                                  starting on the store would not resume it"
                    .to_owned(),
                _ => format!("has no entry for the run (under {})", index.show(&prefix)),
            };
            capped.damage(f, index_subject(index, Some(run)), problem);
        }
    }
    capped.finish(f, index_subject(index, None));
    Ok(())
}

/// `events` keys: each of a run that has a summary, and shaped as event keys are.
fn check_event_keys(trees: &Trees, f: &mut Findings<'_>) -> sled::Result<()> {
    let mut last_run: Option<RunId> = None;
    let mut capped = Capped::new();
    for key in trees.events.iter().keys() {
        let key = key?;
        let Some(run) = key.get(..16).and_then(RunId::from_slice) else {
            capped.damage(
                f,
                Subject::Store {
                    part: EVENTS.to_owned(),
                },
                format!("a key of {} bytes names no run", key.len()),
            );
            continue;
        };
        let subject = Subject::Run { run, seq: None };
        if key.len() != 24 && key.len() != 32 {
            capped.damage(
                f,
                subject.clone(),
                format!("an event key of {} bytes", key.len()),
            );
        }
        if last_run == Some(run) {
            continue;
        }
        last_run = Some(run);
        if !trees.runs.contains_key(run.0)? {
            capped.damage(
                f,
                subject,
                "its events are stored but the run has no summary: it is missing from \
                 every listing",
            );
        }
    }
    capped.finish(
        f,
        Subject::Store {
            part: EVENTS.to_owned(),
        },
    );
    Ok(())
}

/// A hub key's stream (`tag | len | connection | len | stream`) and what follows it.
pub(super) fn split_hub_key(key: &[u8]) -> Option<(String, String, &[u8])> {
    let mut at = 1usize;
    let mut part = || -> Option<String> {
        let len = u32::from_be_bytes(key.get(at..at + 4)?.try_into().ok()?) as usize;
        let bytes = key.get(at + 4..at + 4 + len)?;
        at += 4 + len;
        String::from_utf8(bytes.to_vec()).ok()
    };
    let connection = part()?;
    let stream = part()?;
    Some((connection, stream, &key[at..]))
}

fn stream_subject(
    connection: &str,
    stream: &str,
    segment: Option<u64>,
    key: Option<String>,
) -> Subject {
    Subject::Stream {
        connection: connection.to_owned(),
        stream: stream.to_owned(),
        key,
        segment,
    }
}

/// The stream whose segments are being checked.
struct SegmentRun {
    connection: String,
    stream: String,
    /// The seq the next segment should have.
    expect: u64,
    /// The stream's stored next seq.
    next: u64,
    orphans: u64,
    capped: Capped,
}

impl SegmentRun {
    fn subject(&self, segment: Option<u64>) -> Subject {
        stream_subject(&self.connection, &self.stream, segment, None)
    }

    fn finish(self, f: &mut Findings<'_>) {
        if self.expect < self.next {
            let missing = if self.next - self.expect == 1 {
                format!("segment {} is missing", self.expect)
            } else {
                format!("segments {} to {} are missing", self.expect, self.next - 1)
            };
            f.damage(
                self.subject(None),
                format!(
                    "{missing} (its next seq is {}): their changes are lost",
                    self.next
                ),
            );
        }
        if self.orphans > 0 {
            f.note(format!(
                "stream {}/{}: {} segment(s) past its next seq, left by a crash before their \
                 batch committed (the next batch replaces them)",
                self.connection, self.stream, self.orphans
            ));
        }
        let subject = self.subject(None);
        self.capped.finish(f, subject);
    }
}

/// Every hub key: segments (each decoded, seqs from 0 up to the stream's next seq),
/// next seqs and cursors.
fn check_segments(trees: &Trees, f: &mut Findings<'_>) -> sled::Result<()> {
    let hub_part = || Subject::Store {
        part: HUB.to_owned(),
    };
    let mut with_segments: HashSet<(String, String)> = HashSet::new();
    let mut current: Option<SegmentRun> = None;
    for entry in trees.hub.iter() {
        let (key, value) = entry?;
        let tag = key.first().copied();
        let Some((connection, stream, rest)) = split_hub_key(&key) else {
            f.damage(
                hub_part(),
                format!("a key that names no stream: {:?}", &key[..]),
            );
            continue;
        };
        match tag {
            Some(HUB_SEGMENT) => {}
            Some(HUB_META) => {
                // Whether its segments are there is seen with them, and below.
                if value.len() != 8 || !rest.is_empty() {
                    f.damage(
                        stream_subject(&connection, &stream, None, None),
                        format!(
                            "its next seq is malformed ({} bytes, {} past its key)",
                            value.len(),
                            rest.len()
                        ),
                    );
                }
                continue;
            }
            Some(HUB_CURSOR) => {
                if std::str::from_utf8(&value).is_err() {
                    f.damage(
                        stream_subject(&connection, &stream, None, None),
                        "its cursor is not UTF-8",
                    );
                }
                continue;
            }
            _ => {
                f.damage(hub_part(), format!("a key of unknown kind {tag:?}"));
                continue;
            }
        }
        let Ok(seq) = <[u8; 8]>::try_from(rest).map(u64::from_be_bytes) else {
            f.damage(
                stream_subject(&connection, &stream, None, None),
                format!("a segment key ends in {} bytes, not a seq", rest.len()),
            );
            continue;
        };
        if current
            .as_ref()
            .is_none_or(|c| c.connection != connection || c.stream != stream)
        {
            if let Some(done) = current.take() {
                done.finish(f);
            }
            let next = next_seq(trees, &key, rest.len())?;
            with_segments.insert((connection.clone(), stream.clone()));
            current = Some(SegmentRun {
                connection: connection.clone(),
                stream: stream.clone(),
                expect: 0,
                next: next.unwrap_or(0),
                orphans: 0,
                capped: Capped::new(),
            });
        }
        let Some(run) = current.as_mut() else {
            continue;
        };
        if seq >= run.next {
            run.orphans += 1;
            continue;
        }
        if seq > run.expect {
            let subject = run.subject(None);
            let missing = if seq - run.expect == 1 {
                format!("segment {} is missing", run.expect)
            } else {
                format!("segments {} to {} are missing", run.expect, seq - 1)
            };
            run.capped
                .damage(f, subject, format!("{missing}: their changes are lost"));
        }
        run.expect = seq + 1;
        f.checked().segments += 1;
        if let Err((key, why)) = check_segment(&value) {
            let subject = stream_subject(&connection, &stream, Some(seq), key);
            run.capped.damage(f, subject, why);
        }
    }
    if let Some(done) = current.take() {
        done.finish(f);
    }
    // A stream whose next seq says it has segments, none of which is there.
    for entry in trees.hub.scan_prefix([HUB_META]) {
        let (key, value) = entry?;
        let (Some((connection, stream, _)), Ok(next)) = (
            split_hub_key(&key),
            <[u8; 8]>::try_from(&value[..]).map(u64::from_be_bytes),
        ) else {
            continue;
        };
        if next > 0 && !with_segments.contains(&(connection.clone(), stream.clone())) {
            f.damage(
                stream_subject(&connection, &stream, None, None),
                format!(
                    "its next seq is {next} but none of its segments is there: its changes are lost"
                ),
            );
        }
    }
    Ok(())
}

/// The stored next seq of the stream of segment key `key` (whose seq is the last
/// `seq_len` bytes).
fn next_seq(trees: &Trees, key: &[u8], seq_len: usize) -> sled::Result<Option<u64>> {
    let mut meta = key[..key.len() - seq_len].to_vec();
    meta[0] = HUB_META;
    Ok(trees
        .hub
        .get(meta)?
        .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
        .map(u64::from_be_bytes))
}

/// Reads a segment's bytes (the layout of `super::hub::segment`).
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("ends early, at byte {} of {}", self.at, self.bytes.len()))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn u128(&mut self) -> Result<u128, String> {
        Ok(u128::from_be_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Decodes a whole segment and checks each change against its bytes; on damage, the
/// record it concerns (if one) and what is wrong.
fn check_segment(bytes: &[u8]) -> Result<(), (Option<String>, String)> {
    let whole = |e: String| (None, e);
    let mut r = Reader { bytes, at: 0 };
    let format = r.u8().map_err(whole)?;
    if format != 1 {
        return Err((None, format!("unknown segment format {format}")));
    }
    let (_generation, _time) = (r.u64().map_err(whole)?, r.u64().map_err(whole)?);
    let _has_cursor = r.u8().map_err(whole)?;
    if std::str::from_utf8(r.bytes().map_err(whole)?).is_err() {
        return Err((None, "its source cursor is not UTF-8".to_owned()));
    }
    let changes = r.u32().map_err(whole)?;
    for i in 0..changes {
        let kind = r.u8().map_err(whole)?;
        let _version = r.u64().map_err(whole)?;
        let content_hash = r.u128().map_err(whole)?;
        let pk_hash = r.u128().map_err(whole)?;
        let pk = r.bytes().map_err(whole)?;
        let record = r.bytes().map_err(whole)?;
        let key = Some(String::from_utf8_lossy(pk).into_owned());
        let at = |why: String| (key.clone(), format!("change {i}: {why}"));
        if std::str::from_utf8(pk).is_err() {
            return Err(at("its primary key is not UTF-8".into()));
        }
        if hash128(pk) != pk_hash {
            return Err(at("its key hash does not match its primary key".into()));
        }
        match kind {
            0 | 1 => {
                if std::str::from_utf8(record).is_err() {
                    return Err(at("its record is not UTF-8".into()));
                }
                if hash128(record) != content_hash {
                    return Err(at("its content hash does not match its record".into()));
                }
            }
            2 if record.is_empty() && content_hash == 0 => {}
            2 => return Err(at("a deletion that holds a record".into())),
            k => return Err(at(format!("unknown change kind {k}"))),
        }
    }
    let seen = r.u32().map_err(whole)? as usize;
    r.take(seen.saturating_mul(16)).map_err(whole)?;
    if r.at != bytes.len() {
        return Err((None, format!("{} bytes follow its end", bytes.len() - r.at)));
    }
    Ok(())
}

/// `run_logs` entries: each decodes, of a run the store holds, within the bound.
fn check_run_log_entries(trees: &Trees, f: &mut Findings<'_>) -> sled::Result<()> {
    let mut current: Option<(RunId, u64)> = None;
    let mut capped = Capped::new();
    let over = |f: &mut Findings<'_>, run: RunId, n: u64| {
        if n > MAX_ENTRIES_PER_RUN as u64 {
            f.damage(
                Subject::RunLog { run, entry: None },
                format!("holds {n} entries, more than the {MAX_ENTRIES_PER_RUN} kept per run"),
            );
        }
    };
    for entry in trees.run_logs.iter() {
        let (key, value) = entry?;
        let (Some(run), Ok(position)) = (
            key.get(..16).and_then(RunId::from_slice),
            <[u8; 8]>::try_from(key.get(16..).unwrap_or_default()).map(u64::from_be_bytes),
        ) else {
            capped.damage(
                f,
                Subject::Store {
                    part: RUN_LOGS.to_owned(),
                },
                format!("a key of {} bytes names no run's entry", key.len()),
            );
            continue;
        };
        match &mut current {
            Some((r, n)) if *r == run => *n += 1,
            _ => {
                if let Some((r, n)) = current.take() {
                    over(f, r, n);
                }
                current = Some((run, 1));
                if !trees.runs.contains_key(run.0)? {
                    capped.damage(
                        f,
                        Subject::RunLog { run, entry: None },
                        "holds entries of a run the store does not hold",
                    );
                }
            }
        }
        if let Err(e) = serde_json::from_slice::<LogEntry>(&value) {
            capped.damage(
                f,
                Subject::RunLog {
                    run,
                    entry: Some(position),
                },
                format!("cannot be read (readers skip it): {e}"),
            );
        }
    }
    if let Some((r, n)) = current {
        over(f, r, n);
    }
    capped.finish(
        f,
        Subject::Store {
            part: RUN_LOGS.to_owned(),
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;
    use crate::sled::SledStore;
    use sluice_model::{RunCompleted, RunScheduled, RunStarted};

    fn quiet() -> &'static Listen<'static> {
        &|_| {}
    }

    async fn store_with_runs(dir: &Path, runs: usize) -> Vec<RunId> {
        let store = SledStore::open(dir).unwrap();
        let mut ids = Vec::new();
        for i in 0..runs {
            let run = RunId::v7(1_700_000_000_000 + (i / 3) as u64, [i as u8; 10]);
            let scheduled = EventKind::RunScheduled(RunScheduled {
                workflow: format!("w{}", i % 2),
                connection: "c".into(),
                tenant: format!("t{}", i % 3),
                ..RunScheduled::default()
            });
            let mut events = vec![scheduled];
            if i % 4 != 0 {
                events.push(EventKind::RunStarted(RunStarted::default()));
            }
            if i % 4 == 1 {
                events.push(EventKind::RunCompleted(RunCompleted {}));
            }
            store.event_log().append(run, events).await.unwrap();
            ids.push(run);
        }
        store
            .sled_hub()
            .upsert_batch(
                "c",
                "s",
                &["id"],
                b"{\"id\":1,\"x\":1}\n{\"id\":2}\n",
                super::super::BatchMeta::default(),
            )
            .unwrap();
        store.sled_hub().flush().unwrap();
        ids
    }

    #[tokio::test]
    async fn a_store_written_by_the_backend_verifies_clean() {
        let dir = tempfile::tempdir().unwrap();
        store_with_runs(dir.path(), 40).await;
        let report = verify_dir(dir.path(), quiet()).await.unwrap();
        assert!(report.clean(), "{:#?}", report.damage);
        assert_eq!(report.checked.runs, 40);
        assert_eq!(report.checked.records, 2);
        assert_eq!(report.checked.segments, 1);
        assert!(report.checked.index_entries > 0);
    }

    #[tokio::test]
    async fn a_missing_index_entry_and_a_damaged_segment_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let runs = store_with_runs(dir.path(), 12).await;
        {
            // Waits out the lock the store just dropped is releasing.
            let db = super::super::open::open_db(&sled::Config::new().path(dir.path())).unwrap();
            let tenants = db.open_tree(RUNS_BY_TENANT).unwrap();
            // Every run of tenant t0 loses its entry.
            for key in tenants.scan_prefix(b"t0\0").keys() {
                tenants.remove(key.unwrap()).unwrap();
            }
            let hub = db.open_tree(HUB).unwrap();
            let (key, mut value) = hub.scan_prefix([HUB_SEGMENT]).next().unwrap().unwrap();
            let mut bytes = value.to_vec();
            // A byte of the last record's data.
            let at = bytes.len() - 6;
            bytes[at] ^= 0x01;
            value = bytes.into();
            hub.insert(key, value).unwrap();
            db.flush().unwrap();
        }
        let report = verify_dir(dir.path(), quiet()).await.unwrap();
        let lines: Vec<String> = report.damage.iter().map(ToString::to_string).collect();
        for run in runs.iter().step_by(3) {
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains(&format!("index runs_by_tenant (run {run})"))),
                "{lines:#?}"
            );
        }
        assert!(
            lines.iter().any(|l| l.contains("stream c/s segment 0")),
            "{lines:#?}"
        );
    }
}
