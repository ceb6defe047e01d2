//! The hub's contract: the record store at the centre of Sluice, as the engine and the
//! API read it.
//!
//! Every synced record lands once, keyed by (connection, stream, primary key), with a
//! version, a content hash, the source cursor of the batch that last changed it, and
//! when it was first and last seen. A batch tells created / updated / unchanged apart
//! (same content hash: unchanged, no new version); a full refresh that completes marks
//! deleted every record it did not see; the change feed of a stream is read with a
//! cursor. Writes go only through [`crate::Backend::commit_batch`] and
//! [`crate::Backend::complete_stream`], which commit them atomically with the run's
//! checkpoint; this module owns the reads ([`Hub`]) and the types every backend shares.

use async_trait::async_trait;
use serde_json::Value;

/// Most records one batch may hold.
pub const MAX_BATCH_RECORDS: usize = (1 << 24) - 2;

/// Reads of the hub. Implemented by every storage backend.
#[async_trait]
pub trait Hub: Send + Sync {
    /// The live record with this primary key (one value per key field, in order), or
    /// `None` if it never existed or was deleted.
    async fn get(
        &self,
        connection: &str,
        stream: &str,
        primary_key: &[Value],
    ) -> Result<Option<Record>, HubError>;

    /// The checkpoint of the stream's last incremental batch, from which the next
    /// incremental read of the stream starts.
    async fn stream_cursor(
        &self,
        connection: &str,
        stream: &str,
    ) -> Result<Option<String>, HubError>;

    /// Number of live (not deleted) records in the stream.
    async fn count(&self, connection: &str, stream: &str) -> Result<u64, HubError>;

    /// Up to `limit` feed entries of the stream after `after` (0 = from the start), in
    /// the order they were committed, and the cursor to pass next time (unchanged when
    /// nothing followed).
    async fn feed(
        &self,
        connection: &str,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Change>, u64), HubError>;
}

/// What can go wrong in the hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A record of the batch is valid JSON but not an object.
    #[error("record {index} of the batch is not a JSON object")]
    NotAnObject {
        /// Position of the record in the batch (0-based, blank lines not counted).
        index: usize,
    },
    /// A record of the batch lacks a primary key field, or holds null there.
    #[error("record {index} of the batch has no value for primary key field `{field}`")]
    MissingPrimaryKey {
        /// Position of the record in the batch (0-based, blank lines not counted).
        index: usize,
        /// The missing field.
        field: String,
    },
    /// A record of the batch is not valid JSON.
    #[error("record {index} of the batch is not valid JSON: {reason}")]
    MalformedRecord {
        /// Position of the record in the batch (0-based, blank lines not counted).
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// No primary key fields were given.
    #[error("a stream written to the hub needs at least one primary key field")]
    NoPrimaryKey,
    /// The batch holds more records than one segment can.
    #[error("a batch holds {records} records; at most {MAX_BATCH_RECORDS} fit in one batch")]
    BatchTooLarge {
        /// Records in the batch.
        records: usize,
    },
    /// The stream was written without going through its lease; reopen the hub.
    #[error("the hub index of a stream is behind its stored segments")]
    Stale,
    /// Stored hub data could not be decoded.
    #[error("stored hub data is corrupt: {0}")]
    Corrupt(String),
    /// The storage engine failed.
    #[error("hub storage failed: {0}")]
    Storage(String),
}

/// The kind of a change in the feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The record appeared (for the first time, or again after a deletion).
    Created,
    /// The record's content changed.
    Updated,
    /// The record was missing from a complete refresh.
    Deleted,
}

/// Counts of what a batch (or a completed refresh) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Records that did not exist (or were deleted) before.
    pub created: u64,
    /// Records whose content hash changed.
    pub updated: u64,
    /// Records whose content hash was the same: no new version, no feed entry.
    pub unchanged: u64,
    /// Records marked deleted by a completed refresh.
    pub deleted: u64,
}

/// A record as stored in the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The primary key: a JSON array of the key fields' values.
    pub primary_key: String,
    /// Starts at 1; grows by one with every change (including a deletion).
    pub version: u64,
    /// First 128 bits of SHA-256 of the record's bytes.
    pub content_hash: u128,
    /// Source cursor of the batch that last changed the record.
    pub source_cursor: Option<String>,
    /// When the record was created (ms since the Unix epoch).
    pub first_seen_ms: u64,
    /// When a batch last held the record (ms since the Unix epoch).
    pub last_seen_ms: u64,
    /// The last refresh generation that held the record.
    pub last_seen_generation: u64,
    /// The record's JSON.
    pub data: String,
}

/// One entry of the change feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Position of this entry; pass it back to read what follows.
    pub cursor: u64,
    /// What happened.
    pub kind: ChangeKind,
    /// The primary key: a JSON array of the key fields' values.
    pub primary_key: String,
    /// The record's version after the change.
    pub version: u64,
    /// The record's JSON; `None` for a deletion.
    pub data: Option<String>,
}
