//! The log's secondary indexes: a run's workflow, connection, tenant, creation time
//! and terminal status, and which runs are in flight.
//!
//! Owns the index entries a group of writes adds, and reading them back in order.
//! An entry is a *posting*: its key is `value ++ first run` (the layout of a key per
//! run, which is what a posting of one run is) and its value holds the group's further
//! runs with the same index value, 16 bytes each, ascending. So the runs of one tenant,
//! or those created in one millisecond, that a group commits cost one B-tree insert,
//! not one each: sled clones a node on every insert, and inserts were the committer's
//! whole cost.
//!
//! Postings are written once and never changed, so only what a run keeps for good is
//! indexed that way. Whether a run is in flight changes as it goes: `runs_active`
//! holds one key per run not in a terminal status (below a watermark, see
//! `super::active`), removed when it ends; listing by a status that is not terminal
//! scans it, then the runs past the watermark. A run retried by hand after it was
//! dead-lettered stays in its old status posting: the summary record is the truth,
//! and readers check it (and drop duplicates).
//!
//! It must never write outside the group it is given, nor read a run's events.

use std::cmp::Reverse;
use std::collections::binary_heap::PeekMut;
use std::collections::{BTreeMap, BinaryHeap};

use super::LogError;
use super::active::Watermark;
use super::commit::{ACTIVE, BY_CONNECTION, BY_STATUS, BY_TENANT, BY_TIME, BY_WORKFLOW};
use super::events::RunId;
use super::fold::StatusKind;
use super::keys::{RunSummary, index_prefix, run_of_index_key, time_bytes};
use crate::staged::Staged;

/// The index entries of one group, gathered before they are written.
#[derive(Default)]
pub(crate) struct Postings {
    /// (tree, key prefix) → the runs under it.
    entries: BTreeMap<(usize, Vec<u8>), Vec<RunId>>,
}

impl Postings {
    fn add(&mut self, tree: usize, prefix: Vec<u8>, run: RunId) {
        self.entries.entry((tree, prefix)).or_default().push(run);
    }

    /// Notes the index changes of a run going from `before` to `now` in this group;
    /// writes those to `runs_active` at once (keys only below the watermark, see
    /// `super::active`).
    pub(crate) fn note(
        &mut self,
        staged: &mut Staged<'_>,
        before: Option<StatusKind>,
        now: &RunSummary,
        watermark: Watermark,
    ) {
        let run = now.run_id;
        if before.is_none() {
            self.add(BY_WORKFLOW, index_prefix(&now.workflow), run);
            self.add(BY_CONNECTION, index_prefix(&now.connection), run);
            self.add(BY_TENANT, index_prefix(&now.tenant), run);
            self.add(BY_TIME, time_bytes(now.created_at_unix_ms).to_vec(), run);
        }
        let was_terminal = before.map(StatusKind::is_terminal);
        let terminal = now.status.is_terminal();
        if was_terminal == Some(terminal) {
            if !terminal && watermark.passes(run) {
                staged.insert(ACTIVE, &run.0[..], []);
            }
            return;
        }
        if terminal {
            self.add(BY_STATUS, index_prefix(now.status.as_str()), run);
            if was_terminal.is_some() && watermark.keyed_before(run) {
                staged.remove(ACTIVE, &run.0[..]);
            }
        } else if watermark.keyed_after(run) {
            staged.insert(ACTIVE, &run.0[..], []);
        }
    }

    /// Stages one key per (index, value): the value's first run in the key, the rest
    /// in the value.
    pub(crate) fn write(self, staged: &mut Staged<'_>) {
        for ((tree, mut key), mut runs) in self.entries {
            runs.sort_unstable();
            let Some((first, rest)) = runs.split_first() else {
                continue;
            };
            key.extend_from_slice(&first.0);
            let value: Vec<u8> = rest.iter().flat_map(|r| r.0).collect();
            staged.insert(tree, key, value);
        }
    }
}

/// Visits the runs of index entries in key order (each run as if it had a key
/// `prefix ++ run` of its own), until `visit` returns false.
///
/// A posting's runs are held back until no later entry can sort before them: every
/// later key is at least the current one, and each posting's runs sort at or after its
/// key.
pub(crate) fn for_each_run(
    entries: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    mut visit: impl FnMut(RunId) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    let mut pending: BinaryHeap<Reverse<Vec<u8>>> = BinaryHeap::new();
    let mut emit = |key: &[u8]| match run_of_index_key(key) {
        Some(run) => visit(run),
        None => Ok(true),
    };
    for entry in entries {
        let (key, value) = entry.map_err(LogError::storage)?;
        while let Some(top) = pending.peek_mut() {
            if top.0.as_slice() >= key.as_ref() {
                break;
            }
            if !emit(&PeekMut::pop(top).0)? {
                return Ok(());
            }
        }
        let Some(prefix) = key.len().checked_sub(16).map(|n| &key[..n]) else {
            continue;
        };
        if value.len() % 16 != 0 {
            tracing::warn!(
                key = ?key.as_ref(),
                "index entry holds {} bytes, not a whole number of run ids; its further runs are skipped",
                value.len()
            );
        } else {
            for id in value.chunks_exact(16) {
                pending.push(Reverse([prefix, id].concat()));
            }
        }
        if pending.is_empty() {
            if !emit(&key)? {
                return Ok(());
            }
        } else {
            pending.push(Reverse(key.to_vec()));
        }
    }
    while let Some(Reverse(held)) = pending.pop() {
        if !emit(&held)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Moves runs in flight from the layout before `runs_active` (a `runs_by_status` key
/// per run, for every status) to `runs_active`. Idempotent, so a crash halfway is
/// finished on the next open; returns how many it moved.
pub(crate) fn move_in_flight_to_active(
    by_status: &sled::Tree,
    active: &sled::Tree,
) -> Result<usize, LogError> {
    let mut moved = 0;
    for status in StatusKind::ALL.iter().filter(|s| !s.is_terminal()) {
        for entry in by_status.scan_prefix(index_prefix(status.as_str())) {
            let (key, _) = entry.map_err(LogError::storage)?;
            if let Some(run) = run_of_index_key(&key) {
                active.insert(run.0, &[]).map_err(LogError::storage)?;
            }
            by_status.remove(key).map_err(LogError::storage)?;
            moved += 1;
        }
    }
    Ok(moved)
}
