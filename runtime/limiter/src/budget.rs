//! The budget of one key: its declared window and concurrency, what the API has
//! told about its own window (learned), and pauses after throttling.
//!
//! Pure and synchronous: every function takes the current instant, so the rules
//! are tested without a clock. It never waits and never wakes anyone; the
//! [`Limiter`](crate::Limiter) does that.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::rules::RateLimitRule;
use crate::signals::Signals;

/// Why a request cannot start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// Not before this instant.
    Until(Instant),
    /// Not before a request in flight ends.
    OnRelease,
}

/// The longest pause after repeated throttling without a hint.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The first pause after throttling without a hint.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// A `remaining` count without a reset is trusted this long.
const UNDATED_WINDOW: Duration = Duration::from_secs(1);

/// A declared "at most N per interval" window.
///
/// A request occupies the window from when it is sent until one interval after its
/// answer arrives. The API counts it at some instant between the two, so any
/// interval of the API's clock holds at most N of them, whatever the latency.
#[derive(Debug)]
struct Window {
    limit: u32,
    period: Duration,
    /// When requests that ended leave the window, oldest first.
    leaving: VecDeque<Instant>,
}

/// What the API said about its own window.
#[derive(Debug, Clone, Copy)]
struct Learned {
    left: u64,
    reset_at: Instant,
}

/// The state of one key.
#[derive(Debug)]
pub(crate) struct Budget {
    window: Option<Window>,
    concurrent: Option<u32>,
    pub in_flight: u32,
    learned: Option<Learned>,
    /// Only one request at a time until an answer tells the key's state: at first,
    /// after a pause, after a learned window reset.
    probe: bool,
    paused_until: Option<Instant>,
    throttled_in_a_row: u32,
}

impl Budget {
    pub fn new(rule: Option<&RateLimitRule>) -> Self {
        let mut budget = Budget {
            window: None,
            concurrent: None,
            in_flight: 0,
            learned: None,
            probe: true,
            paused_until: None,
            throttled_in_a_row: 0,
        };
        budget.apply(rule);
        budget
    }

    /// Take the rule's current limits (a connection may be redefined while its key
    /// lives).
    pub fn apply(&mut self, rule: Option<&RateLimitRule>) {
        self.concurrent = rule.and_then(|r| r.concurrent);
        match (
            rule.and_then(|r| r.requests.map(|n| (n, r.period()))),
            &mut self.window,
        ) {
            (None, w) => *w = None,
            (Some((limit, period)), Some(w)) => {
                w.limit = limit;
                w.period = period;
            }
            (Some((limit, period)), w @ None) => {
                *w = Some(Window {
                    limit,
                    period,
                    leaving: VecDeque::new(),
                })
            }
        }
    }

    /// Whether `apply(rule)` would change nothing.
    pub fn follows(&self, rule: Option<&RateLimitRule>) -> bool {
        let window = self.window.as_ref().map(|w| (w.limit, w.period));
        self.concurrent == rule.and_then(|r| r.concurrent)
            && window == rule.and_then(|r| r.requests.map(|n| (n, r.period())))
    }

