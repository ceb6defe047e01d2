//! Group commit: the single writer of the log.
//!
//! Owns every write to the log's trees. Appenders enqueue requests on a channel; one
//! committer thread takes everything queued (up to `max_group` requests), stages its
//! writes to all the log's trees (plus any extra trees other modules registered, see
//! [`TxHook`]) and applies them as **one** atomic unit (a write-ahead record, see
//! `crate::sled::staged`: not a sled transaction, whose global lock stalled every reader
//! while it ran). It hands the group's replies to a flusher
//! thread and goes on with the next group: the flusher flushes the database once for
//! every group committed since its last flush, and only then acknowledges them. So
//! writing group N+1 overlaps flushing group N, and many concurrent appenders share
//! one flush. (sled's log is sequential: a flush makes durable everything written
//! before it, so a group is never durable without the groups before it.) When many
//! appenders share flushes, the flusher spaces them out a little (see
//! [`BUSY_FLUSH_GAP`]); a lone appender's flush is never delayed.
//!
//! Both run on their own OS threads (sled's writes and flush are blocking calls),
//! so the async runtime is never blocked by storage.
//!
//! A group writes one `runs` record per run it touches: the summary, holding the
//! run's latest events too (up to `recent_max`; beyond that they move to `events` as
//! one batch key). So a short run's commit is one B-tree insert, not two: sled
//! clones a node on every insert, and inserts were the committer's whole cost. For
//! the same reason the group's index entries are gathered first and written one key
//! per index value (see `super::index`).
//!
//! The committer assigns seqs from a per-run head (the run's summary: last seq and
//! status, and its record's events) cached in memory: loaded on open for every
//! non-terminal run, loaded from the `runs` tree on a miss (not even then for a run
//! id newer than every stored one: ids are time-ordered UUID v7), updated only after
//! a group is applied, and dropped when a run becomes terminal. Each appended event
//! is checked with [`transition`], so the log never holds
//! events that do not fold. A request that is refused (or whose hook aborts) fails
//! alone: the group is staged again without it. Before a group is written, the disk
//! must have the store's reserve free (`crate::sled::space`); if not, the group is
//! refused ([`LogError::NoSpace`]) and the same appends succeed once space is freed.
//! If applying or flushing a group fails, sled has stopped for good: the committer
//! and the flusher stop writing and every append in their hands or later fails with
//! [`LogError::Stopped`] (a half-applied group is completed only by reopening). A
//! flush that does not return while sled has stopped (sled 0.34 can wait forever for
//! a write that failed) is given up on, so no appender waits forever.
//!
//! It must never acknowledge a request before the flush that made it durable.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, OnceLock};

use prost::Message;
use sled::Tree;
use tokio::sync::{mpsc, oneshot};

use super::active::{ACTIVE_FROM, first_id_at};
use super::index::Postings;
use super::keys::{Head, Watermark, event_batch_key, event_key};
use crate::codec::{v1, wire_event};
use crate::log::{LogError, RunSummary, scheduled_of};
use crate::sled::durable::Durable;
use crate::sled::space::{FreeSpace, is_no_space};
use crate::sled::staged::{Staged, StagedTree};
use sluice_model::{EventKind, RunId, StatusKind};

pub(crate) use crate::sled::layout::{
    AT_ACTIVE as ACTIVE, AT_BY_CONNECTION as BY_CONNECTION, AT_BY_STATUS as BY_STATUS,
    AT_BY_TENANT as BY_TENANT, AT_BY_TIME as BY_TIME, AT_BY_WORKFLOW as BY_WORKFLOW,
    AT_EVENTS as EVENTS, AT_META as META, AT_RUNS as RUNS, LOG_TREES,
};

