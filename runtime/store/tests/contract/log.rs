//! The run log's behaviour, whatever backend holds it: appends read back and folded,
//! invalid appends and reused run ids refused with nothing written, group commit of
//! concurrent appenders durable across a reopen, runs in flight found after a reopen,
//! index queries (by workflow, connection, tenant, status, time; limits, newest first,
//! paging back), leases and heartbeats, conditional, queued and held appends.

use sluice_store::RunLog;
use sluice_store::log::{
    AttemptBegun, AttemptFailed, EventKind, FailureKind, FoldError, Heartbeat, LogError,
    ManualRetryRequested, RetryScheduled, RunCancelled, RunCompleted, RunDeadLettered, RunFilter,
    RunId, RunStatus, StatusKind,
};

use crate::{Site, begun, checkpoint, run_id, scheduled};

fn completed() -> EventKind {
    EventKind::RunCompleted(RunCompleted {})
}

fn dead_lettered() -> EventKind {
    EventKind::RunDeadLettered(RunDeadLettered {
        kind: FailureKind::Auth,
        message: "bad token".into(),
    })
}

fn manual_retry() -> EventKind {
    EventKind::ManualRetryRequested(ManualRetryRequested {
        requested_by: "ops".into(),
        not_before_unix_ms: 0,
    })
}

fn cancelled() -> EventKind {
    EventKind::RunCancelled(RunCancelled {
        reason: "stop".into(),
    })
}

/// The run ids `log` lists for `filter`, in its order.
async fn listed(log: &dyn RunLog, filter: RunFilter) -> Vec<RunId> {
    log.list(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.run_id)
        .collect()
}

pub async fn append_read_fold_round_trip(site: &dyn Site) {
    let store = site.open().await;
    let log = store.log();
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
    assert_eq!(log.summary(run_id(2)).await.unwrap(), None);
}

