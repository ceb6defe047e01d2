//! The hub on sled ([`SledHub`]): the record store at the centre of Sluice.
//!
//! Every synced record lands here once, keyed by (connection, stream, primary key), with a
//! version, a content hash, the source cursor of the batch that last changed it, and when
//! it was first and last seen. An upsert of a batch tells created / updated / unchanged
//! apart (same content hash → unchanged, no new version); a change feed ordered per
//! (connection, stream) is read with a cursor; and full-refresh streams get deletion
//! detection: [`SledHub::complete_refresh`] marks deleted every record not seen in that
//! refresh generation. An abandoned (partial or failed) refresh never calls it, so it
//! never deletes anything.
//!
//! This module owns the hub's sled tree and the in-memory indexes built from it. It must
//! never write outside its tree, never let a sled type into the public API, and never
//! change its in-memory index before the group of writes that wrote the matching
//! segment has committed.
//!
//! # Layout, and why
//!
//! Measured on the project machine (2 cores, release build, 200,000 records of ~200
//! bytes in batches of 1,000, one transaction and one `flush` per batch):
//!
//! | layout | records/s | µs/record |
//! |---|---|---|
//! | (a) one insert per record in `records` + one in `feed` | ~39,500 | 25.3 |
//! | (b) one blob per batch + one small index insert per record | ~61,500 | 16.3 |
//! | (c) classification by `get` on an on-disk index (reads only) | ~480,000 (in a transaction), ~720,000 (plain) | 2.1 / 1.4 |
//! | (d) one segment value per batch holding its records, no per-record insert | ~550,000 | 1.8 |
//! | (d) the same, cut in 16 KiB values | ~485,000 | 2.1 |
//!
//! SHA-256 of a 200-byte record costs ~0.25 µs. Any layout with a sled insert per
//! record stays under 100,000 records/s, and even a `get` per record spends most of the
//! 3.3 µs a record may cost at 300,000 records/s. So the hub uses (d):
//!
//! - Each batch becomes **one segment**, one sled value at key
//!   `s | connection | stream | seq`: the batch's changes (created / updated records with
//!   their bytes, version, content hash and primary key) and the hashes of the keys it
//!   saw unchanged. A completed refresh writes segments of deleted entries (piece by
//!   piece in a run: `Unseen`, `HubWriter::prepare_deletions`). A meta key
//!   `m | connection | stream` holds the next sequence number and is written in the
//!   same group of writes. Readers see only segments below it: a segment is written
//!   ahead of its group (so the log's write-ahead record need not copy it), and one
//!   that a crash left past the stored next seq is an orphan the next batch replaces.
//! - The **change feed is the segments in order**: a cursor is `seq << 24 | (index + 1)`,
//!   so reading the feed is a range scan; a feed entry costs no insert of its own.
//! - Classification uses an **in-memory index** per (connection, stream): primary key
//!   hash → version, content hash, first/last seen, last seen refresh generation and the
//!   location of the latest change. It is loaded from the segments on first use and is
//!   only a cache: writes go through a lease on the stream ([`HubWriter`]), are prepared
//!   against the index, written in the caller's group of writes, and applied to the
//!   index with [`HubWriter::commit`] only once that group has committed.
//!
//! With this layout, `cargo bench -p sluice-store --bench hub` (1,000,000 records of
//! ~200 bytes, batches of 1,000, one transaction and one flush per batch) measured
//! ~325,000–385,000 records/s for the first pass (all created; p50 ~1.9 ms per batch)
//! and ~445,000–560,000 records/s for a second pass of the same data (all unchanged);
//! reopening and loading the index of those 1,000,000 records took ~0.4 s. With
//! `HUB_BENCH_RECORDS=2000000`, completing a refresh that no longer saw every seventh
//! record marked 285,715 deleted in ~0.63 s (it took ~5.3 s while every deletion
//! decoded its record's whole segment again).
//!
//! Costs of this choice: memory of ~80 bytes per record of a loaded stream, loading a
//! stream reads all its segments, and segments keep superseded versions until a
//! compaction (not written yet) rewrites them.

mod bulk;
mod index;
use crate::records as record;

mod segment;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::hub::{BatchOutcome, Change, ChangeKind, Hub, HubError, MAX_BATCH_RECORDS, Record};
use crate::sled::staged::{Staged, StagedTree};
use serde_json::Value;

use index::{At, Entries, Entry, StreamIndex, after_change, after_seen, live_delta};
use segment::{Header, StoredChange};
pub(crate) use writer::{HubWriter, Piece, SegmentWrite, StagedWrite, Unseen};

