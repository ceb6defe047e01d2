//! Checking a stopped store for damage ([`verify`]): every catalog document, every
//! run's summary, events and log, the runs in flight and every hub stream's change
//! feed and live records, read through the storage contract, so it works on any
//! backend. Each damage is reported as it is found ([`Found::Damage`]), naming what is
//! damaged ([`Subject`]: a run and seq, a stream and record, a document, an index
//! entry) and how; the report counts what was checked.
//!
//! What is checked:
//! - the catalog: every document of every kind reads back the same by name, and is
//!   JSON (the engine stores every definition as JSON);
//! - every run: its summary reads; its events read (decode, seqs 1, 2, … of the run)
//!   and fold ([`sluice_model::fold`]); replaying them the way the log writes summaries
//!   gives the stored summary (status, last seq, attempt, times, …); its log reads,
//!   within [`MAX_ENTRIES_PER_RUN`] entries;
//! - the runs in flight: a run is listed in flight ([`crate::RunLog::in_flight`], what
//!   a node resumes at start) exactly when its summary is not terminal;
//! - every hub stream: its feed reads in order (positions increase); each change
//!   follows its record's state (created when not live, updated or deleted when live,
//!   versions 1, 2, … per record, data on all but deletions, and that data JSON); the
//!   live records listed are those the feed leaves live, each with the version the
//!   feed ends with and a content hash that matches its data; the stream's count is
//!   the number the feed leaves live; its cursor reads.
//!
//! A backend adds checks of its own parts (the sled backend: its secondary indexes and
//! segments, `crate::sled::verify`) and may list runs from its primary records
//! ([`RunPages`]) rather than through [`crate::RunLog::list`], so that one damaged
//! summary does not hide the runs after it.
//!
//! Memory stays bounded as the store grows: runs, feeds and live records are read a
//! page at a time; what is held whole is the ids of the runs in flight, and per
//! stream one version per record (24 bytes; a node serving the stream holds more).
//! It must never write to the store: a store being written (a node running on it)
//! reads as damaged.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::de::IgnoredAny;
use sluice_model::{RunEvent, RunId, fold, transition};

use crate::hub::{Change, ChangeKind, import_refusal};
use crate::log::{LogError, RunFilter, RunSummary, scheduled_of};
use crate::records::hash128;
use crate::run_logs::{LogFilter, MAX_ENTRIES_PER_RUN};
use crate::{Store, StoreError};

/// Runs listed at once.
const RUN_PAGE: usize = 1_024;
/// Feed entries (and live records) read at once.
const FEED_PAGE: usize = 16_384;
/// Damages kept in the report; past it they are counted (and still heard).
const KEPT: usize = 10_000;
/// Damages reported per stream; past it they are counted in one more.
const PER_STREAM: u64 = 1_000;

/// What is damaged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A run; `seq` names one of its events.
    Run {
        /// The run.
        run: RunId,
        /// The event, if one is named.
        seq: Option<u64>,
    },
    /// A run's log (connector lines and requests); `entry` names one entry.
    RunLog {
        /// The run.
        run: RunId,
        /// The entry's position, if one is named.
        entry: Option<u64>,
    },
    /// A hub stream; `key` names a record, `segment` a stored segment.
    Stream {
        /// The connection.
        connection: String,
        /// The stream.
        stream: String,
        /// The record's primary key, if one is named.
        key: Option<String>,
        /// The stored segment (a batch), if one is named.
        segment: Option<u64>,
    },
    /// A catalog document.
    Document {
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
    },
    /// An entry of a secondary index of the runs (rebuilt from the runs by
    /// `sluice store repair`).
    Index {
        /// The index.
        index: String,
        /// The run the entry names (or should), if known.
        run: Option<RunId>,
    },
    /// The store as a whole: a listing, the backend's own facts.
    Store {
        /// What part of it.
        part: String,
    },
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Run { run, seq } => {
                write!(f, "run {run}")?;
                if let Some(seq) = seq {
                    write!(f, " event {seq}")?;
                }
                Ok(())
            }
            Subject::RunLog { run, entry } => {
                write!(f, "log of run {run}")?;
                if let Some(entry) = entry {
                    write!(f, " entry {entry}")?;
                }
                Ok(())
            }
            Subject::Stream {
                connection,
                stream,
                key,
                segment,
            } => {
                write!(f, "stream {connection}/{stream}")?;
                if let Some(segment) = segment {
                    write!(f, " segment {segment}")?;
                }
                if let Some(key) = key {
                    write!(f, " record {key}")?;
                }
                Ok(())
            }
            Subject::Document { kind, name } => write!(f, "catalog document {kind}/{name}"),
            Subject::Index { index, run } => {
                write!(f, "index {index}")?;
                if let Some(run) = run {
                    write!(f, " (run {run})")?;
                }
                Ok(())
            }
            Subject::Store { part } => write!(f, "store ({part})"),
        }
    }
}

