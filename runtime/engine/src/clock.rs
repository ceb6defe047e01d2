//! The node's clock and run identity: the current time in Unix milliseconds and new
//! run ids.
//!
//! Owns the only reads of the system clock for the lifecycle and the only source of
//! run ids, so that everything else takes a time or an id as a value (and the pure
//! parts, like the driver's next step, can be tested with hand-picked ones). It must
//! never hold state or decide anything.

use std::time::{SystemTime, UNIX_EPOCH};

use sluice_model::RunId;

/// Now, in Unix milliseconds (0 if the clock is before 1970).
pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A new run id: a UUID v7, so ids sort by creation time and the log's keys of
/// recent runs stay together.
pub(crate) fn new_run_id() -> RunId {
    let id = uuid::Uuid::now_v7();
    RunId::from_slice(id.as_bytes()).unwrap_or_default()
}
