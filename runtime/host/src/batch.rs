//! Batches of records received from a source, and the checks that make malformed
//! output fail the call instead of reaching the hub.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::HostError;
use crate::bindings::wit;
use crate::limits::Limits;

/// A batch of records from a source: NDJSON, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// NDJSON; every line is a JSON object and ends with `\n`.
    pub records: Vec<u8>,
    /// Number of records (lines).
    pub count: u32,
    /// Where to resume after this batch once it is committed.
    pub checkpoint: Option<String>,
}

impl Batch {
    /// Each record's JSON text, without the newline.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.records
            .split(|b| *b == b'\n')
            .take(self.count as usize)
    }

    /// Check a batch a source returned: within limits (bytes, records, checkpoint,
    /// each record), `count` lines, each a JSON object of valid UTF-8.
    pub(crate) fn accept(
        call: &'static str,
        batch: wit::Batch,
        limits: &Limits,
        max_records: u32,
    ) -> Result<Self, HostError> {
        let max_records = max_records.min(limits.max_batch_records);
        let too_large = batch.records.len() > limits.max_batch_bytes;
        if too_large || batch.count > max_records {
            return Err(HostError::BatchTooLarge {
                call,
                bytes: batch.records.len(),
                records: u64::from(batch.count),
                max_bytes: limits.max_batch_bytes,
                max_records,
            });
        }
        if let Some(checkpoint) = &batch.checkpoint
            && checkpoint.len() > limits.max_checkpoint_bytes
        {
            return Err(HostError::CheckpointTooLarge {
                call,
                bytes: checkpoint.len(),
                limit: limits.max_checkpoint_bytes,
            });
        }
        validate_records(&batch.records, batch.count, limits.max_record_bytes)
            .map_err(|e| e.into_host_error(call))?;
        Ok(Self {
            records: batch.records,
            count: batch.count,
            checkpoint: batch.checkpoint,
        })
    }
}

/// Why a batch of NDJSON is refused. Records are numbered from 1 (their line in the
/// batch); offsets are bytes from the batch's start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// `count` disagrees with the lines the batch holds.
    #[error("batch says {count} records but holds {lines} lines")]
    WrongCount {
        /// What the batch says.
        count: u32,
        /// The lines it holds.
        lines: u64,
    },
    /// The last record has no newline.
    #[error("batch does not end with a newline")]
    NoFinalNewline,
    /// A record holds bytes that are not UTF-8.
    #[error(
        "record {record} (line {record}, byte {offset}) is not valid UTF-8: {reason} at byte {at} of the batch"
    )]
    NotUtf8 {
        /// The record's line.
        record: u64,
        /// Where the record starts.
        offset: usize,
        /// Where the first invalid byte is.
        at: usize,
        /// What is wrong there.
        reason: &'static str,
    },
    /// A record is not a JSON object.
    #[error(
        "record {record} (line {record}, byte {offset}) is not a JSON object: {detail}; it starts {preview:?}"
    )]
    NotAnObject {
        /// The record's line.
        record: u64,
        /// Where the record starts.
        offset: usize,
        /// The parser's message.
        detail: String,
        /// The record's first bytes.
        preview: String,
    },
    /// A record is larger than `max_record_bytes`.
    #[error(
        "record {record} (line {record}, byte {offset}) is {bytes} bytes; the limit (max_record_bytes) is {limit} bytes"
    )]
    RecordTooLarge {
        /// The record's line.
        record: u64,
        /// Where the record starts.
        offset: usize,
        /// Its bytes, without the newline.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

impl BatchError {
    /// The host error of `call` this refusal is.
    pub(crate) fn into_host_error(self, call: &'static str) -> HostError {
        match self {
            BatchError::RecordTooLarge {
                record,
                offset,
                bytes,
                limit,
            } => HostError::RecordTooLarge {
                call,
                record,
                offset,
                bytes,
                limit,
            },
            other => HostError::MalformedOutput {
                call,
                reason: other.to_string(),
            },
        }
    }
}

/// Bytes of a bad record quoted in its error.
const PREVIEW_BYTES: usize = 80;

/// Check that `buf` is exactly `count` lines, each a JSON object followed by `\n`,
/// with the default record limit ([`Limits::max_record_bytes`]).
pub fn validate_ndjson(buf: &[u8], count: u32) -> Result<(), String> {
    validate_records(buf, count, Limits::default().max_record_bytes).map_err(|e| e.to_string())
}

/// Check that `buf` is exactly `count` lines, each a JSON object of valid UTF-8 of at
/// most `max_record_bytes`, followed by `\n`. What passes can be stored and read back
/// as text.
pub fn validate_records(buf: &[u8], count: u32, max_record_bytes: usize) -> Result<(), BatchError> {
    if buf.is_empty() {
        return if count == 0 {
            Ok(())
        } else {
            Err(BatchError::WrongCount { count, lines: 0 })
        };
    }
    if buf.last() != Some(&b'\n') {
        return Err(BatchError::NoFinalNewline);
    }
    // One pass over the whole batch (vectorised in std) costs less than one per line.
    let text = std::str::from_utf8(buf).map_err(|e| not_utf8(buf, &e))?;
    let mut offset = 0usize;
    let mut seen = 0u64;
    for line in text[..text.len() - 1].split('\n') {
        seen += 1;
        if line.len() > max_record_bytes {
            return Err(BatchError::RecordTooLarge {
                record: seen,
                offset,
                bytes: line.len(),
                limit: max_record_bytes,
            });
        }
        // Every string is decoded (an escape may spell what is not text: a lone
        // surrogate, `\ud800`) and every number read (`1e400` is JSON no reader can
        // hold): what the hub keeps, every reader can give back.
        if let Err(e) = serde_json::from_str::<StrictObject>(line) {
            let preview = &line[..line.floor_char_boundary(PREVIEW_BYTES)];
            return Err(BatchError::NotAnObject {
                record: seen,
                offset,
                detail: e.to_string(),
                preview: preview.to_owned(),
            });
        }
        offset += line.len() + 1;
    }
    if seen != u64::from(count) {
        return Err(BatchError::WrongCount { count, lines: seen });
    }
    Ok(())
}

/// The record holding the first invalid byte of `buf`, named.
fn not_utf8(buf: &[u8], e: &std::str::Utf8Error) -> BatchError {
    let at = e.valid_up_to();
    let before = &buf[..at];
    let record = before.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    let offset = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let reason = if e.error_len().is_some() {
        "invalid byte sequence"
    } else {
        "incomplete character"
    };
    BatchError::NotUtf8 {
        record,
        offset,
        at,
        reason,
    }
}

/// Deserializes any JSON object, decoding every string (keys too) and reading every
/// number, so that an escape that is not text (a lone surrogate) or a number out of
/// range is refused.
struct StrictObject;

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(StrictVisitor).map(|_| StrictObject)
    }
}

