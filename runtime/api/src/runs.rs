//! The `Runs` service: list, get, watch, cancel and retry runs.

use std::pin::Pin;
use std::time::Duration;

use sluice_engine::{Engine, Progress};
use sluice_store::RunId;
use sluice_store::log::RunFilter;
use sluice_store::run_logs::LogFilter;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::require_write;
use crate::convert;
use crate::pb::runs_server::Runs;
use crate::pb::{
    CancelRunRequest, GetRunLogsRequest, GetRunLogsResponse, GetRunRequest, ListRunsRequest,
    ListRunsResponse, Run, RunSummary, RunUpdate,
};
use crate::status;

/// Most runs listed at once when the request sets no limit.
const DEFAULT_LIST_LIMIT: usize = 100;
/// Runs whose logs one request across runs reads, the newest.
const LOGS_RUNS: usize = 50;
/// A watcher gets at most one update per this interval: progress changes per batch.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

pub(crate) struct RunsApi {
    pub engine: Engine,
}

impl RunsApi {
    async fn run(&self, id: RunId, with_events: bool) -> Result<Run, Status> {
        let state = self.engine.state(id).await.map_err(status::of)?;
        let log = self.engine.store().log();
        let updated = log
            .summary(id)
            .await
            .map_err(|e| status::of(e.into()))?
            .map_or(0, |s| s.updated_at_unix_ms);
        let events = if with_events {
            log.read(id).await.map_err(|e| status::of(e.into()))?
        } else {
            Vec::new()
        };
        Ok(convert::run(&state, updated, &events))
    }

    async fn summary(&self, id: RunId) -> Result<RunSummary, Status> {
        let summary = self
            .engine
            .store()
            .log()
            .summary(id)
            .await
            .map_err(|e| status::of(e.into()))?
            .ok_or_else(|| status::of(sluice_engine::EngineError::UnknownRun(id)))?;
        Ok(convert::summary(&summary))
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<RunUpdate, Status>> + Send>>;

/// Sends the run's state now, then at most every `WATCH_INTERVAL` while its
/// progress changes, then once more when it ends; stops when the client goes. A run
/// another node drives (on a shared store) is followed through its log.
async fn watch(api: RunsApi, id: RunId, tx: mpsc::Sender<Result<RunUpdate, Status>>) {
    let mut live = api.engine.watch(id);
    let shared = api.engine.store().shared();
    let mut last_seen = None;
    loop {
        let progress: Option<Progress> = live.as_ref().map(|rx| rx.borrow().clone());
        let (ended, seq) = match api.engine.state(id).await {
            Ok(state) => (state.status.kind().is_terminal(), Some(state.last_seq)),
            Err(_) => (true, None),
        };
        let finished = match &progress {
            Some(p) => p.finished,
            None => ended || !shared,
        };
        if progress.is_some() || finished || seq != last_seen {
            last_seen = seq;
            let update = match api.run(id, false).await {
                Ok(run) => Ok(RunUpdate {
                    records_per_sec: progress.as_ref().map_or(0.0, |p| p.records_per_sec),
                    current_stream: progress
                        .as_ref()
                        .and_then(|p| p.stream.clone())
                        .unwrap_or_default(),
                    finished,
                    run: Some(run),
                }),
                Err(e) => Err(e),
            };
            let failed = update.is_err();
            if tx.send(update).await.is_err() || failed || finished {
                return;
            }
        } else if tx.is_closed() {
            return;
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
        match live.as_mut() {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    // The driver is gone: one last update shows how the run ended.
                    live = None;
                }
            }
            // It may have come to this node meanwhile.
            None => live = api.engine.watch(id),
        }
    }
}

#[tonic::async_trait]
impl Runs for RunsApi {
    type WatchRunStream = UpdateStream;

