//! Repairing an embedded store where a repair loses nothing ([`repair`]), each repair
//! reported as it is made:
//!
//! - an unfinished snapshot (`snap.*.generating`) a killed process left is removed —
//!   by opening the store as a node does (`super::open` removes them, only when no
//!   other process holds the store);
//! - the runs' secondary indexes (`runs_by_workflow`, `runs_by_connection`,
//!   `runs_by_tenant`, `runs_by_status`, `runs_by_time`, `runs_active`) are rebuilt
//!   from the `runs` tree, which holds every run's summary: first every entry the
//!   runs call for is written (one key per run), then every other entry is removed,
//!   and the postings' spread is set to the one the rebuilt entries have (none wider
//!   than a run). A repair killed halfway leaves an index with extra entries (readers
//!   check each entry against the run's summary), never one missing a run that was
//!   there; running it again finishes it. A missing or unreadable in-flight watermark
//!   is set just past the newest run, as a log written before it existed gets it.
//!
//! What the runs tree, the events or the hub hold is never changed: a damaged summary,
//! event or segment is data only a backup has. The store must be stopped: one another
//! process holds is refused (by the open).

use std::path::Path;

use super::layout::{ACTIVE_FROM, POSTING_SPREAD};
use super::verify::{CACHE_BYTES, Index, Trees, decode_summary, entry_runs, unfinished_snapshots};
use sluice_model::RunId;

/// What a repair may do.
#[derive(Clone, Debug, Default)]
pub struct RepairOptions {
    /// Only say what would be done; nothing is opened or written.
    pub dry_run: bool,
    /// Accept a store found rolled back past its high-water mark (see
    /// `super::durable`): it opens again with what it holds, and what it lost is
    /// given up. Every other repair loses nothing.
    pub accept_loss: bool,
}

/// Why a repair could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The store did not open (another process holds it, it is damaged past what a
    /// repair here mends, ...).
    #[error("{0}")]
    Open(String),
    /// Reading or writing the store failed midway (running the repair again finishes
    /// it).
    #[error("the repair stopped: {0}")]
    Storage(String),
}

/// Makes the repairs (see the module doc) of the store in `path`, telling `done` each
/// as it is made (or, with [`RepairOptions::dry_run`], as it would be); returns them.
/// The caller verifies the store afterwards ([`super::verify::verify_dir`]).
pub fn repair(
    path: &Path,
    options: &RepairOptions,
    done: &(dyn Fn(&str) + Send + Sync),
) -> Result<Vec<String>, RepairError> {
    if !path.join("db").is_file() {
        return Err(RepairError::Open(format!(
            "{} holds no store (no `db` file)",
            path.display()
        )));
    }
    let mut made = Vec::new();
    let mut tell = |what: String| {
        done(&what);
        made.push(what);
    };
    let unfinished = unfinished_snapshots(path);
    if options.dry_run {
        for name in unfinished {
            tell(format!(
                "would remove {name}, a snapshot a killed process left half written"
            ));
        }
        tell(format!(
            "would rebuild the runs' indexes ({}) from the runs' summaries, and the \
             in-flight watermark if it is missing or unreadable",
            index_names()
        ));
        if options.accept_loss {
            tell(
                "would accept the store as it is if it lost flushes it had made durable \
                  (its high-water mark set to what it holds)"
                    .to_owned(),
            );
        }
        return Ok(made);
    }
    if options.accept_loss {
        match super::durable::accept_loss(path) {
            Ok(Some(lost)) => tell(format!(
                "accepted the store as it is: it had made {} flushes durable and holds {}; \
                 what was written from the damaged place on is given up",
                lost.reached, lost.kept
            )),
            Ok(None) => tell("the store lost no flush: nothing to accept".to_owned()),
            Err(e) => return Err(RepairError::Open(e.to_string())),
        }
    }
    let (db, durable) = super::open::open_store_db(path, CACHE_BYTES)
        .map_err(|e| RepairError::Open(e.to_string()))?;
    for name in unfinished {
        if path.join(&name).exists() {
            tell(format!("could not remove {name}, a half-written snapshot"));
        } else {
            tell(format!(
                "removed {name}, a snapshot a killed process left half written"
            ));
        }
    }
    let storage = |e: sled::Error| RepairError::Storage(super::open::describe(&e));
    let trees = Trees::open(&db).map_err(storage)?;
    rebuild_indexes(&trees, &mut tell).map_err(storage)?;
    durable.flush().map_err(storage)?;
    Ok(made)
}

