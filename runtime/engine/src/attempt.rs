//! One attempt of a sync run: every stream not yet complete, from its last committed
//! checkpoint, batch by batch into the hub.
//!
//! Owns reading (a producer task per stream, a few batches ahead) and committing (each
//! batch with its checkpoint, atomically, through the store). It never decides about
//! retries and writes no lifecycle event but one: the run's last stream commits
//! `RunCompleted` with its own completion, in one transaction (a durable round trip
//! less per run). It returns how the attempt ended and the driver records the rest.

use std::sync::Arc;
use std::time::Duration;

use sluice_host::{Batch, Connector, Grant, HostError, StreamDescriptor, SyncMode};
use sluice_model::FailureKind;
use sluice_store::hub::HubError;
use sluice_store::{BatchCommit, RunId, RunState, Store, StoreError, StreamEnd};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::definition::{ConnectionDef, WorkflowDef};
use crate::progress::{Meter, Progress};

/// Batches read ahead of the one being committed: enough to keep the connector busy
/// while a commit flushes, few enough that a crash re-reads little.
const READ_AHEAD: usize = 2;
/// Most bytes of a checkpoint quoted in a failure's message: a checkpoint may be as
/// long as the host's `max_checkpoint_bytes`, and a failure's message stays short.
const CHECKPOINT_SHOWN_BYTES: usize = 120;

/// `checkpoint` as a failure's message quotes it: cut on a character boundary, with
/// its size when cut.
fn shown(checkpoint: &str) -> std::borrow::Cow<'_, str> {
    if checkpoint.len() <= CHECKPOINT_SHOWN_BYTES {
        return checkpoint.into();
    }
    let head = &checkpoint[..checkpoint.floor_char_boundary(CHECKPOINT_SHOWN_BYTES)];
    format!("{head}… ({} bytes)", checkpoint.len()).into()
}

/// A failed attempt, as the log records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Decides retry, wait or dead-letter.
    pub kind: FailureKind,
    /// What went wrong and where.
    pub message: String,
    /// How long the source asked to wait.
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// How an attempt that read every stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Done {
    /// Its last stream's completion also completed the run.
    RunCompleted,
    /// No stream was left to read (they completed in an earlier attempt): the driver
    /// completes the run.
    StreamsDone,
}

/// How an attempt ended, other than completing.
#[derive(Debug)]
pub(crate) enum AttemptEnd {
    /// The attempt failed; the driver records it and decides.
    Failed(Failure),
    /// Cancellation was requested; stopped at a batch boundary.
    Cancelled,
    /// The store failed: nothing more can be recorded for this run now.
    Store(StoreError),
    /// The node could not renew the attempt's lease before it ran out (the store was
    /// out of reach): another node may take the run over, so this one stops.
    LeaseLost,
}

fn host_failure(context: &str, e: HostError) -> AttemptEnd {
    AttemptEnd::Failed(failure_of(context, e))
}

/// The failure a host error means for a run: its kind decides retry or dead-letter.
/// The host names it: a connector that broke the sandbox is `sandbox`, which backs
/// off and may do better on another attempt (a trap can depend on the data).
pub(crate) fn failure_of(context: &str, e: HostError) -> Failure {
    let retry_after = e.retry_after();
    Failure {
        kind: e.kind(),
        message: format!("{context}: {e}"),
        retry_after,
    }
}

fn store_failure(context: &str, e: StoreError) -> AttemptEnd {
    match e {
        StoreError::Hub(
            h @ (HubError::NotAnObject { .. }
            | HubError::MissingPrimaryKey { .. }
            | HubError::MalformedRecord { .. }
            | HubError::BatchTooLarge { .. }),
        ) => AttemptEnd::Failed(Failure::new(FailureKind::Schema, format!("{context}: {h}"))),
        other => AttemptEnd::Store(other),
    }
}

/// Everything one attempt needs.
pub(crate) struct Attempt<'a> {
    pub store: &'a Store,
    pub metrics: &'a crate::metrics::EngineMetrics,
    /// Where the attempt's request log and connector lines go, per stream.
    pub activities: &'a crate::run_log::Activities,
    pub connector: Connector,
    /// Where the connector's rate-limit declaration is cached.
    pub connectors: &'a crate::connectors::Connectors,
    pub run: RunId,
    pub attempt: u32,
    pub state: &'a RunState,
    pub connection: &'a ConnectionDef,
    pub workflow: &'a WorkflowDef,
    pub cancel: &'a CancellationToken,
    pub progress: &'a watch::Sender<Progress>,
}

