//! The sled-backed log: round trips, group commit, reopen, corruption, unknown
//! events, index queries and in-flight recovery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/support/sled_files.rs"]
mod common;

use prost::Message;
use sluice_store::log::{
    EventKind, EventLog, FoldError, LogConfig, LogError, RunFilter, RunId, RunStatus, StatusKind,
    v1,
};

/// Opens a log that stores every group's events under keys of their own at once (none
/// in run summaries), for tests of that layout.
fn open_keyed(dir: &std::path::Path) -> EventLog {
    let config = LogConfig {
        recent_events: 0,
        ..LogConfig::default()
    };
    EventLog::open_with(dir, config).unwrap()
}

/// Leaves at `dir` a closed log holding run 1 with `RunScheduled` and `AttemptBegun`,
/// under keys of their own.
async fn closed_log_with_one_run(dir: &std::path::Path) -> RunId {
    let r = run_id(1);
    let log = open_keyed(dir);
    log.append(r, vec![scheduled("wf", "c", "t"), begun(1)])
        .await
        .unwrap();
    r
}

/// The `events` key of a single event.
fn event_key(run: RunId, seq: u64) -> Vec<u8> {
    let mut key = run.0.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn run_id(n: u8) -> RunId {
    RunId::v7(1_700_000_000_000 + u64::from(n), [n; 10])
}

fn scheduled(workflow: &str, connection: &str, tenant: &str) -> EventKind {
    EventKind::RunScheduled(v1::RunScheduled {
        workflow: workflow.into(),
        connection: connection.into(),
        tenant: tenant.into(),
        priority: 1,
        streams: vec!["users".into(), "orders".into()],
        trigger: v1::Trigger::Manual as i32,
        fire_at_unix_ms: 0,
    })
}

fn checkpoint(stream: &str, cp: &str, records: u64) -> EventKind {
    EventKind::CheckpointCommitted(v1::CheckpointCommitted {
        stream: stream.into(),
        checkpoint: cp.into(),
        records,
        bytes: records * 200,
        created: records,
        updated: 0,
        unchanged: 0,
        attempt: 1,
        deleted: 0,
    })
}

fn begun(attempt: u32) -> EventKind {
    EventKind::AttemptBegun(v1::AttemptBegun {
        attempt,
        ..Default::default()
    })
}

#[tokio::test]
async fn append_read_fold_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let r = run_id(1);
    let seqs = log
        .append_at(r, 100, vec![scheduled("wf", "c", "t"), begun(1)])
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2]);
    let seqs = log
        .append_at(
            r,
            200,
            vec![checkpoint("users", "u1", 10), checkpoint("users", "u2", 5)],
        )
        .await
        .unwrap();
    assert_eq!(seqs, vec![3, 4]);

    let events = log.read(r).await.unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[2].at_unix_ms, 200);
    let state = log.state(r).await.unwrap();
    assert_eq!(state.status, RunStatus::Running { attempt: 1 });
    assert_eq!(state.progress["users"].records, 15);
    assert_eq!(state.progress["users"].checkpoint.as_deref(), Some("u2"));
    assert_eq!(state.workflow, "wf");
    assert_eq!(state.scheduled_at_unix_ms, 100);

    let summary = log.summary(r).await.unwrap().unwrap();
    assert_eq!(summary.status, StatusKind::Running);
    assert_eq!(summary.last_seq, 4);
    assert_eq!(summary.updated_at_unix_ms, 200);

    assert!(log.read(run_id(2)).await.unwrap().is_empty());
    assert!(matches!(
        log.state(run_id(2)).await,
        Err(LogError::UnknownRun(_))
    ));
}

#[tokio::test]
async fn invalid_appends_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let r = run_id(1);
    // The first event must schedule the run.
    let err = log.append(r, vec![begun(1)]).await.unwrap_err();
    assert!(matches!(
        err,
        LogError::Refused {
            error: FoldError::Unexpected { seq: 1, .. },
            ..
        }
    ));
    assert!(log.read(r).await.unwrap().is_empty());

    log.append(
        r,
        vec![
            scheduled("wf", "c", "t"),
            EventKind::RunCompleted(v1::RunCompleted {}),
        ],
    )
    .await
    .unwrap();
    // Nothing follows a terminal status; the whole call is refused.
    let err = log
        .append(
            r,
            vec![EventKind::Heartbeat(v1::Heartbeat {
                attempt: 1,
                ..Default::default()
            })],
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        LogError::Refused {
            error: FoldError::AfterTerminal { seq: 3 },
            ..
        }
    ));
    assert_eq!(log.read(r).await.unwrap().len(), 2);

    // A refused request does not fail the others of its group.
    let ok = run_id(2);
    let (a, b) = tokio::join!(
        log.append(ok, vec![scheduled("wf", "c", "t")]),
        log.append(r, vec![begun(2)]),
    );
    assert_eq!(a.unwrap(), vec![1]);
    assert!(b.is_err());
}

