//! Group commit on PostgreSQL: the single writer of a node's run events and hub
//! batches.
//!
//! Appenders queue [`Job`]s; one task takes everything queued (up to [`MAX_GROUP`]
//! jobs) and commits it as **one** transaction: it locks the rows of the runs the group
//! touches (in run id order, so two nodes never deadlock on them), checks every
//! event with [`transition`] against what the database holds, runs each job's work
//! (a hub batch, a refresh's deletions, a catalog document) in the same transaction,
//! writes the events and the runs' summaries, and commits. A job whose events may not
//! follow its run's log is refused alone; the others commit.
//!
//! Faults: a serialization failure, a deadlock or two nodes creating the same run at
//! once run the group again; a database that went away is waited for (runs stall,
//! nothing is lost) and the group runs again once it is back. A commit whose answer
//! was lost with the connection is settled by its id in the `commits` table: it
//! landed, or it runs again — never twice. A group waiting on locks held by a node
//! frozen mid-statement ends that node's session (`stuck`).
//!
//! It must never answer a job before the transaction that holds it has committed.

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::{Pool, Transaction};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::claims::{self, Holds};
use super::errors::{Class, classify, classify_pool, describe, describe_pool};
use super::hub::{self, BatchWork, RefreshWork, StreamIds};
use super::stuck;
use crate::codec::wire_event;
use crate::hub::BatchOutcome;
use crate::log::{LogError, RunSummary, now_unix_ms, scheduled_of};
use sluice_model::{CheckpointCommitted, EventKind, RunId};

/// Most jobs one transaction commits.
pub(crate) const MAX_GROUP: usize = 256;

/// Most hub batches one transaction commits (each may hold thousands of records).
const MAX_BATCHES: usize = 8;

/// What a job writes besides its events.
pub(crate) enum Work {
    /// Only the events.
    Events,
    /// A hub batch; its `CheckpointCommitted` comes first.
    Batch(Box<BatchWork>),
    /// A full refresh's deletions; a `CheckpointCommitted` carrying them, if any,
    /// comes first.
    Refresh(Box<RefreshWork>),
    /// A catalog document.
    Document {
        kind: String,
        name: String,
        document: Vec<u8>,
    },
}

/// What a committed job did.
#[derive(Clone, Debug, Default)]
pub(crate) struct Done {
    pub seqs: Vec<u64>,
    pub outcome: BatchOutcome,
}

/// Where a job's outcome goes.
pub(crate) enum Reply {
    Seqs(oneshot::Sender<Result<Vec<u64>, LogError>>),
    Done(oneshot::Sender<Result<Done, LogError>>),
}

