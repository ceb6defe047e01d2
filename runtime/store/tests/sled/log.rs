//! The sled run log's stored form: events damaged on disk or of a kind this version
//! does not know, events of one append sharing a key, a run's latest events in its
//! summary record, the write-ahead record of a group a crash left half applied, index
//! postings shared by runs of one group or interleaved, the older status layout, and
//! the `runs_active` watermark under [`LogConfig::active_lag`].

use std::path::Path;
use std::time::Duration;

use prost::Message;
use sluice_store::RunLog;
use sluice_store::codec::{event_to_wire, v1};
use sluice_store::log::{FoldError, LogError, RunEvent, RunFilter, RunId, StatusKind};
use sluice_store::sled::{EventLog, LogConfig, layout};

use crate::{
    begun, checkpoint, completed, event_key, listed, open_keyed, open_sled, run_id, scheduled,
};

/// Leaves at `dir` a closed log holding run 1 with `RunScheduled` and `AttemptBegun`,
/// under keys of their own.
async fn closed_log_with_one_run(dir: &Path) -> RunId {
    let r = run_id(1);
    let log = open_keyed(dir);
    log.append(r, vec![scheduled("wf", "c", "t"), begun(1)])
        .await
        .unwrap();
    r
}

/// `r`'s stored summary, naming `last_seq` as its last event: what a group that
/// appended up to it wrote.
fn summary_up_to(db: &sled::Db, r: RunId, last_seq: u64) -> Vec<u8> {
    let runs = db.open_tree(layout::RUNS).unwrap();
    let mut summary =
        v1::StoredRunSummary::decode(runs.get(r.0).unwrap().unwrap().as_ref()).unwrap();
    summary.last_seq = last_seq;
    summary.encode_to_vec()
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
        let db = open_sled(dir.path());
        let events = db.open_tree(layout::EVENTS).unwrap();
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
    let db = open_sled(dir.path());
    let events = db.open_tree(layout::EVENTS).unwrap();
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

/// `run`'s event `seq` as a newer writer stores it, with a kind this version does not
/// know.
fn newer_event(run: RunId, seq: u64) -> Vec<u8> {
    NewerRunEvent {
        format: 2,
        run_id: run.0.to_vec(),
        seq,
        at_unix_ms: 1,
        future_kind: Some(FutureKind {
            what: "teleported".into(),
        }),
    }
    .encode_to_vec()
}

/// An event of a kind this version does not know is decoded without a kind, and the
/// run's read and fold stop at it, naming its seq: it is never skipped or guessed.
#[tokio::test]
async fn unknown_event_kind_stops_the_read_and_the_fold() {
    let dir = tempfile::tempdir().unwrap();
    let r = closed_log_with_one_run(dir.path()).await;
    let newer = newer_event(r, 3);
    // This version decodes it, with no kind.
    let decoded = v1::RunEvent::decode(newer.as_slice()).unwrap();
    assert_eq!(decoded.seq, 3);
    assert!(decoded.kind.is_none());
    {
        let db = open_sled(dir.path());
        db.open_tree(layout::EVENTS)
            .unwrap()
            .insert(event_key(r, 3), newer)
            .unwrap();
        let summary = summary_up_to(&db, r, 3);
        db.open_tree(layout::RUNS)
            .unwrap()
            .insert(r.0, summary)
            .unwrap();
        db.flush().unwrap();
    }
    let log = EventLog::open(dir.path()).unwrap();
    // A domain event always has a kind: the read stops where the fold used to.
    match log.read(r).await.unwrap_err() {
        LogError::Fold { run, error } => {
            assert_eq!(run, r);
            assert_eq!(error, FoldError::UnknownEvent { seq: 3 });
        }
        other => panic!("unexpected {other:?}"),
    }
    match log.state(r).await.unwrap_err() {
        LogError::Fold { run, error } => {
            assert_eq!(run, r);
            assert_eq!(error, FoldError::UnknownEvent { seq: 3 });
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Wherever in a run's log an event of an unknown kind stands (first, in between,
/// last), reading the run stops at it with its seq; other runs still read.
#[tokio::test]
async fn an_unknown_event_kind_anywhere_in_a_log_stops_it_at_its_seq() {
    const EVENTS: u8 = 5;
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<RunId> = (1..=EVENTS).map(run_id).collect();
    {
        let log = open_keyed(dir.path());
        for r in &runs {
            log.append(*r, vec![scheduled("wf", "c", "t")])
                .await
                .unwrap();
            for attempt in 1..u32::from(EVENTS) {
                log.append(*r, vec![begun(attempt)]).await.unwrap();
            }
        }
    }
    {
        // Run n holds the unknown kind at seq n.
        let db = open_sled(dir.path());
        let events = db.open_tree(layout::EVENTS).unwrap();
        for (seq, r) in (1..).zip(&runs) {
            let key = event_key(*r, seq);
            assert!(events.get(&key).unwrap().is_some());
            events.insert(key, newer_event(*r, seq)).unwrap();
        }
        db.flush().unwrap();
    }
    let log = EventLog::open(dir.path()).unwrap();
    for (seq, r) in (1..).zip(&runs) {
        for result in [
            log.read(*r).await.map(|_| ()),
            log.state(*r).await.map(|_| ()),
        ] {
            match result.unwrap_err() {
                LogError::Fold { run, error } => {
                    assert_eq!(run, *r);
                    assert_eq!(error, FoldError::UnknownEvent { seq });
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let fine = run_id(9);
    log.append(fine, vec![scheduled("wf", "c", "t")])
        .await
        .unwrap();
    assert_eq!(log.read(fine).await.unwrap().len(), 1);
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
    let seqs = |events: Vec<RunEvent>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
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
    let db = open_sled(dir.path());
    let events = db.open_tree(layout::EVENTS).unwrap();
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

    // A summary whose events do not follow the keyed ones is damage: the log refuses
    // to open, naming the run and the seq.
    let runs = db.open_tree(layout::RUNS).unwrap();
    let mut summary =
        v1::StoredRunSummary::decode(runs.get(long.0).unwrap().unwrap().as_ref()).unwrap();
    summary.recent.remove(0);
    runs.insert(long.0, summary.encode_to_vec()).unwrap();
    db.flush().unwrap();
    drop((events, runs, db));
    match EventLog::open(dir.path()).err().unwrap() {
        LogError::Corrupt { run, seq, reason } => {
            assert_eq!((run, seq), (long, 10));
            assert!(
                reason.contains("damaged") && reason.contains("the next one stored is 11"),
                "{reason}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// A crash between storing a group's write-ahead record and applying all of its writes
/// leaves the record: opening the log applies it (puts and removes) and drops it.
#[tokio::test]
async fn a_group_a_crash_left_half_applied_is_completed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let r = closed_log_with_one_run(dir.path()).await;
    let event_key = |seq: u64| crate::event_key(r, seq);
    {
        // The state a crash leaves: the record is stored, only part of it applied
        // (here: nothing), and a stray key the record removes.
        let db = open_sled(dir.path());
        let third = event_to_wire(&RunEvent::new(r, 3, 300, begun(2)));
        let record = v1::StoredWriteGroup {
            writes: vec![
                v1::StoredWrite {
                    tree: layout::EVENTS.into(),
                    key: event_key(3),
                    value: Some(third.encode_to_vec()),
                },
                v1::StoredWrite {
                    tree: layout::EVENTS.into(),
                    key: event_key(9),
                    value: None,
                },
                v1::StoredWrite {
                    tree: layout::RUNS.into(),
                    key: r.0.to_vec(),
                    value: Some(summary_up_to(&db, r, 3)),
                },
            ],
        };
        db.open_tree(layout::EVENTS)
            .unwrap()
            .insert(event_key(9), &[1u8][..])
            .unwrap();
        db.open_tree(layout::WRITE_AHEAD)
            .unwrap()
            .insert(layout::WRITE_AHEAD_KEY, record.encode_to_vec())
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
    let db = open_sled(dir.path());
    assert!(db.open_tree(layout::WRITE_AHEAD).unwrap().is_empty());
}

/// Runs whose appends share a group share index keys (one per tenant, one per
/// millisecond) and every run in flight is keyed in `runs_active` once past the
/// watermark. (How they list is the contract's: `runs_committed_together_list_in_order`.)
#[tokio::test]
async fn runs_committed_together_share_index_keys() {
    let dir = tempfile::tempdir().unwrap();
    const RUNS: u16 = 500;
    // Ids out of order of appending, so that a group's runs are not already sorted.
    let id = |n: u16| {
        RunId::v7(
            1_700_000_000_000,
            [(n % 7) as u8, (n >> 8) as u8, n as u8, 0, 0, 0, 0, 0, 0, 0],
        )
    };
    let mut all: Vec<RunId> = (0..RUNS).map(id).collect();
    all.sort();
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
        let acme = RunFilter {
            tenant: Some("acme".into()),
            ..RunFilter::default()
        };
        assert_eq!(
            listed(&log, acme).await.len(),
            usize::from(RUNS).div_ceil(3)
        );
        assert_eq!(
            listed(&log, RunFilter::default()).await.len(),
            usize::from(RUNS)
        );
        assert_eq!(log.in_flight().await.unwrap(), all);
    }
    let db = open_sled(dir.path());
    let keys = |tree: &str| db.open_tree(tree).unwrap().len();
    assert_eq!(keys(layout::RUNS), usize::from(RUNS));
    assert_eq!(keys(layout::RUNS_ACTIVE), usize::from(RUNS));
    assert!(
        keys(layout::RUNS_BY_TENANT) < usize::from(RUNS) / 4,
        "{} tenant keys for {RUNS} runs",
        keys(layout::RUNS_BY_TENANT)
    );
    assert!(keys(layout::RUNS_BY_TIME) < usize::from(RUNS) / 4);
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
        let db = open_sled(dir.path());
        let tenants = db.open_tree(layout::RUNS_BY_TENANT).unwrap();
        tenants.clear().unwrap();
        // A posting: the value ++ 0x00 ++ its first run id, holding further run ids.
        let key = |r: RunId| [&b"acme\0"[..], &r.0].concat();
        let more = |rs: &[RunId]| rs.iter().flat_map(|r| r.0).collect::<Vec<u8>>();
        tenants
            .insert(key(runs[0]), more(&[runs[3], runs[5]]))
            .unwrap();
        tenants.insert(key(runs[1]), more(&[runs[2]])).unwrap();
        tenants.insert(key(runs[4]), more(&[])).unwrap();
        // Entries the committer did not write, and a spread no log writes: it is
        // measured again at open.
        let meta = db.open_tree(layout::LOG_META).unwrap();
        meta.insert(layout::POSTING_SPREAD, &b"bad"[..]).unwrap();
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
        log.append(done, vec![begun(1), completed()]).await.unwrap();
    }
    {
        // The older layout: no runs_active; a status key per run in flight.
        let db = open_sled(dir.path());
        let active = db.open_tree(layout::RUNS_ACTIVE).unwrap();
        let by_status = db.open_tree(layout::RUNS_BY_STATUS).unwrap();
        active.clear().unwrap();
        db.drop_tree(layout::LOG_META).unwrap();
        for (status, r) in [
            (StatusKind::Scheduled, waiting),
            (StatusKind::Running, running),
        ] {
            by_status
                .insert([status.as_str().as_bytes(), b"\0", &r.0].concat(), &[])
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
        let completed_runs = RunFilter {
            status: Some(StatusKind::Completed),
            ..RunFilter::default()
        };
        assert_eq!(listed(&log, completed_runs).await, vec![done]);
        // It goes on in the new layout: the run ends and leaves runs_active.
        log.append(running, vec![completed()]).await.unwrap();
        assert_eq!(log.in_flight().await.unwrap(), vec![waiting]);
    }
    let db = open_sled(dir.path());
    let by_status = db.open_tree(layout::RUNS_BY_STATUS).unwrap();
    assert!(by_status.scan_prefix(b"scheduled\0").next().is_none());
    assert!(by_status.scan_prefix(b"running\0").next().is_none());
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// A log whose runs get a `runs_active` key once in flight for `lag`.
fn open_lagging(dir: &Path, lag: Duration) -> EventLog {
    let config = LogConfig {
        active_lag: lag,
        ..LogConfig::default()
    };
    EventLog::open_with(dir, config).unwrap()
}

const HOUR: Duration = Duration::from_secs(3600);

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
        log.append(short, vec![begun(1), completed()])
            .await
            .unwrap();
        assert_eq!(log.in_flight().await.unwrap(), vec![waiting]);
        let scheduled_now = RunFilter {
            status: Some(StatusKind::Scheduled),
            ..RunFilter::default()
        };
        assert_eq!(listed(&log, scheduled_now).await, vec![waiting]);
    }
    {
        let db = open_sled(dir.path());
        assert_eq!(db.open_tree(layout::RUNS_ACTIVE).unwrap().len(), 0);
    }
    let log = open_lagging(dir.path(), HOUR);
    assert_eq!(log.in_flight().await.unwrap(), vec![waiting]);
    log.append(waiting, vec![begun(1), completed()])
        .await
        .unwrap();
    assert!(log.in_flight().await.unwrap().is_empty());
}

/// Once a run has been in flight for the lag, a group moves the watermark past it
/// and keys it, whether or not the group touches the run; its end removes the key.
#[tokio::test]
async fn the_watermark_keys_the_runs_in_flight_it_passes() {
    let dir = tempfile::tempdir().unwrap();
    let runs = [[1; 10], [2; 10], [3; 10]].map(|r| RunId::v7(now_ms(), r));
    let [untouched, touched, ended] = runs;
    let keys = |dir: &Path| -> Vec<RunId> {
        let db = open_sled(dir);
        let tree = db.open_tree(layout::RUNS_ACTIVE).unwrap();
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
        log.append(ended, vec![begun(1), completed()])
            .await
            .unwrap();
    }
    assert_eq!(keys(dir.path()), Vec::<RunId>::new());
    // No lag: the next group moves the watermark to now, past every run.
    {
        let log = open_lagging(dir.path(), Duration::ZERO);
        log.append(touched, vec![begun(1)]).await.unwrap();
        assert_eq!(log.in_flight().await.unwrap(), vec![untouched, touched]);
    }
    assert_eq!(keys(dir.path()), vec![untouched, touched]);
    {
        let log = open_lagging(dir.path(), HOUR);
        assert_eq!(log.in_flight().await.unwrap(), vec![untouched, touched]);
        log.append(touched, vec![completed()]).await.unwrap();
        assert_eq!(log.in_flight().await.unwrap(), vec![untouched]);
    }
    assert_eq!(keys(dir.path()), vec![untouched]);
}
