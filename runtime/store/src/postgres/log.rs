//! The run log on PostgreSQL ([`PgRunLog`]): appends go to the committer's queue,
//! reads go to the pool.
//!
//! Tables: `run_events` (every event, a `sluice.log.v1.RunEvent` message keyed by run
//! and seq) and `runs` (each run's summary, written in the same transaction as its
//! events, indexed for listing). It keeps no run's state in memory: every append is
//! checked against the rows it locks, so several nodes may append to one run and the
//! database decides who was first. Events held back ([`RunLog::hold_expecting`]) are
//! the one thing in memory, and only until the run's next append.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::committer::{Job, Reply, Work};
use super::errors::describe;
use super::pool::{Reader, read};
use crate::codec::{event_from_wire, v1};
use crate::log::{Appending, LogError, RunFilter, RunLog, RunSummary, now_unix_ms};
use sluice_model::{EventKind, RunEvent, RunId, StatusKind};

/// The run log of a PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgRunLog {
    shared: Arc<Shared>,
}

struct Shared {
    reader: Reader,
    jobs: mpsc::Sender<Job>,
    /// Appends held back, at most one per run.
    held: Mutex<HashMap<RunId, Job>>,
}

impl PgRunLog {
    pub(crate) fn new(reader: Reader, jobs: mpsc::Sender<Job>) -> Self {
        PgRunLog {
            shared: Arc::new(Shared {
                reader,
                jobs,
                held: Mutex::default(),
            }),
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<RunId, Job>> {
        self.shared.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job behind the run's held events, if any.
    pub(crate) async fn submit(&self, job: Job) -> Result<(), LogError> {
        self.release(job.run).await?;
        self.shared
            .jobs
            .send(job)
            .await
            .map_err(|_| LogError::Closed)
    }

    /// Queues a job and waits for its outcome.
    pub(crate) async fn commit(
        &self,
        run: RunId,
        kinds: Vec<EventKind>,
        work: Work,
    ) -> Result<super::committer::Done, LogError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job {
            run,
            at_unix_ms: now_unix_ms(),
            kinds,
            expect_seq: None,
            work,
            reply: Reply::Done(reply),
        })
        .await?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    fn events_job(
        run: RunId,
        at_unix_ms: i64,
        kinds: Vec<EventKind>,
        expect_seq: Option<u64>,
    ) -> (Job, Appending) {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            run,
            at_unix_ms,
            kinds,
            expect_seq,
            work: Work::Events,
            reply: Reply::Seqs(reply),
        };
        (job, Appending::new(rx))
    }

    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, LogError> {
        read!(self.shared.reader, c, async {
            let statement = c.prepare_cached(sql).await?;
            c.query(&statement, params).await
        })
        .map_err(LogError::Storage)
    }
}

const STATUSES: [StatusKind; 6] = [
    StatusKind::Scheduled,
    StatusKind::Running,
    StatusKind::RetryWaiting,
    StatusKind::Completed,
    StatusKind::DeadLettered,
    StatusKind::Cancelled,
];

pub(crate) const SUMMARY_COLUMNS: &str = "run_id, workflow, connection, tenant, priority, \
     status, created_at_ms, updated_at_ms, last_seq, attempt, worker, lease_until_ms";

/// A run's summary from a row of [`SUMMARY_COLUMNS`].
pub(crate) fn summary_from_row(row: &Row) -> Result<RunSummary, LogError> {
    let id: Uuid = row
        .try_get(0)
        .map_err(|e| LogError::Storage(describe(&e)))?;
    let run_id = RunId(id.into_bytes());
    let corrupt = |e: tokio_postgres::Error| LogError::CorruptSummary {
        run: run_id,
        reason: describe(&e),
    };
    let status: &str = row.try_get(5).map_err(corrupt)?;
    let status = STATUSES
        .into_iter()
        .find(|s| s.as_str() == status)
        .ok_or_else(|| LogError::CorruptSummary {
            run: run_id,
            reason: format!("unknown status `{status}`"),
        })?;
    Ok(RunSummary {
        run_id,
        workflow: row.try_get(1).map_err(corrupt)?,
        connection: row.try_get(2).map_err(corrupt)?,
        tenant: row.try_get(3).map_err(corrupt)?,
        priority: row.try_get(4).map_err(corrupt)?,
        status,
        created_at_unix_ms: row.try_get(6).map_err(corrupt)?,
        updated_at_unix_ms: row.try_get(7).map_err(corrupt)?,
        last_seq: u64::try_from(row.try_get::<_, i64>(8).map_err(corrupt)?).unwrap_or(0),
        attempt: u32::try_from(row.try_get::<_, i32>(9).map_err(corrupt)?).unwrap_or(0),
        worker: row.try_get(10).map_err(corrupt)?,
        lease_until_unix_ms: row.try_get(11).map_err(corrupt)?,
    })
}

/// The statement listing runs that match `filter` (only those in flight with
/// `in_flight`), and its parameters.
fn list_query(filter: &RunFilter, in_flight: bool) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut equality = false;
    let mut condition = |column: &str, op: &str, value: Box<dyn ToSql + Sync + Send>| {
        params.push(value);
        conditions.push(format!("{column} {op} ${}", params.len()));
    };
    for (column, value) in [
        ("workflow", &filter.workflow),
        ("connection", &filter.connection),
        ("tenant", &filter.tenant),
    ] {
        if let Some(v) = value {
            condition(column, "=", Box::new(v.clone()));
            equality = true;
        }
    }
    if let Some(status) = filter.status {
        condition("status", "=", Box::new(status.as_str()));
        equality = true;
    }
    if let Some(from) = filter.created_from_unix_ms {
        condition("created_at_ms", ">=", Box::new(from));
    }
    if let Some(before) = filter.created_before_unix_ms {
        condition("created_at_ms", "<", Box::new(before));
    }
    if in_flight {
        conditions.push("in_flight".into());
    }
    let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM runs");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    let direction = if filter.newest_first { "DESC" } else { "ASC" };
    if equality || in_flight {
        sql.push_str(&format!(" ORDER BY run_id {direction}"));
    } else {
        sql.push_str(&format!(
            " ORDER BY created_at_ms {direction}, run_id {direction}"
        ));
    }
    if filter.limit > 0 {
        sql.push_str(&format!(" LIMIT {}", filter.limit));
    }
    (sql, params)
}

