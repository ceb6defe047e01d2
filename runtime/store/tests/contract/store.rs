//! The writes that span the log and the hub: a batch committed with its checkpoint, a
//! stream's completion with deletion detection, a schedule's fire with its progress;
//! and the hub's reads (count, feed, records by key, cursors).

use serde_json::json;
use sluice_store::hub::{ChangeKind, HubError};
use sluice_store::log::{AttemptFailed, EventKind, FailureKind, RunCompleted, RunId, StatusKind};
use sluice_store::{BatchCommit, Store, StoreError, StreamEnd};

use crate::{Site, begun, run_id, scheduled};

async fn started(store: &Store, run: RunId) {
    store
        .log()
        .append(run, vec![scheduled("wf", "c", "t"), begun(1)])
        .await
        .unwrap();
}

fn batch(ids: std::ops::Range<u32>, checkpoint: &str, generation: u64) -> BatchCommit {
    let mut records = Vec::new();
    for id in ids {
        records.extend_from_slice(format!("{{\"id\":{id},\"name\":\"n{id}\"}}\n").as_bytes());
    }
    BatchCommit {
        connection: "c".into(),
        stream: "users".into(),
        primary_key: vec!["id".into()],
        records,
        checkpoint: checkpoint.into(),
        attempt: 1,
        generation,
        incremental: generation == 0,
    }
}

fn end(generation: u64, checkpoint: &str, completes_run: bool) -> StreamEnd {
    StreamEnd {
        connection: "c".into(),
        stream: "users".into(),
        full_refresh: true,
        generation,
        checkpoint: checkpoint.into(),
        attempt: 1,
        completes_run,
    }
}

pub async fn a_batch_and_its_checkpoint_commit_together_and_survive_a_reopen(site: &dyn Site) {
    let run = run_id(1);
    {
        let store = site.open().await;
        started(&store, run).await;
        let c = store
            .commit_batch(run, batch(0..100, "100", 7))
            .await
            .unwrap();
        assert_eq!(c.seq, 3);
        assert_eq!(c.outcome.created, 100);
        // The same batch again (a re-read after a crash) changes nothing.
        let c = store
            .commit_batch(run, batch(0..100, "100", 7))
            .await
            .unwrap();
        assert_eq!((c.outcome.created, c.outcome.unchanged), (0, 100));
    }
    let store = site.open().await;
    assert_eq!(store.hub().count("c", "users").await.unwrap(), 100);
    let state = store.log().state(run).await.unwrap();
    let p = &state.progress["users"];
    assert_eq!(p.checkpoint.as_deref(), Some("100"));
    assert_eq!(
        (p.batches, p.records, p.created, p.unchanged),
        (2, 200, 100, 100)
    );
}

pub async fn a_bad_record_rejects_the_whole_batch_and_writes_nothing(site: &dyn Site) {
    let store = site.open().await;
    let run = run_id(2);
    started(&store, run).await;
    store
        .commit_batch(run, batch(0..10, "10", 0))
        .await
        .unwrap();
    let mut bad = batch(10..20, "20", 0);
    bad.records.extend_from_slice(b"{\"name\":\"no id\"}\n");
    match store.commit_batch(run, bad).await {
        Err(StoreError::Hub(HubError::MissingPrimaryKey { index: 10, field })) => {
            assert_eq!(field, "id")
        }
        other => panic!("expected MissingPrimaryKey, got {other:?}"),
    }
    let mut not_object = batch(10..12, "12", 0);
    not_object.records.extend_from_slice(b"[1,2]\n");
    assert!(matches!(
        store.commit_batch(run, not_object).await,
        Err(StoreError::Hub(HubError::NotAnObject { index: 2 }))
    ));
    let mut malformed = batch(10..12, "12", 0);
    malformed.records.extend_from_slice(b"{\"id\": 99,\n");
    assert!(matches!(
        store.commit_batch(run, malformed).await,
        Err(StoreError::Hub(HubError::MalformedRecord { index: 2, .. }))
    ));
    let mut no_key = batch(10..12, "12", 0);
    no_key.primary_key.clear();
    assert!(matches!(
        store.commit_batch(run, no_key).await,
        Err(StoreError::Hub(HubError::NoPrimaryKey))
    ));
    assert_eq!(store.hub().count("c", "users").await.unwrap(), 10);
    let state = store.log().state(run).await.unwrap();
    assert_eq!(state.progress["users"].checkpoint.as_deref(), Some("10"));
    assert_eq!(state.progress["users"].records, 10);
    // The stream's incremental cursor moved with the committed batch only.
    assert_eq!(
        store
            .hub()
            .stream_cursor("c", "users")
            .await
            .unwrap()
            .as_deref(),
        Some("10")
    );
    // The store keeps serving: the next good batch commits.
    store
        .commit_batch(run, batch(10..20, "20", 0))
        .await
        .unwrap();
    assert_eq!(store.hub().count("c", "users").await.unwrap(), 20);
}

