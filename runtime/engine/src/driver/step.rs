//! The driver's next step: a pure function of the run's folded state and of what the
//! driver knows besides it (the time, whether cancellation was asked, how it came to
//! that state).
//!
//! Owns every decision the driver takes before an attempt, and the count of failures
//! the retry policy weighs after one. It must never read the clock, the log or any
//! other state than its arguments, and never append: the runner (`run`) performs the
//! step, and a decision changes only here, where it is tested case by case.

use sluice_model::{EventKind, FailureKind, RunEvent, RunState, RunStatus};

use crate::retry::Failures;

/// How the driver came to the state it decides from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Read from the log, or handed over by the queuer. An attempt found running is
    /// not this driver's: its holder was cut off (its node restarted, or its lease
    /// expired and this node takes the run over).
    Queued,
    /// Read again after this driver's append was refused because the log moved. An
    /// attempt found running is another driver's, which began it meanwhile.
    Refused,
    /// This driver just recorded the running attempt as interrupted: the run is its
    /// own to go on with.
    TakenOver,
}

/// What the driver knows besides the run's state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen {
    /// Now, Unix ms.
    pub now_unix_ms: i64,
    /// Whether cancellation of the run was asked for.
    pub cancelled: bool,
    /// How the driver came to the state.
    pub origin: Origin,
    /// The node is one of a cluster: a running attempt whose lease has not expired
    /// is its holder's, even when this node queued the run.
    pub clustered: bool,
}

/// What the driver does next with a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Completed, cancelled or dead-lettered: nothing to do, the run leaves the node.
    Ended,
    /// A retry not due yet: the run waits in the queue until then (Unix ms), holding
    /// no slot.
    WaitUntil(i64),
    /// Another driver began the run meanwhile: leave it to that one.
    Elsewhere,
    /// Attempt `attempt` was left running by `holder`: record it as interrupted (not
    /// a failure of the run), only if the log has not moved since it was read, so
    /// that two nodes never both take the run.
    TakeOver {
        /// The attempt cut off.
        attempt: u32,
        /// The worker that held it.
        holder: String,
    },
    /// Cancellation was asked for: record it.
    Cancel,
    /// Begin attempt `attempt` from the last checkpoints; `first`: the run never
    /// started, so `RunStarted` goes with it.
    Begin {
        /// The attempt to begin.
        attempt: u32,
        /// Whether it is the run's first start.
        first: bool,
    },
}

/// The next step for a run in `state`.
pub(crate) fn next_step(state: &RunState, seen: &Seen) -> Step {
    match &state.status {
        RunStatus::Completed | RunStatus::Cancelled | RunStatus::DeadLettered { .. } => {
            return Step::Ended;
        }
        // Waiting holds no slot: back to the queue until it is due. Cancelling need
        // not wait for it.
        RunStatus::RetryWaiting {
            not_before_unix_ms, ..
        } if *not_before_unix_ms > seen.now_unix_ms && !seen.cancelled => {
            return Step::WaitUntil(*not_before_unix_ms);
        }
        RunStatus::Running { attempt } => match seen.origin {
            Origin::Refused => return Step::Elsewhere,
            Origin::Queued
                if seen.clustered
                    && state
                        .lease
                        .as_ref()
                        .is_some_and(|l| !l.expired(seen.now_unix_ms)) =>
            {
                return Step::Elsewhere;
            }
            // A cancelled run is taken over all the same: the cut-off attempt is
            // recorded before the cancellation.
            Origin::Queued => {
                let holder = state
                    .lease
                    .as_ref()
                    .map_or_else(|| state.worker.clone(), |l| l.worker.clone());
                return Step::TakeOver {
                    attempt: *attempt,
                    holder,
                };
            }
            Origin::TakenOver => {}
        },
        RunStatus::RetryWaiting { .. } | RunStatus::Scheduled => {}
    }
    if seen.cancelled {
        return Step::Cancel;
    }
    Step::Begin {
        attempt: state.attempts + 1,
        first: state.started_at_unix_ms.is_none(),
    }
}