/// Writes that another module of this crate adds to the group of an append.
///
/// `write` receives the extra trees registered when the log was opened (in that
/// order), and returns more events to append to the same run after the request's
/// own events (e.g. a `CheckpointCommitted` carrying the counts the hub computed).
/// It may run more than once (a group is staged again when one of its requests is
/// refused) and several hooks may share one group, each seeing the previous ones'
/// writes; it must have no effect outside the trees it is given. An error fails only
/// its own append.
pub(crate) trait TxHook: Send + Sync {
    fn write(&self, extra: &mut [StagedTree<'_>]) -> Result<Vec<EventKind>, LogError>;
}

/// One append waiting for its group.
pub(crate) struct Request {
    pub run: RunId,
    pub at_unix_ms: i64,
    pub kinds: Vec<EventKind>,
    pub hook: Option<Arc<dyn TxHook>>,
    /// Append only if the run's last seq is still this one (compare-and-append).
    pub expect_seq: Option<u64>,
    pub reply: oneshot::Sender<Result<Vec<u64>, LogError>>,
}

/// The committer's state, owned by its thread.
pub(crate) struct Committer {
    /// Log trees then extra trees.
    pub trees: Vec<Tree>,
    /// Most events a run's summary holds before they move to `events`.
    pub recent_max: usize,
    /// Where a group is recorded before it is applied.
    pub ahead: Tree,
    pub heads: Heads,
    pub max_group: usize,
    /// How long a run may be in flight before it gets a `runs_active` key.
    pub active_lag: std::time::Duration,
    /// When the watermark was last moved.
    pub last_sweep: Option<std::time::Instant>,
    /// Set when writing a group failed (by the committer or the flusher): every later
    /// append fails with it.
    pub stopped: Arc<OnceLock<LogError>>,
    /// The free space writes must leave.
    pub space: FreeSpace,
}

/// Why staging a group failed.
enum Fail {
    /// Request `.0` may not be written; the others may.
    Request(usize, LogError),
    /// Storage failed: no request of the group is written.
    Storage(LogError),
}

/// The heads the committer knows without reading the `runs` tree.
pub(crate) struct Heads {
    /// Every in-flight run's head.
    pub live: HashMap<RunId, Head>,
    /// The greatest run id in the `runs` tree. Run ids are UUID v7 (time-ordered), so
    /// a new run's id is greater and its append needs no lookup to know it is new.
    pub newest: Option<RunId>,
    /// Runs in flight below this id have a `runs_active` key (see `super::active`).
    pub active_from: RunId,
    /// The postings' spread as stored (see `super::index`).
    pub spread: u128,
}

/// A run's head while a group is being written.
struct Pending<'c> {
    /// The run's status before the group; `None`: the group creates the run.
    before: Option<StatusKind>,
    now: Option<RunSummary>,
    /// The events the run's summary record held before the group (borrowed from the
    /// cached head when there is one: a group may be staged again, so the cache is
    /// changed only once it is applied).
    recent: Cow<'c, [v1::RunEvent]>,
    /// The run's events this group appends, in seq order.
    events: Vec<v1::RunEvent>,
}

/// Replies of a committed group, waiting for the flush that makes it durable.
type Unflushed = Vec<(oneshot::Sender<Result<Vec<u64>, LogError>>, Vec<u64>)>;

/// A flush that acknowledged at least this many appends was shared by many
/// appenders (many runs starting and ending at once): the next flush waits a little
/// to be shared by more.
const BUSY_FLUSH: usize = 16;
/// How long after a busy flush began the next one may begin. Each flush seals and
/// syncs sled's current I/O buffer; at thousands of runs per second, flushing as
/// often as groups come cost a fifth of the node's CPU. A lone appender (a sync
/// committing batch after batch) never waits: its flushes acknowledge one append.
const BUSY_FLUSH_GAP: std::time::Duration = std::time::Duration::from_millis(3);

/// How often a flush that has not returned is checked on: sled may have stopped.
const FLUSH_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Flushes the database for every group committed before the flush began, then
/// acknowledges them; runs until the committer is gone. Once a flush failed, or
/// sled stopped while one did not return, fails every group instead.
pub(crate) fn flush_loop(
    durable: Arc<Durable>,
    rx: std::sync::mpsc::Receiver<Unflushed>,
    stopped: Arc<OnceLock<LogError>>,
) {
    // The flushes themselves run on a thread of their own, which may never return.
    let (ask, asked) = std::sync::mpsc::channel::<()>();
    let (done, flushed_rx) = std::sync::mpsc::channel();
    let worker = Arc::clone(&durable);
    let spawned = std::thread::Builder::new()
        .name("sluice-log-flush-io".into())
        .spawn(move || {
            while asked.recv().is_ok() {
                if done.send(worker.flush()).is_err() {
                    return;
                }
            }
        });
    let worker = match spawned {
        Ok(handle) => Some(handle),
        Err(e) => {
            let _ = stopped.set(LogError::Stopped {
                reason: format!("cannot start the flush thread: {e}"),
                no_space: false,
            });
            None
        }
    };
    let mut busy_flush_began = None;
    while let Ok(first) = rx.recv() {
        if let Some(began) = busy_flush_began {
            let wait = BUSY_FLUSH_GAP.saturating_sub(std::time::Instant::elapsed(&began));
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        let began = std::time::Instant::now();
        let mut groups = vec![first];
        groups.extend(rx.try_iter());
        let flushed = match stopped.get() {
            Some(e) => Err(e.clone()),
            None => flush_watched(&durable, &ask, &flushed_rx, &stopped),
        };
        let acknowledged: usize = groups.iter().map(Vec::len).sum();
        busy_flush_began = (acknowledged >= BUSY_FLUSH).then_some(began);
        for (reply, seqs) in groups.into_iter().flatten() {
            let _ = reply.send(match &flushed {
                Ok(()) => Ok(seqs),
                Err(e) => Err(e.clone()),
            });
        }
    }
    // A clean stop: the high-water mark vouches for the last flush now, not at the
    // next write (the flush thread ends on its own, or stays stuck in a flush of a
    // store that stopped).
    drop((ask, worker));
    durable.write_mark_now();
}

/// One flush on the flush thread, waited for as long as sled has not stopped.
fn flush_watched(
    durable: &Durable,
    ask: &std::sync::mpsc::Sender<()>,
    flushed: &std::sync::mpsc::Receiver<sled::Result<usize>>,
    stopped: &OnceLock<LogError>,
) -> Result<(), LogError> {
    let stop = |e: &sled::Error| {
        let err = stopped_by(e);
        stopped.get_or_init(|| err).clone()
    };
    if ask.send(()).is_err() {
        return Err(LogError::Closed);
    }
    loop {
        match flushed.recv_timeout(FLUSH_CHECK) {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => return Err(stop(&e)),
            Err(RecvTimeoutError::Timeout) => {
                if let Some(e) = durable.failed() {
                    tracing::error!(error = %e, "a flush of the store did not return after sled stopped");
                    return Err(stop(&e));
                }
                if let Some(e) = stopped.get() {
                    return Err(e.clone());
                }
            }
            Err(RecvTimeoutError::Disconnected) => return Err(LogError::Closed),
        }
    }
}

/// The error every append gets once sled stopped at `e`.
fn stopped_by(e: &sled::Error) -> LogError {
    LogError::Stopped {
        reason: crate::sled::open::describe(e),
        no_space: is_no_space(e),
    }
}

impl Committer {
    /// Runs until every sender is gone; committed groups go to `flusher`.
    pub fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        flusher: std::sync::mpsc::Sender<Unflushed>,
    ) {
        let mut group = Vec::with_capacity(self.max_group);
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            while group.len() < self.max_group {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            let committed = self.commit(&mut group);
            if !committed.is_empty() && flusher.send(committed).is_err() {
                return;
            }
        }
    }

    /// Writes the group; answers the requests that failed and returns the replies
    /// of those written.
    fn commit(&mut self, group: &mut Vec<Request>) -> Unflushed {
        loop {
            let refused = match self.stopped.get() {
                Some(e) => Some(e.clone()),
                None => self.space.check().err(),
            };
            if let Some(err) = refused {
                for req in group.drain(..) {
                    let _ = req.reply.send(Err(err.clone()));
                }
            }
            if group.is_empty() {
                return Vec::new();
            }
            let watermark = self.watermark();
            let mut staged = Staged::new(&self.trees);
            let result = write_group(&mut staged, &self.heads, self.recent_max, watermark, group);
            let result = match result {
                Ok(written) => staged.apply(&self.ahead).map(|()| written).map_err(|e| {
                    let err = stopped_by(&e);
                    Fail::Storage(self.stopped.get_or_init(|| err).clone())
                }),
                Err(fail) => Err(fail),
            };
            match result {
                Ok((seqs, heads, spread)) => {
                    self.heads.active_from = watermark.to;
                    self.heads.spread = spread;
                    if watermark.moves() {
                        self.last_sweep = Some(std::time::Instant::now());
                    }
                    for (run, head) in heads {
                        if self.heads.newest.is_none_or(|n| run > n) {
                            self.heads.newest = Some(run);
                        }
                        if head.summary.status.is_terminal() {
                            self.heads.live.remove(&run);
                        } else {
                            self.heads.live.insert(run, head);
                        }
                    }
                    return group.drain(..).map(|r| r.reply).zip(seqs).collect();
                }
                Err(Fail::Request(i, err)) => {
                    let req = group.remove(i);
                    let _ = req.reply.send(Err(err));
                }
                Err(Fail::Storage(err)) => {
                    for req in group.drain(..) {
                        let _ = req.reply.send(Err(err.clone()));
                    }
                    return Vec::new();
                }
            }
        }
    }

    /// Where the next group leaves the watermark: once every `active_lag`, moved up
    /// to the runs created `active_lag` ago.
    fn watermark(&self) -> Watermark {
        let from = self.heads.active_from;
        let due = self
            .last_sweep
            .is_none_or(|t| t.elapsed() >= self.active_lag);
        if !due {
            return Watermark { from, to: from };
        }
        let lag = i64::try_from(self.active_lag.as_millis()).unwrap_or(i64::MAX);
        let to = first_id_at(crate::log::now_unix_ms().saturating_sub(lag)).max(from);
        Watermark { from, to }
    }
}

fn abort<T>(i: usize, e: LogError) -> Result<T, Fail> {
    Err(Fail::Request(i, e))
}

fn storage(e: sled::Error) -> Fail {
    Fail::Storage(LogError::storage(e))
}

/// The run's head before the group, as a pending entry (with no summary for a new run).
fn load_head<'c>(runs: &Tree, cache: &'c Heads, run: RunId, i: usize) -> Result<Pending<'c>, Fail> {
    let pending = |summary: Option<RunSummary>, recent| Pending {
        before: summary.as_ref().map(|s| s.status),
        now: summary,
        recent,
        events: Vec::new(),
    };
    if let Some(h) = cache.live.get(&run) {
        return Ok(pending(Some(h.summary.clone()), Cow::Borrowed(&h.recent)));
    }
    if cache.newest.is_none_or(|n| run > n) {
        return Ok(pending(None, Cow::Owned(Vec::new())));
    }
    let Some(raw) = runs.get(run.0).map_err(storage)? else {
        return Ok(pending(None, Cow::Owned(Vec::new())));
    };
    match Head::decode(run, &raw) {
        Ok(h) => Ok(pending(Some(h.summary), Cow::Owned(h.recent))),
        Err(e) => abort(i, e),
    }
}

