//! An attempt's activity (connector log lines, HTTP requests) as entries of the run's
//! log in the store. Owns the conversion only; the host already redacted secrets.

use std::time::{SystemTime, UNIX_EPOCH};

use sluice_host::Activity;
use sluice_store::run_logs::{LogEntry, RequestEntry};

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The attempt's lines and requests, in time order.
pub(crate) fn entries(activity: &Activity, attempt: u32) -> Vec<LogEntry> {
    let mut out: Vec<LogEntry> = activity
        .lines()
        .into_iter()
        .map(|l| LogEntry {
            at_unix_ms: unix_ms(l.at),
            attempt,
            level: l.level.to_owned(),
            context: l.context,
            message: l.message,
            request: None,
        })
        .collect();
    out.extend(activity.requests().into_iter().map(|r| {
        let failed = r.error.is_some() || r.status.is_none_or(|s| s >= 400);
        let outcome = match (&r.status, &r.error) {
            (Some(s), _) => s.to_string(),
            (None, Some(e)) => e.clone(),
            (None, None) => "no response".to_owned(),
        };
        LogEntry {
            at_unix_ms: unix_ms(r.at),
            attempt,
            level: if failed { "warn" } else { "info" }.to_owned(),
            context: "http".to_owned(),
            message: format!(
                "{} {}{} -> {} in {} ms",
                r.method,
                r.host,
                r.path,
                outcome,
                r.latency.as_millis()
            ),
            request: Some(RequestEntry {
                method: r.method,
                host: r.host,
                path: r.path,
                status: r.status,
                latency_ms: u64::try_from(r.latency.as_millis()).unwrap_or(u64::MAX),
                bytes_sent: r.bytes_sent,
                bytes_received: r.bytes_received,
                error: r.error,
            }),
        }
    }));
    out.sort_by_key(|e| e.at_unix_ms);
    out
}
