//! The bounded record of what connectors did: outbound HTTP requests and log lines.
//! It never holds secrets (callers redact first) and never grows past its bounds:
//! the oldest entries go first.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// One outbound HTTP request, as recorded by the host's HTTP client.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RequestRecord {
    /// When it was sent.
    pub at: SystemTime,
    /// HTTP method.
    pub method: String,
    /// Host (and port, if given).
    pub host: String,
    /// Path and query, with secrets redacted.
    pub path: String,
    /// Response status; `None` when no response arrived (denied, failed, timed out).
    pub status: Option<u16>,
    /// Time spent waiting for rate-limit budget before sending.
    pub waited: Duration,
    /// Time from sending to the last byte of the response.
    pub latency: Duration,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Response body bytes received.
    pub bytes_received: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// A log line emitted by a connector through `wasi:logging`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogLine {
    /// When it was emitted.
    pub at: SystemTime,
    /// `trace`, `debug`, `info`, `warn`, `error` or `critical`.
    pub level: &'static str,
    /// The connector's context tag.
    pub context: String,
    /// The message, with secrets redacted.
    pub message: String,
}

/// Bounded buffers of requests and log lines for one connection or run.
#[derive(Debug)]
pub struct Activity {
    capacity: usize,
    requests: Mutex<VecDeque<RequestRecord>>,
    lines: Mutex<VecDeque<LogLine>>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::with_capacity(10_000)
    }
}

impl Activity {
    /// Keep at most `capacity` requests and `capacity` log lines.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            requests: Mutex::new(VecDeque::new()),
            lines: Mutex::new(VecDeque::new()),
        }
    }

    /// Record a request.
    pub fn record_request(&self, record: RequestRecord) {
        push_bounded(&self.requests, record, self.capacity);
    }

    /// Record a log line.
    pub fn record_line(&self, line: LogLine) {
        push_bounded(&self.lines, line, self.capacity);
    }

    /// The requests recorded so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        snapshot(&self.requests)
    }

    /// The log lines recorded so far, oldest first.
    pub fn lines(&self) -> Vec<LogLine> {
        snapshot(&self.lines)
    }
}

fn push_bounded<T>(queue: &Mutex<VecDeque<T>>, item: T, capacity: usize) {
    // A poisoned lock only means another thread panicked mid-push; the queue is
    // still a valid queue.
    let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
    if q.len() >= capacity {
        q.pop_front();
    }
    q.push_back(item);
}

fn snapshot<T: Clone>(queue: &Mutex<VecDeque<T>>) -> Vec<T> {
    queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect()
}