fn index_names() -> String {
    Index::ALL
        .iter()
        .map(|i| i.tree())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rebuilds every index from the runs' summaries (see the module doc).
fn rebuild_indexes(trees: &Trees, tell: &mut dyn FnMut(String)) -> sled::Result<()> {
    let watermark = match trees.watermark()? {
        Some(w) => w,
        None => {
            let newest = trees
                .runs
                .last()?
                .and_then(|(key, _)| RunId::from_slice(&key));
            let past = newest.map_or(RunId([0; 16]), |run| {
                RunId(u128::from_be_bytes(run.0).saturating_add(1).to_be_bytes())
            });
            trees.meta.insert(ACTIVE_FROM, &past.0[..])?;
            tell(format!(
                "set the in-flight watermark (missing or unreadable) just past the newest \
                 run, {past}"
            ));
            past
        }
    };
    // Every entry the runs call for, written where it is not there as it should be.
    let mut written = [0u64; 6];
    let mut unreadable = 0u64;
    for entry in trees.runs.iter() {
        let (key, raw) = entry?;
        let Some(run) = RunId::from_slice(&key) else {
            continue;
        };
        let Ok(s) = decode_summary(run, &raw) else {
            unreadable += 1;
            continue;
        };
        for index in Index::ALL {
            let Some(mut key) = index.prefix_of(&s, Some(watermark)) else {
                continue;
            };
            key.extend_from_slice(&run.0);
            let tree = trees.index(index);
            if tree.get(&key)?.is_none_or(|v| !v.is_empty()) {
                tree.insert(key, &[])?;
                written[index as usize] += 1;
            }
        }
    }
    // Then every other entry goes.
    for index in Index::ALL {
        let tree = trees.index(index);
        let mut removed = 0u64;
        for entry in tree.iter() {
            let (key, value) = entry?;
            if !wanted(trees, index, &key, &value, watermark)? {
                tree.remove(&key)?;
                removed += 1;
            }
        }
        let (w, name) = (written[index as usize], index.tree());
        if w == 0 && removed == 0 {
            tell(format!("{name}: every entry as the runs call for"));
        } else {
            tell(format!(
                "{name}: rebuilt from the runs ({w} entries written, {removed} removed)"
            ));
        }
    }
    // One key per run: no posting reaches past its key.
    trees
        .meta
        .insert(POSTING_SPREAD, &0u128.to_be_bytes()[..])?;
    if unreadable > 0 {
        tell(format!(
            "{unreadable} run(s) whose summary cannot be read are in no index (a damaged \
             summary is data only a backup has)"
        ));
    }
    Ok(())
}

/// Whether an index entry is one the rebuilt index keeps: one run's key, as the
/// run's summary calls for.
fn wanted(
    trees: &Trees,
    index: Index,
    key: &[u8],
    value: &[u8],
    watermark: RunId,
) -> sled::Result<bool> {
    let Ok((prefix, runs)) = entry_runs(index, key, value) else {
        return Ok(false);
    };
    let [run] = runs[..] else {
        return Ok(false);
    };
    let Some(raw) = trees.runs.get(run.0)? else {
        return Ok(false);
    };
    Ok(decode_summary(run, &raw)
        .ok()
        .and_then(|s| index.prefix_of(&s, Some(watermark)))
        .is_some_and(|p| p == prefix))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use sluice_model::{EventKind, RunCompleted, RunScheduled, RunStarted, StatusKind};

    use super::*;
    use crate::log::{RunFilter, RunLog};
    use crate::sled::LogConfig;
    use crate::sled::SledStore;
    use crate::sled::layout::{RUNS_ACTIVE, RUNS_BY_STATUS, RUNS_BY_WORKFLOW};

    #[tokio::test]
    async fn a_rebuilt_index_lists_what_the_log_wrote_and_verifies_clean() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = Vec::new();
        {
            let store = SledStore::open_with(
                dir.path(),
                LogConfig {
                    // Every run in flight is keyed in runs_active at once.
                    active_lag: std::time::Duration::ZERO,
                    ..LogConfig::default()
                },
            )
            .unwrap();
            let log = store.event_log();
            // Queued together, so that the groups write postings of several runs.
            let mut queued = Vec::new();
            for i in 0..30u8 {
                let run = RunId::v7(1_700_000_000_000 + u64::from(i / 4), [i; 10]);
                let mut events = vec![EventKind::RunScheduled(RunScheduled {
                    workflow: format!("w{}", i % 3),
                    connection: "c".into(),
                    tenant: "t".into(),
                    ..RunScheduled::default()
                })];
                if i % 2 == 0 {
                    events.push(EventKind::RunStarted(RunStarted::default()));
                }
                if i % 3 == 0 {
                    events.push(EventKind::RunCompleted(RunCompleted {}));
                }
                queued.push(log.enqueue(run, events).await.unwrap());
                runs.push(run);
            }
            for q in queued {
                q.await.unwrap();
            }
        }
        let list = |filter: RunFilter| {
            let dir = dir.path().to_owned();
            async move {
                let store = SledStore::open(&dir).unwrap();
                let ids: Vec<RunId> = store
                    .event_log()
                    .list(&filter)
                    .await
                    .unwrap()
                    .iter()
                    .map(|s| s.run_id)
                    .collect();
                let in_flight = store.event_log().in_flight().await.unwrap();
                (ids, in_flight)
            }
        };
        let by_workflow = RunFilter {
            workflow: Some("w1".into()),
            ..RunFilter::default()
        };
        let completed = RunFilter {
            status: Some(StatusKind::Completed),
            newest_first: true,
            ..RunFilter::default()
        };
        let before = (
            list(by_workflow.clone()).await,
            list(completed.clone()).await,
        );
        assert_eq!(before.0.0.len(), 10);
        // Damage: an index loses its entries, another gains one for no run.
        {
            let db = super::super::open::open_db(&sled::Config::new().path(dir.path())).unwrap();
            db.open_tree(RUNS_BY_WORKFLOW).unwrap().clear().unwrap();
            db.open_tree(RUNS_ACTIVE).unwrap().clear().unwrap();
            let mut stray = b"completed\0".to_vec();
            stray.extend_from_slice(&[0xee; 16]);
            db.open_tree(RUNS_BY_STATUS)
                .unwrap()
                .insert(stray, &[])
                .unwrap();
            db.flush().unwrap();
        }
        let quiet: &crate::verify::Listen<'_> = &|_| {};
        let damaged = super::super::verify::verify_dir(dir.path(), quiet)
            .await
            .unwrap();
        assert!(!damaged.clean());

        let dry = repair(
            dir.path(),
            &RepairOptions {
                dry_run: true,
                accept_loss: false,
            },
            &|_| {},
        )
        .unwrap();
        assert!(dry.iter().all(|d| d.starts_with("would")), "{dry:?}");
        let made = repair(dir.path(), &RepairOptions::default(), &|_| {}).unwrap();
        assert!(
            made.iter()
                .any(|m| m.starts_with("runs_by_workflow: rebuilt")),
            "{made:?}"
        );
        let report = super::super::verify::verify_dir(dir.path(), quiet)
            .await
            .unwrap();
        assert!(report.clean(), "{:#?}", report.damage);
        let after = (list(by_workflow).await, list(completed).await);
        assert_eq!(after, before);
        // A second repair finds nothing to do.
        let again = repair(dir.path(), &RepairOptions::default(), &|_| {}).unwrap();
        assert!(
            again
                .iter()
                .all(|m| m.contains("every entry as the runs call for")),
            "{again:?}"
        );
    }
}