/// Name of the sled tree holding the hub.
/// Bits of a feed cursor that number a change inside its segment.
const INDEX_BITS: u32 = 24;
/// Most changes one segment may hold (so that `index + 1` fits in [`INDEX_BITS`]).
const MAX_CHANGES: usize = MAX_BATCH_RECORDS;
const _: () = assert!(MAX_CHANGES == (1 << INDEX_BITS) - 2);
use crate::sled::layout::{
    HUB as TREE, HUB_CURSOR as TAG_CURSOR, HUB_META as TAG_META, HUB_SEGMENT as TAG_SEGMENT,
};

impl From<sled::Error> for HubError {
    fn from(e: sled::Error) -> Self {
        HubError::Storage(e.to_string())
    }
}

/// Facts about a batch that apply to all its records.
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchMeta<'a> {
    /// Refresh generation the batch belongs to; stamped on every record it holds.
    pub generation: u64,
    /// The source's cursor or timestamp after this batch, if it has one.
    pub source_cursor: Option<&'a str>,
    /// Wall-clock time of the write, milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// The hub of one store. Cheap to clone; clones share the tree and the indexes.
#[derive(Clone)]
pub struct SledHub {
    shared: Arc<Shared>,
}

struct Shared {
    tree: sled::Tree,
    streams: Mutex<HashMap<StreamId, Slot>>,
    released: Condvar,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct StreamId {
    connection: String,
    stream: String,
}

enum Slot {
    Idle(Box<StreamIndex>),
    Leased,
}

fn key(tag: u8, id: &StreamId) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.connection.len() + id.stream.len() + 17);
    k.push(tag);
    k.extend_from_slice(&(id.connection.len() as u32).to_be_bytes());
    k.extend_from_slice(id.connection.as_bytes());
    k.extend_from_slice(&(id.stream.len() as u32).to_be_bytes());
    k.extend_from_slice(id.stream.as_bytes());
    k
}

fn segment_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(key: &[u8]) -> Result<u64, HubError> {
    key.len()
        .checked_sub(8)
        .and_then(|at| key[at..].try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| HubError::Corrupt("short segment key".into()))
}

fn decode_u64(bytes: &[u8]) -> Result<u64, HubError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| HubError::Corrupt("meta value is not 8 bytes".into()))
}

fn cursor_of(seq: u64, idx: u32) -> u64 {
    (seq << INDEX_BITS) | (u64::from(idx) + 1)
}

fn utf8(bytes: &[u8]) -> Result<String, HubError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| HubError::Corrupt("stored JSON is not UTF-8".into()))
}

/// The primary key's canonical bytes for a lookup.
fn pk_bytes(primary_key: &[Value]) -> Result<Vec<u8>, HubError> {
    serde_json::to_vec(primary_key).map_err(|e| HubError::Corrupt(e.to_string()))
}

impl SledHub {
    /// Opens the hub inside an open sled database.
    pub(crate) fn open(db: &sled::Db) -> Result<SledHub, HubError> {
        Ok(SledHub {
            shared: Arc::new(Shared {
                tree: db.open_tree(TREE)?,
                streams: Mutex::new(HashMap::new()),
                released: Condvar::new(),
            }),
        })
    }