impl Reply {
    fn send(self, result: Result<Done, LogError>) {
        match self {
            Reply::Seqs(tx) => {
                let _ = tx.send(result.map(|d| d.seqs));
            }
            Reply::Done(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// One append waiting for its group.
pub(crate) struct Job {
    pub run: RunId,
    pub at_unix_ms: i64,
    pub kinds: Vec<EventKind>,
    /// Append only if the run's last seq is still this one.
    pub expect_seq: Option<u64>,
    pub work: Work,
    pub reply: Reply,
}

/// The committer's state, owned by its task.
pub(crate) struct Committer {
    pub pool: Pool,
    /// The store's URL without its password, for messages.
    pub url: String,
    pub streams: StreamIds,
    /// Groups committed since `commits` was last swept.
    pub since_sweep: u32,
    /// The outcomes of a group whose COMMIT was sent, until it is known to have
    /// landed.
    pub settled: Option<Vec<Result<Done, LogError>>>,
}

/// A failed group.
enum GroupError {
    /// A statement failed; its class says what to do.
    Db(tokio_postgres::Error),
    /// No connection could be had.
    Pool(deadpool_postgres::PoolError),
    /// COMMIT was sent and its answer lost.
    InDoubt(tokio_postgres::Error),
    /// The group cannot be written as it is.
    Internal(LogError),
}

impl From<tokio_postgres::Error> for GroupError {
    fn from(e: tokio_postgres::Error) -> Self {
        GroupError::Db(e)
    }
}

/// How long to wait before trying a group again after the `n`th failure in a row.
fn backoff(n: u32) -> std::time::Duration {
    std::time::Duration::from_millis((50u64 << n.min(6)).min(2_000))
}

/// Times a group is run again after conflicts before its jobs fail.
const MAX_CONFLICT_RETRIES: u32 = 20;

impl Committer {
    /// Runs until every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
        let mut next: Option<Job> = None;
        loop {
            let first = match next.take() {
                Some(job) => job,
                None => match rx.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            let mut batches = usize::from(!matches!(first.work, Work::Events));
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => {
                        if !matches!(job.work, Work::Events) {
                            if batches == MAX_BATCHES {
                                next = Some(job);
                                break;
                            }
                            batches += 1;
                        }
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.commit(&mut group).await;
        }
    }

    /// Commits the group and answers every job.
    async fn commit(&mut self, group: &mut Vec<Job>) {
        let mut failures = 0u32;
        let mut conflicts = 0u32;
        loop {
            let id = Uuid::new_v4();
            let pool = self.pool.clone();
            let error = match stuck::watched(&pool, self.try_commit(group, id)).await {
                Ok(results) => return answer(group, results),
                Err(e) => e,
            };
            let (class, message) = match &error {
                GroupError::Db(e) => (classify(e), describe(e)),
                GroupError::Pool(e) => (classify_pool(e), describe_pool(e)),
                GroupError::InDoubt(e) => (Class::Unavailable, describe(e)),
                GroupError::Internal(e) => (Class::Fatal, e.to_string()),
            };
            if let GroupError::InDoubt(_) = error
                && self.landed(id).await
                && let Some(results) = self.settled.take()
            {
                // The seqs were assigned under the group's locks: they are the ones
                // the database holds.
                return answer(group, results);
            }
            match class {
                Class::Retry if conflicts < MAX_CONFLICT_RETRIES => {
                    conflicts += 1;
                    tracing::debug!(error = %message, "group of writes conflicted; running it again");
                    tokio::time::sleep(backoff(conflicts.min(2))).await;
                }
                Class::Unavailable => {
                    failures += 1;
                    tracing::warn!(
                        store = %self.url,
                        error = %message,
                        "the store is unavailable; writes wait for it"
                    );
                    tokio::time::sleep(backoff(failures)).await;
                }
                Class::Retry | Class::Fatal => {
                    let err = LogError::Storage(format!("{} at {}", message, self.url));
                    for job in group.drain(..) {
                        job.reply.send(Err(err.clone()));
                    }
                    return;
                }
            }
        }
    }
}

/// Answers every job of a committed group.
fn answer(group: &mut Vec<Job>, results: Vec<Result<Done, LogError>>) {
    for (job, result) in group.drain(..).zip(results) {
        job.reply.send(result);
    }
}

/// A run's head while its group is written.
struct Head {
    summary: Option<RunSummary>,
    touched: bool,
}

/// An event to insert.
struct Row {
    run: Uuid,
    seq: i64,
    at: i64,
    bytes: Vec<u8>,
}

/// Locks the group's runs, in id order: two nodes' groups never wait on each other in
/// a cycle.
fn lock_runs() -> String {
    format!(
        "SELECT {} FROM runs WHERE run_id = ANY($1) ORDER BY run_id FOR UPDATE",
        super::log::SUMMARY_COLUMNS
    )
}

const INSERT_EVENTS: &str = "INSERT INTO run_events (run_id, seq, at_ms, event) \
     SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::bytea[])";

const UPSERT_RUNS: &str = "INSERT INTO runs AS r (run_id, workflow, connection, tenant, \
     priority, status, created_at_ms, updated_at_ms, last_seq, in_flight, attempt, worker, \
     lease_until_ms) \
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int4[], \
     $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::bool[], $11::int4[], $12::text[], \
     $13::int8[]) \
     ON CONFLICT (run_id) DO UPDATE SET status = excluded.status, \
     updated_at_ms = excluded.updated_at_ms, last_seq = excluded.last_seq, \
     in_flight = excluded.in_flight, attempt = excluded.attempt, worker = excluded.worker, \
     lease_until_ms = excluded.lease_until_ms";

const UPSERT_DOCUMENT: &str = "INSERT INTO catalog (kind, name, document) VALUES ($1, $2, $3) \
     ON CONFLICT (kind, name) DO UPDATE SET document = excluded.document";

impl Committer {
    /// Writes the group in one transaction; returns each job's outcome.
    async fn try_commit(
        &mut self,
        group: &[Job],
        id: Uuid,
    ) -> Result<Vec<Result<Done, LogError>>, GroupError> {
        self.settled = None;
        let mut client = self.pool.get().await.map_err(GroupError::Pool)?;
        let tx = client.transaction().await?;
        let mut ids: Vec<Uuid> = group.iter().map(|j| Uuid::from_bytes(j.run.0)).collect();
        ids.sort_unstable();
        ids.dedup();
        let lock = tx.prepare_cached(&lock_runs()).await?;
        let mut heads: HashMap<RunId, Head> = HashMap::with_capacity(ids.len());
        for row in tx.query(&lock, &[&ids]).await? {
            let summary = super::log::summary_from_row(&row).map_err(GroupError::Internal)?;
            heads.insert(
                summary.run_id,
                Head {
                    summary: Some(summary),
                    touched: false,
                },
            );
        }
        let mut starts = BTreeSet::new();
        let mut tenants = BTreeSet::new();
        for job in group {
            let summary = heads.get(&job.run).and_then(|h| h.summary.as_ref());
            starts.extend(claims::exclusive_start(summary, &job.kinds));
            tenants.extend(claims::limited_start(summary, &job.kinds).map(|(t, _)| t));
        }
        let mut holds = Holds::lock(&tx, starts, tenants).await?;
        let time_ms = now_unix_ms();
        let mut events: Vec<Row> = Vec::new();
        let mut results = Vec::with_capacity(group.len());
        for job in group {
            let head = heads.entry(job.run).or_insert(Head {
                summary: None,
                touched: false,
            });
            if let Err(e) = check(job, head) {
                results.push(Err(e));
                continue;
            }
            if let Some(workflow) = claims::exclusive_start(head.summary.as_ref(), &job.kinds)
                && let Err(e) = holds.check(workflow, job.run)
            {
                results.push(Err(e));
                continue;
            }
            if let Some((tenant, limit)) = claims::limited_start(head.summary.as_ref(), &job.kinds)
                && let Err(e) = holds.check_tenant(tenant, limit, job.run)
            {
                results.push(Err(e));
                continue;
            }
            if let Some((workflow, fire)) = claims::fire_of(&job.kinds)
                && let Err(e) = claims::record_fire(&tx, workflow, fire, job.run).await?
            {
                results.push(Err(e));
                continue;
            }
            let (mut kinds, outcome) = match &job.work {
                Work::Events => (Vec::new(), BatchOutcome::default()),
                Work::Batch(batch) => {
                    let (event, outcome) =
                        hub::write_batch(&tx, &mut self.streams, batch, time_ms).await?;
                    (vec![EventKind::CheckpointCommitted(event)], outcome)
                }
                Work::Refresh(refresh) => {
                    let deleted =
                        hub::complete_refresh(&tx, &mut self.streams, refresh, time_ms).await?;
                    let mut kinds = Vec::with_capacity(1);
                    if deleted > 0 {
                        kinds.push(EventKind::CheckpointCommitted(CheckpointCommitted {
                            stream: refresh.stream.clone(),
                            checkpoint: refresh.checkpoint.clone(),
                            attempt: refresh.attempt,
                            deleted,
                            ..Default::default()
                        }));
                    }
                    let outcome = BatchOutcome {
                        deleted,
                        ..Default::default()
                    };
                    (kinds, outcome)
                }
                Work::Document {
                    kind,
                    name,
                    document,
                } => {
                    let upsert = tx.prepare_cached(UPSERT_DOCUMENT).await?;
                    tx.execute(&upsert, &[kind, name, document]).await?;
                    (Vec::new(), BatchOutcome::default())
                }
            };
            kinds.extend(job.kinds.iter().cloned());
            // `check` let these events through, so this fails only on a bug; the
            // work above must then not commit without them.
            let seqs = apply(job, head, &kinds, &mut events).map_err(GroupError::Internal)?;
            if let Some(summary) = &head.summary {
                holds.note(summary);
            }
            results.push(Ok(Done { seqs, outcome }));
        }
        self.write_runs(&tx, &heads, &events, id).await?;
        if let Err(e) = tx.commit().await {
            self.settled = Some(results.clone());
            return Err(match classify(&e) {
                Class::Unavailable => GroupError::InDoubt(e),
                _ => GroupError::Db(e),
            });
        }
        self.since_sweep += 1;
        if self.since_sweep >= 1_000 {
            self.since_sweep = 0;
            let _ = client
                .execute(
                    "DELETE FROM commits WHERE at < now() - interval '1 hour'",
                    &[],
                )
                .await;
        }
        Ok(results)
    }
}

impl Committer {
    /// Whether the group committed as `id` landed, asked once the database answers
    /// again (waiting for it as long as it takes).
    async fn landed(&self, id: Uuid) -> bool {
        let mut failures = 0u32;
        loop {
            let asked = match self.pool.get().await {
                Ok(client) => client
                    .query_opt("SELECT 1 FROM commits WHERE id = $1", &[&id])
                    .await
                    .map(|row| row.is_some())
                    .map_err(|e| describe(&e)),
                Err(e) => Err(describe_pool(&e)),
            };
            match asked {
                Ok(landed) => return landed,
                Err(error) => {
                    failures += 1;
                    tracing::warn!(store = %self.url, %error, "waiting for the store to learn whether a commit landed");
                    tokio::time::sleep(backoff(failures)).await;
                }
            }
        }
    }

    /// Writes the group's events, the runs' summaries and the group's id.
    async fn write_runs(
        &self,
        tx: &Transaction<'_>,
        heads: &HashMap<RunId, Head>,
        events: &[Row],
        id: Uuid,
    ) -> Result<(), GroupError> {
        let mut runs = Runs::default();
        for head in heads.values().filter(|h| h.touched) {
            if let Some(s) = &head.summary {
                runs.push(s);
            }
        }
        let insert_events = tx.prepare_cached(INSERT_EVENTS).await?;
        let upsert_runs = tx.prepare_cached(UPSERT_RUNS).await?;
        let ev_runs: Vec<Uuid> = events.iter().map(|e| e.run).collect();
        let ev_seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        let ev_at: Vec<i64> = events.iter().map(|e| e.at).collect();
        let ev_bytes: Vec<&[u8]> = events.iter().map(|e| e.bytes.as_slice()).collect();
        let (a, b, c) = tokio::join!(
            async {
                tx.execute(&insert_events, &[&ev_runs, &ev_seqs, &ev_at, &ev_bytes])
                    .await
            },
            async {
                tx.execute(
                    &upsert_runs,
                    &[
                        &runs.id,
                        &runs.workflow,
                        &runs.connection,
                        &runs.tenant,
                        &runs.priority,
                        &runs.status,
                        &runs.created,
                        &runs.updated,
                        &runs.last_seq,
                        &runs.in_flight,
                        &runs.attempt,
                        &runs.worker,
                        &runs.lease_until,
                    ],
                )
                .await
            },
            async {
                tx.execute("INSERT INTO commits (id) VALUES ($1)", &[&id])
                    .await
            }
        );
        a?;
        b?;
        c?;
        Ok(())
    }
}

/// The runs' summaries as columns.
#[derive(Default)]
struct Runs<'a> {
    id: Vec<Uuid>,
    workflow: Vec<&'a str>,
    connection: Vec<&'a str>,
    tenant: Vec<&'a str>,
    priority: Vec<i32>,
    status: Vec<&'static str>,
    created: Vec<i64>,
    updated: Vec<i64>,
    last_seq: Vec<i64>,
    in_flight: Vec<bool>,
    attempt: Vec<i32>,
    worker: Vec<&'a str>,
    lease_until: Vec<i64>,
}

impl<'a> Runs<'a> {
    fn push(&mut self, s: &'a RunSummary) {
        self.id.push(Uuid::from_bytes(s.run_id.0));
        self.workflow.push(&s.workflow);
        self.connection.push(&s.connection);
        self.tenant.push(&s.tenant);
        self.priority.push(s.priority);
        self.status.push(s.status.as_str());
        self.created.push(s.created_at_unix_ms);
        self.updated.push(s.updated_at_unix_ms);
        self.last_seq
            .push(i64::try_from(s.last_seq).unwrap_or(i64::MAX));
        self.in_flight.push(!s.status.is_terminal());
        self.attempt
            .push(i32::try_from(s.attempt).unwrap_or(i32::MAX));
        self.worker.push(&s.worker);
        self.lease_until.push(s.lease_until_unix_ms);
    }
}

/// Refuses a job whose events may not follow its run's log as the group leaves it,
/// before any of its work is written. The events its work adds (a
/// `CheckpointCommitted`) change no status, so a stand-in checks them.
fn check(job: &Job, head: &Head) -> Result<(), LogError> {
    let run = job.run;
    let actual = head.summary.as_ref().map_or(0, |s| s.last_seq);
    if let Some(expected) = job.expect_seq
        && expected != actual
    {
        return Err(LogError::Conflict {
            run,
            expected,
            actual,
        });
    }
    let stand_in = match &job.work {
        Work::Batch(b) => Some(stand_in(b.attempt)),
        Work::Refresh(r) => Some(stand_in(r.attempt)),
        Work::Events | Work::Document { .. } => None,
    };
    let mut now = None;
    for kind in stand_in.iter().chain(&job.kinds) {
        if let EventKind::RunScheduled(s) = kind {
            for v in [&s.workflow, &s.connection, &s.tenant] {
                if v.contains('\0') {
                    return Err(LogError::Invalid("names may not contain NUL".into()));
                }
            }
        }
        let head = now.get_or_insert_with(|| {
            head.summary.clone().unwrap_or_else(|| {
                RunSummary::scheduled(run, scheduled_of(kind), 0, job.at_unix_ms)
            })
        });
        let status = head.check(run, kind)?;
        head.follow(kind, status, job.at_unix_ms);
    }
    Ok(())
}

/// What a batch's `CheckpointCommitted` is checked as before the batch is written.
fn stand_in(attempt: u32) -> EventKind {
    EventKind::CheckpointCommitted(CheckpointCommitted {
        attempt,
        ..CheckpointCommitted::default()
    })
}

/// Appends `kinds` to the run's head and to the group's events; returns their seqs.
fn apply(
    job: &Job,
    head: &mut Head,
    kinds: &[EventKind],
    events: &mut Vec<Row>,
) -> Result<Vec<u64>, LogError> {
    let run = job.run;
    let mut seqs = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let now = head.summary.get_or_insert_with(|| {
            RunSummary::scheduled(run, scheduled_of(kind), 0, job.at_unix_ms)
        });
        let status = now.check(run, kind)?;
        now.follow(kind, status, job.at_unix_ms);
        let seq = now.last_seq;
        head.touched = true;
        events.push(Row {
            run: Uuid::from_bytes(run.0),
            seq: i64::try_from(seq).unwrap_or(i64::MAX),
            at: job.at_unix_ms,
            bytes: wire_event(run, seq, job.at_unix_ms, kind).encode_to_vec(),
        });
        seqs.push(seq);
    }
    Ok(seqs)
}
