//! Property tests of the hub against an in-memory model: classification of created /
//! updated / unchanged, deletion only after complete refreshes, the feed replayed from
//! the start, and the index rebuilt from disk after a reopen.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_store::hub::{BatchOutcome, ChangeKind};
use sluice_store::sled::{BatchMeta, SledHub};

#[derive(Clone, Debug)]
enum Op {
    /// Upsert records (primary key, content variant) in the current generation.
    Upsert(Vec<(u8, u8)>),
    /// Upsert the previous batch again.
    Repeat,
    /// The current refresh read everything: complete it, start the next one.
    Complete,
    /// The current refresh failed or stopped part way: start the next one without completing.
    Abandon,
    /// Close and reopen the hub (the index is rebuilt from disk).
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec((0u8..12, 0u8..3), 0..10).prop_map(Op::Upsert),
        2 => Just(Op::Repeat),
        2 => Just(Op::Complete),
        1 => Just(Op::Abandon),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Clone, Debug, PartialEq)]
struct ModelRecord {
    data: String,
    version: u64,
    deleted: bool,
    last_generation: u64,
}

#[derive(Default)]
struct Model {
    records: BTreeMap<u8, ModelRecord>,
}

fn record(pk: u8, variant: u8) -> String {
    format!(r#"{{"id":{pk},"body":"content {variant}","tag":["x",{variant}]}}"#)
}

impl Model {
    fn upsert(&mut self, batch: &[(u8, u8)], generation: u64) -> BatchOutcome {
        let mut out = BatchOutcome::default();
        for (pk, variant) in batch {
            let data = record(*pk, *variant);
            match self.records.get_mut(pk) {
                Some(r) if !r.deleted && r.data == data => {
                    out.unchanged += 1;
                    r.last_generation = r.last_generation.max(generation);
                }
                Some(r) => {
                    if r.deleted {
                        out.created += 1;
                    } else {
                        out.updated += 1;
                    }
                    r.data = data;
                    r.version += 1;
                    r.deleted = false;
                    r.last_generation = r.last_generation.max(generation);
                }
                None => {
                    out.created += 1;
                    self.records.insert(
                        *pk,
                        ModelRecord {
                            data,
                            version: 1,
                            deleted: false,
                            last_generation: generation,
                        },
                    );
                }
            }
        }
        out
    }

    fn complete(&mut self, generation: u64) -> BatchOutcome {
        let mut out = BatchOutcome::default();
        for r in self.records.values_mut() {
            if !r.deleted && r.last_generation < generation {
                r.deleted = true;
                r.version += 1;
                out.deleted += 1;
            }
        }
        out
    }
}

fn ndjson(batch: &[(u8, u8)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (pk, variant) in batch {
        out.extend_from_slice(record(*pk, *variant).as_bytes());
        out.push(b'\n');
    }
    out
}

fn pk_of(primary_key: &str) -> u8 {
    let v: Vec<Value> = serde_json::from_str(primary_key).expect("primary key is a JSON array");
    v[0].as_u64().expect("numeric key") as u8
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn hub_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut hub = SledHub::open_path(dir.path()).expect("open hub");
        let mut model = Model::default();
        let mut generation = 1u64;
        let mut last_batch: Vec<(u8, u8)> = Vec::new();
        let mut deletions_done = 0u64;
        let mut time = 1_000u64;

        for op in &ops {
            time += 1;
            let meta = BatchMeta { generation, source_cursor: Some("page"), time_ms: time };
            match op {
                Op::Upsert(_) | Op::Repeat => {
                    let batch = match op {
                        Op::Upsert(b) => b.clone(),
                        _ => last_batch.clone(),
                    };
                    let got = hub.upsert_batch("conn", "contacts", &["id"], &ndjson(&batch), meta).expect("upsert");
                    let want = model.upsert(&batch, generation);
                    prop_assert_eq!(got, want);
                    prop_assert_eq!(got.deleted, 0);
                    last_batch = batch;
                }
                Op::Complete => {
                    let got = hub.complete_refresh("conn", "contacts", generation, time).expect("complete");
                    let want = model.complete(generation);
                    prop_assert_eq!(got, want);
                    deletions_done += got.deleted;
                    // Completing the same refresh again deletes nothing more.
                    let again = hub.complete_refresh("conn", "contacts", generation, time).expect("complete again");
                    prop_assert_eq!(again, BatchOutcome::default());
                    generation += 1;
                }
                Op::Abandon => generation += 1,
                Op::Reopen => {
                    drop(hub);
                    hub = SledHub::open_path(dir.path()).expect("reopen hub");
                }
            }
        }

        // Point reads and the count agree with the model.
        let live = model.records.values().filter(|r| !r.deleted).count() as u64;
        prop_assert_eq!(hub.count("conn", "contacts").expect("count"), live);
        for pk in 0u8..12 {
            let got = hub.get("conn", "contacts", &[json!(pk)]).expect("get");
            match model.records.get(&pk) {
                Some(r) if !r.deleted => {
                    let got = got.expect("live record is found");
                    prop_assert_eq!(&got.data, &r.data);
                    prop_assert_eq!(got.version, r.version);
                    prop_assert_eq!(got.last_seen_generation, r.last_generation);
                    prop_assert_eq!(got.source_cursor.as_deref(), Some("page"));
                }
                _ => prop_assert!(got.is_none()),
            }
        }

        // The feed, replayed from the start in small pages, rebuilds the model's state.
        let mut replay: BTreeMap<u8, (Option<String>, u64)> = BTreeMap::new();
        let mut cursor = 0;
        let mut deleted_entries = 0;
        loop {
            let (page, next) = hub.feed("conn", "contacts", cursor, 5).expect("feed");
            if page.is_empty() {
                prop_assert_eq!(next, cursor);
                break;
            }
            prop_assert!(next > cursor);
            for change in page {
                prop_assert!(change.cursor > cursor);
                cursor = change.cursor;
                let pk = pk_of(&change.primary_key);
                let prev = replay.get(&pk).cloned();
                match change.kind {
                    ChangeKind::Created => prop_assert!(prev.as_ref().is_none_or(|p| p.0.is_none())),
                    ChangeKind::Updated => prop_assert!(prev.as_ref().is_some_and(|p| p.0.is_some())),
                    ChangeKind::Deleted => {
                        prop_assert!(prev.as_ref().is_some_and(|p| p.0.is_some()));
                        deleted_entries += 1;
                    }
                }
                prop_assert_eq!(change.version, prev.map_or(0, |p| p.1) + 1);
                replay.insert(pk, (change.data, change.version));
            }
        }
        prop_assert_eq!(deleted_entries, deletions_done);
        let want: BTreeMap<u8, (Option<String>, u64)> = model
            .records
            .iter()
            .map(|(pk, r)| (*pk, ((!r.deleted).then(|| r.data.clone()), r.version)))
            .collect();
        prop_assert_eq!(replay, want);
    }
}
