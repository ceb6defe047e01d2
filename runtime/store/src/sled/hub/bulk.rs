//! The hub's bulk reads and writes on sled (what [`crate::hub::HubBulk`] asks): its
//! streams, a stream's live records in feed order, and a stream's history imported as
//! it is.
//!
//! An import goes through the stream's lease like any write: each call becomes one
//! segment (or several, past [`MAX_CHANGES`]) of the changes as given, with a header
//! stamped with the import's time as time and refresh generation, checked change by
//! change against the index, written in one sled batch of the hub's tree with the
//! stream's next seq (and cursor), flushed, and only then applied to the index. It
//! must never classify a change (the kind given is the kind stored) nor write outside
//! the hub's tree.

use super::*;
use crate::StoreError;
use crate::hub::import_refusal;

/// The stream a hub key of `tag` names (see [`key`]).
fn stream_of(key: &[u8]) -> Result<StreamId, HubError> {
    let corrupt = || HubError::Corrupt("short stream key".into());
    let mut at = 1usize;
    let mut part = || -> Result<String, HubError> {
        let len = key
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(corrupt)? as usize;
        let bytes = key.get(at + 4..at + 4 + len).ok_or_else(corrupt)?;
        at += 4 + len;
        utf8(bytes)
    };
    let connection = part()?;
    let stream = part()?;
    Ok(StreamId { connection, stream })
}

impl SledHub {
    /// Every stream with a stored next seq (it committed a segment) or a cursor,
    /// sorted by connection then stream.
    pub(crate) fn streams(&self) -> Result<Vec<(String, String)>, HubError> {
        let mut out = std::collections::BTreeSet::new();
        for tag in [TAG_META, TAG_CURSOR] {
            for item in self.shared.tree.scan_prefix([tag]) {
                let (k, _) = item?;
                let id = stream_of(&k)?;
                out.insert((id.connection, id.stream));
            }
        }
        Ok(out.into_iter().collect())
    }

    /// See [`crate::hub::HubBulk::live_records`]: the feed's entries after `after`
    /// that are their record's latest change, the record live.
    pub(crate) fn live_records(
        &self,
        connection: &str,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Record>, u64), HubError> {
        let writer = self.writer(connection, stream)?;
        let entries = writer.entries();
        let end_seq = writer.next_seq();
        let start_seq = after >> INDEX_BITS;
        let skip = after & ((1 << INDEX_BITS) - 1);
        let mut out = Vec::new();
        let mut looked = 0usize;
        let mut next = after;
        for item in self
            .shared
            .tree
            .range(segment_key(&writer.segment_prefix, start_seq)..)
        {
            let (k, v) = item?;
            if !k.starts_with(&writer.segment_prefix) || looked >= limit {
                break;
            }
            let seq = seq_of(&k)?;
            if seq >= end_seq {
                break;
            }
            let seg = segment::decode(&v, false)?;
            for (idx, c) in seg.changes.iter().enumerate() {
                if seq == start_seq && (idx as u64) < skip {
                    continue;
                }
                if looked >= limit {
                    break;
                }
                looked += 1;
                next = cursor_of(seq, idx as u32);
                let Some(e) = entries.get(&c.pk_hash) else {
                    continue;
                };
                if e.deleted || e.seq != seq || e.idx != idx as u32 {
                    continue;
                }
                out.push(Record {
                    primary_key: utf8(c.pk)?,
                    version: e.version,
                    content_hash: e.content_hash,
                    source_cursor: seg.header.source_cursor.map(str::to_owned),
                    first_seen_ms: e.first_seen_ms,
                    last_seen_ms: e.last_seen_ms,
                    last_seen_generation: e.last_seen_generation,
                    data: utf8(c.record)?,
                });
            }
        }
        Ok((out, next))
    }

    /// See [`crate::hub::HubBulk::import`]; blocking (it may load the stream's index).
    pub(crate) fn import(
        &self,
        connection: &str,
        stream: &str,
        changes: &[Change],
        cursor: Option<&str>,
        time_ms: u64,
    ) -> Result<(), StoreError> {
        let mut writer = self.writer(connection, stream)?;
        let staged = writer.prepare_import(changes, time_ms).map_err(|why| {
            StoreError::Invalid(format!(
                "import into stream `{stream}` of connection `{connection}`: {why}"
            ))
        })?;
        let mut write = writer.segment_write(&staged);
        if let Some(cursor) = cursor {
            write = write.with_cursor(connection, stream, cursor);
        }
        let trees = std::slice::from_ref(&self.shared.tree);
        let mut group = Staged::new(trees);
        if let Some(hub) = group.trees_from(0).first_mut() {
            write.write(hub)?;
        }
        group.apply_to_one_tree().map_err(HubError::from)?;
        self.flush()?;
        writer.commit(staged);
        Ok(())
    }
}

impl HubWriter {
    /// Stages `changes` as they are, in segments of at most [`MAX_CHANGES`]; refuses
    /// (saying why) the first change that does not follow its record's state.
    fn prepare_import(&self, changes: &[Change], time_ms: u64) -> Result<StagedWrite, String> {
        let header = Header {
            generation: time_ms,
            time_ms,
            source_cursor: None,
        };
        let mut staged = StagedWrite {
            segments: Arc::default(),
            next_seq: self.next_seq(),
            overlay: Entries::with_capacity_and_hasher(changes.len(), Default::default()),
            live_delta: 0,
            outcome: BatchOutcome::default(),
        };
        let mut segments = Vec::new();
        for chunk in changes.chunks(MAX_CHANGES) {
            let seq = staged.next_seq;
            let bytes: usize = chunk
                .iter()
                .map(|c| c.primary_key.len() + c.data.as_ref().map_or(0, String::len) + 48)
                .sum();
            let mut seg = segment::Writer::new(&header, bytes);
            for c in chunk {
                let pk = c.primary_key.as_bytes();
                let pk_hash = record::hash128(pk);
                let prev = staged
                    .overlay
                    .get(&pk_hash)
                    .or_else(|| self.entries().get(&pk_hash))
                    .copied();
                if let Some(why) = import_refusal(prev.map(|p| (p.version, !p.deleted)), c) {
                    return Err(why);
                }
                let record = c.data.as_deref().unwrap_or_default().as_bytes();
                let content_hash = match c.kind {
                    ChangeKind::Deleted => 0,
                    ChangeKind::Created | ChangeKind::Updated => record::hash128(record),
                };
                let idx = seg.change(&StoredChange {
                    kind: c.kind,
                    version: c.version,
                    content_hash,
                    pk_hash,
                    pk,
                    record,
                });
                staged.live_delta += live_delta(prev.as_ref(), c.kind);
                let at = At {
                    seq,
                    idx,
                    generation: time_ms,
                    time_ms,
                };
                let entry = after_change(prev.as_ref(), c.kind, c.version, content_hash, at);
                staged.overlay.insert(pk_hash, entry);
                match c.kind {
                    ChangeKind::Created => staged.outcome.created += 1,
                    ChangeKind::Updated => staged.outcome.updated += 1,
                    ChangeKind::Deleted => staged.outcome.deleted += 1,
                }
            }
            segments.push((seq, seg.finish()));
            staged.next_seq += 1;
        }
        staged.segments = Arc::new(segments);
        Ok(staged)
    }
}