/// A stream resolved against what the connector offers.
struct StreamPlan {
    name: String,
    mode: SyncMode,
    primary_key: Vec<String>,
}

impl Attempt<'_> {
    /// Runs the attempt to the end of its last stream.
    pub(crate) async fn run(&self) -> Result<Done, AttemptEnd> {
        let config = self.connection.effective_config().to_string();
        let mut grant = Grant {
            allowed_hosts: self.connection.allowed_hosts.clone(),
            allowed_networks: self.connection.networks(),
            pinned_names: Vec::new(),
            secrets: self.connection.secret_values(),
            limits: self.connection.limits.clone(),
            activity: self.activities.part(None),
            rates: Arc::default(),
        };
        let declared = self
            .connectors
            .declared_limits(&self.connector, &grant, &config)
            .await
            .map_err(|e| host_failure("rate-limit declaration", e))?;
        grant.rates = Arc::new(
            self.connection
                .rate_scope(&declared, i64::from(self.state.priority)),
        );
        let grant = Arc::new(grant);
        let left: Vec<&String> = self
            .state
            .streams
            .iter()
            .filter(|name| !self.state.progress.get(*name).is_some_and(|p| p.complete))
            .collect();
        let needed: Vec<&str> = left.iter().map(|s| s.as_str()).collect();
        let offered = self
            .connectors
            .discover(&self.connector, &grant, &config, &needed)
            .await
            .map_err(|e| host_failure("discover", e))?;
        let mut meter = Meter::start();
        for (i, name) in left.iter().enumerate() {
            let plan = self.plan(name, &offered)?;
            let grant = Arc::new(Grant {
                activity: self.activities.part(Some(name)),
                ..Grant::clone(&grant)
            });
            let last = i + 1 == left.len();
            self.sync_stream(&grant, &config, &plan, &mut meter, last)
                .await?;
        }
        // Every stream read here completed; the last one completed the run with it.
        Ok(if left.is_empty() {
            Done::StreamsDone
        } else {
            Done::RunCompleted
        })
    }

    fn plan(&self, name: &str, offered: &[StreamDescriptor]) -> Result<StreamPlan, AttemptEnd> {
        let config_error = |m: String| AttemptEnd::Failed(Failure::new(FailureKind::Config, m));
        let def = self.workflow.stream(name);
        let Some(descriptor) = offered.iter().find(|d| d.name == name) else {
            let names: Vec<&str> = offered.iter().map(|d| d.name.as_str()).collect();
            return Err(config_error(format!(
                "stream `{name}`: connector `{}` offers no such stream; it offers: {}",
                self.connection.connector,
                names.join(", ")
            )));
        };
        let mode = def.map_or(SyncMode::FullRefresh, |d| d.mode);
        if !descriptor.sync_modes.contains(&mode) {
            return Err(config_error(format!(
                "stream `{name}`: connector `{}` does not support {mode:?} for it (it supports {:?})",
                self.connection.connector, descriptor.sync_modes
            )));
        }
        let primary_key = match def {
            Some(d) if !d.primary_key.is_empty() => d.primary_key.clone(),
            _ => descriptor.primary_key.clone(),
        };
        if primary_key.is_empty() {
            return Err(config_error(format!(
                "stream `{name}` has no primary key: set `primary_key` on the stream in workflow `{}`",
                self.workflow.name
            )));
        }
        Ok(StreamPlan {
            name: name.to_owned(),
            mode,
            primary_key,
        })
    }

    async fn sync_stream(
        &self,
        grant: &Arc<Grant>,
        config: &str,
        plan: &StreamPlan,
        meter: &mut Meter,
        completes_run: bool,
    ) -> Result<(), AttemptEnd> {
        let name = plan.name.as_str();
        let full_refresh = plan.mode == SyncMode::FullRefresh;
        let committed = self
            .state
            .progress
            .get(name)
            .and_then(|p| p.checkpoint.clone());
        // A run resumes from its own last checkpoint; a new incremental run starts
        // where the stream's last incremental batch left off.
        let mut checkpoint = match committed {
            Some(c) => c,
            None if !full_refresh => self
                .store
                .hub()
                .stream_cursor(&self.connection.name, name)
                .await
                .map_err(|e| AttemptEnd::Store(e.into()))?
                .unwrap_or_default(),
            None => String::new(),
        };
        // One refresh generation per run: the same across the run's attempts, newer
        // than any earlier run's, so deletion detection compares whole refreshes.
        let generation = if full_refresh {
            u64::try_from(self.state.scheduled_at_unix_ms).unwrap_or(0)
        } else {
            0
        };
        let from = (!checkpoint.is_empty()).then_some(checkpoint.as_str());
        let mut reader = self
            .connector
            .open(grant, config, name, plan.mode, from)
            .await
            .map_err(|e| host_failure(&format!("stream `{name}`: open"), e))?;
        self.progress.send_modify(|p| {
            p.attempt = self.attempt;
            p.stream = Some(name.to_owned());
        });

        let batch_size = self.workflow.batch_size;
        // The first batch is read here: a stream that ends with it (an incremental
        // sync with nothing new) needs no reader task.
        let mut first = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Err(AttemptEnd::Cancelled),
            item = reader.next(batch_size) => item.transpose(),
        };
        let mut rest = None;
        let mut _stop_reading = None;
        if matches!(first, Some(Ok(_))) {
            let (tx, rx) = mpsc::channel::<Result<Batch, HostError>>(READ_AHEAD);
            let producer = tokio::spawn(async move {
                loop {
                    let item = reader.next(batch_size).await.transpose();
                    let last = !matches!(item, Some(Ok(_)));
                    let Some(item) = item else { break };
                    if tx.send(item).await.is_err() || last {
                        break;
                    }
                }
            });
            _stop_reading = Some(AbortOnDrop(producer.abort_handle()));
            rest = Some(rx);
        }

        loop {
            let item = match (first.take(), rest.as_mut()) {
                (Some(item), _) => Some(item),
                (None, None) => None,
                (None, Some(rx)) => tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => return Err(AttemptEnd::Cancelled),
                    item = rx.recv() => item,
                },
            };
            let batch = match item {
                None => break,
                Some(Err(e)) => {
                    return Err(host_failure(
                        &format!("stream `{name}` after checkpoint `{}`", shown(&checkpoint)),
                        e,
                    ));
                }
                Some(Ok(batch)) => batch,
            };
            let next = batch
                .checkpoint
                .clone()
                .unwrap_or_else(|| checkpoint.clone());
            if batch.count == 0 && next == checkpoint {
                continue;
            }
            let bytes = batch.records.len() as u64;
            let context = format!(
                "stream `{name}`, batch after checkpoint `{}`",
                shown(&checkpoint)
            );
            let committed = self
                .store
                .commit_batch(
                    self.run,
                    BatchCommit {
                        connection: self.connection.name.clone(),
                        stream: name.to_owned(),
                        primary_key: plan.primary_key.clone(),
                        records: batch.records,
                        checkpoint: next.clone(),
                        attempt: self.attempt,
                        generation,
                        incremental: !full_refresh,
                    },
                )
                .await
                .map_err(|e| store_failure(&context, e))?;
            checkpoint = next;
            let o = committed.outcome;
            let records = o.created + o.updated + o.unchanged;
            let rate = meter.add(records);
            self.metrics.records.inc_by(records);
            self.metrics.batches.inc();
            self.progress.send_modify(|p| {
                p.records += records;
                p.batches += 1;
                p.bytes += bytes;
                p.records_per_sec = rate;
            });
        }
        self.store
            .complete_stream(
                self.run,
                StreamEnd {
                    connection: self.connection.name.clone(),
                    stream: name.to_owned(),
                    full_refresh,
                    generation,
                    checkpoint,
                    attempt: self.attempt,
                    completes_run,
                },
            )
            .await
            .map_err(|e| store_failure(&format!("stream `{name}`: completing"), e))?;
        Ok(())
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
