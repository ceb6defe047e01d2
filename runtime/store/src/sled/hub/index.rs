//! The in-memory index of one (connection, stream): primary key hash → the record's
//! version, content hash, first/last seen and where its latest change is stored.
//!
//! Owns classification state; it is only ever a cache of the segments on disk and
//! must never hold anything that cannot be rebuilt from them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::ChangeKind;
use super::segment::Segment;

/// What the hub knows about one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) version: u64,
    pub(super) content_hash: u128,
    pub(super) first_seen_ms: u64,
    pub(super) last_seen_ms: u64,
    pub(super) last_seen_generation: u64,
    /// Segment holding the latest change.
    pub(super) seq: u64,
    /// Index of that change in the segment.
    pub(super) idx: u32,
    pub(super) deleted: bool,
}

/// Keys are already uniform hashes: use their low bits as the hash.
#[derive(Default)]
pub(super) struct PkHasher(u64);

impl Hasher for PkHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// Map from primary key hash to entry.
pub(super) type Entries = HashMap<u128, Entry, BuildHasherDefault<PkHasher>>;

/// The index of one stream.
#[derive(Default)]
pub(super) struct StreamIndex {
    pub(super) entries: Entries,
    /// Records that exist and are not deleted.
    pub(super) live: u64,
    /// Sequence number of the next segment.
    pub(super) next_seq: u64,
}

/// Where a change lands and under which batch facts.
#[derive(Clone, Copy)]
pub(super) struct At {
    pub(super) seq: u64,
    pub(super) idx: u32,
    pub(super) generation: u64,
    pub(super) time_ms: u64,
}

/// The entry after a change; the one rule shared by live writes and rebuilds.
pub(super) fn after_change(
    prev: Option<&Entry>,
    kind: ChangeKind,
    version: u64,
    content_hash: u128,
    at: At,
) -> Entry {
    match kind {
        ChangeKind::Created | ChangeKind::Updated => Entry {
            version,
            content_hash,
            first_seen_ms: match (kind, prev) {
                (ChangeKind::Updated, Some(p)) => p.first_seen_ms,
                _ => at.time_ms,
            },
            last_seen_ms: at.time_ms,
            last_seen_generation: prev
                .map_or(at.generation, |p| p.last_seen_generation.max(at.generation)),
            seq: at.seq,
            idx: at.idx,
            deleted: false,
        },
        ChangeKind::Deleted => Entry {
            version,
            content_hash: 0,
            first_seen_ms: prev.map_or(at.time_ms, |p| p.first_seen_ms),
            last_seen_ms: prev.map_or(at.time_ms, |p| p.last_seen_ms),
            last_seen_generation: prev.map_or(0, |p| p.last_seen_generation),
            seq: at.seq,
            idx: at.idx,
            deleted: true,
        },
    }
}

/// The entry after it was seen unchanged.
pub(super) fn after_seen(prev: &Entry, generation: u64, time_ms: u64) -> Entry {
    Entry {
        last_seen_ms: time_ms,
        last_seen_generation: prev.last_seen_generation.max(generation),
        ..*prev
    }
}

/// How a change moves the count of live records.
pub(super) fn live_delta(prev: Option<&Entry>, kind: ChangeKind) -> i64 {
    let was_live = prev.is_some_and(|p| !p.deleted);
    match (kind, was_live) {
        (ChangeKind::Deleted, true) => -1,
        (ChangeKind::Created | ChangeKind::Updated, false) => 1,
        _ => 0,
    }
}

impl StreamIndex {
    /// Replays one stored segment (used when loading from disk).
    pub(super) fn replay(&mut self, seq: u64, segment: &Segment<'_>) {
        let base = At {
            seq,
            idx: 0,
            generation: segment.header.generation,
            time_ms: segment.header.time_ms,
        };
        for (idx, c) in segment.changes.iter().enumerate() {
            let at = At {
                idx: idx as u32,
                ..base
            };
            let prev = self.entries.get(&c.pk_hash);
            let entry = after_change(prev, c.kind, c.version, c.content_hash, at);
            self.apply_live_delta(live_delta(prev, c.kind));
            self.entries.insert(c.pk_hash, entry);
        }
        for pk_hash in &segment.seen {
            if let Some(prev) = self.entries.get_mut(pk_hash) {
                *prev = after_seen(prev, base.generation, base.time_ms);
            }
        }
        self.next_seq = seq + 1;
    }

    pub(super) fn apply_live_delta(&mut self, delta: i64) {
        self.live = self.live.saturating_add_signed(delta);
    }
}
