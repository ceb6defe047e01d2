//! [`SledStore`]: one embedded sled database holding the run log, the hub, the catalog
//! and the per-run logs, and the writes that span them.
//!
//! Keeps the atomic-commit invariant of [`crate::Backend`]: a batch's hub segment and
//! the run's `CheckpointCommitted` event go into **one** atomic group of the log's
//! writes, flushed before the commit is acknowledged. After a crash either both are there or neither is, so a
//! resumed run re-reads exactly the batches whose checkpoints were not committed, and
//! upsert by primary key absorbs whatever the source sends again. A full refresh's
//! deletions commit in bounded pieces, each one group with the `CheckpointCommitted`
//! that counts it, the last one with the stream's completion, so a node stopped at any
//! rhythm still makes progress. It must never write hub records outside such a group
//! for a run.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use sluice_model::{CheckpointCommitted, EventKind, RunCompleted, RunId, StreamCompleted};

use super::catalog::SledCatalog;
use super::hub::{BatchMeta, HubWriter, Piece, SegmentWrite, SledHub, StagedWrite, Unseen};
use super::log::{EventLog, LogConfig, TxHook};
use super::run_logs::SledRunLogs;
use super::staged::StagedTree;
use crate::catalog::Catalog;
use crate::hub::{Hub, HubBulk, HubError};
use crate::log::{LogError, RunLog, now_unix_ms};
use crate::run_logs::RunLogs;
use crate::{Backend, BatchCommit, Committed, StoreError, StreamEnd};

use super::layout::{EXTRA_CATALOG, EXTRA_HUB, GROUP_EXTRA as EXTRA_TREES};

/// The embedded sled store of one node. Cheap to clone.
#[derive(Clone)]
pub struct SledStore {
    log: EventLog,
    hub: SledHub,
    catalog: SledCatalog,
    run_logs: SledRunLogs,
}

impl SledStore {
    /// Opens (or creates) the store in the directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, LogConfig::default())
    }

    /// Opens the store with a log configuration.
    pub fn open_with(path: impl AsRef<Path>, config: LogConfig) -> Result<Self, StoreError> {
        let (db, durable) = super::open::open_store_db(path.as_ref(), config.cache_bytes)
            .map_err(StoreError::storage)?;
        let hub = SledHub::open(&db)?;
        let catalog = SledCatalog::open(&db, durable.clone())?;
        let run_logs = SledRunLogs::open(&db)?;
        let log = EventLog::start(db, durable, config, &EXTRA_TREES)?;
        Ok(SledStore {
            log,
            hub,
            catalog,
            run_logs,
        })
    }

    /// The run log on sled, with the sled-only calls (such as its size).
    pub fn event_log(&self) -> &EventLog {
        &self.log
    }

    /// The hub on sled, with the sled-only calls (such as writes outside a run, for
    /// benchmarks).
    pub fn sled_hub(&self) -> &SledHub {
        &self.hub
    }
}

#[async_trait]
impl Backend for SledStore {
    fn log(&self) -> &dyn RunLog {
        &self.log
    }

    fn hub(&self) -> &dyn Hub {
        &self.hub
    }

    fn catalog(&self) -> &dyn Catalog {
        &self.catalog
    }

    fn run_logs(&self) -> &dyn RunLogs {
        &self.run_logs
    }

