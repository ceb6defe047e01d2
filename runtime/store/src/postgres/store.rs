//! [`PgStore`]: the run log, the hub, the catalog and the per-run logs in one
//! PostgreSQL schema, and the writes that span them.
//!
//! Keeps the atomic-commit invariant of [`crate::Backend`]: a batch's records, the
//! stream's cursor and the run's `CheckpointCommitted` event are written in **one**
//! transaction by the committer (`super::committer`), as are a refresh's deletions
//! with its `StreamCompleted`, and a fire with its schedule's progress. A batch is
//! parsed and checked on the node before it is queued, so a bad record rejects it
//! with nothing sent to the database.

use async_trait::async_trait;
use sluice_model::{EventKind, RunCompleted, RunId, StreamCompleted};

use super::committer::{Committer, Job, MAX_GROUP, Reply, Work};
use super::connect::{PgOptions, connect, redact_url};
use super::hub::{BatchWork, Parsed, PgHub, RefreshWork};
use super::log::PgRunLog;
use super::migrations::{Migrated, migrate};
use super::pool::{Reader, read};
use super::{catalog::PgCatalog, run_logs::PgRunLogs};
use crate::catalog::{Catalog, check_name};
use crate::hub::{Hub, HubBulk, HubError, MAX_BATCH_RECORDS};
use crate::log::RunLog;
use crate::run_logs::RunLogs;
use crate::{Backend, BatchCommit, Committed, StoreError, StreamEnd};

/// A node's store on PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    log: PgRunLog,
    hub: PgHub,
    catalog: PgCatalog,
    run_logs: PgRunLogs,
    pub(super) reader: Reader,
}

impl PgStore {
    /// Connects to the store at `url` (`postgres://user:password@host:port/database`),
    /// brings its schema up to date and starts its committer. Fails, naming the URL
    /// without its password, if the database cannot be reached or its schema is newer
    /// than this node knows.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PgOptions::default()).await
    }

    /// [`PgStore::connect`] with options.
    pub async fn connect_with(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        let shown = redact_url(url);
        let pool = connect(url, &options).await?;
        let migrated = migrate(&pool, &shown).await?;
        if migrated.from != migrated.to {
            tracing::info!(store = %shown, from = migrated.from, to = migrated.to, "migrated the store's schema");
        }
        let (jobs, rx) = tokio::sync::mpsc::channel(MAX_GROUP * 4);
        let committer = Committer {
            pool: pool.clone(),
            url: shown.clone(),
            streams: Default::default(),
            since_sweep: 0,
            settled: None,
        };
        tokio::spawn(committer.run(rx));
        let reader = Reader::new(pool.clone(), shown.clone());
        Ok(PgStore {
            log: PgRunLog::new(reader.clone(), jobs),
            hub: PgHub::new(pool, shown),
            catalog: PgCatalog::new(reader.clone()),
            run_logs: PgRunLogs::new(reader.clone()),
            reader,
        })
    }

    /// Brings the schema of the store at `url` up to date without starting a node.
    pub async fn migrate(url: &str) -> Result<Migrated, StoreError> {
        let pool = connect(url, &PgOptions { max_connections: 2 }).await?;
        migrate(&pool, &redact_url(url)).await
    }
}

/// Largest batch (bytes of NDJSON) parsed on the async runtime.
const BATCH_IN_PLACE: usize = 8 * 1024;

/// Parses a batch into the work the committer writes; the first bad record rejects
/// it.
fn prepare(batch: BatchCommit) -> Result<BatchWork, StoreError> {
    for name in [&batch.connection, &batch.stream] {
        if name.contains('\0') {
            return Err(StoreError::Invalid(
                "connection and stream names may not contain NUL".into(),
            ));
        }
    }
    let pk: Vec<&str> = batch.primary_key.iter().map(String::as_str).collect();
    let base = batch.records.as_ptr() as usize;
    let parsed = crate::records::parse_batch(&batch.records, &pk)?;
    if parsed.len() > MAX_BATCH_RECORDS {
        return Err(HubError::BatchTooLarge {
            records: parsed.len(),
        }
        .into());
    }
    let mut out = Vec::with_capacity(parsed.len());
    for (index, r) in parsed.into_iter().enumerate() {
        // A JSON text is UTF-8 only if its bytes are: the parser checks strings, not
        // what lies between them.
        if let Err(e) = std::str::from_utf8(r.bytes) {
            return Err(HubError::MalformedRecord {
                index,
                reason: e.to_string(),
            }
            .into());
        }
        let start = r.bytes.as_ptr() as usize - base;
        out.push(Parsed {
            line: start..start + r.bytes.len(),
            pk: String::from_utf8(r.pk).map_err(|e| HubError::MalformedRecord {
                index,
                reason: e.to_string(),
            })?,
            pk_hash: r.pk_hash,
            content_hash: r.content_hash,
        });
    }
    Ok(BatchWork {
        connection: batch.connection,
        stream: batch.stream,
        records: batch.records,
        parsed: out,
        checkpoint: batch.checkpoint,
        attempt: batch.attempt,
        generation: batch.generation,
        incremental: batch.incremental,
    })
}

#[async_trait]
impl Backend for PgStore {
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

    fn shared(&self) -> bool {
        true
    }

    fn shared_budgets(&self) -> Option<std::sync::Arc<dyn crate::budgets::SharedBudgets>> {
        Some(std::sync::Arc::new(super::budgets::PgBudgets::new(
            self.reader.pool().clone(),
        )))
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        let row = read!(self.reader, c, async {
            c.query_one(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8 \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = current_schema() AND c.relkind = 'r'",
                &[],
            )
            .await
        })
        .map_err(StoreError::Storage)?;
        let bytes: i64 = row.try_get(0).map_err(StoreError::storage)?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    async fn commit_batch(&self, run: RunId, batch: BatchCommit) -> Result<Committed, StoreError> {
        let work = if batch.records.len() <= BATCH_IN_PLACE {
            prepare(batch)?
        } else {
            tokio::task::spawn_blocking(move || prepare(batch))
                .await
                .map_err(StoreError::storage)??
        };
        let done = self
            .log
            .commit(run, Vec::new(), Work::Batch(Box::new(work)))
            .await?;
        Ok(Committed {
            seq: done.seqs.first().copied().unwrap_or(0),
            outcome: done.outcome,
        })
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
        let work = RefreshWork {
            connection: end.connection,
            stream: end.stream,
            generation: end.generation,
            checkpoint: end.checkpoint,
            attempt: end.attempt,
        };
        let done = self
            .log
            .commit(run, completed, Work::Refresh(Box::new(work)))
            .await?;
        Ok(done.outcome.deleted)
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
        check_name(kind, name)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.log
            .submit(Job {
                run,
                at_unix_ms,
                kinds: events,
                expect_seq: None,
                work: Work::Document {
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                    document,
                },
                reply: Reply::Seqs(reply),
            })
            .await?;
        Ok(rx.await.map_err(|_| crate::LogError::Closed)??)
    }
}