pub async fn a_completed_full_refresh_deletes_what_it_did_not_see(site: &dyn Site) {
    let store = site.open().await;
    let first = run_id(3);
    started(&store, first).await;
    store
        .commit_batch(first, batch(0..50, "50", 1))
        .await
        .unwrap();
    assert_eq!(
        store
            .complete_stream(first, end(1, "50", false))
            .await
            .unwrap(),
        0
    );

    let second = run_id(4);
    started(&store, second).await;
    store
        .commit_batch(second, batch(10..50, "40", 2))
        .await
        .unwrap();
    assert_eq!(
        store
            .complete_stream(second, end(2, "50", false))
            .await
            .unwrap(),
        10
    );
    assert_eq!(store.hub().count("c", "users").await.unwrap(), 40);
    let state = store.log().state(second).await.unwrap();
    assert!(state.progress["users"].complete);
    assert_eq!(state.progress["users"].deleted, 10);
    let (feed, _) = store.hub().feed("c", "users", 0, usize::MAX).await.unwrap();
    let deleted = feed
        .iter()
        .filter(|c| c.kind == ChangeKind::Deleted)
        .count();
    assert_eq!((feed.len(), deleted), (60, 10));
    // A deleted record is gone from reads by key; one seen again comes back created.
    assert_eq!(
        store.hub().get("c", "users", &[json!(3)]).await.unwrap(),
        None
    );
    let third = run_id(5);
    started(&store, third).await;
    let back = store
        .commit_batch(third, batch(0..50, "50", 3))
        .await
        .unwrap();
    assert_eq!((back.outcome.created, back.outcome.unchanged), (10, 40));
}

/// Records a refresh of `seen` after one of `all` saw every record, on a connection
/// of its own; reopens the store between them if `reopen`. Returns the deletions
/// counted and the records left.
async fn second_refresh(site: &dyn Site, all: u32, seen: u32, reopen: bool) -> (u64, u64) {
    let connection = format!("c-{all}-{seen}-{reopen}");
    let on = |mut b: BatchCommit| {
        b.connection.clone_from(&connection);
        b
    };
    let ended = |generation| StreamEnd {
        connection: connection.clone(),
        ..end(generation, "end", false)
    };
    let mut store = site.open().await;
    // Runs of their own for each call: the same sizes may be asked again.
    let tag = 2 * u8::from(reopen);
    let first = RunId::v7(1_700_000_000_000 + u64::from(all) * 10, [1 + tag; 10]);
    started(&store, first).await;
    store
        .commit_batch(first, on(batch(0..all, "all", 1)))
        .await
        .unwrap();
    store.complete_stream(first, ended(1)).await.unwrap();
    if reopen {
        drop(store);
        store = site.open().await;
    }
    let second = RunId::v7(1_700_000_000_001 + u64::from(all) * 10, [2 + tag; 10]);
    started(&store, second).await;
    if seen > 0 {
        store
            .commit_batch(second, on(batch(0..seen, "seen", 2)))
            .await
            .unwrap();
    }
    let deleted = store.complete_stream(second, ended(2)).await.unwrap();
    (
        deleted,
        store.hub().count(&connection, "users").await.unwrap(),
    )
}

/// A refresh is completed the same way whether the stream is small, large, or not
/// yet read since the store opened.
pub async fn a_refresh_deletes_the_same_whether_completed_in_place_or_not(site: &dyn Site) {
    assert_eq!(second_refresh(site, 100, 60, false).await, (40, 60));
    assert_eq!(
        second_refresh(site, 5_000, 4_000, false).await,
        (1_000, 4_000)
    );
    assert_eq!(second_refresh(site, 100, 0, true).await, (100, 0));
}

pub async fn a_refused_append_leaves_the_hub_untouched(site: &dyn Site) {
    let store = site.open().await;
    let run = run_id(5);
    started(&store, run).await;
    store
        .log()
        .append(run, vec![EventKind::RunCompleted(RunCompleted {})])
        .await
        .unwrap();
    // A batch for a run that has ended is refused, and its records do not land.
    assert!(matches!(
        store.commit_batch(run, batch(0..10, "10", 0)).await,
        Err(StoreError::Log(_))
    ));
    assert_eq!(store.hub().count("c", "users").await.unwrap(), 0);
    assert_eq!(store.hub().stream_cursor("c", "users").await.unwrap(), None);
    let other = run_id(6);
    started(&store, other).await;
    store
        .commit_batch(other, batch(0..10, "10", 0))
        .await
        .unwrap();
    assert_eq!(store.hub().count("c", "users").await.unwrap(), 10);
}

