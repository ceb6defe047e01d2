//! [`Store`]: one embedded database holding the run log, the hub and the catalog, and
//! the one write that spans the hub and the log: a batch of records committed with its
//! checkpoint.
//!
//! Owns the atomic-commit invariant: a batch's hub segment and the run's
//! `CheckpointCommitted` event go into **one** atomic group of writes, flushed before the
//! commit is acknowledged. After a crash either both are there or neither is, so a
//! resumed run re-reads exactly the batches whose checkpoints were not committed, and
//! upsert by primary key absorbs whatever the source sends again. It must never write
//! hub records outside that group for a run's batch.

use std::path::Path;

use crate::run_logs::RunLogs;
use std::sync::Arc;

use crate::catalog::Catalog;
use crate::hub::{BatchMeta, BatchOutcome, Hub, HubError, HubWriter, SegmentWrite, StagedWrite};
use crate::log::{EventKind, EventLog, LogConfig, LogError, RunId, TxHook, now_unix_ms, v1};
use crate::staged::StagedTree;

/// Trees added to the log's groups of writes, in order: the hub's, then the catalog's.
const EXTRA_TREES: [&str; 2] = ["hub", crate::catalog::TREE];

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The run log refused or failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The hub refused or failed (e.g. a record without its primary key).
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The storage engine failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A request is malformed.
    #[error("invalid: {0}")]
    Invalid(String),
}

impl StoreError {
    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        StoreError::Storage(e.to_string())
    }
}

/// One batch of a run's stream to commit with its checkpoint.
#[derive(Debug, Clone)]
pub struct BatchCommit {
    /// The connection the records come from.
    pub connection: String,
    /// The stream.
    pub stream: String,
    /// Top-level fields forming the primary key.
    pub primary_key: Vec<String>,
    /// NDJSON records, one JSON object per line.
    pub records: Vec<u8>,
    /// Where the source resumes after this batch; empty for "from the start".
    pub checkpoint: String,
    /// The attempt that read it.
    pub attempt: u32,
    /// The refresh generation of a full refresh (deletion detection); 0 when the
    /// stream is read incrementally.
    pub generation: u64,
    /// Whether the stream is read incrementally: then the checkpoint also becomes the
    /// stream's cursor ([`Hub::stream_cursor`]), where its next run starts.
    pub incremental: bool,
}

/// What a committed batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Seq of the `CheckpointCommitted` event.
    pub seq: u64,
    /// Created / updated / unchanged counts.
    pub outcome: BatchOutcome,
}

/// The end of a stream in a run.
#[derive(Debug, Clone)]
pub struct StreamEnd {
    /// The connection.
    pub connection: String,
    /// The stream.
    pub stream: String,
    /// Whether the stream was fully refreshed: then every record not seen in
    /// `generation` is marked deleted in the same group.
    pub full_refresh: bool,
    /// The refresh generation the run's batches were committed with.
    pub generation: u64,
    /// The stream's last committed checkpoint.
    pub checkpoint: String,
    /// The attempt that read it.
    pub attempt: u32,
    /// It is the run's last stream: `RunCompleted` goes into the same group,
    /// which spares a durable round trip per run.
    pub completes_run: bool,
}

/// The embedded store of one node. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    log: EventLog,
    hub: Hub,
    catalog: Catalog,
    run_logs: RunLogs,
    dir: std::sync::Arc<Path>,
}

impl Store {
    /// Opens (or creates) the store in the directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, LogConfig::default())
    }

    /// Opens the store with a log configuration.
    pub fn open_with(path: impl AsRef<Path>, config: LogConfig) -> Result<Self, StoreError> {
        let log = EventLog::open_with_extra(path.as_ref(), config, &EXTRA_TREES)?;
        let hub = Hub::open(log.db())?;
        let catalog = Catalog::open(log.db())?;
        let run_logs = RunLogs::open(log.db())?;
        let dir = std::sync::Arc::from(path.as_ref());
        Ok(Store {
            log,
            hub,
            catalog,
            run_logs,
            dir,
        })
    }

    /// The store's directory (files that live beside the database, such as
    /// registered connector components, go in subdirectories of it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run log.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// The hub (reads; a run's batches go through [`Store::commit_batch`]).
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The per-run logs (connector lines and HTTP requests).
    pub fn run_logs(&self) -> &RunLogs {
        &self.run_logs
    }

    /// The catalog of definitions.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.log.size_on_disk()?)
    }

    /// Upserts a batch into the hub and appends its `CheckpointCommitted` event to
    /// `run`'s log, atomically and durably. A bad record rejects the whole batch and
    /// nothing is written.
    pub async fn commit_batch(
        &self,
        run: RunId,
        batch: BatchCommit,
    ) -> Result<Committed, StoreError> {
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
        let event = EventKind::CheckpointCommitted(v1::CheckpointCommitted {
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

    /// Appends `events` (stamped `at_unix_ms`) to a new or existing run's log and stores `document` as the
    /// catalog definition `name` of `kind`, atomically: for a schedule, the run
    /// started for a fire and the schedule's progress past that fire, so that after a
    /// crash a fire has either its run and its progress, or neither.
    pub async fn append_with_document(
        &self,
        run: RunId,
        at_unix_ms: i64,
        events: Vec<EventKind>,
        kind: &str,
        name: &str,
        document: Vec<u8>,
    ) -> Result<Vec<u64>, StoreError> {
        let hook = Arc::new(CatalogHook {
            key: crate::catalog::key(kind, name)?,
            document,
        });
        Ok(self
            .log
            .append_with_hook(run, at_unix_ms, events, hook)
            .await?)
    }

    /// Ends a stream of `run`: for a full refresh, marks deleted every record the
    /// refresh did not see; appends `StreamCompleted` (after a `CheckpointCommitted`
    /// carrying the deletions, if any, and before `RunCompleted` if the stream
    /// completes the run), all atomically. Returns the number of
    /// records marked deleted.
    pub async fn complete_stream(&self, run: RunId, end: StreamEnd) -> Result<u64, StoreError> {
        let mut completed = vec![EventKind::StreamCompleted(v1::StreamCompleted {
            stream: end.stream.clone(),
            full_refresh: end.full_refresh,
        })];
        if end.completes_run {
            completed.push(EventKind::RunCompleted(v1::RunCompleted {}));
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
            events.push(EventKind::CheckpointCommitted(v1::CheckpointCommitted {
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
    hub: &Hub,
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
        let Some(catalog) = extra.get_mut(1) else {
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
        let Some(hub) = extra.first_mut() else {
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