/// The log knows a run is new without reading when its id is newer than every stored
/// one; an id already used is still found, older or newest, before and after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduling_a_run_id_already_used_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (older, newest) = (run_id(3), run_id(9));
    let done = || EventKind::RunCompleted(v1::RunCompleted {});
    for reopen in [false, true] {
        let log = EventLog::open(dir.path()).unwrap();
        if !reopen {
            for r in [older, newest] {
                log.append(r, vec![scheduled("wf", "c", "t"), done()])
                    .await
                    .unwrap();
            }
        }
        for r in [older, newest] {
            let err = log
                .append(r, vec![scheduled("wf", "c", "t")])
                .await
                .unwrap_err();
            assert!(
                matches!(err, LogError::Refused { .. }),
                "reopened {reopen}: {err}"
            );
            assert_eq!(log.read(r).await.unwrap().len(), 2);
        }
        // A fresh id in between is new.
        let between = run_id(5 + u8::from(reopen));
        assert_eq!(
            log.append(between, vec![scheduled("wf", "c", "t")])
                .await
                .unwrap(),
            vec![1]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_64_appenders_all_acknowledged_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    const APPENDERS: u8 = 64;
    const EACH: u64 = 20;
    {
        let log = EventLog::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..APPENDERS {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let r = run_id(i);
                let mut seqs = log
                    .append(r, vec![scheduled("wf", &format!("c{i}"), "t")])
                    .await
                    .unwrap();
                for n in 0..EACH {
                    seqs.extend(
                        log.append(r, vec![checkpoint("users", &format!("{n}"), 1)])
                            .await
                            .unwrap(),
                    );
                }
                seqs
            }));
        }
        for t in tasks {
            let seqs = t.await.unwrap();
            assert_eq!(seqs, (1..=EACH + 1).collect::<Vec<_>>());
        }
    }
    let log = EventLog::open(dir.path()).unwrap();
    for i in 0..APPENDERS {
        let state = log.state(run_id(i)).await.unwrap();
        assert_eq!(state.last_seq, EACH + 1);
        assert_eq!(state.progress["users"].records, EACH);
        assert_eq!(state.connection, format!("c{i}"));
    }
    // Seq counters are recovered: appends continue where they stopped.
    let seqs = log.append(run_id(3), vec![begun(1)]).await.unwrap();
    assert_eq!(seqs, vec![EACH + 2]);
}

#[tokio::test]
async fn survives_reopen_and_lists_in_flight_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (running, waiting, done, dead, fresh) =
        (run_id(1), run_id(2), run_id(3), run_id(4), run_id(5));
    {
        let log = EventLog::open(dir.path()).unwrap();
        for r in [running, waiting, done, dead, fresh] {
            log.append(r, vec![scheduled("wf", "c", "t")])
                .await
                .unwrap();
        }
        log.append(running, vec![begun(1), checkpoint("orders", "o7", 7)])
            .await
            .unwrap();
        log.append(
            waiting,
            vec![
                begun(1),
                EventKind::AttemptFailed(v1::AttemptFailed {
                    attempt: 1,
                    kind: v1::ErrorKind::RateLimited as i32,
                    message: "429".into(),
                    retry_after_ms: 1000,
                }),
                EventKind::RetryScheduled(v1::RetryScheduled {
                    attempt: 2,
                    not_before_unix_ms: 5_000,
                }),
            ],
        )
        .await
        .unwrap();
        log.append(
            done,
            vec![begun(1), EventKind::RunCompleted(v1::RunCompleted {})],
        )
        .await
        .unwrap();
        log.append(
            dead,
            vec![EventKind::RunDeadLettered(v1::RunDeadLettered {
                kind: v1::ErrorKind::Auth as i32,
                message: "bad token".into(),
            })],
        )
        .await
        .unwrap();
    }
    let log = EventLog::open(dir.path()).unwrap();
    let mut expected = vec![running, waiting, fresh];
    expected.sort();
    assert_eq!(log.in_flight().await.unwrap(), expected);
    let s = log.state(running).await.unwrap();
    assert_eq!(s.progress["orders"].checkpoint.as_deref(), Some("o7"));
    assert_eq!(
        log.state(waiting).await.unwrap().status,
        RunStatus::RetryWaiting {
            attempt: 2,
            not_before_unix_ms: 5_000
        }
    );

    // A manual retry brings a dead letter back in flight.
    log.append(
        dead,
        vec![EventKind::ManualRetryRequested(v1::ManualRetryRequested {
            requested_by: "ops".into(),
            not_before_unix_ms: 0,
        })],
    )
    .await
    .unwrap();
    assert!(log.in_flight().await.unwrap().contains(&dead));
    assert_eq!(log.state(dead).await.unwrap().status, RunStatus::Scheduled);
}

