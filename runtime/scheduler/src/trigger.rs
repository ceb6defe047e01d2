//! Triggers: when a workflow's runs are due.
//!
//! Owns parsing trigger definitions (cron expressions in a time zone, fixed intervals,
//! manual) and computing fires: the next ones, and the ones due at `now` after the
//! last handled fire, with missed fires treated by the catch-up policy. Jitter is a
//! deterministic offset per (workflow, fire), so a restart computes the same due time.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Most missed fires enumerated after downtime (an every-second schedule down for a
/// day would otherwise list 86,400).
pub const MAX_CATCH_UP: usize = 10_000;

/// How a workflow is triggered, as users write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TriggerDef {
    /// A cron expression: 5 fields (`min hour dom month dow`), or 6–7 with seconds
    /// first and an optional year last; evaluated in `timezone` (IANA name).
    Cron {
        /// The expression.
        expression: String,
        /// IANA time zone, e.g. `Europe/Paris`; default UTC.
        #[serde(default = "utc")]
        timezone: String,
    },
    /// Every `every_secs` seconds, counted from the schedule's anchor.
    Interval {
        /// Seconds between fires.
        every_secs: u64,
    },
    /// Only when triggered by hand.
    Manual,
}

fn utc() -> String {
    "UTC".into()
}

/// What to do with fires missed while the node was down (fires later than the grace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum CatchUp {
    /// Run once for all the missed fires (the latest).
    #[default]
    RunOnce,
    /// Skip missed fires; wait for the next one.
    Skip,
    /// Run every missed fire no older than `window_secs`.
    AllWithin {
        /// How far back missed fires still run.
        window_secs: u64,
    },
}

/// A trigger definition that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    /// The cron expression is invalid.
    #[error("invalid cron expression `{expression}`: {reason}")]
    Cron {
        /// The expression.
        expression: String,
        /// The parser's reason.
        reason: String,
    },
    /// The time zone is not an IANA name.
    #[error("unknown time zone `{0}` (use an IANA name such as `Europe/Paris` or `UTC`)")]
    TimeZone(String),
    /// An interval of zero.
    #[error("an interval must be at least 1 second")]
    ZeroInterval,
}

#[derive(Debug, Clone)]
enum Kind {
    Cron(Box<cron::Schedule>, Tz),
    Interval(i64),
    Manual,
}

/// A parsed trigger with its timing options.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
    /// Fires are started up to this late without counting as missed, in milliseconds.
    pub grace_ms: i64,
    /// Each fire is delayed by a deterministic amount below this, in milliseconds.
    pub jitter_ms: u64,
    /// What to do with missed fires.
    pub catch_up: CatchUp,
}

/// Fires due at `now`, and when to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fires {
    /// Fire times to start runs for, oldest first (before jitter).
    pub due: Vec<DateTime<Utc>>,
    /// Fires passed over (missed and not caught up).
    pub skipped: usize,
    /// The latest fire handled; the next call passes it as `last`.
    pub handled: Option<DateTime<Utc>>,
    /// When the next fire is due (its jittered time), after `now`.
    pub next: Option<DateTime<Utc>>,
}

impl Schedule {
    /// Parses a trigger definition.
    pub fn parse(def: &TriggerDef) -> Result<Self, TriggerError> {
        let kind = match def {
            TriggerDef::Cron {
                expression,
                timezone,
            } => {
                let fields = expression.split_whitespace().count();
                let full = if fields == 5 {
                    format!("0 {expression}")
                } else {
                    expression.clone()
                };
                let schedule = cron::Schedule::from_str(&full).map_err(|e| TriggerError::Cron {
                    expression: expression.clone(),
                    reason: e.to_string(),
                })?;
                let tz =
                    Tz::from_str(timezone).map_err(|_| TriggerError::TimeZone(timezone.clone()))?;
                Kind::Cron(Box::new(schedule), tz)
            }
            TriggerDef::Interval { every_secs } => {
                if *every_secs == 0 {
                    return Err(TriggerError::ZeroInterval);
                }
                Kind::Interval(
                    i64::try_from(*every_secs)
                        .unwrap_or(i64::MAX)
                        .saturating_mul(1000),
                )
            }
            TriggerDef::Manual => Kind::Manual,
        };
        Ok(Schedule {
            kind,
            grace_ms: 60_000,
            jitter_ms: 0,
            catch_up: CatchUp::default(),
        })
    }