pub async fn the_last_streams_completion_completes_the_run_in_the_same_commit(site: &dyn Site) {
    let store = site.open().await;
    for (n, full_refresh) in [(5, true), (6, false)] {
        let run = run_id(n);
        started(&store, run).await;
        store
            .commit_batch(run, batch(0..5, "5", u64::from(n)))
            .await
            .unwrap();
        let end = StreamEnd {
            full_refresh,
            generation: u64::from(n),
            ..end(0, "5", true)
        };
        store.complete_stream(run, end).await.unwrap();
        let events = store.log().read(run).await.unwrap();
        let last: Vec<_> = events
            .iter()
            .rev()
            .take(2)
            .map(|e| (e.at_unix_ms, e.kind.clone()))
            .collect();
        assert!(matches!(last[0].1, EventKind::RunCompleted(_)), "{last:?}");
        assert!(
            matches!(last[1].1, EventKind::StreamCompleted(_)),
            "{last:?}"
        );
        // One append: both carry the same time.
        assert_eq!(last[0].0, last[1].0);
        let state = store.log().state(run).await.unwrap();
        assert!(state.status.kind().is_terminal(), "{:?}", state.status);
        assert!(state.progress["users"].complete);
    }
}

pub async fn an_incremental_batch_moves_the_streams_cursor(site: &dyn Site) {
    let run = run_id(7);
    {
        let store = site.open().await;
        started(&store, run).await;
        assert_eq!(store.hub().stream_cursor("c", "users").await.unwrap(), None);
        store
            .commit_batch(run, batch(0..5, "page-2", 0))
            .await
            .unwrap();
        // A full refresh's batch does not move the incremental cursor.
        store
            .commit_batch(run, batch(5..10, "refresh", 4))
            .await
            .unwrap();
    }
    let store = site.open().await;
    assert_eq!(
        store
            .hub()
            .stream_cursor("c", "users")
            .await
            .unwrap()
            .as_deref(),
        Some("page-2")
    );
    // Another stream of the connection has a cursor of its own.
    assert_eq!(
        store.hub().stream_cursor("c", "orders").await.unwrap(),
        None
    );
}

pub async fn the_feed_pages_in_commit_order_from_a_cursor(site: &dyn Site) {
    let store = site.open().await;
    let run = run_id(8);
    started(&store, run).await;
    store.commit_batch(run, batch(0..3, "a", 0)).await.unwrap();
    let mut changed = batch(1..2, "b", 0);
    changed.records = b"{\"id\":1,\"name\":\"renamed\"}\n".to_vec();
    store.commit_batch(run, changed).await.unwrap();
    store.commit_batch(run, batch(3..5, "c", 0)).await.unwrap();

    let mut seen = Vec::new();
    let mut cursor = 0;
    loop {
        let (page, next) = store.hub().feed("c", "users", cursor, 2).await.unwrap();
        if page.is_empty() {
            assert_eq!(next, cursor, "an empty page leaves the cursor");
            break;
        }
        assert!(page.len() <= 2);
        for change in page {
            assert!(change.cursor > cursor, "cursors grow");
            seen.push((change.kind, change.primary_key, change.version));
        }
        cursor = next;
    }
    let expected = [
        (ChangeKind::Created, "[0]", 1),
        (ChangeKind::Created, "[1]", 1),
        (ChangeKind::Created, "[2]", 1),
        (ChangeKind::Updated, "[1]", 2),
        (ChangeKind::Created, "[3]", 1),
        (ChangeKind::Created, "[4]", 1),
    ];
    let seen: Vec<_> = seen
        .iter()
        .map(|(k, pk, v)| (*k, pk.as_str(), *v))
        .collect();
    assert_eq!(seen, expected);
    // Reading on from the end after more commits sees only the new changes.
    store.commit_batch(run, batch(5..6, "d", 0)).await.unwrap();
    let (page, _) = store.hub().feed("c", "users", cursor, 10).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].primary_key, "[5]");
    assert!(page[0].data.as_deref().is_some_and(|d| d.contains("n5")));
}

