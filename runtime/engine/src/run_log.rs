//! An attempt's activity (connector log lines, HTTP requests) as entries of the run's
//! log in the store. Owns the conversion only; the host already redacted secrets.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_host::Activity;
use sluice_store::run_logs::{LogEntry, RequestEntry};

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Activity capacity per part of an attempt (discover, each stream).
const CAPACITY: usize = 1_024;

/// The activities of one attempt's parts: discover (no stream), then each stream.
#[derive(Default)]
pub(crate) struct Activities {
    parts: Mutex<Vec<(Option<String>, Arc<Activity>)>>,
}

impl Activities {
    /// A new activity for the part of the attempt that reads `stream` (`None`: the
    /// calls that belong to no stream).
    pub(crate) fn part(&self, stream: Option<&str>) -> Arc<Activity> {
        let activity = Arc::new(Activity::with_capacity(CAPACITY));
        if let Ok(mut parts) = self.parts.lock() {
            parts.push((stream.map(str::to_owned), Arc::clone(&activity)));
        }
        activity
    }

    /// Every part's lines and requests, tagged with their stream, in time order.
    pub(crate) fn entries(&self, attempt: u32) -> Vec<LogEntry> {
        let parts = self.parts.lock().map(|p| p.clone()).unwrap_or_default();
        let mut out: Vec<LogEntry> = parts
            .iter()
            .flat_map(|(stream, activity)| {
                entries(activity, attempt).into_iter().map(|mut e| {
                    e.stream.clone_from(stream);
                    e
                })
            })
            .collect();
        out.sort_by_key(|e| e.at_unix_ms);
        out
    }
}

/// The activity's lines and requests, in time order.
fn entries(activity: &Activity, attempt: u32) -> Vec<LogEntry> {
    let mut out: Vec<LogEntry> = activity
        .lines()
        .into_iter()
        .map(|l| LogEntry {
            at_unix_ms: unix_ms(l.at),
            attempt,
            stream: None,
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
            stream: None,
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
                waited_ms: u64::try_from(r.waited.as_millis()).unwrap_or(u64::MAX),
                bytes_sent: r.bytes_sent,
                bytes_received: r.bytes_received,
                error: r.error,
            }),
        }
    }));
    out.sort_by_key(|e| e.at_unix_ms);
    out
}