/// One damage: what, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// What is damaged.
    pub subject: Subject,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.subject, self.problem)
    }
}

/// What a verification is doing, for a caller that shows progress.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// The catalog was checked.
    Catalog {
        /// Documents checked.
        documents: u64,
    },
    /// Runs are being checked.
    Runs {
        /// Runs checked so far.
        runs: u64,
        /// Their events.
        events: u64,
    },
    /// A stream is being checked.
    Stream {
        /// The connection.
        connection: &'a str,
        /// The stream.
        stream: &'a str,
        /// Feed entries checked so far.
        changes: u64,
    },
    /// A check of the backend's own parts began.
    Step(&'a str),
}

/// What a verification hears as it goes.
#[derive(Clone, Copy, Debug)]
pub enum Found<'a> {
    /// A damage, as soon as it is found.
    Damage(&'a Damage),
    /// Progress.
    Progress(Progress<'a>),
}

/// What was checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Catalog kinds.
    pub kinds: u64,
    /// Catalog documents.
    pub documents: u64,
    /// Runs.
    pub runs: u64,
    /// Their events.
    pub events: u64,
    /// Their log entries.
    pub log_entries: u64,
    /// Hub streams.
    pub streams: u64,
    /// Feed entries of every stream.
    pub changes: u64,
    /// Live records of every stream.
    pub records: u64,
    /// Stored segments (the sled backend's batches), decoded on their own.
    pub segments: u64,
    /// Entries of the runs' secondary indexes (the sled backend).
    pub index_entries: u64,
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// What was checked.
    pub checked: Checked,
    /// The damage found, the first 10,000 (all were heard as found).
    pub damage: Vec<Damage>,
    /// How many damages were found.
    pub damaged: u64,
    /// What is worth knowing and is not damage (e.g. a segment a crash left past the
    /// end of its stream, which the next batch replaces).
    pub notes: Vec<String>,
    /// How long it took.
    pub elapsed: Duration,
    /// How long each part took (catalog, runs, hub, and the backend's own parts), in
    /// order.
    pub phases: Vec<(String, Duration)>,
}

impl Report {
    /// Whether no damage was found.
    pub fn clean(&self) -> bool {
        self.damaged == 0
    }
}

/// Why a verification could not go on (damage it finds is reported, not an error).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The store did not open.
    #[error("{0}")]
    Open(String),
    /// The store stopped answering (a database that went away).
    #[error("the store stopped answering: {0}")]
    Unreachable(#[source] StoreError),
    /// A verification task failed.
    #[error("verifying: {0}")]
    Task(String),
}

/// What a verification hears.
pub type Listen<'a> = dyn Fn(Found<'_>) + Send + Sync + 'a;

/// The findings of one verification as they come: heard at once, kept in the report.
pub(crate) struct Findings<'l> {
    listen: &'l Listen<'l>,
    pub(crate) report: Report,
}

impl<'l> Findings<'l> {
    pub(crate) fn new(listen: &'l Listen<'l>) -> Self {
        Findings {
            listen,
            report: Report::default(),
        }
    }