#[async_trait]
impl RunLog for PgRunLog {
    async fn enqueue_at(
        &self,
        run: RunId,
        at_unix_ms: i64,
        kinds: Vec<EventKind>,
    ) -> Result<Appending, LogError> {
        let (job, appending) = Self::events_job(run, at_unix_ms, kinds, None);
        self.submit(job).await?;
        Ok(appending)
    }

    async fn enqueue_expecting(
        &self,
        run: RunId,
        expected_seq: u64,
        kinds: Vec<EventKind>,
    ) -> Result<Appending, LogError> {
        let (job, appending) = Self::events_job(run, now_unix_ms(), kinds, Some(expected_seq));
        self.submit(job).await?;
        Ok(appending)
    }

    async fn hold_expecting(
        &self,
        run: RunId,
        expected_seq: u64,
        kinds: Vec<EventKind>,
    ) -> Result<Appending, LogError> {
        self.release(run).await?;
        let (job, appending) = Self::events_job(run, now_unix_ms(), kinds, Some(expected_seq));
        self.held().insert(run, job);
        Ok(appending)
    }

    async fn release(&self, run: RunId) -> Result<(), LogError> {
        let held = self.held().remove(&run);
        if let Some(job) = held {
            self.shared
                .jobs
                .send(job)
                .await
                .map_err(|_| LogError::Closed)?;
        }
        Ok(())
    }

    async fn read(&self, run: RunId) -> Result<Vec<RunEvent>, LogError> {
        let id = Uuid::from_bytes(run.0);
        let rows = self
            .query(
                "SELECT seq, event FROM run_events WHERE run_id = $1 ORDER BY seq",
                &[&id],
            )
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row
                .try_get(0)
                .map_err(|e| LogError::Storage(describe(&e)))?;
            let seq = u64::try_from(seq).unwrap_or(0);
            let corrupt = |reason: String| LogError::Corrupt { run, seq, reason };
            let bytes: &[u8] = row.try_get(1).map_err(|e| corrupt(describe(&e)))?;
            let wire = v1::RunEvent::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
            events.push(event_from_wire(run, wire).map_err(|e| corrupt(e.to_string()))?);
        }
        Ok(events)
    }

    async fn summary(&self, run: RunId) -> Result<Option<RunSummary>, LogError> {
        let id = Uuid::from_bytes(run.0);
        let sql = format!("SELECT {SUMMARY_COLUMNS} FROM runs WHERE run_id = $1");
        let rows = self.query(&sql, &[&id]).await?;
        rows.first().map(summary_from_row).transpose()
    }

    async fn list(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, LogError> {
        let (sql, params) = list_query(filter, false);
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
        let rows = self.query(&sql, &params).await?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn list_in_flight(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, LogError> {
        let (sql, params) = list_query(filter, true);
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
        let rows = self.query(&sql, &params).await?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn in_flight(&self) -> Result<Vec<RunId>, LogError> {
        let rows = self
            .query(
                "SELECT run_id FROM runs WHERE in_flight ORDER BY run_id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                row.try_get::<_, Uuid>(0)
                    .map(|id| RunId(id.into_bytes()))
                    .map_err(|e| LogError::Storage(describe(&e)))
            })
            .collect()
    }
}
