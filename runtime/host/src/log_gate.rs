//! [`LogGate`]: what a connector's `wasi:logging` lines may cost the node. Each line's
//! message and context are redacted, then cut to `log_line_bytes` (cutting after
//! redaction, so a cut never leaves part of a secret showing); lines past
//! `log_lines_per_sec` are dropped and counted, and one line says how many.
//!
//! It must never keep or print a line before it is redacted and cut: a line can be
//! as large as the connector's memory.

use std::time::{Duration, Instant, SystemTime};

use crate::activity::LogLine;
use crate::limits::{Grant, Limits};

/// The context of the lines the host itself writes into a connector's log.
pub(crate) const HOST_CONTEXT: &str = "sluice";

/// A token bucket of log lines, and the count of lines dropped since the last
/// report.
#[derive(Debug)]
pub(crate) struct LogGate {
    per_sec: f64,
    /// Lines that may be kept now; refills at `per_sec`, holds at most `per_sec`.
    tokens: f64,
    refilled: Instant,
    dropped: u64,
}

impl LogGate {
    pub fn new(limits: &Limits) -> Self {
        let per_sec = f64::from(limits.log_lines_per_sec);
        Self {
            per_sec,
            tokens: per_sec,
            refilled: Instant::now(),
            dropped: 0,
        }
    }

    /// Whether a line arriving at `now` may be kept; counts it as dropped if not.
    pub fn admit(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled);
        self.refilled = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_sec).min(self.per_sec);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// The line saying how many lines were dropped since the last such line, if any
    /// were.
    pub fn take_report(&mut self, limits: &Limits) -> Option<LogLine> {
        if self.dropped == 0 {
            return None;
        }
        let dropped = std::mem::take(&mut self.dropped);
        Some(LogLine {
            at: SystemTime::now(),
            level: "warn",
            context: HOST_CONTEXT.to_owned(),
            message: format!(
                "{dropped} connector log lines dropped: log_lines_per_sec is {}",
                limits.log_lines_per_sec
            ),
        })
    }
}

/// `text` as it may be kept: redacted, then cut to `log_line_bytes` with a marker.
pub(crate) fn bound(grant: &Grant, text: &str) -> String {
    grant
        .redactor()
        .seal(text, grant.limits.log_line_bytes, "log_line_bytes")
}

/// How long a stretch of host work took, as epoch ticks of CPU budget.
pub(crate) fn ticks(elapsed: Duration, tick: Duration) -> u64 {
    u64::try_from(elapsed.as_nanos() / tick.as_nanos().max(1)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_sec: u32) -> Limits {
        Limits {
            log_lines_per_sec: per_sec,
            log_line_bytes: 64,
            ..Limits::default()
        }
    }

    #[test]
    fn lines_past_the_rate_are_dropped_and_reported_once() {
        let limits = limits(10);
        let mut gate = LogGate::new(&limits);
        let start = Instant::now();
        let kept = (0..25).filter(|_| gate.admit(start)).count();
        assert_eq!(kept, 10);
        let report = gate.take_report(&limits).expect("a report");
        assert_eq!(report.context, HOST_CONTEXT);
        assert!(
            report.message.starts_with("15 connector log lines dropped")
                && report.message.contains("log_lines_per_sec is 10"),
            "{}",
            report.message
        );
        assert!(gate.take_report(&limits).is_none());
        // Half a second later, five more fit.
        let later = start + Duration::from_millis(500);
        assert_eq!((0..10).filter(|_| gate.admit(later)).count(), 5);
    }

    #[test]
    fn a_long_line_is_redacted_then_cut_with_a_marker() {
        let secret = "hunter2-secret-value";
        let grant = Grant {
            secrets: vec![secret.into()],
            limits: limits(10),
            ..Grant::default()
        };
        let text = format!("{}{secret}{}", "é".repeat(2), "x".repeat(1000));
        let kept = bound(&grant, &text);
        assert!(kept.len() <= 64, "{} bytes: {kept}", kept.len());
        assert!(kept.contains("log_line_bytes is 64"), "{kept}");
        assert!(!kept.contains("hunter"), "{kept}");
        assert_eq!(bound(&grant, "short"), "short");
    }
}
