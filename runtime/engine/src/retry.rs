//! Retry policy: what happens after a failed attempt, chosen by the failure's kind.
//!
//! Owns the decision (retry after a delay, or dead-letter) and the backoff delays. It is
//! a pure function of the policy, the failure and the run's failure counts: it never
//! sleeps, never reads the clock and never writes the log.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};
use sluice_model::FailureKind;

use crate::error::DefinitionError;

/// How failed attempts of a workflow's runs are retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts that may fail (transient, sandbox) before the run is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds.
    pub initial_backoff_ms: u64,
    /// Longest delay between attempts, in milliseconds.
    pub max_backoff_ms: u64,
    /// Growth of the delay per failed attempt.
    pub multiplier: f32,
    /// Add a random part (up to the delay itself) so that many runs failing together
    /// do not retry together.
    pub jitter: bool,
    /// Times a run may wait for a rate limit before it is dead-lettered.
    pub max_rate_limit_waits: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 5 * 60 * 1_000,
            multiplier: 2.0,
            jitter: true,
            max_rate_limit_waits: 100,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this delay, from the last checkpoint.
    Retry(Duration),
    /// Stop; keep the cause until a manual retry.
    DeadLetter,
}

/// How often a run has failed so far (since its last manual retry), this failure
/// included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    /// Failed attempts that count toward `max_attempts`.
    pub attempts: u32,
    /// Waits for a rate limit.
    pub rate_limited: u32,
}

impl RetryPolicy {
    /// Checks the policy; `at` prefixes field paths.
    pub fn validate(&self, at: &str) -> Result<(), DefinitionError> {
        let field = |f: &str, m: &str| DefinitionError {
            field: format!("{at}{f}"),
            message: m.into(),
        };
        if self.max_attempts == 0 {
            return Err(field("max_attempts", "must be at least 1"));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(field("multiplier", "must be a number of at least 1"));
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            return Err(field(
                "max_backoff_ms",
                "must be at least initial_backoff_ms",
            ));
        }
        Ok(())
    }

    /// The delay before retrying after the `n`th counted failure (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let mut builder = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.initial_backoff_ms))
            .with_max_delay(Duration::from_millis(self.max_backoff_ms))
            .with_factor(self.multiplier)
            .with_max_times(n as usize);
        if self.jitter {
            builder = builder.with_jitter();
        }
        let delay = builder
            .build()
            .nth(n.saturating_sub(1) as usize)
            .unwrap_or(Duration::from_millis(self.max_backoff_ms));
        // The factor is an f32: round away its error, to whole milliseconds like the
        // policy's own settings.
        Duration::from_millis((delay.as_secs_f64() * 1_000.0).round() as u64)
    }

    /// What to do after a failure of `kind`, given the run's failures so far.
    ///
    /// Config, auth, schema and permanent failures never go away by waiting: straight
    /// to dead-letter. A rate limit waits for as long as the source asked (or backs
    /// off when it did not say) and does not count as a failed attempt. Transient,
    /// sandbox and orchestration failures back off, up to `max_attempts`, and never
    /// retry sooner than `retry_after` (a host's breaker cool-down).
    pub fn decide(
        &self,
        kind: FailureKind,
        retry_after: Option<Duration>,
        failures: Failures,
    ) -> Decision {
        match kind {
            FailureKind::Config
            | FailureKind::Auth
            | FailureKind::Schema
            | FailureKind::Permanent => Decision::DeadLetter,
            FailureKind::RateLimited => {
                if failures.rate_limited > self.max_rate_limit_waits {
                    Decision::DeadLetter
                } else {
                    Decision::Retry(
                        retry_after.unwrap_or_else(|| self.backoff(failures.rate_limited)),
                    )
                }
            }
            FailureKind::Transient | FailureKind::Sandbox | FailureKind::Orchestration => {
                if failures.attempts >= self.max_attempts {
                    Decision::DeadLetter
                } else {
                    // Never sooner than the host said could help (an open breaker).
                    let backoff = self.backoff(failures.attempts);
                    Decision::Retry(retry_after.map_or(backoff, |r| r.max(backoff)))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> RetryPolicy {
        RetryPolicy {
            jitter: false,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_cap() {
        let p = no_jitter();
        let delays: Vec<u64> = (1..=6).map(|n| p.backoff(n).as_millis() as u64).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1_000, 1_000]);
        let small = RetryPolicy {
            initial_backoff_ms: 10,
            max_backoff_ms: 50,
            ..p
        };
        let delays: Vec<u64> = (1..=4)
            .map(|n| small.backoff(n).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![10, 20, 40, 50]);
    }

    #[test]
    fn jitter_stays_within_twice_the_delay() {
        let p = RetryPolicy {
            jitter: true,
            ..no_jitter()
        };
        for n in 1..=6 {
            let base = no_jitter().backoff(n);
            let d = p.backoff(n);
            assert!(d >= base && d <= base * 2, "attempt {n}: {d:?} vs {base:?}");
        }
    }

    #[test]
    fn the_kind_chooses_retry_wait_or_dead_letter() {
        let p = no_jitter();
        let once = Failures {
            attempts: 1,
            rate_limited: 0,
        };
        for kind in [
            FailureKind::Config,
            FailureKind::Auth,
            FailureKind::Schema,
            FailureKind::Permanent,
        ] {
            assert_eq!(p.decide(kind, None, once), Decision::DeadLetter, "{kind:?}");
        }
        assert_eq!(
            p.decide(FailureKind::Transient, None, once),
            Decision::Retry(Duration::from_millis(100))
        );
        // An open breaker's cool-down is waited out; a shorter hint changes nothing.
        assert_eq!(
            p.decide(FailureKind::Transient, Some(Duration::from_secs(30)), once),
            Decision::Retry(Duration::from_secs(30))
        );
        assert_eq!(
            p.decide(FailureKind::Transient, Some(Duration::from_millis(1)), once),
            Decision::Retry(Duration::from_millis(100))
        );
        let waits = Failures {
            attempts: 0,
            rate_limited: 3,
        };
        assert_eq!(
            p.decide(
                FailureKind::RateLimited,
                Some(Duration::from_secs(7)),
                waits
            ),
            Decision::Retry(Duration::from_secs(7))
        );
        let spent = Failures {
            attempts: p.max_attempts,
            rate_limited: 0,
        };
        assert_eq!(
            p.decide(FailureKind::Transient, None, spent),
            Decision::DeadLetter
        );
    }
}