    /// Start a request now if the budget allows.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Blocked> {
        self.try_take_within(now, None)
    }

    /// Start a request now if the budget allows and the declared window holds fewer
    /// than `cap` requests (the slots this node holds of a budget shared by a
    /// cluster); `None` for no cap beyond the declared limit.
    pub fn try_take_within(&mut self, now: Instant, cap: Option<u32>) -> Result<(), Blocked> {
        let mut until: Option<Instant> = None;
        let mut later = |at: Instant| until = Some(until.map_or(at, |u| u.max(at)));
        let mut on_release = false;
        if let Some(p) = self.paused_until {
            if p > now {
                later(p);
            } else {
                self.paused_until = None;
            }
        }
        if let Some(l) = self.learned {
            if l.reset_at <= now {
                self.learned = None;
                self.probe = true;
            } else if l.left == 0 {
                later(l.reset_at);
            }
        }
        if self.probe && self.in_flight > 0 {
            on_release = true;
        }
        if self.concurrent.is_some_and(|c| self.in_flight >= c) {
            on_release = true;
        }
        if let Some(w) = &mut self.window {
            while w.leaving.front().is_some_and(|t| *t <= now) {
                w.leaving.pop_front();
            }
            let used = w.leaving.len() as u64 + u64::from(self.in_flight);
            let limit = cap.map_or(w.limit, |c| c.min(w.limit));
            if used >= u64::from(limit) {
                match w.leaving.front() {
                    Some(t) => later(*t),
                    None => on_release = true,
                }
            }
        }
        // A time is the better answer when there is one: a release also wakes
        // waiters, so nothing is missed by sleeping until it.
        match (until, on_release) {
            (Some(t), _) => Err(Blocked::Until(t)),
            (None, true) => Err(Blocked::OnRelease),
            (None, false) => {
                self.in_flight += 1;
                if let Some(l) = &mut self.learned {
                    l.left -= 1;
                }
                Ok(())
            }
        }
    }

    /// A request that started ended at `now`.
    pub fn release(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(w) = &mut self.window {
            w.leaving.push_back(now + w.period);
        }
    }

    /// Learn from an answer received at `now`; returns how long the key pauses if
    /// the answer was a throttle.
    pub fn observe(&mut self, signals: &Signals, now: Instant) -> Option<Duration> {
        if signals.throttled {
            self.throttled_in_a_row += 1;
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << (self.throttled_in_a_row - 1).min(16))
                .min(MAX_BACKOFF);
            let pause = signals.pause().unwrap_or(backoff);
            let until = now + pause;
            self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
            self.learned = None;
            self.probe = true;
            return Some(pause);
        }
        self.throttled_in_a_row = 0;
        self.probe = false;
        if let Some(remaining) = signals.remaining {
            // Requests still in flight may not be counted in `remaining` yet.
            let others = u64::from(self.in_flight.saturating_sub(1));
            let fresh = Learned {
                left: remaining.saturating_sub(others),
                reset_at: now + signals.reset.unwrap_or(UNDATED_WINDOW),
            };
            // Answers arrive out of order: within a known window only ever lower
            // the count, so a late answer cannot grant what a newer one took away.
            self.learned = Some(match self.learned {
                Some(old) if old.reset_at > now => Learned {
                    left: old.left.min(fresh.left),
                    reset_at: old.reset_at.max(fresh.reset_at),
                },
                _ => fresh,
            });
        }
        None
    }

    /// How many requests the declared window holds now, if there is one.
    pub fn window_used(&self, now: Instant) -> Option<(u64, u32)> {
        self.window.as_ref().map(|w| {
            let leaving = w.leaving.iter().filter(|t| **t > now).count() as u64;
            (leaving + u64::from(self.in_flight), w.limit)
        })
    }

    /// The declared window: its limit and interval.
    pub fn declared(&self) -> Option<(u32, Duration)> {
        self.window.as_ref().map(|w| (w.limit, w.period))
    }

    /// Requests in the declared window right after [`Budget::try_take_within`] at
    /// the same instant (which dropped those that left): without a second pass.
    pub fn used_after_take(&self) -> u64 {
        self.window.as_ref().map_or(0, |w| w.leaving.len() as u64) + u64::from(self.in_flight)
    }

    /// Pause until `until`, as another node learned the API asks: like a throttle
    /// seen here, but without counting it towards this node's backoff. Returns
    /// whether the pause grew.
    pub fn pause_until(&mut self, until: Instant) -> bool {
        if self.paused_until.is_some_and(|p| p >= until) {
            return false;
        }
        self.paused_until = Some(until);
        self.learned = None;
        self.probe = true;
        true
    }

    /// Requests the API said are left, while its window lasts.
    pub fn learned_left(&self, now: Instant) -> Option<u64> {
        self.learned.filter(|l| l.reset_at > now).map(|l| l.left)
    }

    /// Until when the key is paused.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|p| *p > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(requests: Option<u32>, per_ms: u64, concurrent: Option<u32>) -> RateLimitRule {
        RateLimitRule {
            endpoint: "api.example.com".into(),
            requests,
            per_ms,
            concurrent,
        }
    }

    fn ok() -> Signals {
        Signals::default()
    }

    #[test]
    fn a_window_frees_a_slot_one_interval_after_the_answer() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut b = Budget::new(Some(&rule(Some(2), 1000, None)));
        b.try_take(t0).unwrap();
        b.observe(&ok(), t0);
        b.try_take(t0).unwrap();
        assert_eq!(
            b.try_take(t0),
            Err(Blocked::OnRelease),
            "both slots in flight"
        );
        b.release(ms(10));
        b.release(ms(50));
        assert_eq!(b.try_take(ms(500)), Err(Blocked::Until(ms(1010))));
        b.try_take(ms(1010)).unwrap();
        assert_eq!(b.try_take(ms(1020)), Err(Blocked::Until(ms(1050))));
        assert_eq!(b.window_used(ms(1020)), Some((2, 2)));
    }

    #[test]
    fn concurrency_and_the_first_probe_wait_for_a_release() {
        let t0 = Instant::now();
        let mut b = Budget::new(Some(&rule(None, 1000, Some(2))));
        b.try_take(t0).unwrap();
        assert_eq!(
            b.try_take(t0),
            Err(Blocked::OnRelease),
            "a new key probes first"
        );
        b.observe(&ok(), t0);
        b.try_take(t0).unwrap();
        assert_eq!(b.try_take(t0), Err(Blocked::OnRelease), "two in flight");
        b.release(t0);
        b.try_take(t0).unwrap();
    }

    #[test]
    fn a_throttle_pauses_then_probes_and_backs_off_without_a_hint() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut b = Budget::new(None);
        b.try_take(t0).unwrap();
        b.observe(&ok(), t0);
        b.try_take(t0).unwrap();
        let throttled = Signals {
            throttled: true,
            retry_after: Some(Duration::from_secs(5)),
            ..Signals::default()
        };
        assert_eq!(b.observe(&throttled, t0), Some(Duration::from_secs(5)));
        b.release(t0);
        b.release(t0);
        assert_eq!(b.try_take(s(4)), Err(Blocked::Until(s(5))));
        b.try_take(s(5)).unwrap();
        assert_eq!(
            b.try_take(s(5)),
            Err(Blocked::OnRelease),
            "one probe after a pause"
        );
        let bare = Signals {
            throttled: true,
            ..Signals::default()
        };
        assert_eq!(
            b.observe(&bare, s(5)),
            Some(Duration::from_secs(2)),
            "second in a row"
        );
        b.release(s(5));
        b.try_take(s(7)).unwrap();
        b.observe(&ok(), s(7));
        b.try_take(s(7)).unwrap();
    }

    #[test]
    fn remaining_counts_down_and_late_answers_never_raise_it() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut b = Budget::new(None);
        b.try_take(t0).unwrap();
        let told = |remaining, reset| Signals {
            remaining: Some(remaining),
            reset: Some(Duration::from_secs(reset)),
            ..Signals::default()
        };
        b.observe(&told(2, 1), t0);
        b.release(t0);
        b.try_take(t0).unwrap();
        b.try_take(t0).unwrap();
        assert_eq!(b.learned_left(t0), Some(0));
        b.observe(&told(5, 1), t0);
        assert_eq!(
            b.learned_left(t0),
            Some(0),
            "a late answer does not raise the count"
        );
        assert_eq!(b.try_take(t0), Err(Blocked::Until(s(1))));
        b.release(t0);
        b.release(t0);
        b.try_take(s(1)).unwrap();
        assert_eq!(
            b.try_take(s(1)),
            Err(Blocked::OnRelease),
            "the new window is probed"
        );
    }
}