    /// Reports a damage.
    pub(crate) fn damage(&mut self, subject: Subject, problem: impl Into<String>) {
        let d = Damage {
            subject,
            problem: problem.into(),
        };
        (self.listen)(Found::Damage(&d));
        self.report.damaged += 1;
        if self.report.damage.len() < KEPT {
            self.report.damage.push(d);
        }
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.report.notes.push(note.into());
    }

    pub(crate) fn progress(&self, p: Progress<'_>) {
        (self.listen)(Found::Progress(p));
    }

    pub(crate) fn checked(&mut self) -> &mut Checked {
        &mut self.report.checked
    }

    /// Notes that the part `name`, begun at `began`, is done.
    pub(crate) fn phase(&mut self, name: &str, began: Instant) {
        self.report.phases.push((name.to_owned(), began.elapsed()));
    }
}

/// A run as a backend lists it for verification: its summary, or why that cannot be
/// read.
pub(crate) enum Listed {
    Run(RunSummary),
    Unreadable { run: RunId, reason: String },
}

/// Every run of a store, a page at a time.
#[async_trait]
pub(crate) trait RunPages: Send {
    /// The next page; `None` once every run was listed.
    async fn next_page(&mut self) -> Result<Option<Vec<Listed>>, StoreError>;
}

/// Checks everything `store` holds through the contract (see the module doc);
/// `listen` hears each damage as it is found, and progress. Stop every node on the
/// store first.
pub async fn verify(store: &Store, listen: &Listen<'_>) -> Result<Report, VerifyError> {
    let began = Instant::now();
    let mut findings = Findings::new(listen);
    let mut pages = ListPages::new(store);
    check_store(store, &mut pages, &mut findings).await?;
    findings.report.elapsed = began.elapsed();
    Ok(findings.report)
}

/// The contract's checks, with runs listed by `pages`.
pub(crate) async fn check_store(
    store: &Store,
    pages: &mut dyn RunPages,
    f: &mut Findings<'_>,
) -> Result<(), VerifyError> {
    let began = Instant::now();
    check_catalog(store, f).await?;
    f.phase("catalog", began);
    let began = Instant::now();
    check_runs(store, pages, f).await?;
    f.phase("runs", began);
    let began = Instant::now();
    check_hub(store, f).await?;
    f.phase("hub", began);
    Ok(())
}

/// An error that ends the verification, or `None` for one that is damage of what was
/// being read.
fn fatal(e: StoreError) -> Result<StoreError, VerifyError> {
    match e {
        e @ StoreError::Unreachable { .. } => Err(VerifyError::Unreachable(e)),
        e => Ok(e),
    }
}

async fn check_catalog(store: &Store, f: &mut Findings<'_>) -> Result<(), VerifyError> {
    let catalog = store.catalog();
    let kinds = match catalog.kinds().await {
        Ok(kinds) => kinds,
        Err(e) => {
            let e = fatal(e)?;
            f.damage(
                store_part("catalog"),
                format!("its kinds cannot be listed: {e}"),
            );
            return Ok(());
        }
    };
    for kind in kinds {
        f.checked().kinds += 1;
        let documents = match catalog.list(&kind).await {
            Ok(documents) => documents,
            Err(e) => {
                let e = fatal(e)?;
                f.damage(
                    store_part(&format!("catalog kind `{kind}`")),
                    format!("its documents cannot be listed: {e}"),
                );
                continue;
            }
        };
        for (name, document) in documents {
            f.checked().documents += 1;
            let subject = || Subject::Document {
                kind: kind.clone(),
                name: name.clone(),
            };
            match catalog.get(&kind, &name).await {
                Ok(Some(by_name)) if by_name == document => {}
                Ok(Some(_)) => f.damage(subject(), "reads back differently by name"),
                Ok(None) => f.damage(subject(), "is listed but cannot be read by name"),
                Err(e) => {
                    let e = fatal(e)?;
                    f.damage(subject(), format!("cannot be read by name: {e}"));
                }
            }
            if let Err(e) = serde_json::from_slice::<IgnoredAny>(&document) {
                f.damage(
                    subject(),
                    format!("is not JSON, as every stored definition is: {e}"),
                );
            }
        }
    }
    let documents = f.checked().documents;
    f.progress(Progress::Catalog { documents });
    Ok(())
}

