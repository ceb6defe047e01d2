//! [`EventLog`]: the public handle on the sled-backed log, and its reads.
//!
//! Owns opening the database, starting the committer and answering reads (events,
//! state, summaries, index queries). It must never write to the log's trees itself:
//! every write goes through the committer (module `commit`), which is what makes
//! appends atomic and durable before they are acknowledged.
//!
//! Reads are plain sled reads on the caller's thread: they see every acknowledged
//! append. A stored event that does not decode is reported as
//! [`LogError::Corrupt`] naming its run and seq; it never affects other runs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use prost::Message;
use tokio::sync::{mpsc, oneshot};

use super::active::{for_each_unkeyed, load_watermark, read_watermark};
use super::commit::{
    ACTIVE, BY_CONNECTION, BY_STATUS, BY_TENANT, BY_TIME, BY_WORKFLOW, Committer, EVENTS, Heads,
    LOG_TREES, META, RUNS, Request, TxHook, flush_loop,
};
use super::index::{
    for_each_run, for_each_run_rev, load_spread, move_in_flight_to_active, read_spread,
};
use super::keys::{Head, index_prefix, seqs_of_event_key, time_bytes};
use crate::codec::{event_from_wire, v1};
use crate::log::{Appending, LogError, RunFilter, RunLog, RunSummary, WriteState, now_unix_ms};
use crate::sled::durable::Durable;
use crate::sled::space::FreeSpace;
use sluice_model::{EventKind, RunEvent, RunId, StatusKind};

/// Tuning of an [`EventLog`].
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Most appends committed (and flushed) together.
    pub max_group: usize,
    /// Appends that may wait for the committer before `append` waits to enqueue.
    pub queue: usize,
    /// sled's page cache size in bytes.
    pub cache_bytes: u64,
    /// Most events a run's summary record holds before they move to keys of their own
    /// (0: every group's events get a key at once). Holding a short run's few events
    /// there makes each of its commits one write instead of two.
    pub recent_events: usize,
    /// How long a run may be in flight before it gets a key in the `runs_active`
    /// index: a run that ends sooner costs that index nothing, and readers look for
    /// such runs among the runs created this long ago or later (twice as long at
    /// most).
    pub active_lag: std::time::Duration,
    /// Bytes of the store's disk that writes leave free (a tenth of the disk at most):
    /// a group that finds less is refused until space is freed, before sled could
    /// meet a full disk (see `crate::sled::space`).
    pub reserve_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_group: 1024,
            queue: 16 * 1024,
            cache_bytes: 256 * 1024 * 1024,
            recent_events: 8,
            active_lag: std::time::Duration::from_secs(1),
            reserve_bytes: 64 * 1024 * 1024,
        }
    }
}

struct Inner {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    tx: Option<mpsc::Sender<Request>>,
    /// Appends held back (see [`EventLog::hold_expecting`]), at most one per run.
    held: Mutex<HashMap<RunId, Request>>,
    /// The committer, then the flusher: joined in that order on drop.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Set once sled stopped writing.
    stopped: Arc<std::sync::OnceLock<LogError>>,
    space: FreeSpace,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tx = None;
        if let Ok(mut threads) = self.threads.lock() {
            for handle in threads.drain(..) {
                let _ = handle.join();
            }
        }
    }
}

/// The run log on sled. Cheap to clone; all clones share one committer.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

