//! Fault injection through the storage contract: a [`Backend`] that wraps another and
//! fails chosen operations, for tests of what sits above the store (the engine's
//! retries, recovery of unreadable runs, an API that keeps serving).
//!
//! Owns nothing durable: every call that is not failed goes to the wrapped backend
//! unchanged, and a failed call reaches it not at all, so a failure here is exactly
//! "the write did not happen" (a refused commit, a lost connection before it) or "the
//! read could not be done" (a damaged run). Faults inside one backend's write path
//! (a crash between its writes) are that backend's own test hooks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sluice_model::{EventKind, RunEvent, RunId};

use crate::catalog::Catalog;
use crate::hub::{Hub, HubBulk};
use crate::log::{Appending, LogError, RunFilter, RunLog, RunSummary};
use crate::run_logs::RunLogs;
use crate::{Backend, BatchCommit, Committed, StoreError, StreamEnd};

/// An operation of the contract that a fault can hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Any append to the run log (queued, held or direct).
    Append,
    /// [`Backend::commit_batch`].
    CommitBatch,
    /// [`Backend::complete_stream`].
    CompleteStream,
    /// [`Backend::append_with_document`].
    AppendWithDocument,
}

/// The message of every injected failure, so a test tells it from a real one.
pub const INJECTED: &str = "injected fault";

#[derive(Default)]
struct Plan {
    /// Calls seen so far, by operation.
    calls: HashMap<Op, u64>,
    /// Calls to fail, by operation: the 1-based numbers of those calls.
    fail: HashMap<Op, Vec<u64>>,
    /// Runs whose reads fail, with the error they fail with.
    unreadable: HashMap<RunId, LogError>,
}

/// The faults to inject, shared by a [`FaultyBackend`] and the test that steers it.
#[derive(Default)]
pub struct Faults {
    plan: Mutex<Plan>,
}

impl Faults {
    /// No faults yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Faults::default())
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails the `n`th call (counting from 1, from the backend's start) of `op`.
    pub fn fail_nth(&self, op: Op, n: u64) {
        self.plan().fail.entry(op).or_default().push(n);
    }

    /// Fails the next call of `op`.
    pub fn fail_next(&self, op: Op) {
        let mut plan = self.plan();
        let next = plan.calls.get(&op).copied().unwrap_or(0) + 1;
        plan.fail.entry(op).or_default().push(next);
    }

    /// Makes every read of `run`'s events (and so its state) fail with `error`, as a
    /// run whose events are damaged on disk would; its summary stays readable.
    pub fn make_unreadable(&self, run: RunId, error: LogError) {
        self.plan().unreadable.insert(run, error);
    }

    /// Calls of `op` so far.
    pub fn calls(&self, op: Op) -> u64 {
        self.plan().calls.get(&op).copied().unwrap_or(0)
    }

    /// Counts a call of `op`; whether it is to fail.
    fn hit(&self, op: Op) -> bool {
        let mut plan = self.plan();
        let n = {
            let calls = plan.calls.entry(op).or_default();
            *calls += 1;
            *calls
        };
        plan.fail.get(&op).is_some_and(|ns| ns.contains(&n))
    }

    fn unreadable(&self, run: RunId) -> Result<(), LogError> {
        match self.plan().unreadable.get(&run) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

fn injected_log() -> LogError {
    LogError::Storage(INJECTED.into())
}

fn injected() -> StoreError {
    StoreError::Storage(INJECTED.into())
}

/// A backend that fails what its [`Faults`] say and passes everything else through.
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    log: FaultyLog,
    faults: Arc<Faults>,
}

impl FaultyBackend {
    /// Wraps `inner`, steered by `faults`.
    pub fn new(inner: Arc<dyn Backend>, faults: Arc<Faults>) -> Self {
        FaultyBackend {
            log: FaultyLog {
                inner: Arc::clone(&inner),
                faults: Arc::clone(&faults),
            },
            inner,
            faults,
        }
    }
}

struct FaultyLog {
    inner: Arc<dyn Backend>,
    faults: Arc<Faults>,
}

impl FaultyLog {
    fn append(&self) -> Result<(), LogError> {
        if self.faults.hit(Op::Append) {
            return Err(injected_log());
        }
        Ok(())
    }
}

#[async_trait]
impl RunLog for FaultyLog {
    async fn enqueue_at(
        &self,
        run: RunId,
        at_unix_ms: i64,
        kinds: Vec<EventKind>,
    ) -> Result<Appending, LogError> {
        self.append()?;
        self.inner.log().enqueue_at(run, at_unix_ms, kinds).await
    }

    async fn enqueue_expecting(
        &self,
        run: RunId,
        expected_seq: u64,
        kinds: Vec<EventKind>,
    ) -> Result<Appending, LogError> {
        self.append()?;
        self.inner
            .log()
            .enqueue_expecting(run, expected_seq, kinds)
            .await
    }

    async fn hold_expecting(
        &self,
        run: RunId,
        expected_seq: u64,
        kinds: Vec<EventKind>,
    ) -> Result<Appending, LogError> {
        self.append()?;
        self.inner
            .log()
            .hold_expecting(run, expected_seq, kinds)
            .await
    }

    async fn release(&self, run: RunId) -> Result<(), LogError> {
        self.inner.log().release(run).await
    }

    async fn read(&self, run: RunId) -> Result<Vec<RunEvent>, LogError> {
        self.faults.unreadable(run)?;
        self.inner.log().read(run).await
    }

    async fn summary(&self, run: RunId) -> Result<Option<RunSummary>, LogError> {
        self.inner.log().summary(run).await
    }

    async fn list(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, LogError> {
        self.inner.log().list(filter).await
    }

    async fn list_in_flight(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, LogError> {
        self.inner.log().list_in_flight(filter).await
    }

    async fn in_flight(&self) -> Result<Vec<RunId>, LogError> {
        self.inner.log().in_flight().await
    }
}

#[async_trait]
impl Backend for FaultyBackend {
    fn log(&self) -> &dyn RunLog {
        &self.log
    }

    fn hub(&self) -> &dyn Hub {
        self.inner.hub()
    }

    fn catalog(&self) -> &dyn Catalog {
        self.inner.catalog()
    }

    fn run_logs(&self) -> &dyn RunLogs {
        self.inner.run_logs()
    }

    fn hub_bulk(&self) -> &dyn HubBulk {
        self.inner.hub_bulk()
    }

    async fn commit_batch(&self, run: RunId, batch: BatchCommit) -> Result<Committed, StoreError> {
        if self.faults.hit(Op::CommitBatch) {
            return Err(injected());
        }
        self.inner.commit_batch(run, batch).await
    }

    async fn complete_stream(&self, run: RunId, end: StreamEnd) -> Result<u64, StoreError> {
        if self.faults.hit(Op::CompleteStream) {
            return Err(injected());
        }
        self.inner.complete_stream(run, end).await
    }

    async fn append_with_document(
        &self,
        run: RunId,
        at_unix_ms: i64,
        events: Vec<EventKind>,
        kind: &str,
        name: &str,
        document: Vec<u8>,
    ) -> Result<Vec<u64>, StoreError> {
        if self.faults.hit(Op::AppendWithDocument) {
            return Err(injected());
        }
        self.inner
            .append_with_document(run, at_unix_ms, events, kind, name, document)
            .await
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk().await
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }
}
