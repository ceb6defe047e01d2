//! Whether the node's store can write, and the runs waiting for it to.
//!
//! A store that reached its disk's reserve refuses appends until space is freed; a
//! store whose engine stopped writing (sled after a failed write) refuses them until
//! it is opened again. Either way nothing a run did was lost, but the run cannot go
//! on: its driver stops and the run is *parked* here, with the store's error, which
//! the API shows as the run's last error and the metrics as `store_writable`. A
//! watcher asks the store every [`WATCH_EVERY`]; once it writes again, every parked
//! run is queued again and resumes from its last checkpoint. A store that needs
//! opening again says when that would succeed ([`StoreFault::reopen`]); the node's
//! process does it (`sluice serve` restarts itself).
//!
//! It never writes to the store: all it knows comes from the store's own
//! [`RunLog::write_state`] and the errors runs met.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::clock::now_unix_ms;
use sluice_store::{LogError, RunId, WriteState};

use crate::Engine;

/// How often a watcher asks a store that cannot write whether it can again.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Why the store cannot write, as runs and operators see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreFault {
    /// The store's error.
    pub message: String,
    /// Since when (Unix ms).
    pub since_unix_ms: i64,
    /// The store stopped until it is opened again, and opening it again would now
    /// succeed (space is free again): the node should restart.
    pub reopen: bool,
}

/// The node's view of its store's writes.
#[derive(Default)]
pub(crate) struct StoreHealth {
    fault: Mutex<Option<StoreFault>>,
    parked: Mutex<BTreeSet<RunId>>,
    watching: AtomicBool,
}

impl StoreHealth {
    pub(crate) fn fault(&self) -> Option<StoreFault> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, error: &LogError, reopen: bool) {
        let mut fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        let since = fault.as_ref().map_or_else(now_unix_ms, |f| f.since_unix_ms);
        *fault = Some(StoreFault {
            message: error.to_string(),
            since_unix_ms: since,
            reopen,
        });
    }
}

/// Whether `e` means the store cannot write for now (rather than a refusal of the
/// append itself).
pub(crate) fn cannot_write(e: &LogError) -> bool {
    e.is_out_of_space() || e.is_stopped()
}

impl Engine {
    /// Why the store cannot write, while it cannot.
    pub fn store_fault(&self) -> Option<StoreFault> {
        self.inner.health.fault()
    }

    /// Parks `run`, whose driver stopped because the store could not write, until
    /// it can.
    pub(crate) fn park(&self, run: RunId, error: &LogError) {
        let health = &self.inner.health;
        if health.fault().is_none() {
            tracing::error!(%run, error = %error, "the store cannot write: runs wait until it can");
        }
        health.set(error, false);
        health
            .parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run);
        self.inner.metrics.store_writable.set(0);
        if !health.watching.swap(true, Ordering::SeqCst) {
            self.watch_store();
        }
    }

    /// Asks the store every [`WATCH_EVERY`] whether it writes again; then queues
    /// every parked run again.
    fn watch_store(&self) {
        let weak = std::sync::Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WATCH_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                let engine = Engine { inner };
                let health = &engine.inner.health;
                match engine.inner.store.log().write_state() {
                    WriteState::Writable => {
                        // Before the runs are taken: a run parked from now on starts
                        // a watcher of its own.
                        health.watching.store(false, Ordering::SeqCst);
                        let parked = std::mem::take(
                            &mut *health.parked.lock().unwrap_or_else(|p| p.into_inner()),
                        );
                        *health.fault.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        engine.inner.metrics.store_writable.set(1);
                        tracing::info!(
                            runs = parked.len(),
                            "the store writes again: its waiting runs resume"
                        );
                        for run in parked {
                            if let Err(e) = engine.resume(run).await {
                                tracing::error!(%run, error = %e, "cannot resume run");
                            }
                        }
                        return;
                    }
                    WriteState::NoSpace(e) => health.set(&e, false),
                    WriteState::Stopped { error, reopen } => health.set(&error, reopen),
                }
            }
        });
    }
}
