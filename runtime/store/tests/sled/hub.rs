//! The sled hub's direct calls ([`SledHub`], outside a run's commits): bad input
//! rejects a whole batch, the same batch twice is unchanged, composite keys and
//! streams, the index rebuilt from disk on reopen, and a segment written ahead of a
//! commit that never landed.

use serde_json::json;
use sluice_store::hub::{BatchOutcome, HubError};
use sluice_store::sled::{BatchMeta, SledHub, layout};

use crate::open_sled;

fn meta(generation: u64) -> BatchMeta<'static> {
    BatchMeta {
        generation,
        source_cursor: Some("cursor-1"),
        time_ms: 1_700_000_000_000,
    }
}

fn hub() -> (tempfile::TempDir, SledHub) {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = SledHub::open_path(dir.path()).expect("open hub");
    (dir, hub)
}

fn assert_nothing_written(hub: &SledHub) {
    assert_eq!(hub.count("c", "s").expect("count"), 0);
    assert!(hub.feed("c", "s", 0, 10).expect("feed").0.is_empty());
}

#[test]
fn a_record_without_its_primary_key_rejects_the_batch() {
    let (_dir, hub) = hub();
    let batch = b"{\"id\":1,\"a\":1}\n\n{\"id\":2}\n{\"a\":3}\n{\"id\":4}\n";
    let err = hub
        .upsert_batch("c", "s", &["id"], batch, meta(1))
        .expect_err("batch is rejected");
    assert!(
        matches!(&err, HubError::MissingPrimaryKey { index: 2, field } if field == "id"),
        "{err}"
    );
    assert!(err.to_string().contains("record 2"), "{err}");
    assert_nothing_written(&hub);
}

#[test]
fn a_null_primary_key_counts_as_missing() {
    let (_dir, hub) = hub();
    let err = hub
        .upsert_batch(
            "c",
            "s",
            &["id", "org"],
            b"{\"id\":1,\"org\":null}",
            meta(1),
        )
        .expect_err("batch is rejected");
    assert!(
        matches!(&err, HubError::MissingPrimaryKey { index: 0, field } if field == "org"),
        "{err}"
    );
    assert_nothing_written(&hub);
}

#[test]
fn a_record_that_is_not_an_object_rejects_the_batch() {
    let (_dir, hub) = hub();
    for bad in ["[1,2]", "42", "\"id\"", "null"] {
        let batch = format!("{{\"id\":1}}\n{bad}\n");
        let err = hub
            .upsert_batch("c", "s", &["id"], batch.as_bytes(), meta(1))
            .expect_err("batch is rejected");
        assert!(
            matches!(err, HubError::NotAnObject { index: 1 }),
            "{bad}: {err}"
        );
    }
    assert_nothing_written(&hub);
}

#[test]
fn malformed_json_rejects_the_batch() {
    let (_dir, hub) = hub();
    for bad in ["{\"id\":1", "{\"id\":1} trailing", "{id:1}"] {
        let err = hub
            .upsert_batch("c", "s", &["id"], bad.as_bytes(), meta(1))
            .expect_err("batch is rejected");
        assert!(
            matches!(err, HubError::MalformedRecord { index: 0, .. }),
            "{bad}: {err}"
        );
    }
    assert_nothing_written(&hub);
}

#[test]
fn no_primary_key_fields_is_an_error() {
    let (_dir, hub) = hub();
    let err = hub
        .upsert_batch("c", "s", &[], b"{\"id\":1}", meta(1))
        .expect_err("batch is rejected");
    assert!(matches!(err, HubError::NoPrimaryKey), "{err}");
}

#[test]
fn the_same_batch_twice_is_unchanged_the_second_time() {
    let (_dir, hub) = hub();
    let batch = b"{\"id\":1,\"n\":\"a\"}\n{\"id\":2,\"n\":\"b\"}\n";
    let first = hub
        .upsert_batch("c", "s", &["id"], batch, meta(1))
        .expect("upsert");
    assert_eq!(
        first,
        BatchOutcome {
            created: 2,
            ..Default::default()
        }
    );
    let second = hub
        .upsert_batch("c", "s", &["id"], batch, meta(1))
        .expect("upsert");
    assert_eq!(
        second,
        BatchOutcome {
            unchanged: 2,
            ..Default::default()
        }
    );
    let (feed, next) = hub.feed("c", "s", 0, 100).expect("feed");
    assert_eq!(feed.len(), 2);
    assert!(hub.feed("c", "s", next, 100).expect("feed").0.is_empty());
    let rec = hub.get("c", "s", &[json!(1)]).expect("get").expect("found");
    assert_eq!(rec.version, 1);
}