fn store_part(part: &str) -> Subject {
    Subject::Store {
        part: part.to_owned(),
    }
}

async fn check_runs(
    store: &Store,
    pages: &mut dyn RunPages,
    f: &mut Findings<'_>,
) -> Result<(), VerifyError> {
    // Runs listed in flight and not (yet) met as runs in flight.
    let mut in_flight: Option<HashSet<RunId>> = match store.log().in_flight().await {
        Ok(ids) => Some(ids.into_iter().collect()),
        Err(e) => {
            let e = fatal(e.into())?;
            f.damage(
                store_part("runs in flight"),
                format!("cannot be listed: {e}"),
            );
            None
        }
    };
    loop {
        let page = match pages.next_page().await {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(e) => {
                let e = fatal(e)?;
                f.damage(
                    store_part("runs"),
                    format!("listing them failed; the runs after it were not checked: {e}"),
                );
                break;
            }
        };
        for listed in page {
            let summary = match listed {
                Listed::Run(summary) => summary,
                Listed::Unreadable { run, reason } => {
                    f.checked().runs += 1;
                    f.damage(
                        Subject::Run { run, seq: None },
                        format!("its summary cannot be read: {reason}"),
                    );
                    // Its events are read through the summary: nothing more to read.
                    if let Some(set) = in_flight.as_mut() {
                        set.remove(&run);
                    }
                    continue;
                }
            };
            let run = summary.run_id;
            f.checked().runs += 1;
            check_events(store, run, Some(&summary), f).await?;
            check_run_log(store, run, f).await?;
            if let Some(set) = in_flight.as_mut()
                && !set.remove(&run)
                && !summary.status.is_terminal()
            {
                f.damage(
                    Subject::Run { run, seq: None },
                    format!(
                        "is {} but not listed among the runs in flight: a node starting on \
                         the store would not resume it",
                        summary.status.as_str()
                    ),
                );
            }
            let checked = f.checked();
            if checked.runs.is_multiple_of(1_000) {
                let (runs, events) = (checked.runs, checked.events);
                f.progress(Progress::Runs { runs, events });
            }
        }
    }
    // What is left listed in flight was not met in flight.
    let mut left: Vec<RunId> = in_flight.unwrap_or_default().into_iter().collect();
    left.sort_unstable();
    for run in left {
        let problem = match store.log().summary(run).await {
            Ok(Some(s)) if s.status.is_terminal() => format!(
                "is listed among the runs in flight but is {}",
                s.status.as_str()
            ),
            Ok(Some(_)) => "is listed among the runs in flight but was not listed among \
                            the runs"
                .to_owned(),
            Ok(None) => {
                "is listed among the runs in flight but the store holds no such run".to_owned()
            }
            Err(e) => {
                let e = fatal(e.into())?;
                format!("is listed among the runs in flight and cannot be read: {e}")
            }
        };
        f.damage(Subject::Run { run, seq: None }, problem);
    }
    let checked = f.checked();
    let (runs, events) = (checked.runs, checked.events);
    f.progress(Progress::Runs { runs, events });
    Ok(())
}

