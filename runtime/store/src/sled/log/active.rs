//! Which runs are in flight: the `runs_active` index, and the newest runs past its
//! reach.
//!
//! Most scheduled runs end within milliseconds of their start. Keying each of them in
//! `runs_active` when it is scheduled and removing the key when it ends cost the
//! committer two B-tree writes per run that no reader needed. So the index covers only
//! run ids below a watermark, `active_from` (in `log_meta`): every run not in a
//! terminal status whose id is below it has a `runs_active` key. A run at or above it
//! has none; readers find those by reading the summaries of `runs` from the watermark
//! on, which holds only the last moments' runs, because run ids are time-ordered
//! (UUID v7) and the committer moves the watermark up to "a little while ago" (the
//! log's `active_lag`), in the same group of writes that keys the runs in flight it
//! passes.
//!
//! It must never move the watermark down, nor past a run in flight without keying it.

use sled::Tree;

use super::index::for_each_run;
use super::keys::Head;
use crate::log::LogError;
use sluice_model::RunId;

/// The `log_meta` key holding the watermark (16 bytes: a run id).
pub(crate) use crate::sled::layout::ACTIVE_FROM;

/// The watermark stored in `meta`; for a log written before it existed (every run in
/// flight keyed), just past its newest run, stored so that it holds from now on.
pub(crate) fn load_watermark(meta: &Tree, runs: &Tree) -> Result<RunId, LogError> {
    if let Some(raw) = meta.get(ACTIVE_FROM).map_err(LogError::storage)? {
        return RunId::from_slice(&raw).ok_or_else(|| {
            LogError::Storage(format!(
                "log_meta `active_from` holds {} bytes, not a run id",
                raw.len()
            ))
        });
    }
    let newest = runs.last().map_err(LogError::storage)?;
    let from = newest.map_or(RunId([0; 16]), |(key, _)| match RunId::from_slice(&key) {
        Some(run) => successor(run),
        None => RunId([0xff; 16]),
    });
    meta.insert(ACTIVE_FROM, &from.0[..])
        .map_err(LogError::storage)?;
    Ok(from)
}

/// The watermark as readers see it now.
pub(crate) fn read_watermark(meta: &Tree) -> Result<RunId, LogError> {
    let raw = meta.get(ACTIVE_FROM).map_err(LogError::storage)?;
    // The log opened stores one; a reader finding none keys nothing out.
    Ok(raw
        .and_then(|r| RunId::from_slice(&r))
        .unwrap_or(RunId([0xff; 16])))
}

fn successor(run: RunId) -> RunId {
    RunId(u128::from_be_bytes(run.0).saturating_add(1).to_be_bytes())
}

/// An id no greater than any UUID v7 created at `unix_ms` or later.
pub(crate) fn first_id_at(unix_ms: i64) -> RunId {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&u64::try_from(unix_ms).unwrap_or(0).to_be_bytes()[2..]);
    RunId(b)
}

/// Ids of the runs in flight: those keyed in `active`, then those past the watermark
/// (read from `runs`), ascending. A run that ends meanwhile may be in it.
pub(crate) fn in_flight_ids(
    active: &Tree,
    runs: &Tree,
    meta: &Tree,
) -> Result<Vec<RunId>, LogError> {
    let mut out = Vec::new();
    // The watermark is read first: a run the committer keys meanwhile is then found
    // in one place or both, never in neither.
    let from = read_watermark(meta)?;
    for_each_run(active.iter(), |run| {
        out.push(run);
        Ok(true)
    })?;
    for_each_unkeyed(runs, from, |head| {
        out.push(head.summary.run_id);
        Ok(true)
    })?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Visits the heads of runs in flight at or past `from`, by id, until `visit`
/// returns false.
pub(crate) fn for_each_unkeyed(
    runs: &Tree,
    from: RunId,
    mut visit: impl FnMut(Head) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    for entry in runs.range(from.0..) {
        let (key, raw) = entry.map_err(LogError::storage)?;
        let Some(run) = RunId::from_slice(&key) else {
            continue;
        };
        let head = Head::decode(run, &raw)?;
        if head.summary.status.is_terminal() {
            continue;
        }
        if !visit(head)? {
            break;
        }
    }
    Ok(())
}