    fn hub_bulk(&self) -> &dyn HubBulk {
        self
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.log.size_on_disk()?)
    }

    async fn commit_batch(&self, run: RunId, batch: BatchCommit) -> Result<Committed, StoreError> {
        let time_ms = now_unix_ms();
        // Parsing and classifying a batch is CPU work of a millisecond or two: in place
        // only for a small one.
        let in_place = (batch.records.len() <= BATCH_IN_PLACE).then_some(usize::MAX);
        let (connection, stream) = (batch.connection.clone(), batch.stream.clone());
        let (mut writer, (staged, batch)) =
            under_lease(&self.hub, connection, stream, in_place, move |writer| {
                let staged = prepare_batch(writer, &batch, time_ms)?;
                Ok((staged, batch))
            })
            .await?;
        let outcome = staged.outcome();
        let (stream, checkpoint) = (batch.stream.clone(), batch.checkpoint.clone());
        let event = EventKind::CheckpointCommitted(CheckpointCommitted {
            stream: batch.stream,
            checkpoint: batch.checkpoint,
            records: outcome.created + outcome.updated + outcome.unchanged,
            bytes: batch.records.len() as u64,
            created: outcome.created,
            updated: outcome.updated,
            unchanged: outcome.unchanged,
            attempt: batch.attempt,
            deleted: outcome.deleted,
        });
        let mut write = writer.segment_write(&staged);
        if batch.incremental {
            write = write.with_cursor(&batch.connection, &stream, &checkpoint);
        }
        let hook = Arc::new(HubHook(write));
        let seqs = self
            .log
            .append_with_hook(run, time_ms, vec![event], hook)
            .await?;
        writer.commit(staged);
        Ok(Committed {
            seq: seqs.first().copied().unwrap_or(0),
            outcome,
        })
    }

    async fn append_with_document(
        &self,
        run: RunId,
        at_unix_ms: i64,
        events: Vec<EventKind>,
        kind: &str,
        name: &str,
        document: Vec<u8>,
    ) -> Result<Vec<u64>, StoreError> {
        let hook = Arc::new(CatalogHook {
            key: super::catalog::key(kind, name)?,
            document,
        });
        Ok(self
            .log
            .append_with_hook(run, at_unix_ms, events, hook)
            .await?)
    }

    async fn complete_stream(&self, run: RunId, end: StreamEnd) -> Result<u64, StoreError> {
        let mut completed = vec![EventKind::StreamCompleted(StreamCompleted {
            stream: end.stream.clone(),
            full_refresh: end.full_refresh,
            attempt: end.attempt,
        })];
        if end.completes_run {
            completed.push(EventKind::RunCompleted(RunCompleted {}));
        }
        if !end.full_refresh {
            self.log.append(run, completed).await?;
            return Ok(0);
        }
        self.complete_refresh(run, end, completed, DELETIONS_PER_GROUP)
            .await
    }
}

/// One group of writes of a refresh's deletions marks at most this many records
/// deleted, and reads at most this many bytes of segments to find their primary keys.
/// Measured on the project machine (2 cores, release build, a second `sluice run` of
/// the sample's 2,000,000 records of ~200 bytes): with every seventh record gone,
/// groups of ~37,400 deletions (bounded by the bytes) commit in 20–55 ms each, the
/// 285,714 in ~0.3 s; with every other one gone, groups of 50,000 in 20–100 ms, the
/// 1,000,000 in ~0.6 s. Small enough that a node killed every second or two still
/// completes the refresh; large enough that a refresh adds few events.
const DELETIONS_PER_GROUP: Piece = Piece {
    records: 50_000,
    segment_bytes: 64 << 20,
};

impl SledStore {
    /// Completes a full refresh: marks deleted every live record refresh
    /// `end.generation` did not see, in groups of writes of at most `piece` each, each
    /// atomic with a `CheckpointCommitted` counting its deletions; the last group also
    /// carries `completed`. Returns the records marked deleted here. A run stopped
    /// between groups and resumed finds the records of the groups that committed
    /// already deleted (no longer live), so it deletes and counts each record once.
    async fn complete_refresh(
        &self,
        run: RunId,
        end: StreamEnd,
        completed: Vec<EventKind>,
        piece: Piece,
    ) -> Result<u64, StoreError> {
        let (mut writer, mut unseen) = self.unseen(&end).await?;
        let mut completed = Some(completed);
        let mut deleted = 0;
        loop {
            let (staged, time_ms);
            (writer, unseen, staged, time_ms) = prepare_piece(writer, unseen, piece).await?;
            let n = staged.outcome().deleted;
            let last = unseen.left() == 0;
            let mut events = Vec::with_capacity(3);
            if n > 0 {
                events.push(EventKind::CheckpointCommitted(CheckpointCommitted {
                    stream: end.stream.clone(),
                    checkpoint: end.checkpoint.clone(),
                    attempt: end.attempt,
                    deleted: n,
                    ..Default::default()
                }));
            }
            if last {
                events.extend(completed.take().unwrap_or_default());
            }
            let hook = Arc::new(HubHook(writer.segment_write(&staged)));
            self.log
                .append_with_hook(run, time_ms, events, hook)
                .await?;
            writer.commit(staged);
            deleted += n;
            tracing::debug!(
                %run,
                stream = %end.stream,
                deleted = n,
                left = unseen.left(),
                "committed a piece of a refresh's deletions"
            );
            if last {
                return Ok(deleted);
            }
        }
    }