    async fn list_runs(
        &self,
        request: Request<ListRunsRequest>,
    ) -> Result<Response<ListRunsResponse>, Status> {
        let r = request.into_inner();
        let some = |s: String| (!s.is_empty()).then_some(s);
        let filter = RunFilter {
            status: convert::status("status", &r.status)?,
            workflow: some(r.workflow),
            connection: some(r.connection),
            tenant: some(r.tenant),
            created_from_unix_ms: (r.created_from_unix_ms != 0).then_some(r.created_from_unix_ms),
            created_before_unix_ms: (r.created_before_unix_ms != 0)
                .then_some(r.created_before_unix_ms),
            limit: match r.limit {
                0 => DEFAULT_LIST_LIMIT,
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
            newest_first: !r.oldest_first,
        };
        let runs = self
            .engine
            .store()
            .log()
            .list(&filter)
            .await
            .map_err(|e| status::of(e.into()))?;
        Ok(Response::new(ListRunsResponse {
            runs: runs.iter().map(convert::summary).collect(),
        }))
    }

    async fn get_run(&self, request: Request<GetRunRequest>) -> Result<Response<Run>, Status> {
        let id = convert::run_id("run_id", &request.get_ref().run_id)?;
        Ok(Response::new(self.run(id, true).await?))
    }

    async fn watch_run(
        &self,
        request: Request<GetRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let id = convert::run_id("run_id", &request.get_ref().run_id)?;
        // Unknown runs fail the call itself, not the stream.
        self.engine.state(id).await.map_err(status::of)?;
        let (tx, rx) = mpsc::channel(4);
        let api = RunsApi {
            engine: self.engine.clone(),
        };
        tokio::spawn(watch(api, id, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_run(
        &self,
        request: Request<CancelRunRequest>,
    ) -> Result<Response<RunSummary>, Status> {
        require_write(&request)?;
        let r = request.get_ref();
        let id = convert::run_id("run_id", &r.run_id)?;
        let reason = if r.reason.is_empty() {
            "cancelled through the API"
        } else {
            r.reason.as_str()
        };
        self.engine.cancel(id, reason).await.map_err(status::of)?;
        Ok(Response::new(self.summary(id).await?))
    }

    async fn get_run_logs(
        &self,
        request: Request<GetRunLogsRequest>,
    ) -> Result<Response<GetRunLogsResponse>, Status> {
        let r = request.into_inner();
        // One run, or the newest runs of a workflow, connection or tenant.
        let runs: Vec<RunId> = if r.run_id.is_empty() {
            let some = |s: &String| (!s.is_empty()).then(|| s.clone());
            let (workflow, connection, tenant) =
                (some(&r.workflow), some(&r.connection), some(&r.tenant));
            if workflow.is_none() && connection.is_none() && tenant.is_none() {
                return Err(status::invalid(
                    "run_id",
                    "is required unless workflow, connection or tenant is set",
                ));
            }
            let listed = self
                .engine
                .store()
                .log()
                .list(&RunFilter {
                    workflow,
                    connection,
                    tenant,
                    limit: LOGS_RUNS,
                    newest_first: true,
                    ..RunFilter::default()
                })
                .await
                .map_err(|e| status::of(e.into()))?;
            listed.into_iter().map(|s| s.run_id).collect()
        } else {
            let id = convert::run_id("run_id", &r.run_id)?;
            self.engine.state(id).await.map_err(status::of)?;
            vec![id]
        };
        let levels = ["trace", "debug", "info", "warn", "error"];
        if !r.min_level.is_empty() && !levels.contains(&r.min_level.as_str()) {
            return Err(status::invalid(
                "min_level",
                format!("`{}` is not one of {}", r.min_level, levels.join(", ")),
            ));
        }
        let requests = match r.kind.as_str() {
            "" => None,
            "requests" => Some(true),
            "lines" => Some(false),
            other => {
                return Err(status::invalid(
                    "kind",
                    format!("`{other}` is not one of lines, requests"),
                ));
            }
        };
        let filter = LogFilter {
            min_level: (!r.min_level.is_empty()).then_some(r.min_level),
            requests,
            attempt: (r.attempt != 0).then_some(r.attempt),
            stream: (!r.stream.is_empty()).then_some(r.stream),
            limit: usize::try_from(r.limit).unwrap_or(usize::MAX),
        };
        let mut entries = Vec::new();
        for id in runs {
            let of_run = self
                .engine
                .store()
                .run_logs()
                .read(id, &filter)
                .await
                .map_err(|e| status::of(e.into()))?;
            entries.extend(of_run.into_iter().map(|e| {
                let mut entry = convert::log_entry(e);
                entry.run_id = id.to_string();
                entry
            }));
        }
        entries.sort_by_key(|e| e.at_unix_ms);
        if filter.limit > 0 && entries.len() > filter.limit {
            entries.drain(..entries.len() - filter.limit);
        }
        Ok(Response::new(GetRunLogsResponse { entries }))
    }

    async fn retry_run(
        &self,
        request: Request<GetRunRequest>,
    ) -> Result<Response<RunSummary>, Status> {
        require_write(&request)?;
        let id = convert::run_id("run_id", &request.get_ref().run_id)?;
        self.engine.retry(id, "api").await.map_err(status::of)?;
        Ok(Response::new(self.summary(id).await?))
    }
}
