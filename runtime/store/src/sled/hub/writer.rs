//! Writes to one stream of the hub: [`HubWriter`] holds the stream's lease and its
//! index, prepares a batch or a refresh's deletions (whole, or piece by piece from
//! [`Unseen`]) against it ([`StagedWrite`]),
//! turns that into the writes of a group ([`SegmentWrite`]), and applies it to the
//! index once the group has committed.
//!
//! It must never change the index before the group that wrote the matching segment
//! has committed, nor write outside the hub's tree.

use super::*;

#[derive(Debug)]
pub(crate) struct StagedWrite {
    pub(super) segments: Arc<Vec<(u64, Vec<u8>)>>,
    pub(super) next_seq: u64,
    pub(super) overlay: Entries,
    pub(super) live_delta: i64,
    pub(super) outcome: BatchOutcome,
}

impl StagedWrite {
    /// What the write does.
    pub(crate) fn outcome(&self) -> BatchOutcome {
        self.outcome
    }
}

/// The live records a completed refresh did not see, in the order their latest changes
/// are stored, and how many of them are prepared for deletion so far.
pub(crate) struct Unseen {
    gone: Vec<(u128, Entry)>,
    next: usize,
    generation: u64,
}

impl Unseen {
    /// Records not yet prepared for deletion.
    pub(crate) fn left(&self) -> usize {
        self.gone.len() - self.next
    }
}

/// How much one piece of a refresh's deletions may take
/// ([`HubWriter::prepare_deletions`]); a piece takes at least one record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Piece {
    /// Most records it marks deleted.
    pub(crate) records: usize,
    /// Once it has read this many bytes of stored segments to find its records'
    /// primary keys, it reads no further segment.
    pub(crate) segment_bytes: usize,
}

impl Piece {
    /// No bound: every record left.
    pub(crate) const WHOLE: Piece = Piece {
        records: usize::MAX,
        segment_bytes: usize::MAX,
    };
}

/// The exclusive lease on one stream's index. Prepare a write, put its
/// [`HubWriter::segment_write`] in a group of writes, and once that has committed apply it with
/// [`HubWriter::commit`]. Dropping the writer without committing leaves the index as it
/// was (the next lease reloads it from disk if the store moved on).
pub(crate) struct HubWriter {
    pub(super) hub: SledHub,
    pub(super) id: StreamId,
    pub(super) segment_prefix: Vec<u8>,
    pub(super) meta_key: Vec<u8>,
    pub(super) index: Option<Box<StreamIndex>>,
}

impl Drop for HubWriter {
    fn drop(&mut self) {
        let mut slots = self.hub.slots();
        match self.index.take() {
            Some(index) => slots.insert(self.id.clone(), Slot::Idle(index)),
            None => slots.remove(&self.id),
        };
        drop(slots);
        self.hub.shared.released.notify_all();
    }
}

static EMPTY: std::sync::LazyLock<Entries> = std::sync::LazyLock::new(Entries::default);

impl HubWriter {
    pub(super) fn entries(&self) -> &Entries {
        self.index.as_ref().map_or(&EMPTY, |i| &i.entries)
    }

    /// Records the stream's index holds, deleted ones included.
    pub(crate) fn indexed(&self) -> usize {
        self.entries().len()
    }

    pub(super) fn next_seq(&self) -> u64 {
        self.index.as_ref().map_or(0, |i| i.next_seq)
    }

    pub(super) fn stored_next_seq(&self) -> Result<u64, HubError> {
        match self.hub.shared.tree.get(&self.meta_key)? {
            Some(v) => decode_u64(&v),
            None => Ok(0),
        }
    }

    pub(super) fn segment(&self, seq: u64) -> Result<sled::IVec, HubError> {
        self.hub
            .shared
            .tree
            .get(segment_key(&self.segment_prefix, seq))?
            .ok_or_else(|| HubError::Corrupt(format!("segment {seq} is missing")))
    }

    pub(super) fn load(&self) -> Result<StreamIndex, HubError> {
        let mut index = StreamIndex::default();
        let stored = self.stored_next_seq()?;
        for item in self.hub.shared.tree.scan_prefix(&self.segment_prefix) {
            let (k, v) = item?;
            let seq = seq_of(&k)?;
            // A segment at or past the stored next seq was written ahead of a commit
            // that a crash stopped: it holds nothing committed.
            if seq >= stored {
                break;
            }
            index.replay(seq, &segment::decode(&v, true)?);
        }
        index.next_seq = index.next_seq.max(stored);
        Ok(index)
    }