pub async fn invalid_appends_are_refused_and_write_nothing(site: &dyn Site) {
    let store = site.open().await;
    let log = store.log();
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

    log.append(r, vec![scheduled("wf", "c", "t"), completed()])
        .await
        .unwrap();
    // Nothing follows a terminal status; the whole call is refused.
    let err = log
        .append(
            r,
            vec![EventKind::Heartbeat(Heartbeat {
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

/// A run id already used is refused, older or newest of the stored ones, before and
/// after a reopen; a fresh id in between is new.
pub async fn scheduling_a_run_id_already_used_is_refused(site: &dyn Site) {
    let (older, newest) = (run_id(3), run_id(9));
    for reopen in [false, true] {
        let store = site.open().await;
        let log = store.log();
        if !reopen {
            for r in [older, newest] {
                log.append(r, vec![scheduled("wf", "c", "t"), completed()])
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
        let between = run_id(5 + u8::from(reopen));
        assert_eq!(
            log.append(between, vec![scheduled("wf", "c", "t")])
                .await
                .unwrap(),
            vec![1]
        );
    }
}

pub async fn group_commit_64_appenders_all_acknowledged_and_durable(site: &dyn Site) {
    const APPENDERS: u8 = 64;
    const EACH: u64 = 20;
    {
        let store = site.open().await;
        let mut tasks = Vec::new();
        for i in 0..APPENDERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let log = store.log();
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
    let store = site.open().await;
    let log = store.log();
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

pub async fn survives_reopen_and_lists_in_flight_runs(site: &dyn Site) {
    let (running, waiting, done, dead, fresh) =
        (run_id(1), run_id(2), run_id(3), run_id(4), run_id(5));
    {
        let store = site.open().await;
        let log = store.log();
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
                EventKind::AttemptFailed(AttemptFailed {
                    attempt: 1,
                    kind: FailureKind::RateLimited,
                    message: "429".into(),
                    retry_after_ms: 1000,
                }),
                EventKind::RetryScheduled(RetryScheduled {
                    attempt: 2,
                    not_before_unix_ms: 5_000,
                }),
            ],
        )
        .await
        .unwrap();
        log.append(done, vec![begun(1), completed()]).await.unwrap();
        log.append(dead, vec![dead_lettered()]).await.unwrap();
    }
    let store = site.open().await;
    let log = store.log();
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
    log.append(dead, vec![manual_retry()]).await.unwrap();
    assert!(log.in_flight().await.unwrap().contains(&dead));
    assert_eq!(log.state(dead).await.unwrap().status, RunStatus::Scheduled);
}

pub async fn index_queries(site: &dyn Site) {
    let store = site.open().await;
    let log = store.log();
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
    log.append(run_id(2), vec![completed()]).await.unwrap();
    log.append(run_id(4), vec![begun(1)]).await.unwrap();

    let by = |f: RunFilter| listed(log, f);
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

pub async fn a_lease_is_taken_by_an_attempt_extended_by_heartbeats_and_released_by_its_end(
    site: &dyn Site,
) {
    let store = site.open().await;
    let log = store.log();
    let r = run_id(7);
    let leased = |attempt, until| {
        EventKind::AttemptBegun(AttemptBegun {
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

    // A heartbeat of the attempt extends it; one of another attempt is refused.
    let beat = |attempt, until| {
        EventKind::Heartbeat(Heartbeat {
            attempt,
            lease_until_unix_ms: until,
        })
    };
    log.append(r, vec![beat(1, 9_000)]).await.unwrap();
    let other = log.append(r, vec![beat(2, 20_000)]).await;
    assert!(matches!(&other, Err(e) if e.is_fenced()), "{other:?}");
    assert_eq!(
        log.state(r).await.unwrap().lease.unwrap().until_unix_ms,
        9_000
    );
    let summary = log.summary(r).await.unwrap().unwrap();
    assert_eq!(
        (
            summary.attempt,
            summary.worker.as_str(),
            summary.lease_until_unix_ms
        ),
        (1, "node-b", 9_000)
    );

    // The attempt's end releases it.
    let failed = EventKind::AttemptFailed(AttemptFailed {
        attempt: 1,
        kind: FailureKind::Transient,
        message: "x".into(),
        retry_after_ms: 0,
    });
    log.append(r, vec![failed]).await.unwrap();
    assert_eq!(log.state(r).await.unwrap().lease, None);
    assert_eq!(
        log.summary(r).await.unwrap().unwrap().lease_until_unix_ms,
        0
    );
}

pub async fn a_conditional_append_fails_when_the_run_moved_on_and_writes_nothing(site: &dyn Site) {
    let store = site.open().await;
    let log = store.log();
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

/// An enqueued append lands before anything its caller queues after it, and when it is
/// refused, what follows it is refused too: nothing lands on a log it did not extend.
pub async fn queued_appends_land_in_order_and_a_refused_one_takes_its_followers_down(
    site: &dyn Site,
) {
    let store = site.open().await;
    let log = store.log();
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

    log.append(r, vec![cancelled()]).await.unwrap();
    let refused = log.enqueue(r, vec![begun(2)]).await.unwrap();
    let after = log.append(r, vec![checkpoint("users", "c2", 1)]).await;
    assert!(matches!(refused.await, Err(LogError::Refused { .. })));
    assert!(matches!(after, Err(LogError::Refused { .. })), "{after:?}");
    assert_eq!(log.read(r).await.unwrap().len(), 4);
}

/// An append queued expecting the log at a seq lands only if nothing came between:
/// a driver acting on a state it read earlier never extends a log that moved on (here,
/// a run cancelled after its state was read), and what it queues after is refused too.
pub async fn a_queued_append_expecting_a_seq_the_log_moved_past_conflicts(site: &dyn Site) {
    let store = site.open().await;
    let log = store.log();
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
    log.append(other, vec![cancelled()]).await.unwrap();
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
/// held when the store closes, they are lost and nothing else is.
pub async fn held_events_wait_for_the_runs_next_append_or_their_release(site: &dyn Site) {
    let r = run_id(12);
    {
        let store = site.open().await;
        let log = store.log();
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
        assert!(matches!(kinds[1], EventKind::AttemptBegun(_)), "{kinds:?}");

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
        drop(store);
        assert!(matches!(lost.await, Err(LogError::Closed)));
    }
    let store = site.open().await;
    assert_eq!(store.log().read(r).await.unwrap().len(), 4);
}

/// Runs enqueued together (and so committed in shared groups) list in id order all the
/// same, by tenant, workflow and time, oldest or newest first, a limit taking the first
/// ones and `created_before` paging back.
pub async fn runs_committed_together_list_in_order(site: &dyn Site) {
    const RUNS: u16 = 500;
    // Ids out of order of appending, so that a group's runs are not already sorted.
    let id = |n: u16| {
        RunId::v7(
            1_700_000_000_000,
            [(n % 7) as u8, (n >> 8) as u8, n as u8, 0, 0, 0, 0, 0, 0, 0],
        )
    };
    let store = site.open().await;
    let log = store.log();
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
    assert_eq!(listed(log, tenant("acme", 0)).await, acme);
    assert_eq!(listed(log, tenant("acme", 17)).await, acme[..17]);
    let wf3: Vec<RunId> = all
        .iter()
        .copied()
        .filter(|r| (0..RUNS).any(|n| n % 5 == 3 && id(n) == *r))
        .collect();
    let by_workflow = RunFilter {
        workflow: Some("wf3".into()),
        ..RunFilter::default()
    };
    assert_eq!(listed(log, by_workflow).await, wf3);
    // By time: the runs of ms 1000, then those of ms 1001, each by id.
    let mut by_time: Vec<(i64, RunId)> = (0..RUNS)
        .map(|n| (1_000 + i64::from(n % 2), id(n)))
        .collect();
    by_time.sort();
    let by_time: Vec<RunId> = by_time.into_iter().map(|(_, r)| r).collect();
    assert_eq!(listed(log, RunFilter::default()).await, by_time);
    let window = RunFilter {
        created_from_unix_ms: Some(1_001),
        limit: 10,
        ..RunFilter::default()
    };
    assert_eq!(listed(log, window).await, by_time[250..260]);
    // Newest first: the same runs reversed, a limit keeping the newest.
    let newest = |f: RunFilter| RunFilter {
        newest_first: true,
        ..f
    };
    let reversed = |runs: &[RunId]| runs.iter().rev().copied().collect::<Vec<_>>();
    assert_eq!(
        listed(log, newest(tenant("acme", 0))).await,
        reversed(&acme)
    );
    assert_eq!(
        listed(log, newest(tenant("acme", 17))).await,
        reversed(&acme)[..17]
    );
    assert_eq!(
        listed(log, newest(RunFilter::default())).await,
        reversed(&by_time)
    );
    let before = RunFilter {
        created_before_unix_ms: Some(1_001),
        limit: 10,
        newest_first: true,
        ..RunFilter::default()
    };
    assert_eq!(listed(log, before).await, reversed(&by_time[240..250]));
    let in_flight = RunFilter {
        status: Some(StatusKind::Scheduled),
        limit: 5,
        newest_first: true,
        ..RunFilter::default()
    };
    assert_eq!(listed(log, in_flight).await, reversed(&all)[..5]);
    assert_eq!(log.in_flight().await.unwrap(), all);
}

/// A dead-lettered run retried by hand and dead-lettered again is listed once.
pub async fn a_run_dead_lettered_twice_is_listed_once(site: &dyn Site) {
    let store = site.open().await;
    let log = store.log();
    let r = run_id(7);
    log.append(r, vec![scheduled("wf", "crm", "acme"), dead_lettered()])
        .await
        .unwrap();
    log.append(r, vec![manual_retry()]).await.unwrap();
    let dead = RunFilter {
        status: Some(StatusKind::DeadLettered),
        ..RunFilter::default()
    };
    // Back in flight: its old status entry no longer lists it.
    assert_eq!(listed(log, dead.clone()).await, vec![]);
    assert_eq!(log.in_flight().await.unwrap(), vec![r]);
    log.append(r, vec![dead_lettered()]).await.unwrap();
    assert_eq!(listed(log, dead).await, vec![r]);
    assert_eq!(log.in_flight().await.unwrap(), vec![]);
}

/// Runs dead-lettered together, of which the first is retried by hand and
/// dead-lettered again: every one of them is still listed by its status.
pub async fn runs_dead_lettered_together_stay_listed_when_one_is_again(site: &dyn Site) {
    let store = site.open().await;
    let log = store.log();
    let runs: Vec<RunId> = (10..13).map(run_id).collect();
    for r in &runs {
        log.append(*r, vec![scheduled("wf", "crm", "acme")])
            .await
            .unwrap();
    }
    // Queued together, so a backend that commits in groups writes them in one.
    let mut queued = Vec::new();
    for r in &runs {
        queued.push(log.enqueue(*r, vec![dead_lettered()]).await.unwrap());
    }
    for q in queued {
        q.await.unwrap();
    }
    log.append(runs[0], vec![manual_retry()]).await.unwrap();
    log.append(runs[0], vec![dead_lettered()]).await.unwrap();
    let dead = RunFilter {
        status: Some(StatusKind::DeadLettered),
        ..RunFilter::default()
    };
    let mut listed_dead = listed(log, dead).await;
    listed_dead.sort();
    assert_eq!(listed_dead, runs);
}
