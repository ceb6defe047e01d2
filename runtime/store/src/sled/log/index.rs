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
//! Listing newest first walks an index backwards, where a posting's further runs sort
//! *after* its key: an earlier key may hold runs greater than a later one. How much
//! greater is bounded by the *spread*, the greatest difference (as 128-bit numbers)
//! between a posting's last run and its first ever written, kept in `log_meta` and
//! raised in the group that writes a wider posting; a backward walk holds runs back
//! only within that distance of the key it is at.
//!
//! It must never write outside the group it is given, nor read a run's events.

use std::cmp::Reverse;
use std::collections::binary_heap::PeekMut;
use std::collections::{BTreeMap, BinaryHeap};

use super::keys::Watermark;
use super::keys::{index_prefix, run_of_index_key, split_index_key, time_bytes};
use crate::log::LogError;
use crate::log::RunSummary;
use crate::sled::layout::{
    AT_ACTIVE as ACTIVE, AT_BY_CONNECTION as BY_CONNECTION, AT_BY_STATUS as BY_STATUS,
    AT_BY_TENANT as BY_TENANT, AT_BY_TIME as BY_TIME, AT_BY_WORKFLOW as BY_WORKFLOW,
    AT_META as META,
};
use crate::sled::staged::Staged;
use sluice_model::{RunId, StatusKind};

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
    /// in the value. Returns the spread after them, staging it if they widen `spread`.
    ///
    /// A key already stored (a run first of its group a second time with the same
    /// value: dead-lettered, retried by hand, dead-lettered again) keeps its runs:
    /// the group's are added to them, never put in their place.
    pub(crate) fn write(self, staged: &mut Staged<'_>, spread: u128) -> sled::Result<u128> {
        let mut widest = spread;
        for ((tree, mut key), mut runs) in self.entries {
            runs.sort_unstable();
            let Some(first) = runs.first().copied() else {
                continue;
            };
            key.extend_from_slice(&first.0);
            if let Some(stored) = staged.trees()[tree].get(&key)? {
                runs.extend(stored.chunks_exact(16).filter_map(RunId::from_slice));
                runs.sort_unstable();
                runs.dedup();
            }
            let (Some((first, rest)), Some(last)) = (runs.split_first(), runs.last()) else {
                continue;
            };
            widest = widest.max(distance(*first, *last));
            let value: Vec<u8> = rest.iter().flat_map(|r| r.0).collect();
            staged.insert(tree, key, value);
        }
        if widest > spread {
            staged.insert(META, POSTING_SPREAD, widest.to_be_bytes());
        }
        Ok(widest)
    }
}

/// The `log_meta` key holding the spread (16 bytes, big-endian).
pub(crate) use crate::sled::layout::POSTING_SPREAD;

/// The indexes holding postings.
const POSTING_TREES: [usize; 5] = [BY_WORKFLOW, BY_CONNECTION, BY_TENANT, BY_STATUS, BY_TIME];

fn distance(from: RunId, to: RunId) -> u128 {
    u128::from_be_bytes(to.0).saturating_sub(u128::from_be_bytes(from.0))
}

/// The spread stored in `meta`; for a log written before it was kept (or holding an
/// unreadable one), measured over every posting once and stored.
pub(crate) fn load_spread(trees: &[sled::Tree]) -> Result<u128, LogError> {
    if let Some(spread) = stored_spread(&trees[META])? {
        return Ok(spread);
    }
    let mut widest = 0;
    for tree in POSTING_TREES {
        for entry in trees[tree].iter() {
            let (key, value) = entry.map_err(LogError::storage)?;
            let (Some(first), Some(last)) = (
                run_of_index_key(&key),
                value
                    .len()
                    .checked_sub(16)
                    .and_then(|n| RunId::from_slice(&value[n..])),
            ) else {
                continue;
            };
            widest = widest.max(distance(first, last));
        }
    }
    trees[META]
        .insert(POSTING_SPREAD, &widest.to_be_bytes()[..])
        .map_err(LogError::storage)?;
    Ok(widest)
}

/// The spread as readers see it now; with none stored, the widest there can be (a
/// slower walk, never a wrong one).
pub(crate) fn read_spread(meta: &sled::Tree) -> Result<u128, LogError> {
    Ok(stored_spread(meta)?.unwrap_or(u128::MAX))
}

fn stored_spread(meta: &sled::Tree) -> Result<Option<u128>, LogError> {
    let Some(raw) = meta.get(POSTING_SPREAD).map_err(LogError::storage)? else {
        return Ok(None);
    };
    let Ok(bytes) = <[u8; 16]>::try_from(raw.as_ref()) else {
        tracing::warn!(
            "log_meta `posting_spread` holds {} bytes, not 16: taken as unknown",
            raw.len()
        );
        return Ok(None);
    };
    Ok(Some(u128::from_be_bytes(bytes)))
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
        let Some((prefix, _)) = split_index_key(&key) else {
            continue;
        };
        pending.extend(further_keys(&key, prefix, &value).map(Reverse));
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

/// The keys a posting's further runs would have (`prefix ++ run`); none, with a
/// warning, if its value is not a whole number of run ids.
fn further_keys<'v>(
    key: &[u8],
    prefix: &'v [u8],
    value: &'v [u8],
) -> impl Iterator<Item = Vec<u8>> + 'v {
    let whole = value.len().is_multiple_of(16);
    if !whole {
        tracing::warn!(
            ?key,
            "index entry holds {} bytes, not a whole number of run ids; its further runs are skipped",
            value.len()
        );
    }
    value
        .chunks_exact(16)
        .filter(move |_| whole)
        .map(move |id| [prefix, id].concat())
}