    /// Opens (or creates) a hub in a store of its own at `path`, for tools, tests and
    /// benchmarks; the engine opens the hub inside the shared store instead.
    pub fn open_path(path: impl AsRef<std::path::Path>) -> Result<SledHub, HubError> {
        // No background flusher (durability comes from `flush`): its thread would keep
        // the database, and its lock, alive for a while after the hub is dropped.
        let config = sled::Config::new().path(path.as_ref()).flush_every_ms(None);
        let db = crate::sled::open::open_db(&config)?;
        SledHub::open(&db)
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), HubError> {
        self.shared.tree.flush()?;
        Ok(())
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<StreamId, Slot>> {
        self.shared
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the exclusive lease on a stream, loading its index if needed; waits while
    /// another holder has it.
    pub(crate) fn writer(&self, connection: &str, stream: &str) -> Result<HubWriter, HubError> {
        let id = StreamId {
            connection: connection.to_owned(),
            stream: stream.to_owned(),
        };
        let mut slots = self.slots();
        let cached = loop {
            match slots.insert(id.clone(), Slot::Leased) {
                Some(Slot::Leased) => {
                    slots = self
                        .shared
                        .released
                        .wait(slots)
                        .unwrap_or_else(|e| e.into_inner());
                }
                Some(Slot::Idle(index)) => break Some(index),
                None => break None,
            }
        };
        drop(slots);
        let mut writer = self.leased(id, cached);
        let stored = writer.stored_next_seq()?;
        if writer.index.as_ref().is_none_or(|i| i.next_seq != stored) {
            writer.index = Some(Box::new(writer.load()?));
        }
        Ok(writer)
    }

    /// The writer of a stream whose lease the caller just took: it gives the lease
    /// back on drop, loaded or not.
    fn leased(&self, id: StreamId, index: Option<Box<StreamIndex>>) -> HubWriter {
        HubWriter {
            hub: self.clone(),
            segment_prefix: key(TAG_SEGMENT, &id),
            meta_key: key(TAG_META, &id),
            id,
            index,
        }
    }

    /// The stream's exclusive lease, taken at once, if its index is in memory (or the
    /// stream has none yet), current and of at most `max_records` records: a writer
    /// that needs no waiting and no loading, so an async caller may take it in place.
    /// `None` otherwise: take [`SledHub::writer`] off the async runtime.
    pub(crate) fn writer_at_hand(
        &self,
        connection: &str,
        stream: &str,
        max_records: usize,
    ) -> Result<Option<HubWriter>, HubError> {
        let id = StreamId {
            connection: connection.to_owned(),
            stream: stream.to_owned(),
        };
        let mut slots = self.slots();
        let index = match slots.remove(&id) {
            Some(Slot::Idle(index)) if index.entries.len() <= max_records => index,
            Some(other) => {
                slots.insert(id, other);
                return Ok(None);
            }
            // Not in memory: if the stream never committed a segment, its index is
            // empty and there is nothing to load (a connection's first run).
            None => Box::default(),
        };
        slots.insert(id.clone(), Slot::Leased);
        drop(slots);
        let mut writer = self.leased(id, Some(index));
        if writer.stored_next_seq()? != writer.next_seq() {
            // Not current: the writer that loads it starts from nothing.
            writer.index = None;
            return Ok(None);
        }
        Ok(Some(writer))
    }

    /// Upserts a batch of NDJSON records in a sled batch of its own (not flushed: call
    /// [`SledHub::flush`] for durability).
    pub fn upsert_batch(
        &self,
        connection: &str,
        stream: &str,
        primary_key: &[&str],
        records: &[u8],
        meta: BatchMeta<'_>,
    ) -> Result<BatchOutcome, HubError> {
        let writer = self.writer(connection, stream)?;
        let staged = writer.prepare_batch(primary_key, records, meta)?;
        self.write_alone(writer, staged)
    }

    /// Marks deleted every live record of the stream whose last seen generation is below
    /// `generation`, i.e. not seen in that refresh. Call it only once the refresh has
    /// read every page; calling it again for the same generation deletes nothing more.
    pub fn complete_refresh(
        &self,
        connection: &str,
        stream: &str,
        generation: u64,
        time_ms: u64,
    ) -> Result<BatchOutcome, HubError> {
        let writer = self.writer(connection, stream)?;
        let staged = writer.prepare_refresh(generation, time_ms)?;
        self.write_alone(writer, staged)
    }

    /// Writes a staged write atomically on its own (one sled batch of the hub tree)
    /// and applies it to the index.
    fn write_alone(
        &self,
        mut writer: HubWriter,
        staged: StagedWrite,
    ) -> Result<BatchOutcome, HubError> {
        let trees = std::slice::from_ref(&self.shared.tree);
        let mut group = Staged::new(trees);
        if let Some(hub) = group.trees_from(0).first_mut() {
            writer.segment_write(&staged).write(hub)?;
        }
        group.apply_to_one_tree()?;
        Ok(writer.commit(staged))
    }

    /// The live record with this primary key (one value per key field, in order), or
    /// `None` if it never existed or was deleted.
    pub fn get(
        &self,
        connection: &str,
        stream: &str,
        primary_key: &[Value],
    ) -> Result<Option<Record>, HubError> {
        let pk = pk_bytes(primary_key)?;
        let writer = self.writer(connection, stream)?;
        let Some(entry) = writer.entries().get(&record::hash128(&pk)).copied() else {
            return Ok(None);
        };
        if entry.deleted {
            return Ok(None);
        }
        let bytes = writer.segment(entry.seq)?;
        let seg = segment::decode(&bytes, false)?;
        let change = seg
            .changes
            .get(entry.idx as usize)
            .ok_or_else(|| HubError::Corrupt("index points past its segment".into()))?;
        Ok(Some(Record {
            primary_key: utf8(change.pk)?,
            version: entry.version,
            content_hash: entry.content_hash,
            source_cursor: seg.header.source_cursor.map(str::to_owned),
            first_seen_ms: entry.first_seen_ms,
            last_seen_ms: entry.last_seen_ms,
            last_seen_generation: entry.last_seen_generation,
            data: utf8(change.record)?,
        }))
    }

    /// The checkpoint of the stream's last incremental batch, from which the next
    /// incremental read of the stream starts.
    pub fn stream_cursor(
        &self,
        connection: &str,
        stream: &str,
    ) -> Result<Option<String>, HubError> {
        let id = StreamId {
            connection: connection.to_owned(),
            stream: stream.to_owned(),
        };
        match self.shared.tree.get(key(TAG_CURSOR, &id))? {
            Some(v) => utf8(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Number of live (not deleted) records in the stream.
    pub fn count(&self, connection: &str, stream: &str) -> Result<u64, HubError> {
        let writer = self.writer(connection, stream)?;
        Ok(writer.index.as_ref().map_or(0, |i| i.live))
    }

    /// Up to `limit` feed entries of the stream after `after` (0 = from the start), and
    /// the cursor to pass next time (unchanged when nothing followed).
    pub fn feed(
        &self,
        connection: &str,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Change>, u64), HubError> {
        let id = StreamId {
            connection: connection.to_owned(),
            stream: stream.to_owned(),
        };
        let prefix = key(TAG_SEGMENT, &id);
        let end_seq = match self.shared.tree.get(key(TAG_META, &id))? {
            Some(v) => decode_u64(&v)?,
            None => 0,
        };
        let start_seq = after >> INDEX_BITS;
        let skip = after & ((1 << INDEX_BITS) - 1);
        let mut out = Vec::new();
        let mut next = after;
        for item in self.shared.tree.range(segment_key(&prefix, start_seq)..) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let seq = seq_of(&k)?;
            if seq >= end_seq {
                break;
            }
            let seg = segment::decode(&v, false)?;
            for (idx, c) in seg.changes.iter().enumerate() {
                let cursor = cursor_of(seq, idx as u32);
                if seq == start_seq && u64::from(idx as u32) < skip {
                    continue;
                }
                if out.len() >= limit {
                    break;
                }
                out.push(Change {
                    cursor,
                    kind: c.kind,
                    primary_key: utf8(c.pk)?,
                    version: c.version,
                    data: match c.kind {
                        ChangeKind::Deleted => None,
                        _ => Some(utf8(c.record)?),
                    },
                });
                next = cursor;
            }
        }
        Ok((out, next))
    }
}

/// Writes to one stream, prepared against its index, ready to go into a group of writes.
#[async_trait::async_trait]
impl Hub for SledHub {
    async fn get(
        &self,
        connection: &str,
        stream: &str,
        primary_key: &[Value],
    ) -> Result<Option<Record>, HubError> {
        SledHub::get(self, connection, stream, primary_key)
    }

    async fn stream_cursor(
        &self,
        connection: &str,
        stream: &str,
    ) -> Result<Option<String>, HubError> {
        SledHub::stream_cursor(self, connection, stream)
    }

    async fn count(&self, connection: &str, stream: &str) -> Result<u64, HubError> {
        SledHub::count(self, connection, stream)
    }

    async fn feed(
        &self,
        connection: &str,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Change>, u64), HubError> {
        SledHub::feed(self, connection, stream, after, limit)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_stream_never_written_is_at_hand_and_one_written_before_is_loaded() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let hub = SledHub::open(&db).unwrap();
        let writer = hub.writer_at_hand("c", "s", 0).unwrap();
        assert!(writer.is_some(), "a new stream has nothing to load");
        drop(writer);
        let meta = BatchMeta {
            generation: 1,
            source_cursor: None,
            time_ms: 1_700_000_000_000,
        };
        hub.upsert_batch("c", "s", &["id"], b"{\"id\":1}\n{\"id\":2}\n", meta)
            .unwrap();
        assert_eq!(
            hub.writer_at_hand("c", "s", usize::MAX)
                .unwrap()
                .map(|w| w.entries().len()),
            Some(2),
            "the index in memory is current"
        );
        // The same database with nothing in memory, as after a restart: the stream's
        // records must be loaded, not taken for an empty index.
        let reopened = SledHub::open(&db).unwrap();
        assert!(
            reopened
                .writer_at_hand("c", "s", usize::MAX)
                .unwrap()
                .is_none()
        );
        assert_eq!(reopened.writer("c", "s").unwrap().entries().len(), 2);
    }
}
