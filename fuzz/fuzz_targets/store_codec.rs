//! The store's decoding of what it reads back from disk: run events (alone or in a
//! batch), run summaries, write-ahead groups, and the hub's segments of records.
//!
//! Invariants: arbitrary bytes give an error, never a panic; an event that decodes
//! encodes and decodes again to the same event; folding decoded events into a run's
//! state (as `runs get` does) never panics.
//!
//! The first byte picks the record kind, the rest is the stored value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sluice_store::codec::{event_from_wire, event_to_wire, summary_from_wire, v1};
use sluice_store::{RunEvent, RunId};

// The hub's segment layout is private to the store; its module is compiled here as
// it is there, beside the two types it takes from its parent.
use sluice_store::hub::{ChangeKind, HubError};

#[allow(dead_code, missing_docs)]
#[path = "../../runtime/store/src/sled/hub/segment.rs"]
mod segment;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 5 {
        0 => {
            if let Ok(wire) = v1::RunEvent::decode(bytes) {
                events(vec![wire]);
            }
        }
        1 => {
            if let Ok(batch) = v1::StoredEventBatch::decode(bytes) {
                events(batch.events);
            }
        }
        2 => {
            if let Ok(stored) = v1::StoredRunSummary::decode(bytes) {
                let run = RunId([7; 16]);
                if let Some(summary) = summary_from_wire(run, stored.clone()) {
                    assert_eq!(summary.run_id, run);
                }
                events(stored.recent);
            }
        }
        3 => {
            let _ = v1::StoredWriteGroup::decode(bytes);
        }
        _ => {
            for with_seen in [false, true] {
                if let Ok(segment) = segment::decode(bytes, with_seen) {
                    for change in &segment.changes {
                        assert!(change.pk.len() <= bytes.len());
                        assert!(change.record.len() <= bytes.len());
                    }
                }
            }
        }
    }
});

/// Decodes stored events as the log does (each must belong to its run), checks that
/// each survives a write and a read, and folds them.
fn events(wire: Vec<v1::RunEvent>) {
    let mut decoded: Vec<RunEvent> = Vec::new();
    for w in wire {
        let Some(run) = RunId::from_slice(&w.run_id) else {
            assert!(
                event_from_wire(RunId([0; 16]), w).is_err(),
                "an event of no run read"
            );
            continue;
        };
        let Ok(event) = event_from_wire(run, w) else {
            continue;
        };
        let again = event_from_wire(run, event_to_wire(&event))
            .unwrap_or_else(|e| panic!("{event:?} does not read back: {e}"));
        assert_eq!(again, event, "event changed through a write and a read");
        decoded.push(event);
    }
    let _ = sluice_model::fold::fold(&decoded);
}
