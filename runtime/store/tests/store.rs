//! The store's atomic commit of a batch with its checkpoint, and stream completion with
//! deletion detection, seen through the log, the hub and a reopen.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test"
)]

use sluice_store::hub::{ChangeKind, HubError};
use sluice_store::log::{EventKind, RunId, v1};
use sluice_store::{BatchCommit, Store, StoreError, StreamEnd};

fn run_id(n: u8) -> RunId {
    RunId::v7(1_700_000_000_000 + u64::from(n), [n; 10])
}

async fn scheduled(store: &Store, run: RunId) {
    store
        .log()
        .append(
            run,
            vec![
                EventKind::RunScheduled(v1::RunScheduled {
                    workflow: "wf".into(),
                    connection: "c".into(),
                    tenant: "t".into(),
                    priority: 0,
                    streams: vec!["users".into()],
                    trigger: v1::Trigger::Manual as i32,
                    fire_at_unix_ms: 0,
                }),
                EventKind::AttemptBegun(v1::AttemptBegun {
                    attempt: 1,
                    ..Default::default()
                }),
            ],
        )
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

#[tokio::test]
async fn a_batch_and_its_checkpoint_commit_together_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_id(1);
    {
        let store = Store::open(dir.path()).unwrap();
        scheduled(&store, run).await;
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
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.hub().count("c", "users").unwrap(), 100);
    let state = store.log().state(run).await.unwrap();
    let p = &state.progress["users"];
    assert_eq!(p.checkpoint.as_deref(), Some("100"));
    assert_eq!(
        (p.batches, p.records, p.created, p.unchanged),
        (2, 200, 100, 100)
    );
}

#[tokio::test]
async fn a_bad_record_rejects_the_whole_batch_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let run = run_id(2);
    scheduled(&store, run).await;
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
    assert_eq!(store.hub().count("c", "users").unwrap(), 10);
    let state = store.log().state(run).await.unwrap();
    assert_eq!(state.progress["users"].checkpoint.as_deref(), Some("10"));
    // The stream's incremental cursor moved with the committed batch only.
    assert_eq!(
        store.hub().stream_cursor("c", "users").unwrap().as_deref(),
        Some("10")
    );
    assert_eq!(state.progress["users"].records, 10);
    // The store keeps serving: the next good batch commits.
    store
        .commit_batch(run, batch(10..20, "20", 0))
        .await
        .unwrap();
    assert_eq!(store.hub().count("c", "users").unwrap(), 20);
}

#[tokio::test]
async fn a_completed_full_refresh_deletes_what_it_did_not_see() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = run_id(3);
    scheduled(&store, first).await;
    store
        .commit_batch(first, batch(0..50, "50", 1))
        .await
        .unwrap();
    let end = |generation| StreamEnd {
        connection: "c".into(),
        stream: "users".into(),
        full_refresh: true,
        generation,
        checkpoint: "50".into(),
        attempt: 1,
        completes_run: false,
    };
    assert_eq!(store.complete_stream(first, end(1)).await.unwrap(), 0);

    let second = run_id(4);
    scheduled(&store, second).await;
    store
        .commit_batch(second, batch(10..50, "40", 2))
        .await
        .unwrap();
    assert_eq!(store.complete_stream(second, end(2)).await.unwrap(), 10);
    assert_eq!(store.hub().count("c", "users").unwrap(), 40);
    let state = store.log().state(second).await.unwrap();
    assert!(state.progress["users"].complete);
    assert_eq!(state.progress["users"].deleted, 10);
    let (feed, _) = store.hub().feed("c", "users", 0, usize::MAX).unwrap();
    let deleted = feed
        .iter()
        .filter(|c| c.kind == ChangeKind::Deleted)
        .count();
    assert_eq!((feed.len(), deleted), (60, 10));
}

/// Records a refresh of `seen` after one of `all` saw every record; reopens the store
/// between them if `reopen` (the stream's index is then not in memory). Returns the
/// deletions counted and the records left.
async fn second_refresh(all: u32, seen: u32, reopen: bool) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let end = |generation| StreamEnd {
        connection: "c".into(),
        stream: "users".into(),
        full_refresh: true,
        generation,
        checkpoint: "end".into(),
        attempt: 1,
        completes_run: false,
    };
    let mut store = Store::open(dir.path()).unwrap();
    let first = run_id(5);
    scheduled(&store, first).await;
    store
        .commit_batch(first, batch(0..all, "all", 1))
        .await
        .unwrap();
    store.complete_stream(first, end(1)).await.unwrap();
    if reopen {
        drop(store);
        store = Store::open(dir.path()).unwrap();
    }
    let second = run_id(6);
    scheduled(&store, second).await;
    if seen > 0 {
        store
            .commit_batch(second, batch(0..seen, "seen", 2))
            .await
            .unwrap();
    }
    let deleted = store.complete_stream(second, end(2)).await.unwrap();
    (deleted, store.hub().count("c", "users").unwrap())
}

/// A refresh is completed the same way whether the stream is small and its index in
/// memory (looked through in place), too big for that, or not loaded yet (both on a
/// blocking thread).
#[tokio::test]
async fn a_refresh_deletes_the_same_whether_completed_in_place_or_not() {
    assert_eq!(second_refresh(100, 60, false).await, (40, 60));
    assert_eq!(second_refresh(5_000, 4_000, false).await, (1_000, 4_000));
    assert_eq!(second_refresh(100, 0, true).await, (100, 0));
}

#[tokio::test]
async fn a_refused_append_leaves_the_hub_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let run = run_id(5);
    scheduled(&store, run).await;
    store
        .log()
        .append(run, vec![EventKind::RunCompleted(v1::RunCompleted {})])
        .await
        .unwrap();
    // A batch for a run that has ended is refused, and its records do not land.
    assert!(matches!(
        store.commit_batch(run, batch(0..10, "10", 0)).await,
        Err(StoreError::Log(_))
    ));
    assert_eq!(store.hub().count("c", "users").unwrap(), 0);
    let other = run_id(6);
    scheduled(&store, other).await;
    store
        .commit_batch(other, batch(0..10, "10", 0))
        .await
        .unwrap();
    assert_eq!(store.hub().count("c", "users").unwrap(), 10);
}

#[tokio::test]
async fn the_last_streams_completion_completes_the_run_in_the_same_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for (n, full_refresh) in [(5, true), (6, false)] {
        let run = run_id(n);
        scheduled(&store, run).await;
        store
            .commit_batch(run, batch(0..5, "5", u64::from(n)))
            .await
            .unwrap();
        let end = StreamEnd {
            connection: "c".into(),
            stream: "users".into(),
            full_refresh,
            generation: u64::from(n),
            checkpoint: "5".into(),
            attempt: 1,
            completes_run: true,
        };
        store.complete_stream(run, end).await.unwrap();
        let events = store.log().read(run).await.unwrap();
        let last: Vec<_> = events
            .iter()
            .rev()
            .take(2)
            .map(|e| (e.at_unix_ms, e.kind.clone()))
            .collect();
        assert!(
            matches!(last[0].1, Some(EventKind::RunCompleted(_))),
            "{last:?}"
        );
        assert!(
            matches!(last[1].1, Some(EventKind::StreamCompleted(_))),
            "{last:?}"
        );
        // One append: both carry the same time.
        assert_eq!(last[0].0, last[1].0);
        let state = store.log().state(run).await.unwrap();
        assert!(state.status.kind().is_terminal(), "{:?}", state.status);
        assert!(state.progress["users"].complete);
    }
}
