//! The `rest` connector's checkpoint decoding and cursor comparison. The connector is
//! a WebAssembly component (a `cdylib`), so its module is compiled here as a plain
//! module of the host.
//!
//! Invariants: nothing panics; a checkpoint it accepts writes back to text that
//! parses to the same checkpoint; a cursor only ever moves up, and survives a
//! checkpoint without falling below the value that set it.
#![no_main]

#[allow(dead_code, missing_docs)]
#[path = "../../connectors/rest/src/checkpoint.rs"]
mod checkpoint;

use checkpoint::{Checkpoint, Cursor};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cp) = Checkpoint::parse(text) {
        round_trips(&cp);
    }
    // Cursor values as records carry them: each element of a JSON array, as its text.
    if let Ok(values) = serde_json::from_str::<Vec<&RawValue>>(text) {
        let mut cursor: Option<Cursor> = None;
        for v in values {
            let before = cursor.clone();
            if Cursor::raise(&mut cursor, v.get()).is_err() {
                continue;
            }
            if before.is_some() {
                assert!(cursor.is_some(), "a cursor went back to none");
            }
            // A read resumed from the checkpoint must not take the value that set
            // the cursor for a newer one (numbers may change form, not order).
            if let Some(c) = &cursor {
                let stored = Checkpoint {
                    url: None,
                    skip: 0,
                    cursor: Some(c.clone()),
                };
                let mut resumed = Checkpoint::parse(&stored.to_json())
                    .unwrap_or_else(|e| panic!("{stored:?} does not read back: {e:?}"))
                    .cursor;
                let was = resumed.clone();
                if Cursor::raise(&mut resumed, v.get()).is_ok() && before != cursor {
                    assert_eq!(resumed, was, "resumed cursor is below {}", v.get());
                }
            }
        }
    }
});

fn round_trips(cp: &Checkpoint) {
    let text = cp.to_json();
    let back = Checkpoint::parse(&text).unwrap_or_else(|e| {
        panic!("checkpoint {cp:?} wrote {text:?}, which does not parse: {e:?}")
    });
    assert_eq!(&back, cp, "checkpoint changed through {text:?}");
}
