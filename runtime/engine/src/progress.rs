//! Live progress of a run, published while it runs.
//!
//! Owns the in-memory view of a running attempt (what the log does not hold until a
//! checkpoint: the current stream, the rate). Durable truth stays in the log; this is
//! only what a watcher sees between checkpoints.

use std::time::Instant;

use sluice_store::RunId;

/// Where a run is, as a watcher sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The run.
    pub run: RunId,
    /// The attempt running (0 before the first).
    pub attempt: u32,
    /// The stream being read, if any.
    pub stream: Option<String>,
    /// Records committed by the run, all attempts and streams.
    pub records: u64,
    /// Batches committed by the run.
    pub batches: u64,
    /// NDJSON bytes committed by the run.
    pub bytes: u64,
    /// Records committed by this attempt per second of this attempt.
    pub records_per_sec: f64,
    /// When a run waiting for a retry is due again (Unix milliseconds); `None`
    /// while it runs or waits for its first start.
    pub retry_at_unix_ms: Option<i64>,
    /// Whether the run has stopped (completed, failed for now, cancelled).
    pub finished: bool,
}

impl Progress {
    pub(crate) fn new(run: RunId) -> Self {
        Progress {
            run,
            attempt: 0,
            stream: None,
            records: 0,
            batches: 0,
            bytes: 0,
            records_per_sec: 0.0,
            retry_at_unix_ms: None,
            finished: false,
        }
    }
}

/// Counts of one attempt, to compute its rate.
pub(crate) struct Meter {
    started: Instant,
    records: u64,
}

impl Meter {
    pub(crate) fn start() -> Self {
        Meter {
            started: Instant::now(),
            records: 0,
        }
    }

    /// Adds records; returns the attempt's rate.
    pub(crate) fn add(&mut self, records: u64) -> f64 {
        self.records += records;
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.records as f64 / secs
        } else {
            0.0
        }
    }
}