/// Reads the run's events and checks they fold and give `summary` back.
async fn check_events(
    store: &Store,
    run: RunId,
    summary: Option<&RunSummary>,
    f: &mut Findings<'_>,
) -> Result<(), VerifyError> {
    let at = |seq| Subject::Run { run, seq };
    let events = match store.log().read(run).await {
        Ok(events) => events,
        Err(LogError::Corrupt { seq, reason, .. }) => {
            let seq = (seq > 0).then_some(seq);
            f.damage(at(seq), format!("cannot be read: {reason}"));
            return Ok(());
        }
        Err(LogError::Fold { error, .. }) => {
            f.damage(at(None), format!("an event cannot be read: {error}"));
            return Ok(());
        }
        Err(e) => {
            let e = fatal(e.into())?;
            f.damage(at(None), format!("its events cannot be read: {e}"));
            return Ok(());
        }
    };
    f.checked().events += events.len() as u64;
    let Some(summary) = summary else {
        return Ok(());
    };
    if events.is_empty() {
        f.damage(at(None), "has a summary but no events");
        return Ok(());
    }
    match replay(run, &events) {
        Err((seq, why)) => f.damage(at(Some(seq)), format!("does not follow the log: {why}")),
        Ok(replayed) => {
            let differences = differences(summary, &replayed);
            if !differences.is_empty() {
                f.damage(
                    at(None),
                    format!(
                        "its summary does not match its events: {}",
                        differences.join(", ")
                    ),
                );
            }
            // The engine's own fold: the same rules, said once more for the reader.
            match fold(&events) {
                Ok(state) if state.status.kind() != summary.status => f.damage(
                    at(None),
                    format!(
                        "its events fold to {} but its summary says {}",
                        state.status.kind().as_str(),
                        summary.status.as_str()
                    ),
                ),
                Ok(_) => {}
                Err(e) => f.damage(at(None), format!("its events do not fold: {e}")),
            }
        }
    }
    Ok(())
}

/// The summary the log writes for `events`, replayed as its committer does (the
/// fence is left out: it applies to appends, never to a stored log); or the seq of
/// the first event that may not follow, and why.
fn replay(run: RunId, events: &[RunEvent]) -> Result<RunSummary, (u64, String)> {
    let first = events.first().ok_or((1, "no events".to_owned()))?;
    let mut s = RunSummary::scheduled(run, scheduled_of(&first.kind), 0, first.at_unix_ms);
    for e in events {
        if e.run != run {
            return Err((e.seq, format!("the event belongs to run {}", e.run)));
        }
        let status =
            transition(s.status, s.last_seq, e.seq, &e.kind).map_err(|x| (e.seq, x.to_string()))?;
        s.follow(&e.kind, status, e.at_unix_ms);
    }
    Ok(s)
}

/// The fields in which a stored summary differs from the replayed one, said.
fn differences(stored: &RunSummary, replayed: &RunSummary) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |field: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{field} {a} (its events: {b})"));
        }
    };
    differ(
        "status",
        stored.status.as_str().to_owned(),
        replayed.status.as_str().to_owned(),
    );
    differ(
        "last seq",
        stored.last_seq.to_string(),
        replayed.last_seq.to_string(),
    );
    differ(
        "workflow",
        format!("{:?}", stored.workflow),
        format!("{:?}", replayed.workflow),
    );
    differ(
        "connection",
        format!("{:?}", stored.connection),
        format!("{:?}", replayed.connection),
    );
    differ(
        "tenant",
        format!("{:?}", stored.tenant),
        format!("{:?}", replayed.tenant),
    );
    differ(
        "priority",
        stored.priority.to_string(),
        replayed.priority.to_string(),
    );
    differ(
        "created at",
        stored.created_at_unix_ms.to_string(),
        replayed.created_at_unix_ms.to_string(),
    );
    differ(
        "updated at",
        stored.updated_at_unix_ms.to_string(),
        replayed.updated_at_unix_ms.to_string(),
    );
    differ(
        "attempt",
        stored.attempt.to_string(),
        replayed.attempt.to_string(),
    );
    differ(
        "worker",
        format!("{:?}", stored.worker),
        format!("{:?}", replayed.worker),
    );
    differ(
        "lease until",
        stored.lease_until_unix_ms.to_string(),
        replayed.lease_until_unix_ms.to_string(),
    );
    out
}

async fn check_run_log(store: &Store, run: RunId, f: &mut Findings<'_>) -> Result<(), VerifyError> {
    let subject = Subject::RunLog { run, entry: None };
    match store.run_logs().read(run, &LogFilter::default()).await {
        Ok(entries) => {
            if entries.len() > MAX_ENTRIES_PER_RUN {
                f.damage(
                    subject,
                    format!(
                        "holds {} entries, more than the {MAX_ENTRIES_PER_RUN} kept per run",
                        entries.len()
                    ),
                );
            }
            f.checked().log_entries += entries.len() as u64;
        }
        Err(e) => {
            let e = fatal(e)?;
            f.damage(subject, format!("cannot be read: {e}"));
        }
    }
    Ok(())
}

