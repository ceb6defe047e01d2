//! NDJSON batch validation (`sluice_host::validate_ndjson`), the gate between a
//! connector's output and the hub.
//!
//! Invariants: nothing panics; an accepted batch is exactly `count` lines, each a
//! JSON object of valid UTF-8 that serde_json parses (so the hub can give back
//! whatever it stored); a wrong count is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

use serde_json::value::RawValue;
use sluice_host::{Batch, validate_ndjson};

fuzz_target!(|data: &[u8]| {
    let lines = data.iter().filter(|b| **b == b'\n').count();
    let Ok(count) = u32::try_from(lines) else {
        return;
    };
    match validate_ndjson(data, count) {
        Ok(()) => check_accepted(data, count),
        Err(reason) => assert!(!reason.is_empty()),
    }
    // The same bytes with any other count are never accepted.
    for wrong in [count.wrapping_add(1), count.wrapping_sub(1)] {
        if wrong != count {
            assert!(
                validate_ndjson(data, wrong).is_err(),
                "accepted {wrong} records for {count} lines: {:?}",
                String::from_utf8_lossy(data)
            );
        }
    }
});

fn check_accepted(data: &[u8], count: u32) {
    assert!(data.is_empty() || data.ends_with(b"\n"));
    let batch = Batch {
        records: data.to_vec(),
        count,
        checkpoint: None,
    };
    let mut seen = 0u32;
    for line in batch.lines() {
        seen += 1;
        let text = std::str::from_utf8(line)
            .unwrap_or_else(|e| panic!("accepted record {seen} is not UTF-8: {e}"));
        let object: Result<BTreeMap<String, Box<RawValue>>, _> = serde_json::from_str(text);
        assert!(
            object.is_ok(),
            "accepted record {seen} is not a JSON object: {object:?}: {text:?}"
        );
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) => assert!(value.is_object(), "accepted record {seen} is {value}"),
            Err(e) => panic!("accepted record {seen} does not parse: {e}: {text:?}"),
        }
    }
    assert_eq!(seen, count);
}