    /// Parses and classifies a batch of NDJSON records against the index. Nothing is
    /// written; a bad record rejects the whole batch.
    pub(crate) fn prepare_batch(
        &self,
        primary_key: &[&str],
        records: &[u8],
        meta: BatchMeta<'_>,
    ) -> Result<StagedWrite, HubError> {
        let parsed = record::parse_batch(records, primary_key)?;
        if parsed.len() > MAX_CHANGES {
            return Err(HubError::BatchTooLarge {
                records: parsed.len(),
            });
        }
        let seq = self.next_seq();
        let header = Header {
            generation: meta.generation,
            time_ms: meta.time_ms,
            source_cursor: meta.source_cursor,
        };
        let mut seg = segment::Writer::new(&header, records.len() + parsed.len() * 64);
        let mut overlay = Entries::with_capacity_and_hasher(parsed.len(), Default::default());
        let mut outcome = BatchOutcome::default();
        let mut live = 0i64;
        let base = At {
            seq,
            idx: 0,
            generation: meta.generation,
            time_ms: meta.time_ms,
        };
        for r in &parsed {
            let prev = overlay
                .get(&r.pk_hash)
                .or_else(|| self.entries().get(&r.pk_hash))
                .copied();
            let kind = match prev {
                Some(p) if !p.deleted && p.content_hash == r.content_hash => {
                    outcome.unchanged += 1;
                    seg.seen(r.pk_hash);
                    overlay.insert(r.pk_hash, after_seen(&p, meta.generation, meta.time_ms));
                    continue;
                }
                Some(p) if !p.deleted => {
                    outcome.updated += 1;
                    ChangeKind::Updated
                }
                _ => {
                    outcome.created += 1;
                    ChangeKind::Created
                }
            };
            let version = prev.map_or(1, |p| p.version + 1);
            let idx = seg.change(&StoredChange {
                kind,
                version,
                content_hash: r.content_hash,
                pk_hash: r.pk_hash,
                pk: &r.pk,
                record: r.bytes,
            });
            live += live_delta(prev.as_ref(), kind);
            let entry = after_change(
                prev.as_ref(),
                kind,
                version,
                r.content_hash,
                At { idx, ..base },
            );
            overlay.insert(r.pk_hash, entry);
        }
        let segments = if parsed.is_empty() {
            Vec::new()
        } else {
            vec![(seq, seg.finish())]
        };
        Ok(StagedWrite {
            next_seq: seq + segments.len() as u64,
            segments: Arc::new(segments),
            overlay,
            live_delta: live,
            outcome,
        })
    }

    /// Prepares the deletion of every live record not seen in refresh `generation`, all
    /// in one staged write.
    pub(crate) fn prepare_refresh(
        &self,
        generation: u64,
        time_ms: u64,
    ) -> Result<StagedWrite, HubError> {
        let mut unseen = self.unseen(generation);
        self.prepare_deletions(&mut unseen, Piece::WHOLE, time_ms)
    }

    /// The live records not seen in refresh `generation`: what completing that refresh
    /// marks deleted, piece by piece with [`HubWriter::prepare_deletions`]. Valid while
    /// this writer keeps its lease.
    pub(crate) fn unseen(&self, generation: u64) -> Unseen {
        let mut gone: Vec<(u128, Entry)> = self
            .entries()
            .iter()
            .filter(|(_, e)| !e.deleted && e.last_seen_generation < generation)
            .map(|(k, e)| (*k, *e))
            .collect();
        // In the order their latest changes are stored: the records whose primary keys
        // one segment holds are next to each other, so each segment is read once.
        gone.sort_unstable_by_key(|(_, e)| (e.seq, e.idx));
        Unseen {
            gone,
            next: 0,
            generation,
        }
    }

