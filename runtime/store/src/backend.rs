//! [`Backend`]: what every storage backend implements — the parts of the contract
//! and the writes that span them — and the types those writes take and return.
//!
//! Those writes carry the store's central promise, which every backend keeps:
//!
//! - a batch's records and the run's `CheckpointCommitted` event commit **atomically**
//!   and durably before [`Backend::commit_batch`] returns; after a crash either both
//!   are there or neither is, so a resumed run re-reads exactly the batches whose
//!   checkpoints were not committed, and upsert by primary key absorbs whatever the
//!   source sends again;
//! - a full refresh's deletions commit in [`Backend::complete_stream`], in pieces
//!   (bounded on the embedded store) each atomic with the `CheckpointCommitted` that
//!   counts it; its `StreamCompleted` (and the run's `RunCompleted` when asked)
//!   commit atomically with the last piece;
//! - a run's events and a catalog document commit atomically in
//!   [`Backend::append_with_document`] (a schedule's fire and its progress).

use async_trait::async_trait;
use sluice_model::{EventKind, RunId};

use crate::catalog::Catalog;
use crate::hub::{BatchOutcome, Hub, HubBulk, HubError};
use crate::log::{LogError, RunLog};
use crate::run_logs::RunLogs;

/// A storage backend: what the engine and the API need of storage.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The run log.
    fn log(&self) -> &dyn RunLog;

    /// The hub's reads (a run's batches go through [`Backend::commit_batch`]).
    fn hub(&self) -> &dyn Hub;

    /// The catalog of definitions.
    fn catalog(&self) -> &dyn Catalog;

    /// The per-run logs (connector lines and HTTP requests).
    fn run_logs(&self) -> &dyn RunLogs;

    /// The hub's bulk reads and writes, for copying a store ([`crate::copy`]).
    fn hub_bulk(&self) -> &dyn HubBulk;

    /// Upserts a batch into the hub and appends its `CheckpointCommitted` event to
    /// `run`'s log, atomically and durably. A bad record rejects the whole batch and
    /// nothing is written.
    async fn commit_batch(&self, run: RunId, batch: BatchCommit) -> Result<Committed, StoreError>;

    /// Ends a stream of `run`: for a full refresh, marks deleted every record the
    /// refresh did not see, then appends `StreamCompleted` (and `RunCompleted` if the
    /// stream completes the run). The deletions commit in pieces, each atomically with
    /// a `CheckpointCommitted` counting it (the embedded store bounds a piece, so a long
    /// step makes durable progress; PostgreSQL commits one piece); the completion
    /// commits atomically with the last piece. A call for a run stopped between pieces
    /// finds the records of the committed pieces deleted already, so it deletes and
    /// counts only the rest. Returns the number of records marked deleted by this call.
    async fn complete_stream(&self, run: RunId, end: StreamEnd) -> Result<u64, StoreError>;

    /// Appends `events` (stamped `at_unix_ms`) to a new or existing run's log and
    /// stores `document` as the catalog definition `name` of `kind`, atomically.
    async fn append_with_document(
        &self,
        run: RunId,
        at_unix_ms: i64,
        events: Vec<EventKind>,
        kind: &str,
        name: &str,
        document: Vec<u8>,
    ) -> Result<Vec<u64>, StoreError>;

    /// Bytes the store takes on disk.
    async fn size_on_disk(&self) -> Result<u64, StoreError>;

    /// Whether several nodes may share the store at once (a cluster). A store that is
    /// not shared is open in one process at a time, so every run in flight when it
    /// opens belongs to a stopped node.
    fn shared(&self) -> bool {
        false
    }

    /// A new client of the rate-limit budgets the nodes sharing the store share
    /// ([`crate::budgets`]); a node takes one, at start. `None` for a store open in
    /// one process only: that node's limiter is the whole budget.
    fn shared_budgets(&self) -> Option<std::sync::Arc<dyn crate::budgets::SharedBudgets>> {
        None
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The run log refused or failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The hub refused or failed (e.g. a record without its primary key).
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The storage engine failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A request is malformed.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The store cannot be reached (`url` is shown without its password).
    #[error("cannot reach the store at {url}: {reason}")]
    Unreachable {
        /// Where the store is, without a password.
        url: String,
        /// Why.
        reason: String,
    },
    /// The store's schema is newer than this node knows.
    #[error(
        "the store's schema is at version {found}, newer than version {supported} that this node knows: upgrade the node"
    )]
    SchemaTooNew {
        /// The version the store holds.
        found: i64,
        /// The newest version this node knows.
        supported: i64,
    },
}

impl StoreError {
    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        StoreError::Storage(e.to_string())
    }
}

/// One batch of a run's stream to commit with its checkpoint.
#[derive(Debug, Clone)]
pub struct BatchCommit {
    /// The connection the records come from.
    pub connection: String,
    /// The stream.
    pub stream: String,
    /// Top-level fields forming the primary key.
    pub primary_key: Vec<String>,
    /// NDJSON records, one JSON object per line.
    pub records: Vec<u8>,
    /// Where the source resumes after this batch; empty for "from the start".
    pub checkpoint: String,
    /// The attempt that read it.
    pub attempt: u32,
    /// The refresh generation of a full refresh (deletion detection); 0 when the
    /// stream is read incrementally.
    pub generation: u64,
    /// Whether the stream is read incrementally: then the checkpoint also becomes the
    /// stream's cursor ([`Hub::stream_cursor`]), where its next run starts.
    pub incremental: bool,
}

/// What a committed batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Seq of the `CheckpointCommitted` event.
    pub seq: u64,
    /// Created / updated / unchanged counts.
    pub outcome: BatchOutcome,
}

/// The end of a stream in a run.
#[derive(Debug, Clone)]
pub struct StreamEnd {
    /// The connection.
    pub connection: String,
    /// The stream.
    pub stream: String,
    /// Whether the stream was fully refreshed: then every record not seen in
    /// `generation` is marked deleted in the same group.
    pub full_refresh: bool,
    /// The refresh generation the run's batches were committed with.
    pub generation: u64,
    /// The stream's last committed checkpoint.
    pub checkpoint: String,
    /// The attempt that read it.
    pub attempt: u32,
    /// It is the run's last stream: `RunCompleted` goes into the same group,
    /// which spares a durable round trip per run.
    pub completes_run: bool,
}
