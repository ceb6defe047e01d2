//! Batches of records received from a source, and the checks that make malformed
//! output fail the call instead of reaching the hub.

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

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

    /// Check a batch a source returned: within limits, `count` lines, each a JSON
    /// object.
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
        validate_ndjson(&batch.records, batch.count)
            .map_err(|reason| HostError::MalformedOutput { call, reason })?;
        Ok(Self {
            records: batch.records,
            count: batch.count,
            checkpoint: batch.checkpoint,
        })
    }
}

/// Check that `buf` is exactly `count` lines, each a JSON object followed by `\n`.
pub fn validate_ndjson(buf: &[u8], count: u32) -> Result<(), String> {
    if buf.is_empty() {
        return if count == 0 {
            Ok(())
        } else {
            Err(format!("batch says {count} records but holds none"))
        };
    }
    if buf.last() != Some(&b'\n') {
        return Err("batch does not end with a newline".into());
    }
    let mut offset = 0usize;
    let mut seen = 0u32;
    for line in buf[..buf.len() - 1].split(|b| *b == b'\n') {
        seen += 1;
        if let Err(e) = serde_json::from_slice::<AnyObject>(line) {
            let preview = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
            return Err(format!(
                "record {seen} (byte {offset}) is not a JSON object: {e}; it starts {preview:?}"
            ));
        }
        offset += line.len() + 1;
    }
    if seen != count {
        return Err(format!("batch says {count} records but holds {seen} lines"));
    }
    Ok(())
}

/// Deserializes any JSON object without allocating for its contents.
struct AnyObject;

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(AnyObjectVisitor)
    }
}

struct AnyObjectVisitor;

impl<'de> Visitor<'de> for AnyObjectVisitor {
    type Value = AnyObject;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyObject, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(AnyObject)
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
