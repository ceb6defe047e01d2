//! The `Runs` service: list, get, watch, cancel and retry runs, and read their logs.
//!
//! A run belongs to its tenant: a caller sees and changes only runs of its tenants.
//! Lists are paged by exact position (a run's creation time and id; a log entry's
//! time, run and place among that run's entries of the same millisecond).

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

use crate::auth::{Caller, caller, require_write};
use crate::pb::runs_server::Runs;
use crate::pb::{
    CancelRunRequest, GetRunLogsRequest, GetRunLogsResponse, GetRunRequest, ListRunsRequest,
    ListRunsResponse, Run, RunSummary, RunUpdate,
};
use crate::status;
use crate::{convert, paging, visible};

/// Runs per page when the request sets no limit.
const DEFAULT_LIST_LIMIT: usize = 100;
/// The most runs per page.
const MAX_LIST_LIMIT: usize = 1_000;
/// Log entries per page when the request sets no page size.
const DEFAULT_LOG_PAGE: usize = 1_000;
/// The most log entries per page.
const MAX_LOG_PAGE: usize = 5_000;
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
        let mut run = convert::run(&state, updated, &events);
        // A run in flight that waits for the store to write again shows why.
        if let Some(fault) = self.engine.store_fault()
            && !state.status.kind().is_terminal()
        {
            run.last_error_kind = convert::kind_name(sluice_store::FailureKind::Transient);
            run.last_error = format!(
                "{}; the run waits and resumes from its last checkpoint once the store writes again",
                fault.message
            );
        }
        Ok(run)
    }

    /// The runs whose logs a request reads: one run, or the newest runs of a
    /// workflow, connection or tenant; only runs of the caller's tenants.
    async fn log_runs(&self, caller: &Caller, r: &GetRunLogsRequest) -> Result<Vec<RunId>, Status> {
        if !r.run_id.is_empty() {
            let id = convert::run_id("run_id", &r.run_id)?;
            visible::run(&self.engine, caller, id).await?;
            return Ok(vec![id]);
        }
        let some = |s: &String| (!s.is_empty()).then(|| s.clone());
        let (workflow, connection, mut tenant) =
            (some(&r.workflow), some(&r.connection), some(&r.tenant));
        if workflow.is_none() && connection.is_none() && tenant.is_none() {
            return Err(status::invalid(
                "run_id",
                "is required unless workflow, connection or tenant is set",
            ));
        }
        match &tenant {
            Some(t) if !caller.sees(t) => return Ok(Vec::new()),
            None => tenant = caller.single_tenant().map(str::to_owned),
            Some(_) => {}
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
        Ok(listed
            .into_iter()
            .filter(|s| caller.sees(&s.tenant))
            .map(|s| s.run_id)
            .collect())
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

/// Where a page of runs ends: the listing's order is by creation time then run id
/// when no index value is asked for, else by run id (the store's order).
#[derive(Clone, Copy)]
struct RunPosition {
    by_time: bool,
    created: i64,
    run: RunId,
}

impl RunPosition {
    fn of(by_time: bool, s: &sluice_store::log::RunSummary) -> Self {
        RunPosition {
            by_time,
            created: if by_time { s.created_at_unix_ms } else { 0 },
            run: s.run_id,
        }
    }

    fn key(&self) -> (i64, RunId) {
        (self.created, self.run)
    }

    fn token(&self) -> String {
        paging::token(
            "runs",
            &[
                if self.by_time { "time" } else { "id" },
                &self.created.to_string(),
                &self.run.to_string(),
            ],
        )
    }

    #[allow(clippy::result_large_err, reason = "handlers return tonic's Status")]
    fn parse(by_time: bool, token: &str) -> Result<Option<Self>, Status> {
        let Some(parts) = paging::position("runs", token)? else {
            return Ok(None);
        };
        let bad = || {
            status::invalid(
                "page_token",
                "is not a page token of this listing (pass it back with the same other fields)",
            )
        };
        match parts.as_slice() {
            [mode, created, run] if (mode == "time") == by_time => Ok(Some(RunPosition {
                by_time,
                created: created.parse().map_err(|_| bad())?,
                run: run.parse().map_err(|_| bad())?,
            })),
            _ => Err(bad()),
        }
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
        let caller = caller(&request);
        let r = request.into_inner();
        let some = |s: String| (!s.is_empty()).then_some(s);
        let size = paging::size(r.limit, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT);
        let mut tenant = some(r.tenant);
        match &tenant {
            Some(t) if !caller.sees(t) => return Ok(Response::new(ListRunsResponse::default())),
            None => tenant = caller.single_tenant().map(str::to_owned),
            Some(_) => {}
        }
        let mut filter = RunFilter {
            status: convert::status("status", &r.status)?,
            workflow: some(r.workflow),
            connection: some(r.connection),
            tenant,
            created_from_unix_ms: (r.created_from_unix_ms != 0).then_some(r.created_from_unix_ms),
            created_before_unix_ms: (r.created_before_unix_ms != 0)
                .then_some(r.created_before_unix_ms),
            limit: size,
            newest_first: !r.oldest_first,
        };
        // The store lists by time when no index value is asked for, else by run id.
        let by_time = filter.workflow.is_none()
            && filter.connection.is_none()
            && filter.tenant.is_none()
            && filter.status.is_none();
        let cursor = RunPosition::parse(by_time, &r.page_token)?;
        if let Some(c) = cursor.filter(|c| c.by_time) {
            // Runs of the cursor's millisecond are read again and skipped by id.
            if filter.newest_first {
                let bound = c.created.saturating_add(1);
                filter.created_before_unix_ms = Some(
                    filter
                        .created_before_unix_ms
                        .map_or(bound, |b| b.min(bound)),
                );
            } else {
                filter.created_from_unix_ms = Some(
                    filter
                        .created_from_unix_ms
                        .map_or(c.created, |f| f.max(c.created)),
                );
            }
        }
        let past = |s: &sluice_store::log::RunSummary| match &cursor {
            None => true,
            Some(c) if filter.newest_first => RunPosition::of(by_time, s).key() < c.key(),
            Some(c) => RunPosition::of(by_time, s).key() > c.key(),
        };
        // Read more until a page and one more are past the cursor, or the store has
        // no more.
        let mut fetch = size.saturating_add(1);
        let (mut page, more) = loop {
            filter.limit = fetch;
            let listed = self
                .engine
                .store()
                .log()
                .list(&filter)
                .await
                .map_err(|e| status::of(e.into()))?;
            let exhausted = listed.len() < fetch;
            let page: Vec<_> = listed
                .into_iter()
                .filter(|s| caller.sees(&s.tenant) && past(s))
                .collect();
            if page.len() > size || exhausted {
                let more = page.len() > size;
                break (page, more);
            }
            fetch = fetch.saturating_mul(2);
        };
        page.truncate(size);
        let next_page_token = match page.last() {
            Some(last) if more => RunPosition::of(by_time, last).token(),
            _ => String::new(),
        };
        Ok(Response::new(ListRunsResponse {
            runs: page.iter().map(convert::summary).collect(),
            next_page_token,
        }))
    }

    async fn get_run(&self, request: Request<GetRunRequest>) -> Result<Response<Run>, Status> {
        let id = convert::run_id("run_id", &request.get_ref().run_id)?;
        visible::run(&self.engine, &caller(&request), id).await?;
        Ok(Response::new(self.run(id, true).await?))
    }

    async fn watch_run(
        &self,
        request: Request<GetRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let id = convert::run_id("run_id", &request.get_ref().run_id)?;
        // Unknown runs (and those of tenants the caller does not see) fail the call
        // itself, not the stream; a run never changes tenant, so the stream needs no
        // further check.
        visible::run(&self.engine, &caller(&request), id).await?;
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
        let caller = require_write(&request)?;
        let r = request.get_ref();
        let id = convert::run_id("run_id", &r.run_id)?;
        visible::run(&self.engine, &caller, id).await?;
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
        let caller = caller(&request);
        let r = request.into_inner();
        let runs = self.log_runs(&caller, &r).await?;
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
        let size = paging::size(r.page_size, DEFAULT_LOG_PAGE, MAX_LOG_PAGE);
        let after = match paging::position("logs", &r.page_token)? {
            None => None,
            Some(parts) => match parts.as_slice() {
                [at, run, k] => Some((
                    at.parse::<i64>()
                        .map_err(|_| status::invalid("page_token", "is damaged"))?,
                    run.clone(),
                    k.parse::<usize>()
                        .map_err(|_| status::invalid("page_token", "is damaged"))?,
                )),
                _ => return Err(status::invalid("page_token", "is damaged")),
            },
        };
        // Each entry's exact position: time, run, and place among that run's entries
        // of the same millisecond.
        let mut entries = Vec::new();
        for id in runs {
            let of_run = self
                .engine
                .store()
                .run_logs()
                .read(id, &filter)
                .await
                .map_err(|e| status::of(e.into()))?;
            let run = id.to_string();
            let mut same_ms = (i64::MIN, 0usize);
            for e in of_run {
                same_ms = if same_ms.0 == e.at_unix_ms {
                    (e.at_unix_ms, same_ms.1 + 1)
                } else {
                    (e.at_unix_ms, 0)
                };
                let mut entry = convert::log_entry(e);
                entry.run_id.clone_from(&run);
                entries.push(((entry.at_unix_ms, run.clone(), same_ms.1), entry));
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        if filter.limit > 0 && entries.len() > filter.limit {
            entries.drain(..entries.len() - filter.limit);
        }
        let mut page = Vec::new();
        let mut bytes = 0;
        let mut next_page_token = String::new();
        let mut last: Option<(i64, String, usize)> = None;
        for (position, entry) in entries {
            if after.as_ref().is_some_and(|a| &position <= a) {
                continue;
            }
            let len = prost::Message::encoded_len(&entry);
            if !paging::room(page.len(), bytes, len, size) {
                if let Some((at, run, k)) = &last {
                    next_page_token =
                        paging::token("logs", &[&at.to_string(), run, &usize::to_string(k)]);
                }
                break;
            }
            bytes += len;
            last = Some(position);
            page.push(entry);
        }
        Ok(Response::new(GetRunLogsResponse {
            entries: page,
            next_page_token,
        }))
    }

    async fn retry_run(
        &self,
        request: Request<GetRunRequest>,
    ) -> Result<Response<RunSummary>, Status> {
        let caller = require_write(&request)?;
        let id = convert::run_id("run_id", &request.get_ref().run_id)?;
        visible::run(&self.engine, &caller, id).await?;
        self.engine.retry(id, "api").await.map_err(status::of)?;
        Ok(Response::new(self.summary(id).await?))
    }
}