/// Runs listed through [`crate::RunLog::list`], oldest first, a page at a time.
struct ListPages<'s> {
    store: &'s Store,
    /// Where the next page starts (creation time, Unix ms).
    from: Option<i64>,
    /// Runs created at `from` listed already.
    seen: HashSet<RunId>,
    limit: usize,
    done: bool,
}

impl<'s> ListPages<'s> {
    fn new(store: &'s Store) -> Self {
        ListPages {
            store,
            from: None,
            seen: HashSet::new(),
            limit: RUN_PAGE,
            done: false,
        }
    }
}

#[async_trait]
impl RunPages for ListPages<'_> {
    async fn next_page(&mut self) -> Result<Option<Vec<Listed>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        loop {
            let filter = RunFilter {
                created_from_unix_ms: self.from,
                limit: self.limit,
                ..RunFilter::default()
            };
            let page = self.store.log().list(&filter).await?;
            let full = page.len() >= self.limit;
            let fresh: Vec<RunSummary> = page
                .into_iter()
                .filter(|s| !self.seen.contains(&s.run_id))
                .collect();
            let Some(last) = fresh.last().map(|s| s.created_at_unix_ms) else {
                if full {
                    // A whole page of runs created in one millisecond, all listed
                    // already: more of that millisecond may follow.
                    self.limit = self.limit.saturating_mul(2);
                    continue;
                }
                self.done = true;
                return Ok(None);
            };
            if !full {
                self.done = true;
            } else {
                // The next page starts at the last millisecond of this one, whose runs
                // past this page follow; those listed now are skipped then.
                if self.from != Some(last) {
                    self.seen.clear();
                    self.from = Some(last);
                }
                self.seen.extend(
                    fresh
                        .iter()
                        .filter(|s| s.created_at_unix_ms == last)
                        .map(|s| s.run_id),
                );
            }
            return Ok(Some(fresh.into_iter().map(Listed::Run).collect()));
        }
    }
}

/// A map keyed by a record's key hash (already uniform: its low bits are the hash).
type ByKeyHash<V> = HashMap<u128, V, BuildHasherDefault<KeyHasher>>;

#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

async fn check_hub(store: &Store, f: &mut Findings<'_>) -> Result<(), VerifyError> {
    let streams = match store.hub_bulk().streams().await {
        Ok(streams) => streams,
        Err(e) => {
            let e = fatal(e.into())?;
            f.damage(
                store_part("hub"),
                format!("its streams cannot be listed: {e}"),
            );
            return Ok(());
        }
    };
    for (connection, stream) in streams {
        f.checked().streams += 1;
        check_stream(store, &connection, &stream, f).await?;
    }
    Ok(())
}

/// A record's state as the feed leaves it: its version, and whether it is live.
#[derive(Clone, Copy)]
struct Latest {
    version: u64,
    live: bool,
}

/// One stream's damage, at most [`PER_STREAM`] of it reported.
struct StreamFindings<'a, 'l> {
    f: &'a mut Findings<'l>,
    connection: &'a str,
    stream: &'a str,
    found: u64,
}

impl StreamFindings<'_, '_> {
    fn damage(&mut self, key: Option<&str>, problem: impl Into<String>) {
        self.found += 1;
        if self.found <= PER_STREAM {
            self.f.damage(self.subject(key), problem);
        }
    }

    fn subject(&self, key: Option<&str>) -> Subject {
        Subject::Stream {
            connection: self.connection.to_owned(),
            stream: self.stream.to_owned(),
            key: key.map(str::to_owned),
            segment: None,
        }
    }

    fn finish(self) {
        if self.found > PER_STREAM {
            let more = self.found - PER_STREAM;
            let subject = self.subject(None);
            self.f.damage(
                subject,
                format!("{more} more damaged records or changes (not listed one by one)"),
            );
        }
    }
}

