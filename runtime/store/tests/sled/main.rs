//! The sled backend's own tests: what only it has (its stored bytes, key layouts,
//! older layouts it still opens, the group a crash left half applied, the watermark of
//! `runs_active`, summary records holding a run's latest events, [`LogConfig`] tuning)
//! and its hub's direct calls, with a property test against a model. What every
//! backend promises is tested once for all in `tests/contract`.
//!
//! The database is opened raw between opens of the log or the hub, to read or damage
//! what they stored; every tree and fixed key is named by `sluice_store::sled::layout`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed expectation fails the test"
)]

mod hub;
mod hub_props;
mod log;

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_store::RunLog;
use sluice_store::log::RunCompleted;
use sluice_store::log::{EventKind, RunFilter, RunId};
use sluice_store::sled::{EventLog, LogConfig};
pub use sluice_testkit::events::{begun, checkpoint, run_id, scheduled};

/// `sled::open(path)`, retried for a while when the lock is still held: sled lets go
/// of a database's file lock only once its I/O threads finish, a moment after the log
/// or hub that owned it was dropped.
pub fn open_sled(path: &Path) -> sled::Db {
    let started = Instant::now();
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                let busy = matches!(&e, sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock"));
                assert!(busy, "cannot open {}: {e}", path.display());
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{} is still locked: {e}", path.display()),
        }
    }
}

/// Opens a log that stores every group's events under keys of their own at once (none
/// in run summaries), for tests of that layout.
pub fn open_keyed(dir: &Path) -> EventLog {
    let config = LogConfig {
        recent_events: 0,
        ..LogConfig::default()
    };
    EventLog::open_with(dir, config).unwrap()
}

/// The [`layout::EVENTS`] key of a single event: run id ++ seq.
pub fn event_key(run: RunId, seq: u64) -> Vec<u8> {
    let mut key = run.0.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// `RunCompleted`.
pub fn completed() -> EventKind {
    EventKind::RunCompleted(RunCompleted {})
}

/// The run ids `log` lists for `filter`, in its order.
pub async fn listed(log: &dyn RunLog, filter: RunFilter) -> Vec<RunId> {
    log.list(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.run_id)
        .collect()
}