impl EventLog {
    /// Opens (or creates) the log in the directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LogError> {
        Self::open_with(path, LogConfig::default())
    }

    /// Opens the log with a configuration, in a database of its own.
    pub fn open_with(path: impl AsRef<Path>, config: LogConfig) -> Result<Self, LogError> {
        let (db, durable) = crate::sled::open::open_store_db(path.as_ref(), config.cache_bytes)
            .map_err(LogError::storage)?;
        Self::start(db, durable, config, &[])
    }

    /// Starts the log's committer over `db` (opened, with any group a crash left half
    /// applied completed), adding the trees `extra` to every append's group of writes
    /// (for [`TxHook`]s of other parts of the backend).
    pub(crate) fn start(
        db: sled::Db,
        durable: Arc<Durable>,
        config: LogConfig,
        extra: &[&str],
    ) -> Result<Self, LogError> {
        let ahead = db
            .open_tree(crate::sled::staged::WRITE_AHEAD)
            .map_err(LogError::storage)?;
        let trees = LOG_TREES
            .iter()
            .chain(extra.iter())
            .map(|name| db.open_tree(name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(LogError::storage)?;
        let moved = move_in_flight_to_active(&trees[BY_STATUS], &trees[ACTIVE])?;
        if moved > 0 {
            durable.flush().map_err(LogError::storage)?;
            tracing::info!(
                runs = moved,
                "moved runs in flight to the runs_active index"
            );
        }
        let began = std::time::Instant::now();
        let checked = super::check::check_runs(&trees[RUNS], &trees[EVENTS])?;
        tracing::debug!(
            runs = checked.runs,
            event_keys = checked.event_keys,
            took = ?began.elapsed(),
            "checked every run's events"
        );
        let active_from = load_watermark(&trees[META], &trees[RUNS])?;
        let heads = Heads {
            live: recover_heads(&trees)?,
            newest: newest_run(&trees[RUNS])?,
            active_from,
            spread: load_spread(&trees)?,
        };
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let stopped = Arc::new(std::sync::OnceLock::new());
        let space = FreeSpace::new(durable.dir(), config.reserve_bytes);
        let committer = Committer {
            trees: trees.clone(),
            recent_max: config.recent_events,
            ahead,
            heads,
            max_group: config.max_group.max(1),
            active_lag: config.active_lag,
            last_sweep: None,
            stopped: Arc::clone(&stopped),
            space: space.clone(),
        };
        let (flush_tx, flush_rx) = std::sync::mpsc::channel();
        let flusher = std::thread::Builder::new()
            .name("sluice-log-flush".into())
            .spawn({
                let stopped = Arc::clone(&stopped);
                move || flush_loop(durable, flush_rx, stopped)
            })
            .map_err(LogError::storage)?;
        let committer = std::thread::Builder::new()
            .name("sluice-log-commit".into())
            .spawn(move || committer.run(rx, flush_tx))
            .map_err(LogError::storage)?;
        Ok(EventLog {
            inner: Arc::new(Inner {
                db,
                trees,
                tx: Some(tx),
                held: Mutex::default(),
                threads: Mutex::new(vec![committer, flusher]),
                stopped,
                space,
            }),
        })
    }

    /// Checks that every run's events are all stored, as opening the log does (see
    /// `check`); returns the runs and event keys it went through.
    pub fn check_runs(&self) -> Result<(u64, u64), LogError> {
        let checked = super::check::check_runs(&self.inner.trees[RUNS], &self.inner.trees[EVENTS])?;
        Ok((checked.runs, checked.event_keys))
    }

    /// Appends events together with a hook's writes, atomically.
    pub(crate) async fn append_with_hook(
        &self,
        run: RunId,
        at_unix_ms: i64,
        kinds: Vec<EventKind>,
        hook: Arc<dyn TxHook>,
    ) -> Result<Vec<u64>, LogError> {
        self.queue(run, at_unix_ms, kinds, Some(hook), None)
            .await?
            .await
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Request>> {
        self.inner.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn queue(
        &self,
        run: RunId,
        at_unix_ms: i64,
        kinds: Vec<EventKind>,
        hook: Option<Arc<dyn TxHook>>,
        expect_seq: Option<u64>,
    ) -> Result<Appending, LogError> {
        self.release(run).await?;
        let (reply, rx) = oneshot::channel();
        self.send(Request {
            run,
            at_unix_ms,
            kinds,
            hook,
            expect_seq,
            reply,
        })
        .await?;
        Ok(Appending::new(rx))
    }

    async fn send(&self, request: Request) -> Result<(), LogError> {
        let sender = self.inner.tx.as_ref().ok_or(LogError::Closed)?;
        sender.send(request).await.map_err(|_| LogError::Closed)
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, LogError> {
        self.inner.db.size_on_disk().map_err(LogError::storage)
    }
}

#[async_trait::async_trait]
impl RunLog for EventLog {
    fn write_state(&self) -> WriteState {
        if let Some(error) = self.inner.stopped.get() {
            // Only a stop for want of space is known to clear: any other failure
            // waits for an operator, rather than a node restarting in a loop.
            return WriteState::Stopped {
                error: error.clone(),
                reopen: error.is_out_of_space() && self.inner.space.room_to_reopen(),
            };
        }
        match self.inner.space.check() {
            Err(e) => WriteState::NoSpace(e),
            Ok(()) => WriteState::Writable,
        }
    }

    /// Queues events stamped `at_unix_ms` (see [`EventLog::enqueue`]).
    async fn enqueue_at(
        &self,
        run: RunId,
        at_unix_ms: i64,
        kinds: Vec<EventKind>,
    ) -> Result<Appending, LogError> {
        self.queue(run, at_unix_ms, kinds, None, None).await
    }

    /// Queues events that are written only if `run`'s last seq is still
    /// `expected_seq` when they are committed, else refused with
    /// [`LogError::Conflict`] (see [`EventLog::enqueue`] and
    /// [`EventLog::append_expecting`]). A caller holding a state it read earlier
    /// acts on it without reading the log again: the commit checks it.
    async fn enqueue_expecting(
        &self,
        run: RunId,
        expected_seq: u64,
        kinds: Vec<EventKind>,
    ) -> Result<Appending, LogError> {
        self.queue(run, now_unix_ms(), kinds, None, Some(expected_seq))
            .await
    }

    /// Holds events (stamped now, written only if `run`'s last seq is still
    /// `expected_seq`, as [`EventLog::enqueue_expecting`]) back from the committer
    /// until [`EventLog::release`] or the next append for `run`, which queues them
    /// first. So a short piece of work that an event announces and another event ends
    /// (an attempt beginning and its run completing) commits as one group: one write
    /// of the run's record, not two. A crash before the release loses them, and with
    /// them nothing else: whatever the work appends is queued after them.
    async fn hold_expecting(
        &self,
        run: RunId,
        expected_seq: u64,
        kinds: Vec<EventKind>,
    ) -> Result<Appending, LogError> {
        self.release(run).await?;
        let (reply, rx) = oneshot::channel();
        let request = Request {
            run,
            at_unix_ms: now_unix_ms(),
            kinds,
            hook: None,
            expect_seq: Some(expected_seq),
            reply,
        };
        self.held().insert(run, request);
        Ok(Appending::new(rx))
    }

    /// Queues the events held back for `run`, if any.
    async fn release(&self, run: RunId) -> Result<(), LogError> {
        let held = self.held().remove(&run);
        if let Some(request) = held {
            self.send(request).await?;
        }
        Ok(())
    }

    /// Every event of `run`, in order (empty for an unknown run).
    async fn read(&self, run: RunId) -> Result<Vec<RunEvent>, LogError> {
        decoded(
            run,
            read_events(&self.inner.trees[RUNS], &self.inner.trees[EVENTS], run)?,
        )
    }

    /// The summary of `run`, if it exists.
    async fn summary(&self, run: RunId) -> Result<Option<RunSummary>, LogError> {
        summary_of(&self.inner.trees[RUNS], run)
    }

    /// Runs matching `filter`.
    async fn list(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, LogError> {
        if filter.status.is_some_and(|s| !s.is_terminal()) {
            return self.list_in_flight(filter).await;
        }
        let trees = &self.inner.trees;
        let by_value = [
            (BY_WORKFLOW, filter.workflow.as_deref()),
            (BY_CONNECTION, filter.connection.as_deref()),
            (BY_TENANT, filter.tenant.as_deref()),
            (BY_STATUS, filter.status.map(StatusKind::as_str)),
        ]
        .into_iter()
        .find_map(|(t, v)| v.map(|v| (t, v)));
        let keys: Box<dyn DoubleEndedIterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            match by_value {
                Some((t, v)) => Box::new(trees[t].scan_prefix(index_prefix(v))),
                None => {
                    let from = time_bytes(filter.created_from_unix_ms.unwrap_or(i64::MIN)).to_vec();
                    match filter.created_before_unix_ms {
                        Some(b) => Box::new(trees[BY_TIME].range(from..time_bytes(b).to_vec())),
                        None => Box::new(trees[BY_TIME].range(from..)),
                    }
                }
            };
        if filter.newest_first {
            let spread = read_spread(&trees[META])?;
            list_indexed(trees, filter, |visit| {
                for_each_run_rev(keys.rev(), spread, visit)
            })
        } else {
            list_indexed(trees, filter, |visit| for_each_run(keys, visit))
        }
    }

    /// Runs not in a terminal status matching `filter` (which may name one of those
    /// statuses), by run id: oldest or newest first, as the filter says.
    async fn list_in_flight(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, LogError> {
        let trees = &self.inner.trees;
        let limit = filter.max_runs();
        if filter.newest_first {
            let mut out = Vec::new();
            for run in in_flight_ids(trees)?.into_iter().rev() {
                if out.len() >= limit {
                    break;
                }
                if let Some(s) = summary_of(&trees[RUNS], run)?
                    && filter.matches(&s)
                {
                    out.push(s);
                }
            }
            return Ok(out);
        }
        // Read before the keys: see `in_flight_ids`.
        let from = read_watermark(&trees[META])?;
        let mut out = list_indexed(trees, filter, |visit| {
            for_each_run(trees[ACTIVE].iter(), visit)
        })?;
        let mut seen: std::collections::HashSet<RunId> = out.iter().map(|s| s.run_id).collect();
        for_each_unkeyed(&trees[RUNS], from, |head| {
            if out.len() >= limit {
                return Ok(false);
            }
            if filter.matches(&head.summary) && seen.insert(head.summary.run_id) {
                out.push(head.summary);
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Ids of every run not in a terminal status (to resume after a restart).
    async fn in_flight(&self) -> Result<Vec<RunId>, LogError> {
        in_flight_ids(&self.inner.trees)
    }
}

/// The summaries of the runs `walk` visits that match `filter`, in its order, once
/// each, up to the filter's limit.
fn list_indexed(
    trees: &[sled::Tree],
    filter: &RunFilter,
    walk: impl FnOnce(&mut dyn FnMut(RunId) -> Result<bool, LogError>) -> Result<(), LogError>,
) -> Result<Vec<RunSummary>, LogError> {
    let limit = filter.max_runs();
    let mut out = Vec::new();
    // A run listed twice: under a terminal status it left and came back to.
    let mut seen = std::collections::HashSet::new();
    walk(&mut |run| {
        if out.len() >= limit {
            return Ok(false);
        }
        if let Some(s) = summary_of(&trees[RUNS], run)?
            && filter.matches(&s)
            && seen.insert(run)
        {
            out.push(s);
        }
        Ok(true)
    })?;
    Ok(out)
}

fn in_flight_ids(trees: &[sled::Tree]) -> Result<Vec<RunId>, LogError> {
    super::active::in_flight_ids(&trees[ACTIVE], &trees[RUNS], &trees[META])
}

/// The greatest run id with a summary.
fn newest_run(runs: &sled::Tree) -> Result<Option<RunId>, LogError> {
    let last = runs.last().map_err(LogError::storage)?;
    // A key that is no run id: assume every id may exist, so every lookup is made.
    Ok(last.map(|(key, _)| RunId::from_slice(&key).unwrap_or(RunId([0xff; 16]))))
}

/// The committer's heads of every in-flight run.
fn recover_heads(trees: &[sled::Tree]) -> Result<HashMap<RunId, Head>, LogError> {
    let mut heads = HashMap::new();
    for run in in_flight_ids(trees)? {
        if let Some(h) = head_of(&trees[RUNS], run)? {
            heads.insert(run, h);
        }
    }
    Ok(heads)
}

pub(crate) fn head_of(runs: &sled::Tree, run: RunId) -> Result<Option<Head>, LogError> {
    match runs.get(run.0).map_err(LogError::storage)? {
        Some(raw) => Head::decode(run, &raw).map(Some),
        None => Ok(None),
    }
}

fn summary_of(runs: &sled::Tree, run: RunId) -> Result<Option<RunSummary>, LogError> {
    Ok(head_of(runs, run)?.map(|h| h.summary))
}

/// The run's events: those under keys of their own, then those its summary record
/// holds. The record is read first: the committer writes a group's `events` keys
/// before its summary, so events that moved out of the record since are found in
/// `events` (and not taken twice).
pub(crate) fn read_events(
    runs: &sled::Tree,
    events: &sled::Tree,
    run: RunId,
) -> Result<Vec<v1::RunEvent>, LogError> {
    let recent = head_of(runs, run)?.map(|h| h.recent).unwrap_or_default();
    let mut out = keyed_events(events, run)?;
    let last = out.last().map_or(0, |e| e.seq);
    for event in recent.into_iter().filter(|e| e.seq > last) {
        let expected = out.last().map_or(1, |e| e.seq + 1);
        if event.seq != expected || event.run_id.as_slice() != run.0.as_slice() {
            return Err(LogError::Corrupt {
                run,
                seq: expected,
                reason: format!(
                    "the run's summary holds event {} where {expected} should follow",
                    event.seq
                ),
            });
        }
        out.push(event);
    }
    Ok(out)
}

/// Stored events as domain events; a kind this version does not know stops the read
/// (a run is never folded by guessing).
pub(crate) fn decoded(run: RunId, events: Vec<v1::RunEvent>) -> Result<Vec<RunEvent>, LogError> {
    events
        .into_iter()
        .map(|e| event_from_wire(run, e).map_err(|error| LogError::Fold { run, error }))
        .collect()
}

/// The run's events stored under keys of their own.
fn keyed_events(events: &sled::Tree, run: RunId) -> Result<Vec<v1::RunEvent>, LogError> {
    let mut out = Vec::new();
    for entry in events.scan_prefix(run.0) {
        let (key, value) = entry.map_err(LogError::storage)?;
        let Some((seq, last)) = seqs_of_event_key(&key) else {
            return Err(LogError::Corrupt {
                run,
                seq: 0,
                reason: format!("malformed key of {} bytes", key.len()),
            });
        };
        let corrupt = |reason: String| LogError::Corrupt { run, seq, reason };
        let decoded = match last {
            None => v1::RunEvent::decode(value.as_ref()).map(|e| vec![e]),
            Some(_) => v1::StoredEventBatch::decode(value.as_ref()).map(|b| b.events),
        };
        let batch = decoded.map_err(|e| corrupt(e.to_string()))?;
        let expected = seq..=last.unwrap_or(seq);
        let matches = batch.len() as u64 == expected.clone().count() as u64
            && batch
                .iter()
                .zip(expected)
                .all(|(e, s)| e.seq == s && e.run_id.as_slice() == run.0.as_slice());
        if !matches {
            return Err(corrupt("events do not match their key".into()));
        }
        out.extend(batch);
    }
    Ok(out)
}
