//! Per-run logs: a connector's log lines and its HTTP requests, kept per run with a
//! bounded size, for the API and the CLI.
//!
//! Owns the `run_logs` tree: keys are (run, position), values JSON entries. At most
//! [`MAX_ENTRIES_PER_RUN`] entries stay per run, the oldest going first. It never
//! holds secrets (the host redacts what it records before it gets here) and it is not
//! part of a run's state: a write is not flushed on its own, so a crash may lose the
//! last lines of an attempt, never a record or a checkpoint.

use serde::{Deserialize, Serialize};

use crate::log::RunId;
use crate::store::StoreError;

/// Name of the tree.
pub(crate) const TREE: &str = "run_logs";
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

/// The per-run logs of a store. Cheap to clone.
#[derive(Clone)]
pub struct RunLogs {
    tree: sled::Tree,
}

fn key(run: RunId, position: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(run.as_bytes());
    k[16..].copy_from_slice(&position.to_be_bytes());
    k
}

fn position_of(k: &[u8]) -> u64 {
    k.get(16..24)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

impl RunLogs {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(RunLogs {
            tree: db.open_tree(TREE).map_err(StoreError::storage)?,
        })
    }

    /// Appends entries to `run`'s log, dropping its oldest beyond the bound.
    pub fn append(&self, run: RunId, entries: &[LogEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let prefix = run.as_bytes();
        let next = self
            .tree
            .scan_prefix(prefix)
            .next_back()
            .transpose()
            .map_err(StoreError::storage)?
            .map_or(0, |(k, _)| position_of(&k) + 1);
        let mut batch = sled::Batch::default();
        for (i, e) in entries.iter().enumerate() {
            let value = serde_json::to_vec(e).map_err(StoreError::storage)?;
            batch.insert(&key(run, next + i as u64)[..], value);
        }
        let end = next + entries.len() as u64;
        let keep_from = end.saturating_sub(MAX_ENTRIES_PER_RUN as u64);
        for item in self.tree.range(key(run, 0)..key(run, keep_from)) {
            let (k, _) = item.map_err(StoreError::storage)?;
            batch.remove(k);
        }
        self.tree.apply_batch(batch).map_err(StoreError::storage)
    }

    /// `run`'s entries matching `filter`, oldest first.
    pub fn read(&self, run: RunId, filter: &LogFilter) -> Result<Vec<LogEntry>, StoreError> {
        let min = filter.min_level.as_deref().map_or(0, level_rank);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(run.as_bytes()) {
            let (_, v) = item.map_err(StoreError::storage)?;
            let Ok(e) = serde_json::from_slice::<LogEntry>(&v) else {
                continue;
            };
            let kind_ok = filter
                .requests
                .is_none_or(|want| want == e.request.is_some());
            if level_rank(&e.level) >= min
                && kind_ok
                && filter.attempt.is_none_or(|a| a == e.attempt)
                && filter
                    .stream
                    .as_ref()
                    .is_none_or(|s| e.stream.as_ref() == Some(s))
            {
                out.push(e);
            }
        }
        if filter.limit > 0 && out.len() > filter.limit {
            out.drain(..out.len() - filter.limit);
        }
        Ok(out)
    }
}
