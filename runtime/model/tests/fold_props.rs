//! Property tests of the fold: random valid event sequences from a small state
//! machine, and the invariants every fold must keep (gaps, events of another run and
//! events after a terminal status refused; a dead letter's cause kept and a manual
//! retry resuming). That a stored event of a kind this version does not know stops a
//! run's read is the store's (its codec and its embedded backend's tests).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed expectation fails the test"
)]

use proptest::prelude::*;
use sluice_model::{
    AttemptBegun, AttemptFailed, CheckpointCommitted, EventKind, FailureKind, FoldError, Heartbeat,
    ManualRetryRequested, RetryScheduled, RunCancelled, RunCompleted, RunDeadLettered, RunEvent,
    RunId, RunScheduled, RunStarted, RunState, RunStatus, StatusKind, StreamCompleted, Trigger,
    apply, fold,
};

const STREAMS: [&str; 3] = ["users", "orders", "events"];

#[derive(Clone, Debug)]
enum Action {
    Start,
    Begin,
    Checkpoint {
        stream: usize,
        records: u64,
        bytes: u64,
        split: (u64, u64),
    },
    StreamDone(usize),
    Fail(FailureKind),
    Retry(i64),
    Heartbeat,
    Cancel,
    Complete,
    DeadLetter(FailureKind),
    ManualRetry(i64),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        1 => Just(Action::Start),
        2 => Just(Action::Begin),
        8 => (0..STREAMS.len(), 0u64..500, 0u64..100_000, (0u64..500, 0u64..500)).prop_map(
            |(stream, records, bytes, split)| Action::Checkpoint { stream, records, bytes, split }
        ),
        1 => (0..STREAMS.len()).prop_map(Action::StreamDone),
        1 => prop::sample::select(FailureKind::ALL.to_vec()).prop_map(Action::Fail),
        1 => (0i64..10_000).prop_map(Action::Retry),
        2 => Just(Action::Heartbeat),
        1 => Just(Action::Cancel),
        1 => Just(Action::Complete),
        1 => prop::sample::select(FailureKind::ALL.to_vec()).prop_map(Action::DeadLetter),
        1 => (0i64..2).prop_map(Action::ManualRetry),
    ]
}

const RUN: RunId = RunId([7; 16]);

/// Builds a valid log from actions: actions the current status does not allow are
/// skipped. Returns the events and the records committed per stream.
fn build(actions: &[Action]) -> (Vec<RunEvent>, [u64; 3]) {
    let mut events = vec![RunEvent::new(
        RUN,
        1,
        1_000,
        EventKind::RunScheduled(RunScheduled {
            workflow: "wf".into(),
            connection: "conn".into(),
            tenant: "t".into(),
            priority: 3,
            streams: STREAMS.iter().map(|s| s.to_string()).collect(),
            trigger: Trigger::Manual,
            fire_at_unix_ms: 0,
        }),
    )];
    let mut status = StatusKind::Scheduled;
    let mut attempt = 0u32;
    let mut records = [0u64; 3];
    for a in actions {
        let terminal = status.is_terminal();
        let kind = match a {
            Action::ManualRetry(delay) if status == StatusKind::DeadLettered => {
                status = if *delay > 0 {
                    StatusKind::RetryWaiting
                } else {
                    StatusKind::Scheduled
                };
                EventKind::ManualRetryRequested(ManualRetryRequested {
                    requested_by: "op".into(),
                    not_before_unix_ms: *delay,
                })
            }
            _ if terminal => continue,
            Action::ManualRetry(_) => continue,
            Action::Start => {
                status = StatusKind::Running;
                EventKind::RunStarted(RunStarted {
                    worker: "w".into(),
                    exclusive: true,
                    tenant_slots: 0,
                })
            }
            Action::Begin => {
                attempt += 1;
                status = StatusKind::Running;
                EventKind::AttemptBegun(AttemptBegun {
                    attempt,
                    ..Default::default()
                })
            }
            Action::Checkpoint {
                stream,
                records: n,
                bytes,
                split,
            } => {
                records[*stream] += n;
                let created = split.0.min(*n);
                let updated = split.1.min(n - created);
                EventKind::CheckpointCommitted(CheckpointCommitted {
                    stream: STREAMS[*stream].into(),
                    checkpoint: format!("c{}", events.len()),
                    records: *n,
                    bytes: *bytes,
                    created,
                    updated,
                    unchanged: n - created - updated,
                    attempt,
                    deleted: 0,
                })
            }
            Action::StreamDone(s) => EventKind::StreamCompleted(StreamCompleted {
                stream: STREAMS[*s].into(),
                full_refresh: false,
                attempt,
            }),
            Action::Fail(k) => EventKind::AttemptFailed(AttemptFailed {
                attempt,
                kind: *k,
                message: "boom".into(),
                retry_after_ms: 0,
            }),
            Action::Retry(at) => {
                status = StatusKind::RetryWaiting;
                EventKind::RetryScheduled(RetryScheduled {
                    attempt: attempt + 1,
                    not_before_unix_ms: *at,
                })
            }
            Action::Heartbeat => EventKind::Heartbeat(Heartbeat {
                attempt,
                ..Default::default()
            }),
            Action::Cancel => {
                status = StatusKind::Cancelled;
                EventKind::RunCancelled(RunCancelled {
                    reason: "user".into(),
                })
            }
            Action::Complete => {
                status = StatusKind::Completed;
                EventKind::RunCompleted(RunCompleted {})
            }
            Action::DeadLetter(k) => {
                status = StatusKind::DeadLettered;
                EventKind::RunDeadLettered(RunDeadLettered {
                    kind: *k,
                    message: "dead".into(),
                })
            }
        };
        let seq = events.len() as u64 + 1;
        events.push(RunEvent::new(RUN, seq, 1_000 + seq as i64, kind));
    }
    (events, records)
}