    /// The first fire strictly after `after`; intervals count from `anchor`.
    pub fn next_after(&self, anchor: DateTime<Utc>, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Cron(schedule, tz) => schedule
                .after(&after.with_timezone(tz))
                .next()
                .map(|t| t.with_timezone(&Utc)),
            Kind::Interval(every_ms) => {
                let since = after.timestamp_millis() - anchor.timestamp_millis();
                let n = if since < 0 { 0 } else { since / every_ms + 1 };
                Utc.timestamp_millis_opt(anchor.timestamp_millis() + n * every_ms)
                    .single()
            }
            Kind::Manual => None,
        }
    }

    /// The next `count` fires after `after`.
    pub fn upcoming(
        &self,
        anchor: DateTime<Utc>,
        after: DateTime<Utc>,
        count: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(count);
        let mut t = after;
        while out.len() < count {
            match self.next_after(anchor, t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// The fires of `key`'s schedule due at `now`, given the last fire handled (`last`;
    /// the schedule's creation time if none was). A fire is due once its jittered time
    /// (see [`Schedule::jittered`]) has come, so a node handles each fire (decides by
    /// the overlap policy, records the run) when the run should start, not up to
    /// `jitter_ms` before; fires stay in order. Fires at most `grace_ms` past their
    /// jittered time always run; older ones follow the catch-up policy.
    pub fn due(
        &self,
        key: &str,
        anchor: DateTime<Utc>,
        last: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Fires {
        let mut missed = Vec::new();
        let mut on_time = Vec::new();
        let mut t = last;
        let mut skipped = 0;
        let mut handled = None;
        let mut next_due = None;
        while let Some(next) = self.next_after(anchor, t) {
            let due_at = self.jittered(key, next);
            if due_at > now {
                next_due = Some(due_at);
                break;
            }
            handled = Some(next);
            t = next;
            if (now - due_at).num_milliseconds() <= self.grace_ms {
                on_time.push(next);
            } else if missed.len() < MAX_CATCH_UP {
                missed.push(next);
            } else {
                skipped += 1;
            }
        }
        let missed_total = missed.len();
        let mut due = match self.catch_up {
            CatchUp::RunOnce if on_time.is_empty() => missed.pop().into_iter().collect(),
            CatchUp::RunOnce | CatchUp::Skip => Vec::new(),
            CatchUp::AllWithin { window_secs } => {
                let window = i64::try_from(window_secs).unwrap_or(i64::MAX / 1000) * 1000;
                missed
                    .iter()
                    .copied()
                    .filter(|f| (now - *f).num_milliseconds() <= window)
                    .collect()
            }
        };
        skipped += missed_total - due.len();
        due.extend(on_time);
        Fires {
            due,
            skipped,
            handled,
            next: next_due,
        }
    }

    /// The fire's due time with its jitter: the same for the same key and fire.
    pub fn jittered(&self, key: &str, fire: DateTime<Utc>) -> DateTime<Utc> {
        if self.jitter_ms == 0 {
            return fire;
        }
        // FNV-1a over the key and the fire time: stable across restarts and builds.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key
            .as_bytes()
            .iter()
            .chain(fire.timestamp_millis().to_be_bytes().iter())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let offset = i64::try_from(h % self.jitter_ms).unwrap_or(0);
        fire + chrono::Duration::milliseconds(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cron(expression: &str, timezone: &str) -> Schedule {
        Schedule::parse(&TriggerDef::Cron {
            expression: expression.into(),
            timezone: timezone.into(),
        })
        .unwrap()
    }

    #[test]
    fn five_field_cron_runs_in_its_time_zone() {
        let s = cron("30 9 * * *", "Europe/Paris");
        let anchor = at("2026-01-01T00:00:00Z");
        // 09:30 in Paris is 08:30 UTC in winter and 07:30 UTC in summer.
        assert_eq!(
            s.next_after(anchor, at("2026-01-10T00:00:00Z")),
            Some(at("2026-01-10T08:30:00Z"))
        );
        assert_eq!(
            s.next_after(anchor, at("2026-07-10T00:00:00Z")),
            Some(at("2026-07-10T07:30:00Z"))
        );
    }

    #[test]
    fn bad_definitions_say_what_is_wrong() {
        let e = Schedule::parse(&TriggerDef::Cron {
            expression: "61 * * * *".into(),
            timezone: "UTC".into(),
        })
        .unwrap_err();
        assert!(matches!(e, TriggerError::Cron { .. }), "{e}");
        let e = Schedule::parse(&TriggerDef::Cron {
            expression: "* * * * *".into(),
            timezone: "Mars/Olympus".into(),
        })
        .unwrap_err();
        assert_eq!(e, TriggerError::TimeZone("Mars/Olympus".into()));
        assert_eq!(
            Schedule::parse(&TriggerDef::Interval { every_secs: 0 }).unwrap_err(),
            TriggerError::ZeroInterval
        );
    }

    #[test]
    fn intervals_count_from_the_anchor() {
        let s = Schedule::parse(&TriggerDef::Interval { every_secs: 60 }).unwrap();
        let anchor = at("2026-01-01T00:00:10Z");
        assert_eq!(
            s.upcoming(anchor, at("2026-01-01T00:00:30Z"), 2),
            vec![at("2026-01-01T00:01:10Z"), at("2026-01-01T00:02:10Z")]
        );
    }

    fn after_downtime(catch_up: CatchUp) -> Fires {
        let mut s = Schedule::parse(&TriggerDef::Interval { every_secs: 60 }).unwrap();
        s.catch_up = catch_up;
        s.grace_ms = 5_000;
        let anchor = at("2026-01-01T00:00:00Z");
        // Last handled fire at 00:01; the node was down until 00:10:02.
        s.due(
            "wf",
            anchor,
            at("2026-01-01T00:01:00Z"),
            at("2026-01-01T00:10:02Z"),
        )
    }

    #[test]
    fn catch_up_policies_after_downtime() {
        // Missed: 00:02 .. 00:09 (8 fires); on time: 00:10 (2 s late, within grace).
        let f = after_downtime(CatchUp::Skip);
        assert_eq!(f.due, vec![at("2026-01-01T00:10:00Z")]);
        assert_eq!(f.skipped, 8);
        let f = after_downtime(CatchUp::RunOnce);
        assert_eq!(f.due, vec![at("2026-01-01T00:10:00Z")]);
        let f = after_downtime(CatchUp::AllWithin { window_secs: 200 });
        assert_eq!(
            f.due,
            vec![
                at("2026-01-01T00:07:00Z"),
                at("2026-01-01T00:08:00Z"),
                at("2026-01-01T00:09:00Z"),
                at("2026-01-01T00:10:00Z")
            ]
        );
        assert_eq!(f.skipped, 5);
        assert_eq!(f.handled, Some(at("2026-01-01T00:10:00Z")));
        assert_eq!(f.next, Some(at("2026-01-01T00:11:00Z")));
    }

    #[test]
    fn run_once_catches_up_with_the_latest_missed_fire() {
        let mut s = Schedule::parse(&TriggerDef::Interval { every_secs: 60 }).unwrap();
        s.grace_ms = 5_000;
        let anchor = at("2026-01-01T00:00:00Z");
        let f = s.due(
            "wf",
            anchor,
            at("2026-01-01T00:01:00Z"),
            at("2026-01-01T00:10:30Z"),
        );
        assert_eq!(f.due, vec![at("2026-01-01T00:10:00Z")]);
        assert_eq!(f.skipped, 8);
    }

    #[test]
    fn jitter_is_bounded_and_stable() {
        let mut s = Schedule::parse(&TriggerDef::Interval { every_secs: 60 }).unwrap();
        s.jitter_ms = 10_000;
        let fire = at("2026-01-01T00:01:00Z");
        let j = s.jittered("wf", fire);
        assert_eq!(j, s.jittered("wf", fire));
        assert!(j >= fire && j < fire + chrono::Duration::seconds(10));
    }

    #[test]
    fn a_fire_is_due_at_its_jittered_time_and_fires_stay_in_order() {
        let mut s = Schedule::parse(&TriggerDef::Interval { every_secs: 60 }).unwrap();
        s.jitter_ms = 30_000;
        s.grace_ms = 120_000;
        let anchor = at("2026-01-01T00:00:00Z");
        let fire = at("2026-01-01T00:01:00Z");
        let due_at = s.jittered("wf", fire);
        let just_before = due_at - chrono::Duration::milliseconds(1);
        if due_at > fire {
            let f = s.due("wf", anchor, anchor, just_before);
            assert!(f.due.is_empty(), "handled before its jittered time: {f:?}");
            assert_eq!(f.handled, None);
            assert_eq!(f.next, Some(due_at));
        }
        let f = s.due("wf", anchor, anchor, due_at);
        assert_eq!(f.due, vec![fire]);
        assert_eq!(f.handled, Some(fire));
        let second = at("2026-01-01T00:02:00Z");
        assert_eq!(f.next, Some(s.jittered("wf", second)));
        // Late by more than the next fire's jitter: both are due, oldest first.
        let f = s.due("wf", anchor, anchor, at("2026-01-01T00:02:31Z"));
        assert_eq!(f.due, vec![fire, second]);
        // Another workflow's fire at the same time is due at its own jittered time.
        let other = s.jittered("other", fire);
        let f = s.due("other", anchor, anchor, other);
        assert_eq!(f.due, vec![fire]);
    }
}