    /// The lease on the stream `end` completes, and the records its refresh did not see.
    async fn unseen(&self, end: &StreamEnd) -> Result<(HubWriter, Unseen), StoreError> {
        let generation = end.generation;
        // Looking through a stream for deletions is in place only for a small one.
        under_lease(
            &self.hub,
            end.connection.clone(),
            end.stream.clone(),
            Some(REFRESH_IN_PLACE),
            move |writer| Ok(writer.unseen(generation)),
        )
        .await
    }
}

/// Prepares the next piece of `unseen`'s deletions, on a blocking thread unless it is
/// small; returns the writer and `unseen` with it, and the time it is stamped with.
async fn prepare_piece(
    writer: HubWriter,
    mut unseen: Unseen,
    piece: Piece,
) -> Result<(HubWriter, Unseen, StagedWrite, i64), StoreError> {
    let time_ms = now_unix_ms();
    let time = u64::try_from(time_ms).unwrap_or(0);
    if unseen.left() <= REFRESH_IN_PLACE && writer.indexed() <= REFRESH_IN_PLACE {
        let staged = writer.prepare_deletions(&mut unseen, piece, time)?;
        return Ok((writer, unseen, staged, time_ms));
    }
    tokio::task::spawn_blocking(move || {
        let staged = writer.prepare_deletions(&mut unseen, piece, time)?;
        Ok((writer, unseen, staged, time_ms))
    })
    .await
    .map_err(StoreError::storage)?
}

/// Largest batch (bytes of NDJSON) parsed and classified on the async runtime: a
/// few dozen records, well under a millisecond of work.
const BATCH_IN_PLACE: usize = 8 * 1024;

/// Takes the hub lease of `connection`'s `stream` and runs `prepare` under it. In
/// place if the stream's index is at hand and has at most `in_place` records (`None`:
/// never), where handing the work to a blocking thread would cost more than the work;
/// else on a blocking thread, which may wait for the lease and load the index.
async fn under_lease<T: Send + 'static>(
    hub: &SledHub,
    connection: String,
    stream: String,
    in_place: Option<usize>,
    prepare: impl FnOnce(&HubWriter) -> Result<T, StoreError> + Send + 'static,
) -> Result<(HubWriter, T), StoreError> {
    let at_hand = match in_place {
        Some(max_records) => hub.writer_at_hand(&connection, &stream, max_records)?,
        None => None,
    };
    if let Some(writer) = at_hand {
        let prepared = prepare(&writer)?;
        return Ok((writer, prepared));
    }
    let hub = hub.clone();
    tokio::task::spawn_blocking(move || {
        let writer = hub.writer(&connection, &stream)?;
        let prepared = prepare(&writer)?;
        Ok((writer, prepared))
    })
    .await
    .map_err(StoreError::storage)?
}

/// Parses and classifies `batch` against the stream's index.
fn prepare_batch(
    writer: &HubWriter,
    batch: &BatchCommit,
    time_ms: i64,
) -> Result<StagedWrite, HubError> {
    let pk: Vec<&str> = batch.primary_key.iter().map(String::as_str).collect();
    writer.prepare_batch(
        &pk,
        &batch.records,
        BatchMeta {
            generation: batch.generation,
            source_cursor: Some(&batch.checkpoint),
            time_ms: u64::try_from(time_ms).unwrap_or(0),
        },
    )
}

/// Most records a stream may have for its refresh to be completed on the async
/// runtime: looking through them for deletions takes well under a millisecond.
const REFRESH_IN_PLACE: usize = 4096;

/// Writes one catalog document in the log's group of writes.
struct CatalogHook {
    key: Vec<u8>,
    document: Vec<u8>,
}