fn check_invariants(state: &RunState, events: &[RunEvent], records: &[u64; 3]) {
    for (i, s) in STREAMS.iter().enumerate() {
        assert_eq!(state.progress[*s].records, records[i], "stream {s}");
    }
    assert_eq!(state.total_records(), records.iter().sum::<u64>());
    assert_eq!(state.last_seq, events.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fold_keeps_invariants(actions in prop::collection::vec(action(), 0..60), split in any::<prop::sample::Index>()) {
        let (events, records) = build(&actions);
        let state = fold(&events).unwrap();
        check_invariants(&state, &events, &records);

        // Deterministic.
        prop_assert_eq!(&fold(&events).unwrap(), &state);

        // Fold of a prefix, then apply of the rest, equals the fold of the whole.
        let k = split.index(events.len()) + 1;
        let mut partial = fold(&events[..k]).unwrap();
        for e in &events[k..] {
            apply(&mut partial, e).unwrap();
        }
        prop_assert_eq!(&partial, &state);

        // Terminal states are final: nothing but a manual retry of a dead letter follows.
        let status = state.status.kind();
        if status.is_terminal() {
            let seq = state.last_seq + 1;
            for kind in [
                EventKind::Heartbeat(Heartbeat { attempt: 1, ..Default::default() }),
                EventKind::RunCompleted(RunCompleted {}),
                EventKind::AttemptBegun(AttemptBegun { attempt: 9, ..Default::default() }),
            ] {
                let mut s = state.clone();
                let err = apply(&mut s, &RunEvent::new(RUN, seq, 0, kind)).unwrap_err();
                prop_assert_eq!(err, FoldError::AfterTerminal { seq });
                prop_assert_eq!(&s, &state);
            }
            let retry = EventKind::ManualRetryRequested(ManualRetryRequested::default());
            let mut s = state.clone();
            let r = apply(&mut s, &RunEvent::new(RUN, seq, 0, retry));
            if status == StatusKind::DeadLettered {
                prop_assert!(r.is_ok());
                prop_assert_eq!(s.status.kind(), StatusKind::Scheduled);
            } else {
                prop_assert_eq!(r.unwrap_err(), FoldError::AfterTerminal { seq });
            }
        }
    }

    #[test]
    fn gaps_are_rejected(actions in prop::collection::vec(action(), 2..60), at in any::<prop::sample::Index>()) {
        let (mut events, _) = build(&actions);
        prop_assume!(events.len() >= 3);
        // Remove an event that is neither the first nor the last.
        let k = 1 + at.index(events.len() - 2);
        events.remove(k);
        let err = fold(&events).unwrap_err();
        prop_assert_eq!(err, FoldError::Gap { expected: k as u64 + 1, found: k as u64 + 2 });
    }

    /// An event of another run is refused wherever it stands after the first. (An
    /// event of an unknown kind never becomes a domain event: the store's read stops at
    /// it, see the embedded backend's `an_unknown_event_kind_anywhere_in_a_log_stops_it_at_its_seq`.)
    #[test]
    fn another_runs_events_are_rejected(actions in prop::collection::vec(action(), 1..60), at in any::<prop::sample::Index>()) {
        let (mut events, _) = build(&actions);
        prop_assume!(events.len() >= 2);
        let k = 1 + at.index(events.len() - 1);
        events[k].run = RunId([9; 16]);
        let err = fold(&events).unwrap_err();
        prop_assert_eq!(err, FoldError::WrongRun { seq: k as u64 + 1 });
    }
}

#[test]
fn empty_and_misplaced_logs_are_rejected() {
    assert_eq!(fold(std::iter::empty()).unwrap_err(), FoldError::Empty);
    let hb = RunEvent::new(
        RUN,
        1,
        0,
        EventKind::Heartbeat(Heartbeat {
            attempt: 0,
            ..Default::default()
        }),
    );
    assert!(matches!(
        fold([&hb]).unwrap_err(),
        FoldError::Unexpected { seq: 1, .. }
    ));
    let (mut events, _) = build(&[Action::Start]);
    events[1].run = RunId([9; 16]);
    assert_eq!(fold(&events).unwrap_err(), FoldError::WrongRun { seq: 2 });
}

#[test]
fn dead_letter_keeps_cause_and_manual_retry_resumes() {
    let (events, records) = build(&[
        Action::Begin,
        Action::Checkpoint {
            stream: 1,
            records: 10,
            bytes: 100,
            split: (10, 0),
        },
        Action::DeadLetter(FailureKind::Auth),
    ]);
    let state = fold(&events).unwrap();
    match &state.status {
        RunStatus::DeadLettered { cause } => {
            assert_eq!(cause.kind, FailureKind::Auth);
            assert_eq!(cause.message, "dead");
        }
        other => panic!("unexpected {other:?}"),
    }
    let (events, _) = build(&[
        Action::Begin,
        Action::Checkpoint {
            stream: 1,
            records: 10,
            bytes: 100,
            split: (10, 0),
        },
        Action::DeadLetter(FailureKind::Auth),
        Action::ManualRetry(1),
    ]);
    let state = fold(&events).unwrap();
    assert_eq!(
        state.status,
        RunStatus::RetryWaiting {
            attempt: 2,
            not_before_unix_ms: 1
        }
    );
    assert_eq!(state.progress["orders"].checkpoint.as_deref(), Some("c2"));
    assert_eq!(state.total_records(), records.iter().sum::<u64>());
    assert_eq!(state.finished_at_unix_ms, None);
}
