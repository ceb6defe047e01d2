//! Per-run logs on sled ([`SledRunLogs`]).
//!
//! Owns the `run_logs` tree: keys are (run, position), values JSON entries. At most
//! [`MAX_ENTRIES_PER_RUN`] entries stay per run, the oldest going first. It never
//! holds secrets (the host redacts what it records before it gets here) and it is not
//! part of a run's state: a write is not flushed on its own, so a crash may lose the
//! last lines of an attempt, never a record or a checkpoint.

use crate::StoreError;
use crate::run_logs::{LogEntry, LogFilter, MAX_ENTRIES_PER_RUN, RunLogs};
use sluice_model::RunId;

/// Name of the tree.
use crate::sled::layout::RUN_LOGS as TREE;
/// The per-run logs of a store. Cheap to clone.
#[derive(Clone)]
pub struct SledRunLogs {
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

impl SledRunLogs {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(SledRunLogs {
            tree: db.open_tree(TREE).map_err(StoreError::storage)?,
        })
    }
}

#[async_trait::async_trait]
impl RunLogs for SledRunLogs {
    async fn append(&self, run: RunId, entries: &[LogEntry]) -> Result<(), StoreError> {
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

    async fn read(&self, run: RunId, filter: &LogFilter) -> Result<Vec<LogEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(run.as_bytes()) {
            let (_, v) = item.map_err(StoreError::storage)?;
            let Ok(e) = serde_json::from_slice::<LogEntry>(&v) else {
                continue;
            };
            if filter.matches(&e) {
                out.push(e);
            }
        }
        filter.keep_newest(&mut out);
        Ok(out)
    }
}