/// Writes one group's events; returns each request's seqs and the runs' new heads.
#[allow(clippy::type_complexity)]
fn write_group<'c>(
    staged: &mut Staged<'_>,
    cache: &'c Heads,
    recent_max: usize,
    watermark: Watermark,
    group: &[Request],
) -> Result<(Vec<Vec<u64>>, HashMap<RunId, Head>, u128), Fail> {
    let mut pending: HashMap<RunId, Pending<'c>> = HashMap::with_capacity(group.len());
    let mut all_seqs = Vec::with_capacity(group.len());
    for (i, req) in group.iter().enumerate() {
        let extra = match &req.hook {
            Some(hook) => hook
                .write(&mut staged.trees_from(LOG_TREES.len()))
                .map_err(|e| Fail::Request(i, e))?,
            None => Vec::new(),
        };
        let mut seqs = Vec::with_capacity(req.kinds.len() + extra.len());
        if req.kinds.is_empty() && extra.is_empty() {
            all_seqs.push(seqs);
            continue;
        }
        let run = req.run;
        let p = match pending.get_mut(&run) {
            Some(p) => p,
            None => {
                let loaded = load_head(&staged.trees()[RUNS], cache, run, i)?;
                pending.entry(run).or_insert(loaded)
            }
        };
        let actual = p.now.as_ref().map_or(0, |h| h.last_seq);
        if let Some(expected) = req.expect_seq
            && expected != actual
        {
            return abort(
                i,
                LogError::Conflict {
                    run,
                    expected,
                    actual,
                },
            );
        }
        for kind in req.kinds.iter().chain(extra.iter()) {
            if let EventKind::RunScheduled(s) = kind {
                for v in [&s.workflow, &s.connection, &s.tenant] {
                    if v.as_bytes().contains(&0) {
                        return abort(i, LogError::Invalid("names may not contain NUL".into()));
                    }
                }
            }
            // A run's first event makes its summary; any other first event is refused
            // by the check, as it would be by the fold.
            let now = p.now.get_or_insert_with(|| {
                RunSummary::scheduled(run, scheduled_of(kind), 0, req.at_unix_ms)
            });
            let status = match now.check(run, kind) {
                Ok(s) => s,
                Err(e) => return abort(i, e),
            };
            now.follow(kind, status, req.at_unix_ms);
            let seq = now.last_seq;
            p.events.push(wire_event(run, seq, req.at_unix_ms, kind));
            seqs.push(seq);
        }
        all_seqs.push(seqs);
    }
    let mut heads = HashMap::with_capacity(pending.len());
    let mut postings = Postings::default();
    for (run, p) in pending {
        let Some(now) = p.now else { continue };
        let mut recent = p.recent.into_owned();
        recent.extend(p.events);
        if recent.len() > recent_max {
            write_events(staged, run, std::mem::take(&mut recent));
        }
        let head = Head {
            summary: now,
            recent,
        };
        write_summary(staged, &head);
        postings.note(staged, p.before, &head.summary, watermark);
        heads.insert(run, head);
    }
    let spread = postings.write(staged, cache.spread).map_err(storage)?;
    if watermark.moves() {
        // Runs in flight that this group leaves alone get their keys as the
        // watermark passes them.
        for run in cache.live.keys() {
            if !heads.contains_key(run) && watermark.passes(*run) {
                staged.insert(ACTIVE, &run.0[..], []);
            }
        }
        staged.insert(META, ACTIVE_FROM, &watermark.to.0[..]);
    }
    Ok((all_seqs, heads, spread))
}