async fn check_stream(
    store: &Store,
    connection: &str,
    stream: &str,
    f: &mut Findings<'_>,
) -> Result<(), VerifyError> {
    let mut s = StreamFindings {
        f,
        connection,
        stream,
        found: 0,
    };
    let mut latest: ByKeyHash<Latest> = ByKeyHash::default();
    let mut live: u64 = 0;
    let mut after = 0;
    let mut last_cursor = 0;
    let mut changes = 0u64;
    let mut feed_read = true;
    loop {
        let (page, next) = match store.hub().feed(connection, stream, after, FEED_PAGE).await {
            Ok(read) => read,
            Err(e) => {
                let e = fatal(e.into())?;
                s.damage(
                    None,
                    format!("its feed cannot be read past position {after}: {e}"),
                );
                feed_read = false;
                break;
            }
        };
        if page.is_empty() {
            break;
        }
        for c in &page {
            if c.cursor <= last_cursor {
                s.damage(
                    Some(&c.primary_key),
                    format!(
                        "feed position {} does not follow position {last_cursor}",
                        c.cursor
                    ),
                );
            }
            last_cursor = last_cursor.max(c.cursor);
            check_change(&mut s, &mut latest, &mut live, c);
        }
        s.f.checked().changes += page.len() as u64;
        changes += page.len() as u64;
        s.f.progress(Progress::Stream {
            connection,
            stream,
            changes,
        });
        if next <= after {
            s.damage(
                None,
                format!("its feed does not move past position {after}"),
            );
            feed_read = false;
            break;
        }
        after = next;
    }
    if feed_read {
        check_live(store, &mut s, &latest, live).await?;
    }
    if let Err(e) = store.hub().stream_cursor(connection, stream).await {
        let e = fatal(e.into())?;
        s.damage(None, format!("its cursor cannot be read: {e}"));
    }
    s.finish();
    Ok(())
}

/// Checks that `c` follows its record's state, and moves the state past it.
fn check_change(
    s: &mut StreamFindings<'_, '_>,
    latest: &mut ByKeyHash<Latest>,
    live: &mut u64,
    c: &Change,
) {
    let key = hash128(c.primary_key.as_bytes());
    let prev = latest.get(&key).copied();
    if let Some(why) = import_refusal(prev.map(|p| (p.version, p.live)), c) {
        s.damage(
            Some(&c.primary_key),
            format!("feed position {}: {why}", c.cursor),
        );
    }
    if let Some(data) = &c.data
        && let Err(e) = serde_json::from_str::<IgnoredAny>(data)
    {
        s.damage(
            Some(&c.primary_key),
            format!("feed position {}: its data is not JSON: {e}", c.cursor),
        );
    }
    let now_live = c.kind != ChangeKind::Deleted;
    match (prev.is_some_and(|p| p.live), now_live) {
        (false, true) => *live += 1,
        (true, false) => *live = live.saturating_sub(1),
        _ => {}
    }
    latest.insert(
        key,
        Latest {
            version: c.version,
            live: now_live,
        },
    );
}

