//! Definition JSON as the node accepts it: a document of connections and workflows
//! (`sluice apply`, `Definitions::from_json`), and one connection or workflow as the
//! API's `PutConnection` / `PutWorkflow` read it (serde, then `validate`).
//!
//! Invariants: nothing panics; an accepted definition survives the catalog's round
//! trip (stored as JSON, read back equal but for a float's last bit), so a stored
//! definition can always be read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sluice_engine::{ConnectionDef, Definitions, WorkflowDef};

fuzz_target!(|data: &[u8]| {
    // The API's definition_json is a protobuf string: always UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(defs) = Definitions::from_json(text) {
        defs.connections.iter().for_each(use_connection);
        for w in &defs.workflows {
            assert_round_trips(w);
        }
    }
    if let Ok(c) = serde_json::from_str::<ConnectionDef>(text)
        && c.validate("").is_ok()
    {
        use_connection(&c);
    }
    if let Ok(w) = serde_json::from_str::<WorkflowDef>(text)
        && w.validate("").is_ok()
    {
        assert_round_trips(&w);
        if let Some(s) = w.streams.first() {
            assert!(w.stream(&s.name).is_some());
        }
    }
});

/// What the engine does with a connection once it is accepted.
fn use_connection(c: &ConnectionDef) {
    assert_round_trips(c);
    let config = c.effective_config();
    assert!(config.is_object(), "effective config of {c:?} is {config}");
    let _ = c.secret_values();
    let credential = c.credential();
    assert!(!credential.is_empty() || c.rate_limits.credential.is_some());
    let _ = c.rate_scope(&c.rate_limits.rules, 0);
}

fn assert_round_trips<T: Serialize + DeserializeOwned + std::fmt::Debug>(def: &T) {
    let stored = serde_json::to_vec(def).expect("an accepted definition serializes");
    let back: T = serde_json::from_slice(&stored).unwrap_or_else(|e| {
        panic!(
            "stored definition does not read back: {e}: {}",
            String::from_utf8_lossy(&stored)
        )
    });
    let (a, b) = (to_value(def), to_value(&back));
    assert!(
        same(&a, &b),
        "definition changed through the catalog: {a} became {b}"
    );
}

fn to_value<T: Serialize>(def: &T) -> Value {
    serde_json::to_value(def).expect("an accepted definition serializes")
}

/// Equal, but for the last bits of floats: serde_json (without its `float_roundtrip`
/// feature) may read a float it wrote one unit in the last place off.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-15,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
