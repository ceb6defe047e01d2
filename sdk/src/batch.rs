//! A batch of records on its way to the host, serialized as NDJSON.

use crate::__private::wit;
use crate::{Error, Result};

/// Records read from a stream, with the checkpoint that resumes after them.
///
/// Records are serialized into one NDJSON buffer as they are pushed, so a batch of
/// thousands of records crosses to the host in one copy.
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    count: u32,
    checkpoint: Option<String>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `bytes` bytes of NDJSON.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// Append a record. It must serialize to a JSON object.
    pub fn push<T: serde::Serialize + ?Sized>(&mut self, record: &T) -> Result<()> {
        let start = self.buf.len();
        serde_json::to_writer(&mut self.buf, record)?;
        if self.buf.get(start) != Some(&b'{') {
            self.buf.truncate(start);
            return Err(Error::schema("a record must be a JSON object"));
        }
        self.buf.push(b'\n');
        self.count += 1;
        Ok(())
    }

    /// Append a record already serialized as one line of compact JSON (an object,
    /// without the trailing newline). The host validates every record it receives.
    pub fn push_json(&mut self, json: &[u8]) {
        self.buf.extend_from_slice(json);
        self.buf.push(b'\n');
        self.count += 1;
    }

    /// Append a record written directly into the buffer by `write`. `write` must
    /// append exactly one compact JSON object (no newline): the fastest way to emit
    /// records, for connectors that format them by hand.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.buf);
        self.buf.push(b'\n');
        self.count += 1;
    }

    /// Set the checkpoint that resumes after this batch.
    pub fn checkpoint(mut self, checkpoint: impl Into<String>) -> Self {
        self.checkpoint = Some(checkpoint.into());
        self
    }

    /// Set the checkpoint in place.
    pub fn set_checkpoint(&mut self, checkpoint: impl Into<String>) {
        self.checkpoint = Some(checkpoint.into());
    }

    /// Number of records pushed.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of NDJSON so far.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }
}

impl From<Batch> for wit::Batch {
    fn from(b: Batch) -> Self {
        wit::Batch {
            records: b.buf,
            count: b.count,
            checkpoint: b.checkpoint,
        }
    }
}
