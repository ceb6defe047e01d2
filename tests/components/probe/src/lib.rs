//! A boundary benchmark component: the world `sluice:probe/probe` (see
//! `wit/probe.wit`).
//!
//! Records are generated once per `(n, size)` and cached, so a call measures the
//! boundary rather than record generation: `ndjson-batch` returns a copy of the cached
//! buffer (one allocation), `string-batch` a copy of each cached string (one
//! allocation per record). The cache holds the most recent `(n, size)` only, so a
//! benchmark sweeping sizes does not accumulate memory.

use std::cell::RefCell;
use std::rc::Rc;

/// Bindings generated from `wit/probe.wit`.
#[allow(missing_docs, unsafe_code, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ world: "probe", path: "wit" });
}

/// The records of one `(n, size)`, in both shapes.
struct Records {
    /// `(n, size)` they were generated for.
    key: (u32, u32),
    /// All records as one NDJSON buffer, each line ending in `\n`.
    ndjson: Vec<u8>,
    /// The same records, one string each, without the newline.
    strings: Vec<String>,
}

thread_local! {
    /// The records of the most recent `(n, size)`.
    static CACHE: RefCell<Option<Rc<Records>>> = const { RefCell::new(None) };
}

/// The records for `(n, size)`, generated on first use.
fn records(n: u32, size: u32) -> Rc<Records> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(records) = cache.as_ref().filter(|r| r.key == (n, size)) {
            return Rc::clone(records);
        }
        let records = Rc::new(generate(n, size));
        *cache = Some(Rc::clone(&records));
        records
    })
}

/// `n` records `{"id":N,"v":"xxx…"}`, each padded to `size` bytes when it is longer
/// than the smallest such record.
fn generate(n: u32, size: u32) -> Records {
    let key = (n, size);
    let size = size as usize;
    let strings: Vec<String> = (0..n)
        .map(|id| {
            let head = format!("{{\"id\":{id},\"v\":\"");
            let pad = size.saturating_sub(head.len() + 2);
            let mut record = String::with_capacity(head.len() + pad + 2);
            record.push_str(&head);
            record.extend(std::iter::repeat_n('x', pad));
            record.push_str("\"}");
            record
        })
        .collect();
    let mut ndjson = Vec::with_capacity(strings.iter().map(|s| s.len() + 1).sum());
    for record in &strings {
        ndjson.extend_from_slice(record.as_bytes());
        ndjson.push(b'\n');
    }
    Records {
        key,
        ndjson,
        strings,
    }
}

/// The exported probe.
struct Probe;

impl bindings::Guest for Probe {
    fn noop() {}

    fn ndjson_batch(n: u32, size: u32) -> Vec<u8> {
        records(n, size).ndjson.clone()
    }

    fn string_batch(n: u32, size: u32) -> Vec<String> {
        records(n, size).strings.clone()
    }

    fn take_ndjson(records: Vec<u8>) -> u32 {
        let lines = records.iter().filter(|&&b| b == b'\n').count();
        u32::try_from(lines).unwrap_or(u32::MAX)
    }

    fn take_strings(records: Vec<String>) -> u32 {
        u32::try_from(records.len()).unwrap_or(u32::MAX)
    }
}

/// The export glue; it is generated unsafe code, like the bindings.
#[allow(unsafe_code)]
mod export {
    use super::Probe;
    crate::bindings::export!(Probe with_types_in crate::bindings);
}
