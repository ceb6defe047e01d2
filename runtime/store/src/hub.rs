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
//! checkpoint; this module owns the reads ([`Hub`]), the bulk reads and writes that
//! copying a store takes ([`HubBulk`]) and the types every backend shares.

use async_trait::async_trait;
use serde_json::Value;

use crate::StoreError;

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

/// Bulk reads and writes of the hub, beyond what the engine needs: every stream, the
/// live records in feed order, and a stream's history written as it is. What copying
/// a store to another backend ([`crate::copy`]) takes; implemented by every backend
/// and reached through [`crate::Backend::hub_bulk`].
#[async_trait]
pub trait HubBulk: Send + Sync {
    /// Every stream the hub has written to (a batch or a cursor), as (connection,
    /// stream), sorted by connection then stream. A stream listed may hold no change.
    async fn streams(&self) -> Result<Vec<(String, String)>, HubError>;

    /// The live records among the next (at most) `limit` feed entries of the stream
    /// after `after` (0 = from the start): each live record once, where the feed holds
    /// its latest change, in feed order; and the cursor to pass next time (unchanged
    /// when nothing followed). Paging through the whole feed thus yields every live
    /// record exactly once, in bounded memory; a page may hold none.
    async fn live_records(
        &self,
        connection: &str,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Record>, u64), HubError>;

    /// Writes changes read from another store's feed to the stream as they are (same
    /// kind, primary key, version and data, in order), with its incremental cursor,
    /// atomically and durably. Nothing is classified: the records' state follows the
    /// changes. Each change must follow its record's state ([`import_refusal`]), else
    /// nothing of the call is written ([`StoreError::Invalid`]); so an import never
    /// overwrites a stream written otherwise.
    ///
    /// What the target gives the changes itself: their feed positions (a call may
    /// become one or several batches, so cursors differ from the source's), and the
    /// records' first and last seen time and refresh generation, all `at_unix_ms`
    /// (a full refresh scheduled before the import deletes none of them, one scheduled
    /// after compares them as usual); records have no source cursor.
    async fn import(&self, import: StreamImport) -> Result<(), StoreError>;
}

/// A piece of a stream's history to write with [`HubBulk::import`].
#[derive(Clone, Debug, Default)]
pub struct StreamImport {
    /// The connection.
    pub connection: String,
    /// The stream.
    pub stream: String,
    /// Changes in feed order; their `cursor` is ignored.
    pub changes: Vec<Change>,
    /// The stream's incremental cursor to store; `None` leaves it as it is.
    pub cursor: Option<String>,
    /// When the import runs (Unix ms): the imported records' first and last seen
    /// time and the refresh generation they count as seen by.
    pub at_unix_ms: i64,
}

/// Why `change` may not follow its record's state in an import, if it may not: the
/// record's latest version and whether it is live (`None`: never seen). A creation
/// needs an absent or deleted record, an update or a deletion a live one; the
/// version is the previous one plus one (1 for a new key); a deletion carries no
/// data and the others do.
pub(crate) fn import_refusal(prev: Option<(u64, bool)>, change: &Change) -> Option<String> {
    let live = prev.is_some_and(|(_, live)| live);
    let expected = prev.map_or(1, |(version, _)| version + 1);
    let why = match change.kind {
        ChangeKind::Created if live => "a creation of a live record".to_owned(),
        ChangeKind::Updated | ChangeKind::Deleted if !live => {
            format!("{:?} of a record that is not live", change.kind)
        }
        _ if change.version != expected => {
            format!("version {}, expected {expected}", change.version)
        }
        ChangeKind::Deleted if change.data.is_some() => "a deletion with data".to_owned(),
        ChangeKind::Created | ChangeKind::Updated if change.data.is_none() => {
            format!("{:?} without data", change.kind)
        }
        _ => return None,
    };
    Some(format!(
        "change to {} at version {}: {why}",
        change.primary_key, change.version
    ))
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