#[test]
fn composite_keys_streams_and_record_fields() {
    let (_dir, hub) = hub();
    let batch = b"{\"org\":\"x\",\"id\":1,\"v\":1}\n{\"org\":\"y\",\"id\":1,\"v\":2}\n";
    let out = hub
        .upsert_batch("c", "s", &["org", "id"], batch, meta(3))
        .expect("upsert");
    assert_eq!(out.created, 2);
    let other = hub
        .upsert_batch("c", "t", &["org", "id"], batch, meta(3))
        .expect("upsert");
    assert_eq!(other.created, 2, "streams are separate");
    let rec = hub
        .get("c", "s", &[json!("y"), json!(1)])
        .expect("get")
        .expect("found");
    assert_eq!(rec.primary_key, r#"["y",1]"#);
    assert_eq!(rec.data, r#"{"org":"y","id":1,"v":2}"#);
    assert_eq!(rec.source_cursor.as_deref(), Some("cursor-1"));
    assert_eq!(rec.first_seen_ms, 1_700_000_000_000);
    assert_eq!(rec.last_seen_generation, 3);
    assert!(
        hub.get("c", "s", &[json!("z"), json!(1)])
            .expect("get")
            .is_none()
    );

    let later = BatchMeta {
        time_ms: 1_700_000_000_500,
        ..meta(4)
    };
    hub.upsert_batch("c", "s", &["org", "id"], &batch[..25], later)
        .expect("upsert");
    let rec = hub
        .get("c", "s", &[json!("x"), json!(1)])
        .expect("get")
        .expect("found");
    assert_eq!(
        (rec.first_seen_ms, rec.last_seen_ms),
        (1_700_000_000_000, 1_700_000_000_500)
    );
    assert_eq!(rec.last_seen_generation, 4);
}

#[test]
fn a_reopened_hub_rebuilds_its_index_from_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let hub = SledHub::open_path(dir.path()).expect("open");
        hub.upsert_batch(
            "c",
            "s",
            &["id"],
            b"{\"id\":1}\n{\"id\":2}\n{\"id\":3}",
            meta(1),
        )
        .expect("upsert");
        hub.upsert_batch(
            "c",
            "s",
            &["id"],
            b"{\"id\":1}\n{\"id\":2,\"x\":1}",
            meta(2),
        )
        .expect("upsert");
        hub.flush().expect("flush");
    }
    let hub = SledHub::open_path(dir.path()).expect("reopen");
    assert_eq!(hub.count("c", "s").expect("count"), 3);
    let out = hub.complete_refresh("c", "s", 2, 5).expect("complete");
    assert_eq!(out.deleted, 1, "record 3 was not seen in refresh 2");
    let out = hub
        .upsert_batch(
            "c",
            "s",
            &["id"],
            b"{\"id\":2,\"x\":1}\n{\"id\":3}",
            meta(3),
        )
        .expect("upsert");
    assert_eq!(
        out,
        BatchOutcome {
            created: 1,
            unchanged: 1,
            ..Default::default()
        }
    );
    let rec = hub
        .get("c", "s", &[json!(3)])
        .expect("get")
        .expect("found again");
    assert_eq!(rec.version, 3, "created, deleted, created again");
}

/// A batch's segment is written ahead of the commit that makes it part of the stream
/// (the stream's stored next seq). A crash in between leaves an orphan segment: it is
/// not read, not counted, and the next batch takes its place.
#[test]
fn a_segment_written_ahead_of_a_commit_that_never_landed_is_ignored() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The stream's meta key: `m`, then connection and stream, each length-prefixed.
    let meta_key = {
        let mut k = vec![layout::HUB_META];
        for part in ["c", "s"] {
            k.extend_from_slice(&(part.len() as u32).to_be_bytes());
            k.extend_from_slice(part.as_bytes());
        }
        k
    };
    {
        let hub = SledHub::open_path(dir.path()).expect("open hub");
        hub.upsert_batch("c", "s", &["id"], b"{\"id\":1}\n{\"id\":2}", meta(1))
            .expect("first batch");
        hub.upsert_batch("c", "s", &["id"], b"{\"id\":3}", meta(1))
            .expect("second batch");
        hub.flush().expect("flush");
    }
    {
        // As if the second batch's commit never landed: only its segment is there.
        let db = open_sled(dir.path());
        let tree = db.open_tree(layout::HUB).expect("hub tree");
        assert_eq!(
            tree.get(&meta_key).expect("get").as_deref(),
            Some(&2u64.to_be_bytes()[..])
        );
        tree.insert(&meta_key, &1u64.to_be_bytes()[..])
            .expect("insert");
        db.flush().expect("flush");
    }
    let hub = SledHub::open_path(dir.path()).expect("reopen hub");
    assert_eq!(hub.count("c", "s").expect("count"), 2);
    assert_eq!(hub.feed("c", "s", 0, 10).expect("feed").0.len(), 2);
    assert!(hub.get("c", "s", &[json!(3)]).expect("get").is_none());
    hub.upsert_batch("c", "s", &["id"], b"{\"id\":4}", meta(1))
        .expect("next batch");
    let feed = hub.feed("c", "s", 0, 10).expect("feed").0;
    let keys: Vec<&str> = feed.iter().map(|c| c.primary_key.as_str()).collect();
    assert_eq!(keys, vec!["[1]", "[2]", "[4]"]);
    assert_eq!(hub.count("c", "s").expect("count"), 3);
}