#[tokio::test]
async fn index_queries() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let specs = [
        ("sync-a", "crm", "acme", 10),
        ("sync-a", "crm", "globex", 20),
        ("sync-b", "erp", "acme", 30),
        ("sync-b", "erp", "acme", 40),
        ("sync-a", "erp", "initech", 50),
    ];
    for (i, (wf, conn, tenant, at)) in specs.iter().enumerate() {
        log.append_at(run_id(i as u8), *at, vec![scheduled(wf, conn, tenant)])
            .await
            .unwrap();
    }
    log.append(
        run_id(2),
        vec![EventKind::RunCompleted(v1::RunCompleted {})],
    )
    .await
    .unwrap();
    log.append(run_id(4), vec![begun(1)]).await.unwrap();

    let ids =
        |v: Vec<sluice_store::log::RunSummary>| v.into_iter().map(|s| s.run_id).collect::<Vec<_>>();
    let by = |f: RunFilter| {
        let log = log.clone();
        async move { ids(log.list(&f).await.unwrap()) }
    };
    assert_eq!(
        by(RunFilter {
            workflow: Some("sync-a".into()),
            ..Default::default()
        })
        .await,
        vec![run_id(0), run_id(1), run_id(4)]
    );
    assert_eq!(
        by(RunFilter {
            tenant: Some("acme".into()),
            ..Default::default()
        })
        .await,
        vec![run_id(0), run_id(2), run_id(3)]
    );
    assert_eq!(
        by(RunFilter {
            connection: Some("erp".into()),
            ..Default::default()
        })
        .await,
        vec![run_id(2), run_id(3), run_id(4)]
    );
    assert_eq!(
        by(RunFilter {
            status: Some(StatusKind::Completed),
            ..Default::default()
        })
        .await,
        vec![run_id(2)]
    );
    assert_eq!(
        by(RunFilter {
            status: Some(StatusKind::Running),
            ..Default::default()
        })
        .await,
        vec![run_id(4)]
    );
    assert_eq!(
        by(RunFilter {
            status: Some(StatusKind::Scheduled),
            tenant: Some("acme".into()),
            ..Default::default()
        })
        .await,
        vec![run_id(0), run_id(3)]
    );
    assert_eq!(
        by(RunFilter {
            created_from_unix_ms: Some(20),
            created_before_unix_ms: Some(50),
            ..Default::default()
        })
        .await,
        vec![run_id(1), run_id(2), run_id(3)]
    );
    assert_eq!(
        by(RunFilter {
            workflow: Some("sync-a".into()),
            limit: 2,
            ..Default::default()
        })
        .await,
        vec![run_id(0), run_id(1)]
    );
    // Prefixes of a value do not match it.
    assert!(
        by(RunFilter {
            workflow: Some("sync".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );
}

#[tokio::test]
async fn corrupted_event_is_reported_with_run_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let (bad, good) = (run_id(1), run_id(2));
    {
        let log = open_keyed(dir.path());
        for r in [bad, good] {
            // One event per append: each under its own key (several events of one
            // group share a key, see the next test).
            for e in [scheduled("wf", "c", "t"), begun(1), begun(2)] {
                log.append(r, vec![e]).await.unwrap();
            }
        }
    }
    {
        // Write garbage under (bad, 2) directly with sled.
        let db = common::open_sled(dir.path());
        let events = db.open_tree("events").unwrap();
        let key = event_key(bad, 2);
        assert!(events.get(&key).unwrap().is_some());
        events.insert(key, &[0xff, 0xff, 0xff, 0x01][..]).unwrap();
        db.flush().unwrap();
    }
    let log = EventLog::open(dir.path()).unwrap();
    match log.read(bad).await.unwrap_err() {
        LogError::Corrupt { run, seq, .. } => {
            assert_eq!(run, bad);
            assert_eq!(seq, 2);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        log.state(bad).await.unwrap_err(),
        LogError::Corrupt { seq: 2, .. }
    ));
    assert_eq!(log.state(good).await.unwrap().attempts, 2);
    assert_eq!(log.read(good).await.unwrap().len(), 3);
}

/// A `RunEvent` as a newer writer might encode it: a `kind` variant (field 99)
/// this version does not know.
#[derive(Clone, PartialEq, prost::Message)]
struct NewerRunEvent {
    #[prost(uint32, tag = "1")]
    format: u32,
    #[prost(bytes = "vec", tag = "2")]
    run_id: Vec<u8>,
    #[prost(uint64, tag = "3")]
    seq: u64,
    #[prost(int64, tag = "4")]
    at_unix_ms: i64,
    #[prost(message, optional, tag = "99")]
    future_kind: Option<FutureKind>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FutureKind {
    #[prost(string, tag = "1")]
    what: String,
}

/// The events one group appends to a run share one key; a corrupt batch is reported
/// with its first seq, and single keys around it still read.
#[tokio::test]
async fn events_of_one_append_share_a_key_and_a_corrupt_batch_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let r = run_id(1);
    {
        let log = open_keyed(dir.path());
        log.append(r, vec![scheduled("wf", "c", "t")])
            .await
            .unwrap();
        log.append(r, vec![begun(1), checkpoint("users", "u1", 3)])
            .await
            .unwrap();
        log.append(r, vec![begun(2)]).await.unwrap();
        let seqs: Vec<u64> = log.read(r).await.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        assert_eq!(log.state(r).await.unwrap().progress["users"].records, 3);
    }
    let db = common::open_sled(dir.path());
    let events = db.open_tree("events").unwrap();
    let lens: Vec<usize> = events
        .scan_prefix(r.0)
        .map(|kv| kv.unwrap().0.len())
        .collect();
    assert_eq!(lens, vec![24, 32, 24]);
    let batch_key = events.scan_prefix(r.0).nth(1).unwrap().unwrap().0;
    events.insert(batch_key, &[0xff, 0xff, 0x01][..]).unwrap();
    db.flush().unwrap();
    drop((events, db));
    let log = EventLog::open(dir.path()).unwrap();
    match log.read(r).await.unwrap_err() {
        LogError::Corrupt { run, seq, .. } => assert_eq!((run, seq), (r, 2)),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn unknown_event_kind_stops_the_fold() {
    let dir = tempfile::tempdir().unwrap();
    let r = closed_log_with_one_run(dir.path()).await;
    let newer = NewerRunEvent {
        format: 2,
        run_id: r.0.to_vec(),
        seq: 3,
        at_unix_ms: 1,
        future_kind: Some(FutureKind {
            what: "teleported".into(),
        }),
    }
    .encode_to_vec();
    // This version decodes it, with no kind.
    let decoded = sluice_store::RunEvent::decode(newer.as_slice()).unwrap();
    assert_eq!(decoded.seq, 3);
    assert!(decoded.kind.is_none());
    {
        let db = common::open_sled(dir.path());
        db.open_tree("events")
            .unwrap()
            .insert(event_key(r, 3), newer)
            .unwrap();
        db.flush().unwrap();
    }
    let log = EventLog::open(dir.path()).unwrap();
    assert_eq!(log.read(r).await.unwrap().len(), 3);
    match log.state(r).await.unwrap_err() {
        LogError::Fold { run, error } => {
            assert_eq!(run, r);
            assert_eq!(error, FoldError::UnknownEvent { seq: 3 });
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_lease_is_taken_by_an_attempt_extended_by_heartbeats_and_released_by_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let r = run_id(7);
    let leased = |attempt, until| {
        EventKind::AttemptBegun(v1::AttemptBegun {
            attempt,
            worker: "node-b".into(),
            lease_until_unix_ms: until,
        })
    };
    log.append(r, vec![scheduled("wf", "c", "t"), leased(1, 5_000)])
        .await
        .unwrap();
    let lease = log.state(r).await.unwrap().lease.unwrap();
    assert_eq!(
        (lease.worker.as_str(), lease.attempt, lease.until_unix_ms),
        ("node-b", 1, 5_000)
    );
    assert!(!lease.expired(4_999) && lease.expired(5_000));

    // A heartbeat of the attempt extends it; one of another attempt does not.
    let beat = |attempt, until| {
        EventKind::Heartbeat(v1::Heartbeat {
            attempt,
            lease_until_unix_ms: until,
        })
    };
    log.append(r, vec![beat(1, 9_000), beat(2, 20_000)])
        .await
        .unwrap();
    assert_eq!(
        log.state(r).await.unwrap().lease.unwrap().until_unix_ms,
        9_000
    );

    // The attempt's end releases it.
    let failed = EventKind::AttemptFailed(v1::AttemptFailed {
        attempt: 1,
        kind: v1::ErrorKind::Transient as i32,
        message: "x".into(),
        retry_after_ms: 0,
    });
    log.append(r, vec![failed]).await.unwrap();
    assert_eq!(log.state(r).await.unwrap().lease, None);
}

#[tokio::test]
async fn a_conditional_append_fails_when_the_run_moved_on_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let r = run_id(8);
    log.append(r, vec![scheduled("wf", "c", "t"), begun(1)])
        .await
        .unwrap();
    // Two nodes read seq 2; the first to append wins.
    let seqs = log.append_expecting(r, 2, vec![begun(2)]).await.unwrap();
    assert_eq!(seqs, vec![3]);
    let err = log
        .append_expecting(r, 2, vec![begun(2)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LogError::Conflict {
                expected: 2,
                actual: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("expected its last event to be 2, found 3")
    );
    assert_eq!(log.read(r).await.unwrap().len(), 3);
}

/// A run's latest few events live in its summary record (one write per group instead
/// of two), move to keys of their own as one batch when there are more, survive a
/// reopen, and follow events a log written before (all keyed) already holds.
#[tokio::test]
async fn a_runs_latest_events_live_in_its_summary_until_they_move_to_their_own_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (short, long) = (run_id(1), run_id(2));
    let old = run_id(3);
    {
        let log = open_keyed(dir.path());
        log.append(old, vec![scheduled("wf", "c", "t")])
            .await
            .unwrap();
    }
    {
        let log = EventLog::open(dir.path()).unwrap();
        log.append(old, vec![begun(1)]).await.unwrap();
        for e in [scheduled("wf", "c", "t"), begun(1), begun(2)] {
            log.append(short, vec![e]).await.unwrap();
        }
        log.append(long, vec![scheduled("wf", "c", "t")])
            .await
            .unwrap();
        for n in 0..10 {
            log.append(long, vec![checkpoint("users", &format!("c{n}"), 1)])
                .await
                .unwrap();
        }
    }
    let seqs =
        |events: Vec<sluice_store::RunEvent>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    {
        let log = EventLog::open(dir.path()).unwrap();
        assert_eq!(seqs(log.read(short).await.unwrap()), vec![1, 2, 3]);
        assert_eq!(log.state(short).await.unwrap().attempts, 2);
        assert_eq!(
            seqs(log.read(long).await.unwrap()),
            (1..=11).collect::<Vec<_>>()
        );
        assert_eq!(log.state(long).await.unwrap().progress["users"].records, 10);
        assert_eq!(seqs(log.read(old).await.unwrap()), vec![1, 2]);
        assert_eq!(log.append(short, vec![begun(3)]).await.unwrap(), vec![4]);
        assert_eq!(seqs(log.read(short).await.unwrap()), vec![1, 2, 3, 4]);
    }
    let db = common::open_sled(dir.path());
    let events = db.open_tree("events").unwrap();
    let key_lens = |r: RunId| -> Vec<usize> {
        events
            .scan_prefix(r.0)
            .map(|kv| kv.unwrap().0.len())
            .collect()
    };
    // The short run's events are all in its summary; the long one's first nine
    // moved as one batch once there were more than eight; the old run keeps its key.
    assert!(key_lens(short).is_empty());
    assert_eq!(key_lens(long), vec![32]);
    assert_eq!(key_lens(old), vec![24]);

    // A summary whose events do not follow the keyed ones is reported, naming the seq.
    let runs = db.open_tree("runs").unwrap();
    let mut summary =
        v1::StoredRunSummary::decode(runs.get(long.0).unwrap().unwrap().as_ref()).unwrap();
    summary.recent.remove(0);
    runs.insert(long.0, summary.encode_to_vec()).unwrap();
    db.flush().unwrap();
    drop((events, runs, db));
    let log = EventLog::open(dir.path()).unwrap();
    match log.read(long).await.unwrap_err() {
        LogError::Corrupt { run, seq, reason } => {
            assert_eq!((run, seq), (long, 10));
            assert!(
                reason.contains("holds event 11 where 10 should follow"),
                "{reason}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(seqs(log.read(short).await.unwrap()), vec![1, 2, 3, 4]);
}

/// An enqueued append lands before anything its caller queues after it, and when it is
/// refused, what follows it is refused too: nothing lands on a log it did not extend.
#[tokio::test]
async fn queued_appends_land_in_order_and_a_refused_one_takes_its_followers_down() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let r = run_id(9);
    let first = log
        .enqueue(r, vec![scheduled("wf", "c", "t")])
        .await
        .unwrap();
    let second = log.enqueue(r, vec![begun(1)]).await.unwrap();
    let third = log
        .append(r, vec![checkpoint("users", "c1", 3)])
        .await
        .unwrap();
    assert_eq!(third, vec![3]);
    assert_eq!(second.await.unwrap(), vec![2]);
    assert_eq!(first.await.unwrap(), vec![1]);

    log.append(
        r,
        vec![EventKind::RunCancelled(v1::RunCancelled {
            reason: "stop".into(),
        })],
    )
    .await
    .unwrap();
    let refused = log.enqueue(r, vec![begun(2)]).await.unwrap();
    let after = log.append(r, vec![checkpoint("users", "c2", 1)]).await;
    assert!(matches!(refused.await, Err(LogError::Refused { .. })));
    assert!(matches!(after, Err(LogError::Refused { .. })), "{after:?}");
    assert_eq!(log.read(r).await.unwrap().len(), 4);
}

/// An append queued expecting the log at a seq lands only if nothing came between:
/// a driver acting on a state it read earlier never extends a log that moved on (here,
/// a run cancelled after its state was read), and what it queues after is refused too.
#[tokio::test]
async fn a_queued_append_expecting_a_seq_the_log_moved_past_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let r = run_id(10);
    // Queued right behind the run's first event, before it is even committed.
    let first = log
        .enqueue(r, vec![scheduled("wf", "c", "t")])
        .await
        .unwrap();
    let begun_ok = log.enqueue_expecting(r, 1, vec![begun(1)]).await.unwrap();
    assert_eq!(first.await.unwrap(), vec![1]);
    assert_eq!(begun_ok.await.unwrap(), vec![2]);

    let other = run_id(11);
    log.append(other, vec![scheduled("wf", "c", "t")])
        .await
        .unwrap();
    log.append(
        other,
        vec![EventKind::RunCancelled(v1::RunCancelled {
            reason: "stop".into(),
        })],
    )
    .await
    .unwrap();
    let stale = log
        .enqueue_expecting(other, 1, vec![begun(1)])
        .await
        .unwrap();
    let after = log.append(other, vec![checkpoint("users", "c1", 1)]).await;
    match stale.await {
        Err(LogError::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (1, 2)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(after, Err(LogError::Refused { .. })), "{after:?}");
    assert_eq!(log.read(other).await.unwrap().len(), 2);
}

/// Events held back are written only when the run's next append is queued (first, in
/// the same group) or when released; held with a seq the log moved past, they conflict;
/// held when the log closes, they are lost and nothing else is.
#[tokio::test]
async fn held_events_wait_for_the_runs_next_append_or_their_release() {
    let dir = tempfile::tempdir().unwrap();
    let r = run_id(12);
    {
        let log = EventLog::open(dir.path()).unwrap();
        log.append(r, vec![scheduled("wf", "c", "t")])
            .await
            .unwrap();
        let held = log.hold_expecting(r, 1, vec![begun(1)]).await.unwrap();
        assert_eq!(log.read(r).await.unwrap().len(), 1);
        assert_eq!(log.state(r).await.unwrap().status, RunStatus::Scheduled);

        let next = log
            .append(r, vec![checkpoint("users", "c1", 3)])
            .await
            .unwrap();
        assert_eq!((held.await.unwrap(), next), (vec![2], vec![3]));
        let kinds: Vec<_> = log
            .read(r)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert!(
            matches!(kinds[1], Some(EventKind::AttemptBegun(_))),
            "{kinds:?}"
        );

        let held = log
            .hold_expecting(r, 3, vec![checkpoint("users", "c2", 1)])
            .await
            .unwrap();
        log.release(r).await.unwrap();
        assert_eq!(held.await.unwrap(), vec![4]);

        let stale = log
            .hold_expecting(r, 2, vec![checkpoint("users", "c3", 1)])
            .await
            .unwrap();
        log.release(r).await.unwrap();
        match stale.await {
            Err(LogError::Conflict {
                expected, actual, ..
            }) => assert_eq!((expected, actual), (2, 4)),
            other => panic!("expected a conflict, got {other:?}"),
        }

        let lost = log
            .hold_expecting(r, 4, vec![checkpoint("users", "c4", 1)])
            .await
            .unwrap();
        drop(log);
        assert!(matches!(lost.await, Err(LogError::Closed)));
    }
    let log = EventLog::open(dir.path()).unwrap();
    assert_eq!(log.read(r).await.unwrap().len(), 4);
}

/// A crash between storing a group's write-ahead record and applying all of its writes
/// leaves the record: opening the log applies it (puts and removes) and drops it.
#[tokio::test]
async fn a_group_a_crash_left_half_applied_is_completed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let r = closed_log_with_one_run(dir.path()).await;
    let event_key = |seq: u64| event_key(r, seq);
    {
        // The state a crash leaves: the record is stored, only part of it applied
        // (here: nothing), and a stray key the record removes.
        let db = common::open_sled(dir.path());
        let third = sluice_store::RunEvent::new(r, 3, 300, begun(2));
        let record = v1::StoredWriteGroup {
            writes: vec![
                v1::StoredWrite {
                    tree: "events".into(),
                    key: event_key(3),
                    value: Some(third.encode_to_vec()),
                },
                v1::StoredWrite {
                    tree: "events".into(),
                    key: event_key(9),
                    value: None,
                },
            ],
        };
        db.open_tree("events")
            .unwrap()
            .insert(event_key(9), &[1u8][..])
            .unwrap();
        db.open_tree("write_ahead")
            .unwrap()
            .insert([0u8], record.encode_to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    {
        let log = EventLog::open(dir.path()).unwrap();
        let events = log.read(r).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(events[2].at_unix_ms, 300);
    }
    let db = common::open_sled(dir.path());
    assert!(db.open_tree("write_ahead").unwrap().is_empty());
}

/// The run ids listed by `filter`.
async fn listed(log: &EventLog, filter: RunFilter) -> Vec<RunId> {
    log.list(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.run_id)
        .collect()
}

/// Runs whose appends share a group share index keys (one per tenant, one per
/// millisecond), and list in id order all the same, a limit taking the first ones.
#[tokio::test]
async fn runs_committed_together_share_index_keys_and_list_in_order() {
    let dir = tempfile::tempdir().unwrap();
    const RUNS: u16 = 500;
    // Ids out of order of appending, so that a group's runs are not already sorted.
    let id = |n: u16| {
        RunId::v7(
            1_700_000_000_000,
            [(n % 7) as u8, (n >> 8) as u8, n as u8, 0, 0, 0, 0, 0, 0, 0],
        )
    };
    {
        let log = EventLog::open(dir.path()).unwrap();
        let mut queued = Vec::new();
        for n in 0..RUNS {
            let tenant = if n % 3 == 0 { "acme" } else { "globex" };
            let at = 1_000 + i64::from(n % 2);
            let kinds = vec![scheduled(&format!("wf{}", n % 5), "crm", tenant)];
            queued.push(log.enqueue_at(id(n), at, kinds).await.unwrap());
        }
        for q in queued {
            assert_eq!(q.await.unwrap(), vec![1]);
        }
        let mut all: Vec<RunId> = (0..RUNS).map(id).collect();
        all.sort();
        let acme: Vec<RunId> = all
            .iter()
            .copied()
            .filter(|r| (0..RUNS).any(|n| n % 3 == 0 && id(n) == *r))
            .collect();
        let tenant = |t: &str, limit| RunFilter {
            tenant: Some(t.into()),
            limit,
            ..RunFilter::default()
        };
        assert_eq!(listed(&log, tenant("acme", 0)).await, acme);
        assert_eq!(listed(&log, tenant("acme", 17)).await, acme[..17]);
        let wf3: Vec<RunId> = all
            .iter()
            .copied()
            .filter(|r| (0..RUNS).any(|n| n % 5 == 3 && id(n) == *r))
            .collect();
        let by_workflow = RunFilter {
            workflow: Some("wf3".into()),
            ..RunFilter::default()
        };
        assert_eq!(listed(&log, by_workflow).await, wf3);
        // By time: the runs of ms 1000, then those of ms 1001, each by id.
        let mut by_time: Vec<(i64, RunId)> = (0..RUNS)
            .map(|n| (1_000 + i64::from(n % 2), id(n)))
            .collect();
        by_time.sort();
        let by_time: Vec<RunId> = by_time.into_iter().map(|(_, r)| r).collect();
        assert_eq!(listed(&log, RunFilter::default()).await, by_time);
        let window = RunFilter {
            created_from_unix_ms: Some(1_001),
            limit: 10,
            ..RunFilter::default()
        };
        assert_eq!(listed(&log, window).await, by_time[250..260]);
        // Newest first: the same runs reversed, a limit keeping the newest.
        let newest = |f: RunFilter| RunFilter {
            newest_first: true,
            ..f
        };
        let reversed = |runs: &[RunId]| runs.iter().rev().copied().collect::<Vec<_>>();
        assert_eq!(
            listed(&log, newest(tenant("acme", 0))).await,
            reversed(&acme)
        );
        assert_eq!(
            listed(&log, newest(tenant("acme", 17))).await,
            reversed(&acme)[..17]
        );
        assert_eq!(
            listed(&log, newest(RunFilter::default())).await,
            reversed(&by_time)
        );
        let before = RunFilter {
            created_before_unix_ms: Some(1_001),
            limit: 10,
            newest_first: true,
            ..RunFilter::default()
        };
        assert_eq!(listed(&log, before).await, reversed(&by_time[240..250]));
        let in_flight = RunFilter {
            status: Some(StatusKind::Scheduled),
            limit: 5,
            newest_first: true,
            ..RunFilter::default()
        };
        assert_eq!(listed(&log, in_flight).await, reversed(&all)[..5]);
        assert_eq!(log.in_flight().await.unwrap(), all);
    }
    let db = common::open_sled(dir.path());
    let keys = |tree: &str| db.open_tree(tree).unwrap().len();
    assert_eq!(keys("runs"), usize::from(RUNS));
    assert_eq!(keys("runs_active"), usize::from(RUNS));
    assert!(
        keys("runs_by_tenant") < usize::from(RUNS) / 4,
        "{} tenant keys for {RUNS} runs",
        keys("runs_by_tenant")
    );
    assert!(keys("runs_by_time") < usize::from(RUNS) / 4);
}

/// Postings from different groups interleave (a later key may hold runs that sort
/// before an earlier key's further runs): listing still yields every run in id order.
#[tokio::test]
async fn interleaved_index_entries_list_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<RunId> = (0..6).map(run_id).collect();
    {
        let log = EventLog::open(dir.path()).unwrap();
        for r in &runs {
            log.append(*r, vec![scheduled("wf", "crm", "acme")])
                .await
                .unwrap();
        }
    }
    {
        let db = common::open_sled(dir.path());
        let tenants = db.open_tree("runs_by_tenant").unwrap();
        tenants.clear().unwrap();
        let key = |r: RunId| [&b"acme\0"[..], &r.0].concat();
        let more = |rs: &[RunId]| rs.iter().flat_map(|r| r.0).collect::<Vec<u8>>();
        tenants
            .insert(key(runs[0]), more(&[runs[3], runs[5]]))
            .unwrap();
        tenants.insert(key(runs[1]), more(&[runs[2]])).unwrap();
        tenants.insert(key(runs[4]), more(&[])).unwrap();
        // Entries the committer did not write, and a spread no log writes: it is
        // measured again at open.
        let meta = db.open_tree("log_meta").unwrap();
        meta.insert("posting_spread", &b"bad"[..]).unwrap();
        db.flush().unwrap();
    }
    let log = EventLog::open(dir.path()).unwrap();
    let tenant = |limit| RunFilter {
        tenant: Some("acme".into()),
        limit,
        ..RunFilter::default()
    };
    assert_eq!(listed(&log, tenant(0)).await, runs);
    assert_eq!(listed(&log, tenant(3)).await, runs[..3]);
    // Newest first, runs[5] (held in the first key) comes before runs[4].
    let newest = |limit| RunFilter {
        newest_first: true,
        ..tenant(limit)
    };
    let reversed: Vec<RunId> = runs.iter().rev().copied().collect();
    assert_eq!(listed(&log, newest(0)).await, reversed);
    assert_eq!(listed(&log, newest(3)).await, reversed[..3]);
}

/// A log written before `runs_active` (every status indexed per run) opens with its
/// runs in flight moved there: they are still found, listed and resumed.
#[tokio::test]
async fn runs_in_flight_of_the_older_status_layout_are_found_after_open() {
    let dir = tempfile::tempdir().unwrap();
    let (waiting, running, done) = (run_id(1), run_id(2), run_id(3));
    {
        let log = EventLog::open(dir.path()).unwrap();
        for r in [waiting, running, done] {
            log.append(r, vec![scheduled("wf", "crm", "acme")])
                .await
                .unwrap();
        }
        log.append(running, vec![begun(1)]).await.unwrap();
        log.append(
            done,
            vec![begun(1), EventKind::RunCompleted(v1::RunCompleted {})],
        )
        .await
        .unwrap();
    }
    {
        // The older layout: no runs_active; a status key per run in flight.
        let db = common::open_sled(dir.path());
        let active = db.open_tree("runs_active").unwrap();
        let by_status = db.open_tree("runs_by_status").unwrap();
        active.clear().unwrap();
        db.drop_tree("log_meta").unwrap();
        for (status, r) in [("scheduled", waiting), ("running", running)] {
            by_status
                .insert([status.as_bytes(), b"\0", &r.0].concat(), &[])
                .unwrap();
        }
        db.flush().unwrap();
    }
    {
        let log = EventLog::open(dir.path()).unwrap();
        assert_eq!(log.in_flight().await.unwrap(), vec![waiting, running]);
        let running_now = RunFilter {
            status: Some(StatusKind::Running),
            ..RunFilter::default()
        };
        assert_eq!(listed(&log, running_now).await, vec![running]);
        let completed = RunFilter {
            status: Some(StatusKind::Completed),
            ..RunFilter::default()
        };
        assert_eq!(listed(&log, completed).await, vec![done]);
        // It goes on in the new layout: the run ends and leaves runs_active.
        log.append(running, vec![EventKind::RunCompleted(v1::RunCompleted {})])
            .await
            .unwrap();
        assert_eq!(log.in_flight().await.unwrap(), vec![waiting]);
    }
    let db = common::open_sled(dir.path());
    let by_status = db.open_tree("runs_by_status").unwrap();
    assert!(by_status.scan_prefix(b"scheduled\0").next().is_none());
    assert!(by_status.scan_prefix(b"running\0").next().is_none());
}

/// A dead-lettered run retried by hand and dead-lettered again is listed once.
#[tokio::test]
async fn a_run_dead_lettered_twice_is_listed_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let r = run_id(7);
    let dead = || {
        EventKind::RunDeadLettered(v1::RunDeadLettered {
            kind: v1::ErrorKind::Auth as i32,
            message: "bad token".into(),
        })
    };
    log.append(r, vec![scheduled("wf", "crm", "acme"), dead()])
        .await
        .unwrap();
    let retry = EventKind::ManualRetryRequested(v1::ManualRetryRequested {
        requested_by: "ops".into(),
        not_before_unix_ms: 0,
    });
    log.append(r, vec![retry]).await.unwrap();
    let dead_lettered = RunFilter {
        status: Some(StatusKind::DeadLettered),
        ..RunFilter::default()
    };
    // Back in flight: its old status entry no longer lists it.
    assert_eq!(listed(&log, dead_lettered.clone()).await, vec![]);
    assert_eq!(log.in_flight().await.unwrap(), vec![r]);
    log.append(r, vec![dead()]).await.unwrap();
    assert_eq!(listed(&log, dead_lettered).await, vec![r]);
    assert_eq!(log.in_flight().await.unwrap(), vec![]);
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// A log whose runs get a `runs_active` key once in flight for `lag`.
fn open_lagging(dir: &std::path::Path, lag: std::time::Duration) -> EventLog {
    let config = LogConfig {
        active_lag: lag,
        ..LogConfig::default()
    };
    EventLog::open_with(dir, config).unwrap()
}

const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

fn completed() -> Vec<EventKind> {
    vec![begun(1), EventKind::RunCompleted(v1::RunCompleted {})]
}

/// A run that ends soon after it was created costs `runs_active` nothing, and is
/// still found in flight while it lasts, by every reader and after a restart.
#[tokio::test]
async fn runs_in_flight_for_less_than_the_lag_need_no_active_key() {
    let dir = tempfile::tempdir().unwrap();
    let (waiting, short) = (RunId::v7(now_ms(), [1; 10]), RunId::v7(now_ms(), [2; 10]));
    {
        let log = open_lagging(dir.path(), HOUR);
        for r in [waiting, short] {
            log.append(r, vec![scheduled("wf", "crm", "acme")])
                .await
                .unwrap();
        }
        log.append(short, completed()).await.unwrap();
        assert_eq!(log.in_flight().await.unwrap(), vec![waiting]);
        let scheduled_now = RunFilter {
            status: Some(StatusKind::Scheduled),
            ..RunFilter::default()
        };
        assert_eq!(listed(&log, scheduled_now).await, vec![waiting]);
    }
    {
        let db = common::open_sled(dir.path());
        assert_eq!(db.open_tree("runs_active").unwrap().len(), 0);
    }
    let log = open_lagging(dir.path(), HOUR);
    assert_eq!(log.in_flight().await.unwrap(), vec![waiting]);
    log.append(waiting, completed()).await.unwrap();
    assert!(log.in_flight().await.unwrap().is_empty());
}

/// Once a run has been in flight for the lag, a group moves the watermark past it
/// and keys it, whether or not the group touches the run; its end removes the key.
#[tokio::test]
async fn the_watermark_keys_the_runs_in_flight_it_passes() {
    let dir = tempfile::tempdir().unwrap();
    let runs = [[1; 10], [2; 10], [3; 10]].map(|r| RunId::v7(now_ms(), r));
    let [untouched, touched, ended] = runs;
    let keys = |dir: &std::path::Path| -> Vec<RunId> {
        let db = common::open_sled(dir);
        let tree = db.open_tree("runs_active").unwrap();
        tree.iter()
            .keys()
            .map(|k| RunId::from_slice(&k.unwrap()).unwrap())
            .collect()
    };
    {
        let log = open_lagging(dir.path(), HOUR);
        for r in runs {
            log.append(r, vec![scheduled("wf", "crm", "acme")])
                .await
                .unwrap();
        }
        log.append(ended, completed()).await.unwrap();
    }
    assert_eq!(keys(dir.path()), Vec::<RunId>::new());
    // No lag: the next group moves the watermark to now, past every run.
    {
        let log = open_lagging(dir.path(), std::time::Duration::ZERO);
        log.append(touched, vec![begun(1)]).await.unwrap();
        assert_eq!(log.in_flight().await.unwrap(), vec![untouched, touched]);
    }
    assert_eq!(keys(dir.path()), vec![untouched, touched]);
    {
        let log = open_lagging(dir.path(), HOUR);
        assert_eq!(log.in_flight().await.unwrap(), vec![untouched, touched]);
        log.append(touched, vec![EventKind::RunCompleted(v1::RunCompleted {})])
            .await
            .unwrap();
        assert_eq!(log.in_flight().await.unwrap(), vec![untouched]);
    }
    assert_eq!(keys(dir.path()), vec![untouched]);
}