impl TxHook for CatalogHook {
    fn write(&self, extra: &mut [StagedTree<'_>]) -> Result<Vec<EventKind>, LogError> {
        let Some(catalog) = extra.get_mut(EXTRA_CATALOG) else {
            return Err(LogError::Rejected(
                "the catalog tree is not part of the log's writes".into(),
            ));
        };
        catalog.insert(self.key.as_slice(), self.document.as_slice());
        Ok(Vec::new())
    }
}

/// Writes a hub segment in the log's group of writes.
struct HubHook(SegmentWrite);

impl TxHook for HubHook {
    fn write(&self, extra: &mut [StagedTree<'_>]) -> Result<Vec<EventKind>, LogError> {
        let Some(hub) = extra.get_mut(EXTRA_HUB) else {
            return Err(LogError::Rejected(
                "the hub tree is not part of the log's writes".into(),
            ));
        };
        self.0.write(hub).map_err(|e| match e {
            HubError::Storage(s) => LogError::Storage(s),
            other => LogError::Rejected(other.to_string()),
        })?;
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]

    use sluice_model::{AttemptBegun, RunScheduled, Trigger};

    use super::*;
    use crate::hub::ChangeKind;

    /// Records 0..1000 in batches of 250 (four segments), one refresh generation.
    const RECORDS: u32 = 1_000;

    fn scheduled_and_begun() -> Vec<EventKind> {
        vec![
            EventKind::RunScheduled(RunScheduled {
                workflow: "wf".into(),
                connection: "c".into(),
                tenant: "t".into(),
                priority: 1,
                streams: vec!["users".into()],
                trigger: Trigger::Manual,
                fire_at_unix_ms: 0,
            }),
            EventKind::AttemptBegun(AttemptBegun {
                attempt: 1,
                ..Default::default()
            }),
        ]
    }

    fn end(generation: u64, completes_run: bool) -> StreamEnd {
        StreamEnd {
            connection: "c".into(),
            stream: "users".into(),
            full_refresh: true,
            generation,
            checkpoint: "end".into(),
            attempt: 1,
            completes_run,
        }
    }

    /// A run of refresh `generation` that commits the records of 0..RECORDS `keep`s,
    /// in batches of 250 ids, and leaves its stream open.
    async fn refresh(store: &SledStore, n: u8, generation: u64, keep: impl Fn(u32) -> bool) {
        let run = RunId::v7(1_700_000_000_000 + u64::from(n), [n; 10]);
        store.log.append(run, scheduled_and_begun()).await.unwrap();
        for from in (0..RECORDS).step_by(250) {
            let mut records = Vec::new();
            for id in (from..from + 250).filter(|id| keep(*id)) {
                records.extend_from_slice(format!("{{\"id\":{id}}}\n").as_bytes());
            }
            let batch = BatchCommit {
                connection: "c".into(),
                stream: "users".into(),
                primary_key: vec!["id".into()],
                records,
                checkpoint: (from + 250).to_string(),
                attempt: 1,
                generation,
                incremental: false,
            };
            store.commit_batch(run, batch).await.unwrap();
        }
    }

    fn run(n: u8) -> RunId {
        RunId::v7(1_700_000_000_000 + u64::from(n), [n; 10])
    }

    /// The deletions each of the run's `CheckpointCommitted` counted, and the groups
    /// they came in (events appended together share their time).
    async fn deletion_groups(store: &SledStore, run: RunId) -> Vec<(u64, Vec<&'static str>)> {
        let events = store.log.read(run).await.unwrap();
        let mut groups: Vec<(i64, u64, Vec<&'static str>)> = Vec::new();
        for e in events
            .iter()
            .skip_while(|e| !matches!(&e.kind, EventKind::CheckpointCommitted(c) if c.deleted > 0))
        {
            let (deleted, name) = match &e.kind {
                EventKind::CheckpointCommitted(c) => (c.deleted, "checkpoint"),
                EventKind::StreamCompleted(_) => (0, "stream completed"),
                EventKind::RunCompleted(_) => (0, "run completed"),
                other => panic!("unexpected {other:?}"),
            };
            match groups.last_mut() {
                Some((at, n, names)) if *at == e.at_unix_ms && name != "checkpoint" => {
                    *n += deleted;
                    names.push(name);
                }
                _ => groups.push((e.at_unix_ms, deleted, vec![name])),
            }
        }
        groups.into_iter().map(|(_, n, names)| (n, names)).collect()
    }

    /// The hub's live count, and the keys its feed shows deleted (each at most once).
    async fn live_and_deleted(store: &SledStore) -> (u64, Vec<String>) {
        let live = store.hub.count("c", "users").unwrap();
        let (feed, _) = store.hub.feed("c", "users", 0, usize::MAX).unwrap();
        let deleted: Vec<String> = feed
            .into_iter()
            .filter(|c| c.kind == ChangeKind::Deleted)
            .map(|c| c.primary_key)
            .collect();
        (live, deleted)
    }

    fn expected_deleted() -> Vec<String> {
        (0..RECORDS)
            .filter(|id| id % 3 == 0)
            .map(|id| format!("[{id}]"))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refresh_deleting_more_than_a_piece_commits_in_groups_each_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        refresh(&store, 1, 1, |_| true).await;
        assert_eq!(
            store.complete_stream(run(1), end(1, true)).await.unwrap(),
            0
        );
        // 334 of 1,000 records are not seen again: pieces of at most 100 deletions.
        refresh(&store, 2, 2, |id| id % 3 != 0).await;
        let piece = Piece {
            records: 100,
            segment_bytes: usize::MAX,
        };
        let completed = vec![
            EventKind::StreamCompleted(StreamCompleted {
                stream: "users".into(),
                full_refresh: true,
                attempt: 1,
            }),
            EventKind::RunCompleted(RunCompleted {}),
        ];
        let deleted = store
            .complete_refresh(run(2), end(2, true), completed, piece)
            .await
            .unwrap();
        assert_eq!(deleted, 334);
        assert_eq!(
            deletion_groups(&store, run(2)).await,
            vec![
                (100, vec!["checkpoint"]),
                (100, vec!["checkpoint"]),
                (100, vec!["checkpoint"]),
                (34, vec!["checkpoint", "stream completed", "run completed"]),
            ],
            "only the last group completes the stream and the run"
        );
        let state = store.log.state(run(2)).await.unwrap();
        assert_eq!(state.progress["users"].deleted, 334);
        assert!(state.progress["users"].complete);
        assert_eq!(state.status.kind(), sluice_model::StatusKind::Completed);
        let (live, mut gone) = live_and_deleted(&store).await;
        gone.sort_by_key(|k| k.trim_matches(['[', ']']).parse::<u32>().unwrap());
        assert_eq!((live, gone), (666, expected_deleted()));

        // Bounded by the bytes of segments read instead: one batch's segment a group.
        refresh(&store, 3, 3, |_| true).await;
        assert_eq!(
            store.complete_stream(run(3), end(3, true)).await.unwrap(),
            0
        );
        refresh(&store, 4, 4, |id| id % 3 != 0).await;
        let by_bytes = Piece {
            records: usize::MAX,
            segment_bytes: 1,
        };
        let deleted = store
            .complete_refresh(run(4), end(4, false), Vec::new(), by_bytes)
            .await
            .unwrap();
        assert_eq!(deleted, 334);
        let groups = deletion_groups(&store, run(4)).await;
        assert!(groups.len() >= 4, "{groups:?}");
        assert_eq!(groups.iter().map(|(n, _)| n).sum::<u64>(), 334);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refresh_stopped_between_groups_deletes_and_counts_each_record_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            refresh(&store, 1, 1, |_| true).await;
            store.complete_stream(run(1), end(1, false)).await.unwrap();
            refresh(&store, 2, 2, |id| id % 3 != 0).await;
            // The first group of the completion commits; then the node stops.
            let piece = Piece {
                records: 100,
                segment_bytes: usize::MAX,
            };
            let (writer, unseen) = store.unseen(&end(2, true)).await.unwrap();
            assert_eq!(unseen.left(), 334);
            let (mut writer, unseen, staged, at) =
                prepare_piece(writer, unseen, piece).await.unwrap();
            assert_eq!(unseen.left(), 234);
            let first = EventKind::CheckpointCommitted(CheckpointCommitted {
                stream: "users".into(),
                checkpoint: "end".into(),
                attempt: 1,
                deleted: staged.outcome().deleted,
                ..Default::default()
            });
            let hook = Arc::new(HubHook(writer.segment_write(&staged)));
            store
                .log
                .append_with_hook(run(2), at, vec![first], hook)
                .await
                .unwrap();
            writer.commit(staged);
            drop(writer);
            assert_eq!(live_and_deleted(&store).await.0, 900);
        }
        // Resumed: the attempt completes the stream again.
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.complete_stream(run(2), end(2, true)).await.unwrap(),
            234
        );
        let state = store.log.state(run(2)).await.unwrap();
        assert_eq!(state.progress["users"].deleted, 334);
        assert_eq!(state.status.kind(), sluice_model::StatusKind::Completed);
        let (live, mut gone) = live_and_deleted(&store).await;
        gone.sort_by_key(|k| k.trim_matches(['[', ']']).parse::<u32>().unwrap());
        assert_eq!((live, gone), (666, expected_deleted()));
        // Completing it once more finds nothing left to delete.
        let unseen = store.unseen(&end(2, false)).await.unwrap().1;
        assert_eq!(unseen.left(), 0);
    }
}
