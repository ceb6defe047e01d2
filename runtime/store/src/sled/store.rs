//! [`SledStore`]: one embedded sled database holding the run log, the hub, the catalog
//! and the per-run logs, and the writes that span them.
//!
//! Keeps the atomic-commit invariant of [`crate::Backend`]: a batch's hub segment and
//! the run's `CheckpointCommitted` event go into **one** atomic group of the log's
//! writes, flushed before the commit is acknowledged. After a crash either both are there or neither is, so a
//! resumed run re-reads exactly the batches whose checkpoints were not committed, and
//! upsert by primary key absorbs whatever the source sends again. It must never write
//! hub records outside that group for a run's batch.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use sluice_model::{CheckpointCommitted, EventKind, RunCompleted, RunId, StreamCompleted};

use super::catalog::SledCatalog;
use super::hub::{BatchMeta, HubWriter, SegmentWrite, SledHub, StagedWrite};
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
        let time_ms = now_unix_ms();
        let (connection, stream, generation) =
            (end.connection.clone(), end.stream.clone(), end.generation);
        let time = u64::try_from(time_ms).unwrap_or(0);
        // Looking through a stream for deletions is in place only for a small one.
        let (mut writer, staged) = under_lease(
            &self.hub,
            connection,
            stream,
            Some(REFRESH_IN_PLACE),
            move |writer| Ok(writer.prepare_refresh(generation, time)?),
        )
        .await?;
        let deleted = staged.outcome().deleted;
        let mut events = Vec::with_capacity(3);
        if deleted > 0 {
            events.push(EventKind::CheckpointCommitted(CheckpointCommitted {
                stream: end.stream,
                checkpoint: end.checkpoint,
                attempt: end.attempt,
                deleted,
                ..Default::default()
            }));
        }
        events.extend(completed);
        let hook = Arc::new(HubHook(writer.segment_write(&staged)));
        self.log
            .append_with_hook(run, time_ms, events, hook)
            .await?;
        writer.commit(staged);
        Ok(deleted)
    }
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