/// Moves a run's events to `events`: one alone under its own key, several as one
/// batch.
fn write_events(staged: &mut Staged<'_>, run: RunId, mut events: Vec<v1::RunEvent>) {
    match (events.first(), events.last()) {
        (Some(first), Some(last)) if events.len() > 1 => {
            let key = event_batch_key(&run, first.seq, last.seq);
            staged.insert(
                EVENTS,
                &key[..],
                v1::StoredEventBatch { events }.encode_to_vec(),
            );
        }
        _ => {
            if let Some(event) = events.pop() {
                staged.insert(
                    EVENTS,
                    &event_key(&run, event.seq)[..],
                    event.encode_to_vec(),
                );
            }
        }
    }
}

/// Field number of `StoredRunSummary.recent`.
const RECENT_FIELD: u32 = 9;

/// Writes a run's summary record, with the events it holds: encoded field by field
/// (a message is the concatenation of its fields), so the events are not copied.
fn write_summary(staged: &mut Staged<'_>, head: &Head) {
    let now = &head.summary;
    let stored = crate::codec::summary_to_wire(now);
    let events_len: usize = head
        .recent
        .iter()
        .map(|e| prost::encoding::message::encoded_len(RECENT_FIELD, e))
        .sum();
    let mut buf = Vec::with_capacity(stored.encoded_len() + events_len);
    stored.encode_raw(&mut buf);
    for event in &head.recent {
        prost::encoding::message::encode(RECENT_FIELD, event, &mut buf);
    }
    staged.insert(RUNS, &now.run_id.0[..], buf);
}