/// Checks the stream's live records and count against what its feed leaves live.
async fn check_live(
    store: &Store,
    s: &mut StreamFindings<'_, '_>,
    latest: &ByKeyHash<Latest>,
    live: u64,
) -> Result<(), VerifyError> {
    let (connection, stream) = (s.connection, s.stream);
    let mut listed = 0u64;
    let mut after = 0;
    loop {
        let (records, next) = match store
            .hub_bulk()
            .live_records(connection, stream, after, FEED_PAGE)
            .await
        {
            Ok(read) => read,
            Err(e) => {
                let e = fatal(e.into())?;
                s.damage(
                    None,
                    format!("its live records cannot be read past position {after}: {e}"),
                );
                return Ok(());
            }
        };
        if next == after {
            break;
        }
        for r in &records {
            listed += 1;
            let key = Some(r.primary_key.as_str());
            match latest.get(&hash128(r.primary_key.as_bytes())) {
                Some(l) if l.live && l.version == r.version => {}
                Some(l) if l.live => s.damage(
                    key,
                    format!(
                        "listed live at version {}, its feed ends with version {}",
                        r.version, l.version
                    ),
                ),
                Some(l) => s.damage(
                    key,
                    format!(
                        "listed live at version {}, its feed deleted it at version {}",
                        r.version, l.version
                    ),
                ),
                None => s.damage(key, "listed live, its feed never holds it"),
            }
            if hash128(r.data.as_bytes()) != r.content_hash {
                s.damage(key, "its content hash does not match its data");
            }
        }
        after = next;
    }
    s.f.checked().records += listed;
    if listed != live {
        s.damage(
            None,
            format!("{listed} live records are listed, its feed leaves {live} live"),
        );
    }
    match store.hub().count(connection, stream).await {
        Ok(count) if count == live => {}
        Ok(count) => s.damage(
            None,
            format!("it counts {count} live records, its feed leaves {live} live"),
        ),
        Err(e) => {
            let e = fatal(e.into())?;
            s.damage(None, format!("its live records cannot be counted: {e}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use sluice_model::{EventKind, RunCompleted, RunScheduled, RunStarted};

    use super::*;

    fn event(run: RunId, seq: u64, at: i64, kind: EventKind) -> RunEvent {
        RunEvent {
            run,
            seq,
            at_unix_ms: at,
            kind,
        }
    }

    #[test]
    fn a_replayed_summary_is_the_one_the_log_writes_and_a_gap_is_named() {
        let run = RunId([7; 16]);
        let scheduled = EventKind::RunScheduled(RunScheduled {
            workflow: "w".into(),
            connection: "c".into(),
            tenant: "t".into(),
            ..RunScheduled::default()
        });
        let events = vec![
            event(run, 1, 10, scheduled),
            event(
                run,
                2,
                20,
                EventKind::RunStarted(RunStarted {
                    worker: "node".into(),
                    ..RunStarted::default()
                }),
            ),
            event(run, 3, 30, EventKind::RunCompleted(RunCompleted {})),
        ];
        let s = replay(run, &events).unwrap();
        assert_eq!(s.status, sluice_model::StatusKind::Completed);
        assert_eq!(
            (s.last_seq, s.created_at_unix_ms, s.updated_at_unix_ms),
            (3, 10, 30)
        );
        assert_eq!(s.worker, "node");
        assert!(differences(&s, &s).is_empty());
        let mut stored = s.clone();
        stored.last_seq = 2;
        assert_eq!(differences(&stored, &s), ["last seq 2 (its events: 3)"]);

        let mut gap = events.clone();
        gap.remove(1);
        assert_eq!(replay(run, &gap).unwrap_err().0, 3);
    }

    #[tokio::test]
    async fn runs_created_in_one_millisecond_past_a_page_are_each_checked_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // 1,500 runs created in one millisecond (more than a page), 1,000 in two more.
        let mut queued = Vec::new();
        for i in 0..2_500u32 {
            let at = match i {
                0..1_500 => 1_000,
                1_500..2_000 => 1_001,
                _ => 1_002,
            };
            let mut random = [0u8; 10];
            random[..4].copy_from_slice(&i.to_be_bytes());
            let run = RunId::v7(1_700_000_000_000, random);
            let scheduled = EventKind::RunScheduled(RunScheduled {
                workflow: "w".into(),
                ..RunScheduled::default()
            });
            queued.push(
                store
                    .log()
                    .enqueue_at(run, at, vec![scheduled])
                    .await
                    .unwrap(),
            );
        }
        for q in queued {
            q.await.unwrap();
        }
        let report = verify(&store, &|_| {}).await.unwrap();
        assert!(report.clean(), "{:#?}", report.damage);
        assert_eq!(report.checked.runs, 2_500);
        assert_eq!(report.checked.events, 2_500);
    }

    #[test]
    fn a_subject_names_what_is_damaged() {
        let run = RunId([1; 16]);
        let s = Subject::Run { run, seq: Some(4) };
        assert_eq!(s.to_string(), format!("run {run} event 4"));
        let s = Subject::Stream {
            connection: "c".into(),
            stream: "s".into(),
            key: Some("[1]".into()),
            segment: Some(2),
        };
        assert_eq!(s.to_string(), "stream c/s segment 2 record [1]");
    }
}