/// Visits the runs of index entries given in *descending* key order, greatest run
/// first, until `visit` returns false. `spread` bounds how far a posting's further
/// runs lie past its key (see the module doc): a run is held back until no entry to
/// come can hold a greater one.
pub(crate) fn for_each_run_rev(
    entries: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    spread: u128,
    mut visit: impl FnMut(RunId) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    let mut pending: BinaryHeap<Vec<u8>> = BinaryHeap::new();
    let mut emit = |key: &[u8]| match run_of_index_key(key) {
        Some(run) => visit(run),
        None => Ok(true),
    };
    for entry in entries {
        let (key, value) = entry.map_err(LogError::storage)?;
        let Some((prefix, first)) = split_index_key(&key) else {
            continue;
        };
        // Every entry to come sorts below this key, and its runs lie within `spread`
        // of it: whatever sorts above `bound` is final.
        let reach = u128::from_be_bytes(first.0).saturating_add(spread);
        let bound = [prefix, &reach.to_be_bytes()].concat();
        while let Some(top) = pending.peek_mut() {
            if top.as_slice() <= bound.as_slice() {
                break;
            }
            if !emit(&PeekMut::pop(top))? {
                return Ok(());
            }
        }
        pending.extend(further_keys(&key, prefix, &value));
        pending.push(key.to_vec());
    }
    while let Some(held) = pending.pop() {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use proptest::prelude::*;

    use super::*;

    fn run(n: u128) -> RunId {
        RunId(n.to_be_bytes())
    }

    /// Postings as a group writes them: `prefix ++ first`, the rest in the value.
    fn postings(groups: &[(u8, Vec<u128>)]) -> (Vec<(sled::IVec, sled::IVec)>, u128) {
        let mut entries = Vec::new();
        let mut spread = 0;
        for (value, runs) in groups {
            let mut runs: Vec<u128> = runs.clone();
            runs.sort_unstable();
            runs.dedup();
            let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
                continue;
            };
            spread = spread.max(last - first);
            let prefix = [b'a' + value % 3, 0];
            let key = [&prefix[..], &run(*first).0].concat();
            let rest: Vec<u8> = runs[1..].iter().flat_map(|r| run(*r).0).collect();
            entries.push((sled::IVec::from(key), sled::IVec::from(rest)));
        }
        entries.sort();
        entries.dedup_by(|a, b| a.0 == b.0);
        (entries, spread)
    }

    fn walk_rev(entries: &[(sled::IVec, sled::IVec)], spread: u128, limit: usize) -> Vec<RunId> {
        let mut out = Vec::new();
        let entries = entries.iter().rev().cloned().map(Ok);
        for_each_run_rev(entries, spread, |r| {
            out.push(r);
            Ok(out.len() < limit)
        })
        .unwrap();
        out
    }

    fn walk(entries: &[(sled::IVec, sled::IVec)]) -> Vec<RunId> {
        let mut out = Vec::new();
        for_each_run(entries.iter().cloned().map(Ok), |r| {
            out.push(r);
            Ok(true)
        })
        .unwrap();
        out
    }

    proptest! {
        /// Walked backwards with the postings' spread, an index yields exactly the
        /// reverse of walking it forwards; a limit keeps the greatest runs.
        #[test]
        fn a_backward_walk_is_the_forward_walk_reversed(
            groups in prop::collection::vec(
                (0u8..3, prop::collection::vec(0u128..200, 1..6)), 0..40),
            limit in 1usize..20,
        ) {
            let (entries, spread) = postings(&groups);
            let mut forward = walk(&entries);
            forward.reverse();
            prop_assert_eq!(walk_rev(&entries, spread, usize::MAX), forward.clone());
            prop_assert_eq!(walk_rev(&entries, u128::MAX, usize::MAX), forward.clone());
            forward.truncate(limit);
            prop_assert_eq!(walk_rev(&entries, spread, limit), forward);
        }
    }

    #[test]
    fn a_posting_reaching_past_later_keys_is_held_back() {
        // Keys 0 and 5; the first posting's further run 9 sorts after key 5.
        let (entries, spread) = postings(&[(0, vec![0, 9]), (0, vec![5])]);
        assert_eq!(spread, 9);
        assert_eq!(
            walk_rev(&entries, spread, usize::MAX),
            [run(9), run(5), run(0)]
        );
        // Without the spread the walk could not know: it would put 5 first.
        assert_eq!(walk_rev(&entries, 0, usize::MAX), [run(5), run(9), run(0)]);
    }
}