pub async fn a_record_is_read_by_its_key_with_its_version(site: &dyn Site) {
    let store = site.open().await;
    let run = run_id(9);
    started(&store, run).await;
    let mut composite = batch(0..0, "x", 0);
    composite.primary_key = vec!["org".into(), "id".into()];
    composite.records =
        b"{\"org\":\"a\",\"id\":1,\"v\":1}\n{\"org\":\"b\",\"id\":1,\"v\":1}\n".to_vec();
    store.commit_batch(run, composite.clone()).await.unwrap();
    composite.records = b"{\"org\":\"a\",\"id\":1,\"v\":2}\n".to_vec();
    store.commit_batch(run, composite).await.unwrap();
    let hub = store.hub();
    let a = hub
        .get("c", "users", &[json!("a"), json!(1)])
        .await
        .unwrap()
        .expect("a/1 exists");
    assert_eq!(a.version, 2);
    assert_eq!(a.source_cursor.as_deref(), Some("x"));
    let data: serde_json::Value = serde_json::from_str(&a.data).unwrap();
    assert_eq!(data["v"], 2);
    let b = hub
        .get("c", "users", &[json!("b"), json!(1)])
        .await
        .unwrap()
        .expect("b/1 exists");
    assert_eq!(b.version, 1);
    assert!(b.first_seen_ms > 0 && b.last_seen_ms >= b.first_seen_ms);
    assert_eq!(
        hub.get("c", "users", &[json!("c"), json!(1)])
            .await
            .unwrap(),
        None
    );
    assert_eq!(hub.count("c", "users").await.unwrap(), 2);
    assert_eq!(hub.count("c", "nothing").await.unwrap(), 0);
}

pub async fn a_fire_and_its_document_commit_together(site: &dyn Site) {
    let run = run_id(10);
    {
        let store = site.open().await;
        store
            .append_with_document(
                run,
                1_700_000_000_010,
                vec![scheduled("wf", "c", "t")],
                "schedule",
                "wf",
                b"{\"last_fire\":1}".to_vec(),
            )
            .await
            .unwrap();
        // A refused append stores no document either.
        let refused = store
            .append_with_document(
                run,
                1_700_000_000_011,
                vec![scheduled("wf", "c", "t")],
                "schedule",
                "wf",
                b"{\"last_fire\":2}".to_vec(),
            )
            .await;
        assert!(refused.is_err(), "a second RunScheduled is refused");
    }
    let store = site.open().await;
    assert_eq!(
        store
            .catalog()
            .get("schedule", "wf")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"{\"last_fire\":1}"[..])
    );
    let state = store.log().state(run).await.unwrap();
    assert_eq!(state.workflow, "wf");
    assert_eq!(state.scheduled_at_unix_ms, 1_700_000_000_010);
}

pub async fn a_batch_or_completion_of_a_fenced_attempt_is_refused_and_writes_nothing(
    site: &dyn Site,
) {
    let store = site.open().await;
    let run = run_id(8);
    started(&store, run).await;
    store.commit_batch(run, batch(0..5, "5", 0)).await.unwrap();
    // Another node takes the run over: attempt 1 is cut off, attempt 2 begins.
    let last = store.log().summary(run).await.unwrap().unwrap().last_seq;
    let cut_off = EventKind::AttemptFailed(AttemptFailed {
        attempt: 1,
        kind: FailureKind::Orchestration,
        message: "lease expired".into(),
        retry_after_ms: 0,
    });
    store
        .log()
        .append_expecting(run, last, vec![cut_off, begun(2)])
        .await
        .unwrap();
    let before = store.log().read(run).await.unwrap();

    // The first attempt's worker wakes up mid-batch: nothing it commits lands.
    let late = store.commit_batch(run, batch(5..10, "10", 0)).await;
    assert!(
        matches!(&late, Err(StoreError::Log(e)) if e.is_fenced()),
        "{late:?}"
    );
    let end = StreamEnd {
        full_refresh: false,
        ..end(0, "10", true)
    };
    let late = store.complete_stream(run, end.clone()).await;
    assert!(
        matches!(&late, Err(StoreError::Log(e)) if e.is_fenced()),
        "{late:?}"
    );
    assert_eq!(store.hub().count("c", "users").await.unwrap(), 5);
    assert_eq!(store.log().read(run).await.unwrap(), before);

    // The attempt that holds the run commits.
    let current = BatchCommit {
        attempt: 2,
        ..batch(5..10, "10", 0)
    };
    store.commit_batch(run, current).await.unwrap();
    store
        .complete_stream(run, StreamEnd { attempt: 2, ..end })
        .await
        .unwrap();
    assert_eq!(store.hub().count("c", "users").await.unwrap(), 10);
    let state = store.log().state(run).await.unwrap();
    assert_eq!(state.status.kind(), StatusKind::Completed);
}