/// Any JSON value, every string of it decoded and dropped.
struct Strict;

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON whose strings are text")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        while seq.next_element::<Strict>()?.is_some() {}
        Ok(Strict)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        while map.next_entry::<Strict, Strict>()?.is_some() {}
        Ok(Strict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_objects_and_counts() {
        assert!(validate_ndjson(b"{\"a\":1}\n{}\n", 2).is_ok());
        assert!(validate_ndjson(b"", 0).is_ok());
    }

    #[test]
    fn names_a_record_that_is_not_utf8_by_line_and_offset() {
        let buf = b"{\"a\":1}\n{\"id\":2,\"v\":\"\xff\xfe\"}\n{}\n";
        let e = validate_records(buf, 3, 1 << 20).unwrap_err();
        assert_eq!(
            e,
            BatchError::NotUtf8 {
                record: 2,
                offset: 8,
                at: 21,
                reason: "invalid byte sequence"
            }
        );
        let text = e.to_string();
        assert!(
            text.contains("record 2 (line 2, byte 8)") && text.contains("UTF-8"),
            "{text}"
        );
        // A character cut at the end of a record, and in the first record.
        let e = validate_records(b"{\"v\":\"\xc3\"}\n", 1, 1 << 20).unwrap_err();
        assert!(
            matches!(
                e,
                BatchError::NotUtf8 {
                    record: 1,
                    offset: 0,
                    ..
                }
            ),
            "{e:?}"
        );
        // Valid multi-byte text passes.
        assert!(validate_records("{\"v\":\"é✓\"}\n".as_bytes(), 1, 1 << 20).is_ok());
    }

    #[test]
    fn refuses_a_record_past_the_limit_naming_it() {
        let buf = b"{\"a\":1}\n{\"a\":\"0123456789\"}\n";
        assert!(validate_records(buf, 2, 18).is_ok());
        let e = validate_records(buf, 2, 17).unwrap_err();
        assert_eq!(
            e,
            BatchError::RecordTooLarge {
                record: 2,
                offset: 8,
                bytes: 18,
                limit: 17
            }
        );
        assert!(e.to_string().contains("max_record_bytes"), "{e}");
        assert!(matches!(
            e.into_host_error("x"),
            HostError::RecordTooLarge { record: 2, .. }
        ));
    }

    #[test]
    fn refuses_a_number_no_reader_can_hold() {
        for record in [&b"{\"id\":25505555555555E5555}\n"[..], b"{\"a\":[1e400]}\n"] {
            let e = validate_records(record, 1, 1 << 20)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("record 1") && e.contains("number out of range"),
                "{e}"
            );
        }
        assert!(validate_records(b"{\"a\":1e300,\"b\":-0.5e-400}\n", 1, 1 << 20).is_ok());
    }

    #[test]
    fn refuses_an_escape_that_is_not_text() {
        let e = validate_records(b"{}\n{\"v\":\"\\ud800\"}\n", 2, 1 << 20).unwrap_err();
        assert!(
            matches!(
                &e,
                BatchError::NotAnObject {
                    record: 2,
                    offset: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        // In a key too, and deep inside.
        assert!(validate_records(b"{\"\\udc00\":1}\n", 1, 1 << 20).is_err());
        assert!(validate_records(b"{\"a\":[{\"b\":\"\\ud800x\"}]}\n", 1, 1 << 20).is_err());
        // Escapes that are text pass: a pair, and others.
        let ok = b"{\"v\":\"\\ud83d\\ude00 \\u00e9 \\n\",\"n\":[1,-2,3.5,null,true]}\n";
        assert!(validate_records(ok, 1, 1 << 20).is_ok());
    }

    #[test]
    fn names_the_bad_record() {
        let e = validate_ndjson(b"{\"a\":1}\n{\"id\": 2, \"v\":\n", 2).unwrap_err();
        assert!(e.contains("record 2"), "{e}");
        let e = validate_ndjson(b"[1,2]\n", 1).unwrap_err();
        assert!(e.contains("record 1") && e.contains("JSON object"), "{e}");
        assert!(
            validate_ndjson(b"{}\n{}\n", 3)
                .unwrap_err()
                .contains("says 3")
        );
        assert!(validate_ndjson(b"{}", 1).unwrap_err().contains("newline"));
    }
}
