//! The circuit breaker of one host: after repeated failures, requests fail at once
//! for a cool-down, then one probe decides between closing and another cool-down.
//!
//! Pure and synchronous, like the budgets. It never sees rate limits: a throttle
//! is the API working as designed, not failing.

use std::time::Duration;

use tokio::time::Instant;

use crate::rules::BreakerSettings;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests go through; this many failed in a row.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Requests fail at once until this instant.
    Open {
        /// When one probe may go.
        until: Instant,
    },
    /// One probe is in flight; the others fail at once.
    Probing,
}

/// A request the breaker let through, to be reported back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// An ordinary request.
    Normal,
    /// The one probe after a cool-down.
    Probe,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    pub state: BreakerState,
    /// Times it opened.
    pub opened: u64,
}

impl Breaker {
    pub fn new() -> Self {
        Breaker {
            state: BreakerState::Closed { failures: 0 },
            opened: 0,
        }
    }

    /// Let a request through, or say until when the breaker is open.
    pub fn pass(&mut self, now: Instant) -> Result<Pass, Option<Instant>> {
        match self.state {
            BreakerState::Closed { .. } => Ok(Pass::Normal),
            BreakerState::Open { until } if until <= now => {
                self.state = BreakerState::Probing;
                Ok(Pass::Probe)
            }
            BreakerState::Open { until } => Err(Some(until)),
            BreakerState::Probing => Err(None),
        }
    }

    /// Report how a request that passed ended.
    pub fn report(&mut self, pass: Pass, failed: bool, settings: &BreakerSettings, now: Instant) {
        let open = |b: &mut Self| {
            b.state = BreakerState::Open {
                until: now + settings.cool_down(),
            };
            b.opened += 1;
        };
        match (self.state, pass, failed) {
            (_, _, false) => self.state = BreakerState::Closed { failures: 0 },
            (BreakerState::Probing, Pass::Probe, true) => open(self),
            (BreakerState::Closed { failures }, Pass::Normal, true) => {
                if failures + 1 >= settings.failures {
                    open(self)
                } else {
                    self.state = BreakerState::Closed {
                        failures: failures + 1,
                    }
                }
            }
            // A request that passed before the breaker opened and failed after: the
            // breaker already knows.
            _ => {}
        }
    }

    /// A probe that never reported (its request was dropped) must not keep the
    /// breaker probing forever.
    pub fn abandon(&mut self, pass: Pass, settings: &BreakerSettings, now: Instant) {
        if pass == Pass::Probe && self.state == BreakerState::Probing {
            self.state = BreakerState::Open {
                until: now + settings.cool_down().min(Duration::from_secs(1)),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_then_probes_and_closes() {
        let settings = BreakerSettings {
            failures: 3,
            cool_down_ms: 1000,
        };
        let t0 = Instant::now();
        let mut b = Breaker::new();
        for _ in 0..2 {
            let p = b.pass(t0).unwrap();
            b.report(p, true, &settings, t0);
        }
        let p = b.pass(t0).unwrap();
        b.report(p, false, &settings, t0);
        assert_eq!(
            b.state,
            BreakerState::Closed { failures: 0 },
            "a success resets"
        );
        for _ in 0..3 {
            let p = b.pass(t0).unwrap();
            b.report(p, true, &settings, t0);
        }
        let until = t0 + Duration::from_secs(1);
        assert_eq!(b.pass(t0), Err(Some(until)));
        assert_eq!(b.opened, 1);
        let probe = b.pass(until).unwrap();
        assert_eq!(probe, Pass::Probe);
        assert_eq!(b.pass(until), Err(None), "one probe at a time");
        b.report(probe, true, &settings, until);
        assert_eq!(b.opened, 2, "a failed probe opens it again");
        let later = until + Duration::from_secs(1);
        let probe = b.pass(later).unwrap();
        b.report(probe, false, &settings, later);
        assert_eq!(b.pass(later), Ok(Pass::Normal));
    }
}
