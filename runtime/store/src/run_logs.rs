//! The per-run logs' contract: a connector's log lines and its HTTP requests, kept per
//! run with a bounded size, for the API and the CLI.
//!
//! Owns the [`RunLogs`] trait and its entry and filter types. Every backend keeps at
//! most [`MAX_ENTRIES_PER_RUN`] entries per run, dropping the oldest first. Entries
//! never hold secrets (the host redacts what it records before it gets here) and are
//! not part of a run's state: a backend may lose the last lines of an attempt in a
//! crash, never a record or a checkpoint.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_model::RunId;

use crate::StoreError;

/// Per-run logs. Implemented by every storage backend.
#[async_trait]
pub trait RunLogs: Send + Sync {
    /// Appends entries to `run`'s log, dropping its oldest beyond the bound.
    async fn append(&self, run: RunId, entries: &[LogEntry]) -> Result<(), StoreError>;

    /// `run`'s entries matching `filter`, oldest first.
    async fn read(&self, run: RunId, filter: &LogFilter) -> Result<Vec<LogEntry>, StoreError>;
}

/// Entries kept per run.
pub const MAX_ENTRIES_PER_RUN: usize = 2_000;

/// One HTTP request a connector made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEntry {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The host it went to.
    pub host: String,
    /// The path and query, secrets redacted.
    pub path: String,
    /// The response status, if one came.
    pub status: Option<u16>,
    /// Time to the response.
    pub latency_ms: u64,
    /// Time spent waiting for rate-limit budget before sending.
    #[serde(default)]
    pub waited_ms: u64,
    /// Request body bytes.
    pub bytes_sent: u64,
    /// Response body bytes.
    pub bytes_received: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// One entry of a run's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When (Unix ms).
    pub at_unix_ms: i64,
    /// The attempt it belongs to.
    pub attempt: u32,
    /// The stream being read, if the entry belongs to one.
    #[serde(default)]
    pub stream: Option<String>,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// Where it came from (the connector call, or `http`).
    pub context: String,
    /// The line, or a one-line summary of the request.
    pub message: String,
    /// For an HTTP request: its details.
    pub request: Option<RequestEntry>,
}

/// Which entries to read.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Only entries at this level or above (`None`: all).
    pub min_level: Option<String>,
    /// Only HTTP requests (`Some(true)`) or only log lines (`Some(false)`).
    pub requests: Option<bool>,
    /// Only this attempt.
    pub attempt: Option<u32>,
    /// Only entries of this stream.
    pub stream: Option<String>,
    /// At most this many, the newest (0: all kept).
    pub limit: usize,
}

impl LogFilter {
    /// Whether `e` passes every condition but the limit.
    pub fn matches(&self, e: &LogEntry) -> bool {
        let min = self.min_level.as_deref().map_or(0, level_rank);
        level_rank(&e.level) >= min
            && self.requests.is_none_or(|want| want == e.request.is_some())
            && self.attempt.is_none_or(|a| a == e.attempt)
            && self
                .stream
                .as_ref()
                .is_none_or(|s| e.stream.as_ref() == Some(s))
    }

    /// Keeps the newest `limit` of `entries` (oldest first), or all when `limit` is 0.
    pub fn keep_newest(&self, entries: &mut Vec<LogEntry>) {
        if self.limit > 0 && entries.len() > self.limit {
            entries.drain(..entries.len() - self.limit);
        }
    }
}

/// The rank of a level name; unknown names rank as `info`.
pub fn level_rank(level: &str) -> u8 {
    match level.to_ascii_lowercase().as_str() {
        "trace" => 0,
        "debug" => 1,
        "warn" | "warning" => 3,
        "error" | "critical" => 4,
        _ => 2,
    }
}