    /// Prepares the deletion of the next records of `unseen`, as many as `piece` allows
    /// (at least one while any is left), and moves `unseen` past them: should their
    /// group of writes not commit, drop `unseen` with this writer. Reads each segment
    /// holding their primary keys once (a segment the piece ends in, once more by the
    /// next piece), so the whole refresh takes time linear in the stream's size.
    pub(crate) fn prepare_deletions(
        &self,
        unseen: &mut Unseen,
        piece: Piece,
        time_ms: u64,
    ) -> Result<StagedWrite, HubError> {
        let rest = unseen.gone.get(unseen.next..).unwrap_or_default();
        let header = Header {
            generation: unseen.generation,
            time_ms,
            source_cursor: None,
        };
        let most = piece.records.max(1);
        let mut staged = StagedWrite {
            segments: Arc::default(),
            next_seq: self.next_seq(),
            overlay: Entries::with_capacity_and_hasher(rest.len().min(most), Default::default()),
            live_delta: 0,
            outcome: BatchOutcome::default(),
        };
        let mut segments = Vec::new();
        let mut seg: Option<segment::Writer> = None;
        let mut taken = 0usize;
        let mut read = 0usize;
        for same in rest.chunk_by(|(_, a), (_, b)| a.seq == b.seq) {
            if taken >= most || (taken > 0 && read >= piece.segment_bytes) {
                break;
            }
            let Some((_, first)) = same.first() else {
                continue;
            };
            let bytes = self.segment(first.seq)?;
            read += bytes.len();
            let stored = segment::decode(&bytes, false)?;
            let same = same.get(..most - taken).unwrap_or(same);
            for (pk_hash, prev) in same {
                let pk = stored
                    .changes
                    .get(prev.idx as usize)
                    .ok_or_else(|| HubError::Corrupt("index points past its segment".into()))?
                    .pk;
                let seq = staged.next_seq;
                let writer = seg.get_or_insert_with(|| {
                    let records = (rest.len() - taken).min(most - taken).min(MAX_CHANGES);
                    segment::Writer::new(&header, records * 64)
                });
                let version = prev.version + 1;
                let idx = writer.change(&StoredChange {
                    kind: ChangeKind::Deleted,
                    version,
                    content_hash: 0,
                    pk_hash: *pk_hash,
                    pk,
                    record: &[],
                });
                if writer.changes() as usize >= MAX_CHANGES
                    && let Some(full) = seg.take()
                {
                    segments.push((seq, full.finish()));
                    staged.next_seq += 1;
                }
                let at = At {
                    seq,
                    idx,
                    generation: unseen.generation,
                    time_ms,
                };
                staged.live_delta += live_delta(Some(prev), ChangeKind::Deleted);
                staged.overlay.insert(
                    *pk_hash,
                    after_change(Some(prev), ChangeKind::Deleted, version, 0, at),
                );
                staged.outcome.deleted += 1;
                taken += 1;
            }
        }
        if let Some(last) = seg.take() {
            segments.push((staged.next_seq, last.finish()));
            staged.next_seq += 1;
        }
        unseen.next += taken;
        staged.segments = Arc::new(segments);
        Ok(staged)
    }

    /// The stored part of a staged write, owned, for a group of writes that another module
    /// runs on another thread (the log's committer). The writer keeps its lease and
    /// applies the staged write with [`HubWriter::commit`] once that has committed.
    pub(crate) fn segment_write(&self, staged: &StagedWrite) -> SegmentWrite {
        SegmentWrite {
            cursor: None,
            segment_prefix: self.segment_prefix.clone(),
            meta_key: self.meta_key.clone(),
            expected_seq: self.next_seq(),
            next_seq: staged.next_seq,
            segments: Arc::clone(&staged.segments),
        }
    }

    /// Applies a staged write to the index. Call it only after the group of writes that
    /// held its segment write has committed.
    pub(crate) fn commit(&mut self, staged: StagedWrite) -> BatchOutcome {
        let index = self.index.get_or_insert_with(Default::default);
        index.entries.extend(staged.overlay);
        index.apply_live_delta(staged.live_delta);
        index.next_seq = staged.next_seq;
        staged.outcome
    }
}

/// The segments of a staged write and where they go, owned by a hook of the log.
pub(crate) struct SegmentWrite {
    /// The stream's incremental cursor to store with the segments: (key, checkpoint).
    pub(super) cursor: Option<(Vec<u8>, Vec<u8>)>,
    pub(super) segment_prefix: Vec<u8>,
    pub(super) meta_key: Vec<u8>,
    /// The stream's next segment seq the write was prepared against.
    pub(super) expected_seq: u64,
    pub(super) next_seq: u64,
    pub(super) segments: Arc<Vec<(u64, Vec<u8>)>>,
}

impl SegmentWrite {
    /// Stores `checkpoint` as the stream's incremental cursor in the same group.
    pub(crate) fn with_cursor(mut self, connection: &str, stream: &str, checkpoint: &str) -> Self {
        let id = StreamId {
            connection: connection.to_owned(),
            stream: stream.to_owned(),
        };
        self.cursor = Some((key(TAG_CURSOR, &id), checkpoint.as_bytes().to_vec()));
        self
    }

    /// Stages the segments and the stream's next seq in the caller's group of writes,
    /// refusing with [`HubError::Stale`] if the stream moved on since it was prepared.
    /// Safe to run again when the group is staged again.
    pub(crate) fn write(&self, hub: &mut StagedTree<'_>) -> Result<(), HubError> {
        if let Some((key, checkpoint)) = &self.cursor {
            hub.insert(key.as_slice(), checkpoint.as_slice());
        }
        if self.segments.is_empty() {
            return Ok(());
        }
        let stored = match hub.get(&self.meta_key)? {
            Some(v) => decode_u64(&v)?,
            None => 0,
        };
        if stored != self.expected_seq {
            return Err(HubError::Stale);
        }
        // Segments past the stream's stored next seq are unreachable (see `load` and
        // `feed`) until the seq below moves past them: they can go ahead of the group.
        for (seq, bytes) in self.segments.iter() {
            hub.insert_ahead(segment_key(&self.segment_prefix, *seq), bytes.as_slice());
        }
        hub.insert(self.meta_key.as_slice(), self.next_seq.to_be_bytes());
        Ok(())
    }
}
