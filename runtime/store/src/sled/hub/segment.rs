//! The on-disk form of a segment: one sled value per batch (or per completed refresh)
//! holding that batch's changes and the keys it saw unchanged.
//!
//! Owns the byte layout; never decides what a change is.
//!
//! Layout (integers big-endian):
//! `format u8 = 1 | generation u64 | time_ms u64 | has_cursor u8 | cursor_len u32 | cursor |
//! changes u32 | change* | seen u32 | pk_hash u128 *`, where a change is
//! `kind u8 | version u64 | content_hash u128 | pk_hash u128 | pk_len u32 | pk |
//! record_len u32 | record`.

use super::{ChangeKind, HubError};

const FORMAT: u8 = 1;

/// The header of a segment.
pub(super) struct Header<'a> {
    pub(super) generation: u64,
    pub(super) time_ms: u64,
    pub(super) source_cursor: Option<&'a str>,
}

/// One change as stored in a segment.
pub(super) struct StoredChange<'a> {
    pub(super) kind: ChangeKind,
    pub(super) version: u64,
    pub(super) content_hash: u128,
    pub(super) pk_hash: u128,
    pub(super) pk: &'a [u8],
    pub(super) record: &'a [u8],
}

/// Builds a segment.
pub(super) struct Writer {
    buf: Vec<u8>,
    changes: u32,
    seen: Vec<u8>,
    seen_count: u32,
    changes_at: usize,
}

impl Writer {
    pub(super) fn new(header: &Header<'_>, capacity: usize) -> Writer {
        let mut buf = Vec::with_capacity(capacity + 64);
        buf.push(FORMAT);
        buf.extend_from_slice(&header.generation.to_be_bytes());
        buf.extend_from_slice(&header.time_ms.to_be_bytes());
        let cursor = header.source_cursor.unwrap_or("");
        buf.push(u8::from(header.source_cursor.is_some()));
        put_bytes(&mut buf, cursor.as_bytes());
        let changes_at = buf.len();
        buf.extend_from_slice(&0u32.to_be_bytes());
        Writer {
            buf,
            changes: 0,
            seen: Vec::new(),
            seen_count: 0,
            changes_at,
        }
    }

    /// Appends a change; returns its index in the segment.
    pub(super) fn change(&mut self, c: &StoredChange<'_>) -> u32 {
        self.buf.push(kind_byte(c.kind));
        self.buf.extend_from_slice(&c.version.to_be_bytes());
        self.buf.extend_from_slice(&c.content_hash.to_be_bytes());
        self.buf.extend_from_slice(&c.pk_hash.to_be_bytes());
        put_bytes(&mut self.buf, c.pk);
        put_bytes(&mut self.buf, c.record);
        self.changes += 1;
        self.changes - 1
    }

    /// Records that a key was seen unchanged.
    pub(super) fn seen(&mut self, pk_hash: u128) {
        self.seen.extend_from_slice(&pk_hash.to_be_bytes());
        self.seen_count += 1;
    }

    pub(super) fn changes(&self) -> u32 {
        self.changes
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        self.buf[self.changes_at..self.changes_at + 4].copy_from_slice(&self.changes.to_be_bytes());
        self.buf.extend_from_slice(&self.seen_count.to_be_bytes());
        self.buf.extend_from_slice(&self.seen);
        self.buf
    }
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths are bounded by the batch size check in the caller; records over 4 GiB
    // cannot arrive in one batch.
    buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    buf.extend_from_slice(bytes);
}

fn kind_byte(kind: ChangeKind) -> u8 {
    match kind {
        ChangeKind::Created => 0,
        ChangeKind::Updated => 1,
        ChangeKind::Deleted => 2,
    }
}

/// A decoded segment borrowing from its bytes.
pub(super) struct Segment<'a> {
    pub(super) header: Header<'a>,
    pub(super) changes: Vec<StoredChange<'a>>,
    pub(super) seen: Vec<u128>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HubError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| HubError::Corrupt("segment ends early".into()))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, HubError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], HubError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32, HubError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, HubError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn u128(&mut self) -> Result<u128, HubError> {
        Ok(u128::from_be_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], HubError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Decodes a segment; `with_seen` also decodes the unchanged keys.
pub(super) fn decode(bytes: &[u8], with_seen: bool) -> Result<Segment<'_>, HubError> {
    let mut r = Reader { bytes, at: 0 };
    let format = r.u8()?;
    if format != FORMAT {
        return Err(HubError::Corrupt(format!(
            "unknown segment format {format}"
        )));
    }
    let generation = r.u64()?;
    let time_ms = r.u64()?;
    let has_cursor = r.u8()? != 0;
    let cursor = std::str::from_utf8(r.bytes()?)
        .map_err(|_| HubError::Corrupt("source cursor is not UTF-8".into()))?;
    let count = r.u32()? as usize;
    let mut changes = Vec::with_capacity(count.min(bytes.len() / 45));
    for _ in 0..count {
        let kind = match r.u8()? {
            0 => ChangeKind::Created,
            1 => ChangeKind::Updated,
            2 => ChangeKind::Deleted,
            k => return Err(HubError::Corrupt(format!("unknown change kind {k}"))),
        };
        changes.push(StoredChange {
            kind,
            version: r.u64()?,
            content_hash: r.u128()?,
            pk_hash: r.u128()?,
            pk: r.bytes()?,
            record: r.bytes()?,
        });
    }
    let mut seen = Vec::new();
    if with_seen {
        let n = r.u32()? as usize;
        seen.reserve(n.min(bytes.len() / 16));
        for _ in 0..n {
            seen.push(r.u128()?);
        }
        if r.at != bytes.len() {
            return Err(HubError::Corrupt("trailing bytes after segment".into()));
        }
    }
    Ok(Segment {
        header: Header {
            generation,
            time_ms,
            source_cursor: has_cursor.then_some(cursor),
        },
        changes,
        seen,
    })
}