/// The run's failures since its last manual retry, as the retry policy counts them:
/// interruptions (a node stopping, a lease expiring) are not the run's failures.
pub(crate) fn failures(events: &[RunEvent]) -> Failures {
    let mut f = Failures::default();
    for e in events {
        match &e.kind {
            EventKind::ManualRetryRequested(_) => f = Failures::default(),
            EventKind::AttemptFailed(a) => match a.kind {
                FailureKind::RateLimited => f.rate_limited += 1,
                FailureKind::Orchestration => {}
                _ => f.attempts += 1,
            },
            _ => {}
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use sluice_model::{AttemptFailed, Failure, Heartbeat, Lease, ManualRetryRequested, RunId};

    use super::*;

    const NOW: i64 = 1_000_000;

    /// A run of two attempts so far, started by `first-node`.
    fn state(status: RunStatus) -> RunState {
        RunState {
            status,
            attempts: 2,
            started_at_unix_ms: Some(NOW - 60_000),
            worker: "first-node".into(),
            ..RunState::empty()
        }
    }

    fn never_started() -> RunState {
        RunState {
            status: RunStatus::Scheduled,
            ..RunState::empty()
        }
    }

    fn leased(worker: &str) -> RunState {
        RunState {
            lease: Some(Lease {
                worker: worker.into(),
                attempt: 2,
                until_unix_ms: NOW - 1,
            }),
            ..state(RunStatus::Running { attempt: 2 })
        }
    }

    fn retry_at(not_before_unix_ms: i64) -> RunState {
        state(RunStatus::RetryWaiting {
            attempt: 3,
            not_before_unix_ms,
        })
    }

    fn dead() -> RunState {
        state(RunStatus::DeadLettered {
            cause: Failure {
                kind: FailureKind::Auth,
                message: "401".into(),
            },
        })
    }

    fn seen(origin: Origin, cancelled: bool) -> Seen {
        Seen {
            now_unix_ms: NOW,
            cancelled,
            origin,
            clustered: false,
        }
    }

    fn take_over(holder: &str) -> Step {
        Step::TakeOver {
            attempt: 2,
            holder: holder.into(),
        }
    }

    const THIRD: Step = Step::Begin {
        attempt: 3,
        first: false,
    };

    #[test]
    fn every_state_has_its_step() {
        use Origin::{Queued, Refused, TakenOver};
        let first = Step::Begin {
            attempt: 1,
            first: true,
        };
        let cases: Vec<(&str, RunState, Seen, Step)> = vec![
            // Terminal: nothing to do, however the driver came to it.
            (
                "completed",
                state(RunStatus::Completed),
                seen(Queued, false),
                Step::Ended,
            ),
            (
                "cancelled",
                state(RunStatus::Cancelled),
                seen(Queued, true),
                Step::Ended,
            ),
            ("dead-lettered", dead(), seen(Queued, false), Step::Ended),
            (
                "dead-lettered, refused",
                dead(),
                seen(Refused, false),
                Step::Ended,
            ),
            // Scheduled: begin, the first time with the run's start.
            (
                "new run",
                never_started(),
                seen(Queued, false),
                first.clone(),
            ),
            (
                "new run, cancelled",
                never_started(),
                seen(Queued, true),
                Step::Cancel,
            ),
            (
                "manual retry",
                state(RunStatus::Scheduled),
                seen(Queued, false),
                THIRD,
            ),
            (
                "refused, not running",
                never_started(),
                seen(Refused, false),
                first,
            ),
            // Waiting for a retry: wait until due, unless cancelled.
            (
                "retry later",
                retry_at(NOW + 1),
                seen(Queued, false),
                Step::WaitUntil(NOW + 1),
            ),
            (
                "retry later, cancelled",
                retry_at(NOW + 1),
                seen(Queued, true),
                Step::Cancel,
            ),
            ("retry due now", retry_at(NOW), seen(Queued, false), THIRD),
            (
                "retry overdue",
                retry_at(NOW - 5),
                seen(Queued, false),
                THIRD,
            ),
            (
                "retry due, cancelled",
                retry_at(NOW),
                seen(Queued, true),
                Step::Cancel,
            ),
            // Running but not driven here: its holder was cut off.
            (
                "cut off",
                leased("other-node"),
                seen(Queued, false),
                take_over("other-node"),
            ),
            (
                "cut off, no lease: the run's worker held it",
                state(RunStatus::Running { attempt: 2 }),
                seen(Queued, false),
                take_over("first-node"),
            ),
            (
                "cut off, cancelled",
                leased("other-node"),
                seen(Queued, true),
                take_over("other-node"),
            ),
            (
                "taken over",
                leased("other-node"),
                seen(TakenOver, false),
                THIRD,
            ),
            (
                "taken over, cancelled",
                leased("other-node"),
                seen(TakenOver, true),
                Step::Cancel,
            ),
            // Running after this driver's append was refused: another driver has it.
            (
                "begun elsewhere",
                leased("other-node"),
                seen(Refused, false),
                Step::Elsewhere,
            ),
            (
                "begun elsewhere, cancelled",
                leased("other-node"),
                seen(Refused, true),
                Step::Elsewhere,
            ),
        ];
        for (name, state, seen, want) in cases {
            assert_eq!(next_step(&state, &seen), want, "{name}");
        }
    }

    #[test]
    fn the_attempt_begun_follows_the_highest_begun() {
        let mut s = state(RunStatus::Scheduled);
        s.attempts = 7;
        assert_eq!(
            next_step(&s, &seen(Origin::Queued, false)),
            Step::Begin {
                attempt: 8,
                first: false
            }
        );
    }

    fn event(seq: u64, kind: EventKind) -> RunEvent {
        RunEvent::new(RunId::default(), seq, NOW, kind)
    }

    fn failed(kind: FailureKind) -> EventKind {
        EventKind::AttemptFailed(AttemptFailed {
            attempt: 1,
            kind,
            message: String::new(),
            retry_after_ms: 0,
        })
    }

    #[test]
    fn failures_count_since_the_last_manual_retry_without_interruptions() {
        let manual = EventKind::ManualRetryRequested(ManualRetryRequested {
            requested_by: "ops".into(),
            not_before_unix_ms: 0,
        });
        let beat = EventKind::Heartbeat(Heartbeat {
            attempt: 1,
            lease_until_unix_ms: NOW,
        });
        let cases: Vec<(&str, Vec<EventKind>, Failures)> = vec![
            ("none", vec![beat.clone()], Failures::default()),
            (
                "by kind",
                vec![
                    failed(FailureKind::Transient),
                    failed(FailureKind::RateLimited),
                    failed(FailureKind::Sandbox),
                    failed(FailureKind::Orchestration),
                    beat,
                ],
                Failures {
                    attempts: 2,
                    rate_limited: 1,
                },
            ),
            (
                "a manual retry starts over",
                vec![
                    failed(FailureKind::Transient),
                    failed(FailureKind::RateLimited),
                    manual,
                    failed(FailureKind::Auth),
                ],
                Failures {
                    attempts: 1,
                    rate_limited: 0,
                },
            ),
        ];
        for (name, kinds, want) in cases {
            let events: Vec<RunEvent> = (1..)
                .zip(kinds)
                .map(|(seq, kind)| event(seq, kind))
                .collect();
            assert_eq!(failures(&events), want, "{name}");
        }
    }
}
