//! `sluice runs …`: the client of the node's `Runs` service: list, get, watch,
//! cancel, retry, logs.
//!
//! Owns the run commands' flags and the requests they make. It prints only through
//! [`Render`], and never decides a run's outcome itself: `watch` exits 5 only
//! because the server reported the run ended other than completed.

use std::time::Duration;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sluice_api::pb;
use sluice_api::pb::runs_client::RunsClient;

use super::render::{self, Render};
use super::{Client, decode_limit, next_page_hint};
use crate::exit::RunsFailed;

/// Runs: list, inspect, watch, cancel, retry.
#[derive(Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long)]
        connection: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// scheduled, running, retry_waiting, completed, cancelled, dead_lettered.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Oldest first (a limit then keeps the oldest).
        #[arg(long)]
        oldest_first: bool,
        /// Only runs created before this time (RFC 3339, or Unix ms as listed in
        /// `created_at_unix_ms`). To page, use `--page-token` (exact, even for runs
        /// created in the same millisecond).
        #[arg(long, value_parser = parse_time)]
        before: Option<i64>,
        /// Continue from the `next page` a previous listing printed.
        #[arg(long)]
        page_token: Option<String>,
        /// Every page, one after another (`--limit` runs per page).
        #[arg(long, conflicts_with = "page_token")]
        all: bool,
        /// Only runs created at or after this time (RFC 3339, or Unix ms).
        #[arg(long, value_parser = parse_time)]
        since: Option<i64>,
    },
    /// Show a run with its streams and events.
    Get { run: String },
    /// Follow a run live until it ends; exit 5 if it did not complete.
    Watch { run: String },
    /// Cancel a run (it stops at a batch boundary).
    Cancel {
        run: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Retry a dead-lettered run from its last checkpoint.
    Retry { run: String },
    /// Connector log lines and HTTP requests (secrets redacted) of a run, or of the
    /// newest runs of a workflow, connection or tenant.
    Logs {
        #[arg(required_unless_present_any = ["workflow", "connection", "tenant"])]
        run: Option<String>,
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long)]
        connection: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// Only this level and above: trace, debug, info, warn, error.
        #[arg(long)]
        level: Option<String>,
        /// Only HTTP requests.
        #[arg(long, conflicts_with = "lines")]
        requests: bool,
        /// Only log lines.
        #[arg(long)]
        lines: bool,
        /// Only this attempt.
        #[arg(long, default_value_t = 0)]
        attempt: u32,
        /// Only this stream.
        #[arg(long)]
        stream: Option<String>,
        /// At most this many, the newest.
        #[arg(long, default_value_t = 200)]
        limit: u32,
    },
}

/// A point in time given on the command line: RFC 3339 or Unix milliseconds.
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            format!("`{s}` is neither RFC 3339 (2026-12-02T08:00:00Z) nor Unix milliseconds: {e}")
        })
}

