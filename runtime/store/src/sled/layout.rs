//! Every physical name of the sled backend: its trees, their order in a group of
//! writes, and the fixed keys some of them hold. The key layouts within a tree are
//! documented where they are built (`log::keys`, `hub`), next to the code that must
//! keep them sorting the way queries need.
//!
//! Names are durable: a store written by any earlier version opens with them, so a
//! name is never changed or reused.

/// The run log's events: run id ++ seq, or run id ++ first ++ last seq for a batch.
pub const EVENTS: &str = "events";
/// Runs' summary records, with their latest events: run id.
pub const RUNS: &str = "runs";
/// Index of runs by workflow.
pub const RUNS_BY_WORKFLOW: &str = "runs_by_workflow";
/// Index of runs by connection.
pub const RUNS_BY_CONNECTION: &str = "runs_by_connection";
/// Index of runs by tenant.
pub const RUNS_BY_TENANT: &str = "runs_by_tenant";
/// Index of runs by terminal status.
pub const RUNS_BY_STATUS: &str = "runs_by_status";
/// Index of runs by creation time.
pub const RUNS_BY_TIME: &str = "runs_by_time";
/// Runs in flight below the watermark.
pub const RUNS_ACTIVE: &str = "runs_active";
/// The log's own facts ([`ACTIVE_FROM`], [`POSTING_SPREAD`]).
pub const LOG_META: &str = "log_meta";
/// The hub's segments, stream metas and cursors.
pub const HUB: &str = "hub";
/// Catalog documents: kind ++ 0x00 ++ name.
pub const CATALOG: &str = "catalog";
/// Per-run logs: run id ++ position.
pub const RUN_LOGS: &str = "run_logs";
/// The write-ahead record of the group being applied (one key, [`WRITE_AHEAD_KEY`]).
pub const WRITE_AHEAD: &str = "write_ahead";
/// The number of the store's latest flush (one key, [`DURABLE_FLUSHES`]; see
/// `super::durable`).
pub const DURABLE: &str = "durable";

/// The log's trees, in the order a group of writes goes through them; the positions
/// below index this list.
pub(crate) const LOG_TREES: [&str; 9] = [
    EVENTS,
    RUNS,
    RUNS_BY_WORKFLOW,
    RUNS_BY_CONNECTION,
    RUNS_BY_TENANT,
    RUNS_BY_STATUS,
    RUNS_BY_TIME,
    RUNS_ACTIVE,
    LOG_META,
];
pub(crate) const AT_EVENTS: usize = 0;
pub(crate) const AT_RUNS: usize = 1;
pub(crate) const AT_BY_WORKFLOW: usize = 2;
pub(crate) const AT_BY_CONNECTION: usize = 3;
pub(crate) const AT_BY_TENANT: usize = 4;
pub(crate) const AT_BY_STATUS: usize = 5;
pub(crate) const AT_BY_TIME: usize = 6;
pub(crate) const AT_ACTIVE: usize = 7;
/// Written after `runs_active` in a group: a reader that sees the watermark moved sees
/// the keys it was moved past.
pub(crate) const AT_META: usize = 8;

/// Trees other parts add to the log's groups of writes (after the log's own): the
/// positions below index this list, as a group's hooks see it.
pub(crate) const GROUP_EXTRA: [&str; 2] = [HUB, CATALOG];
/// Where a hook finds the hub's tree among [`GROUP_EXTRA`].
pub(crate) const EXTRA_HUB: usize = 0;
/// Where a hook finds the catalog's tree among [`GROUP_EXTRA`].
pub(crate) const EXTRA_CATALOG: usize = 1;

/// `log_meta` key of the watermark below which runs in flight are keyed in
/// `runs_active` (a run id).
pub const ACTIVE_FROM: &[u8] = b"active_from";
/// `log_meta` key of the postings' spread (a 128-bit distance between run ids).
pub const POSTING_SPREAD: &[u8] = b"posting_spread";
/// The one key of the `durable` tree: the latest flush's number (u64 BE).
pub const DURABLE_FLUSHES: &[u8] = b"flushes";
/// The one key of the `write_ahead` tree.
pub const WRITE_AHEAD_KEY: [u8; 1] = [0];

/// Hub key tag of a segment: `s | connection | stream | seq`, connection and stream
/// each prefixed by its length (u32 BE).
pub const HUB_SEGMENT: u8 = b's';
/// Hub key tag of a stream's next segment seq: `m | connection | stream`.
pub const HUB_META: u8 = b'm';
/// Hub key tag of a stream's incremental cursor: `c | connection | stream`.
pub const HUB_CURSOR: u8 = b'c';