/// `sluice runs …`
pub(super) async fn run(client: &Client, out: Render, command: RunsCommand) -> anyhow::Result<()> {
    let mut runs = decode_limit!(RunsClient::new(client.channel()));
    match command {
        RunsCommand::List {
            workflow,
            connection,
            tenant,
            status,
            limit,
            oldest_first,
            before,
            since,
            page_token,
            all,
        } => {
            let ask = pb::ListRunsRequest {
                workflow: workflow.unwrap_or_default(),
                connection: connection.unwrap_or_default(),
                tenant: tenant.unwrap_or_default(),
                status: status.unwrap_or_default(),
                limit,
                oldest_first,
                created_before_unix_ms: before.unwrap_or(0),
                created_from_unix_ms: since.unwrap_or(0),
                page_token: page_token.unwrap_or_default(),
            };
            let page = super::PageArgs {
                limit: Some(limit),
                page_token: Some(ask.page_token.clone()),
                all,
            };
            let (list, next) = page
                .collect(|_, page_token| {
                    let mut runs = runs.clone();
                    let request = client.request(pb::ListRunsRequest {
                        page_token,
                        ..ask.clone()
                    });
                    async move {
                        let r = runs.list_runs(request).await?.into_inner();
                        Ok((r.runs, r.next_page_token))
                    }
                })
                .await?;
            out.summaries(&list);
            next_page_hint(out, &next);
        }
        RunsCommand::Get { run } => {
            let r = runs
                .get_run(client.request(pb::GetRunRequest { run_id: run }))
                .await?
                .into_inner();
            out.run(&r);
        }
        RunsCommand::Watch { run } => return watch(client, &mut runs, out, run).await,
        RunsCommand::Cancel { run, reason } => {
            let s = runs
                .cancel_run(client.request(pb::CancelRunRequest {
                    run_id: run,
                    reason,
                }))
                .await?
                .into_inner();
            out.summaries(&[s]);
        }
        RunsCommand::Logs {
            run,
            workflow,
            connection,
            tenant,
            level,
            requests,
            lines,
            attempt,
            stream,
            limit,
        } => {
            let kind = match (requests, lines) {
                (true, _) => "requests",
                (_, true) => "lines",
                _ => "",
            };
            let ask = pb::GetRunLogsRequest {
                run_id: run.unwrap_or_default(),
                workflow: workflow.unwrap_or_default(),
                connection: connection.unwrap_or_default(),
                tenant: tenant.unwrap_or_default(),
                min_level: level.unwrap_or_default(),
                kind: kind.to_owned(),
                attempt,
                limit,
                stream: stream.unwrap_or_default(),
                ..pb::GetRunLogsRequest::default()
            };
            // `--limit` bounds the entries: read every page of them.
            let every = super::PageArgs {
                all: true,
                ..super::PageArgs::default()
            };
            let (entries, _) = every
                .collect(|_, page_token| {
                    let mut runs = runs.clone();
                    let request = client.request(pb::GetRunLogsRequest {
                        page_token,
                        ..ask.clone()
                    });
                    async move {
                        let r = runs.get_run_logs(request).await?.into_inner();
                        Ok((r.entries, r.next_page_token))
                    }
                })
                .await?;
            out.lines(entries.iter().map(log_json), || {
                for e in &entries {
                    println!("{}", log_line(e));
                }
            });
        }
        RunsCommand::Retry { run } => {
            let s = runs
                .retry_run(client.request(pb::GetRunRequest { run_id: run }))
                .await?
                .into_inner();
            out.summaries(&[s]);
        }
    }
    Ok(())
}

fn log_json(e: &pb::RunLogEntry) -> serde_json::Value {
    let request = e.request.as_ref().map(|r| {
        json!({"method": r.method, "host": r.host, "path": r.path,
               "status": r.status, "latency_ms": r.latency_ms, "waited_ms": r.waited_ms,
               "bytes_received": r.bytes_received, "error": r.error})
    });
    json!({"run_id": e.run_id, "at_unix_ms": e.at_unix_ms, "attempt": e.attempt,
           "stream": e.stream, "level": e.level, "context": e.context,
           "message": e.message, "request": request})
}

fn log_line(e: &pb::RunLogEntry) -> String {
    format!(
        "{} #{} {:<5} {} {}: {}",
        render::time(e.at_unix_ms),
        e.attempt,
        e.level,
        if e.stream.is_empty() { "-" } else { &e.stream },
        e.context,
        e.message
    )
}

/// Follows `run` until it ends: a spinner for people, one JSON line per update for
/// scripts; then the run, and exit 5 unless it completed.
async fn watch(
    client: &Client,
    runs: &mut RunsClient<tonic::transport::Channel>,
    out: Render,
    run: String,
) -> anyhow::Result<()> {
    let mut stream = runs
        .watch_run(client.request(pb::GetRunRequest { run_id: run }))
        .await?
        .into_inner();
    let bar = if out.json() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    };
    let mut last = None;
    while let Some(update) = stream.message().await? {
        let Some(r) = update.run.clone() else {
            continue;
        };
        let records: u64 = r.streams.iter().map(|s| s.records).sum();
        let status = r
            .summary
            .as_ref()
            .map(|s| s.status.clone())
            .unwrap_or_default();
        out.show(
            || {
                json!({
                    "status": status, "records": records,
                    "records_per_sec": update.records_per_sec,
                    "stream": update.current_stream, "finished": update.finished,
                })
            },
            || {
                bar.set_message(format!(
                    "{status}  {records} records  {:.0} records/s  {}",
                    update.records_per_sec, update.current_stream
                ))
            },
        );
        last = Some(r);
        if update.finished {
            break;
        }
    }
    bar.finish_and_clear();
    let Some(r) = last else {
        anyhow::bail!("the server closed the watch before sending the run");
    };
    if !out.json() {
        render::print_run(&r);
    }
    let status = r.summary.map(|s| s.status).unwrap_or_default();
    if status != "completed" {
        return Err(RunsFailed(1).into());
    }
    Ok(())
}
