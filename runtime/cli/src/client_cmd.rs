//! `sluice runs|workflows|connections …`: client commands over the gRPC API of a
//! running node (`sluice serve`).
//!
//! Human tables by default, `--json` for scripts (one JSON document on stdout).
//! The server's address and token come from flags, else the environment
//! (`SLUICE_SERVER`, `SLUICE_TOKEN`). Errors keep the server's message; the exit code
//! tells the gRPC status apart (see `exit`).

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use sluice_api::pb;
use sluice_api::pb::connections_client::ConnectionsClient;
use sluice_api::pb::connectors_client::ConnectorsClient;
use sluice_api::pb::rate_limits_client::RateLimitsClient;
use sluice_api::pb::runs_client::RunsClient;
use sluice_api::pb::workflows_client::WorkflowsClient;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::exit::RunsFailed;

/// Where the node is and who calls it.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// The node's API address.
    #[arg(
        long,
        global = true,
        env = "SLUICE_SERVER",
        default_value = "http://127.0.0.1:7600"
    )]
    server: String,
    /// API token (sent as `authorization: Bearer <token>`).
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to trust for an `https://` server.
    #[arg(long, global = true, env = "SLUICE_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

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
        /// `created_at_unix_ms`): the next page back.
        #[arg(long, value_parser = parse_time)]
        before: Option<i64>,
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

/// Workflows: list, trigger, pause, resume, upcoming fires.
#[derive(Subcommand)]
pub enum WorkflowsCommand {
    /// List workflows.
    List,
    /// Start a run now.
    Trigger { workflow: String },
    /// Stop the workflow's schedule from firing.
    Pause { workflow: String },
    /// Let the workflow's schedule fire again (missed fires follow its catch-up).
    Resume { workflow: String },
    /// Delete the workflow and its schedule (refused while a run is in flight); its
    /// runs stay, with their history.
    Delete { workflow: String },
    /// The next fires of the workflow's schedule.
    Upcoming {
        workflow: String,
        #[arg(long, default_value_t = 5)]
        count: u32,
    },
}

/// Connectors: register, list, get, remove.
#[derive(Subcommand)]
pub enum ConnectorsCommand {
    /// Register (or replace) a connector from a `.wasm` component.
    Register {
        name: String,
        file: std::path::PathBuf,
        #[arg(long, default_value = "")]
        version: String,
    },
    /// List first-party and registered connectors.
    List,
    /// Show a connector with the JSON Schema of its config.
    Get { name: String },
    /// Remove a registered connector no connection uses.
    Remove { name: String },
}

/// Connections: list, check.
#[derive(Subcommand)]
pub enum ConnectionsCommand {
    /// List connections.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Run the connector's check against the connection.
    Check { connection: String },
}

/// Which rate-limit keys to show.
#[derive(Args)]
pub struct RateLimitsFilter {
    /// Only keys of this connector.
    #[arg(long)]
    connector: Option<String>,
    /// Only keys of this credential.
    #[arg(long)]
    credential: Option<String>,
}

struct Client {
    channel: Channel,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Client {
    async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
        let mut endpoint = Channel::from_shared(args.server.clone())
            .with_context(|| format!("--server `{}` is not a URL", args.server))?
            .connect_timeout(Duration::from_secs(5));
        if args.server.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new();
            if let Some(ca) = &args.ca_cert {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("reading the CA certificate {}", ca.display()))?;
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .context("setting up TLS to the server")?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach the Sluice API at {}", args.server))?;
        let token = match &args.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .context("the token holds characters a header cannot carry")?,
            ),
            None => None,
        };
        Ok(Client { channel, token })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(t) = &self.token {
            request.metadata_mut().insert("authorization", t.clone());
        }
        request
    }

    fn runs(&self) -> RunsClient<Channel> {
        RunsClient::new(self.channel.clone())
    }

    fn workflows(&self) -> WorkflowsClient<Channel> {
        WorkflowsClient::new(self.channel.clone())
    }

    fn connectors(&self) -> ConnectorsClient<Channel> {
        ConnectorsClient::new(self.channel.clone())
    }

    fn connections(&self) -> ConnectionsClient<Channel> {
        ConnectionsClient::new(self.channel.clone())
    }
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

fn time(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    t
}

fn summary_json(s: &pb::RunSummary) -> Value {
    json!({
        "run_id": s.run_id, "workflow": s.workflow, "connection": s.connection,
        "tenant": s.tenant, "priority": s.priority, "status": s.status,
        "created_at_unix_ms": s.created_at_unix_ms, "updated_at_unix_ms": s.updated_at_unix_ms,
    })
}

fn run_json(r: &pb::Run) -> Value {
    let streams: Vec<Value> = r
        .streams
        .iter()
        .map(|s| {
            json!({
                "stream": s.stream, "records": s.records, "batches": s.batches,
                "created": s.created, "updated": s.updated, "unchanged": s.unchanged,
                "deleted": s.deleted, "complete": s.complete, "checkpoint": s.checkpoint,
            })
        })
        .collect();
    json!({
        "summary": r.summary.as_ref().map(summary_json),
        "attempts": r.attempts,
        "last_error_kind": r.last_error_kind, "last_error": r.last_error,
        "dead_letter_kind": r.dead_letter_kind, "dead_letter_message": r.dead_letter_message,
        "retry_at_unix_ms": r.retry_at_unix_ms,
        "started_at_unix_ms": r.started_at_unix_ms, "finished_at_unix_ms": r.finished_at_unix_ms,
        "streams": streams,
        "events": r.events.len(),
    })
}

fn print_summaries(runs: &[pb::RunSummary], as_json: bool) {
    if as_json {
        println!("{}", Value::Array(runs.iter().map(summary_json).collect()));
        return;
    }
    let rows = runs.iter().map(|r| {
        vec![
            r.run_id.clone(),
            r.workflow.clone(),
            r.tenant.clone(),
            r.status.clone(),
            time(r.created_at_unix_ms),
            time(r.updated_at_unix_ms),
        ]
    });
    println!(
        "{}",
        table(
            &["run", "workflow", "tenant", "status", "created", "updated"],
            rows
        )
    );
}

fn print_run(r: &pb::Run) {
    let s = r.summary.clone().unwrap_or_default();
    println!(
        "run {}  workflow {}  tenant {}",
        s.run_id, s.workflow, s.tenant
    );
    println!(
        "status {}  attempts {}  started {}  finished {}",
        s.status,
        r.attempts,
        time(r.started_at_unix_ms),
        time(r.finished_at_unix_ms)
    );
    if !r.dead_letter_message.is_empty() {
        println!(
            "dead-lettered ({}): {}",
            r.dead_letter_kind, r.dead_letter_message
        );
    } else if !r.last_error.is_empty() {
        println!("last error ({}): {}", r.last_error_kind, r.last_error);
    }
    let rows = r.streams.iter().map(|p| {
        vec![
            p.stream.clone(),
            p.records.to_string(),
            p.created.to_string(),
            p.updated.to_string(),
            p.unchanged.to_string(),
            p.deleted.to_string(),
            if p.complete { "yes" } else { "no" }.to_owned(),
        ]
    });
    println!(
        "{}",
        table(
            &[
                "stream",
                "records",
                "created",
                "updated",
                "unchanged",
                "deleted",
                "complete"
            ],
            rows
        )
    );
}

/// `sluice runs …`
pub async fn runs(args: ClientArgs, command: RunsCommand) -> anyhow::Result<()> {
    let client = Client::connect(&args).await?;
    let mut runs = client.runs();
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
        } => {
            let list = runs
                .list_runs(client.request(pb::ListRunsRequest {
                    workflow: workflow.unwrap_or_default(),
                    connection: connection.unwrap_or_default(),
                    tenant: tenant.unwrap_or_default(),
                    status: status.unwrap_or_default(),
                    limit,
                    oldest_first,
                    created_before_unix_ms: before.unwrap_or(0),
                    created_from_unix_ms: since.unwrap_or(0),
                }))
                .await?
                .into_inner();
            print_summaries(&list.runs, args.json);
        }
        RunsCommand::Get { run } => {
            let r = runs
                .get_run(client.request(pb::GetRunRequest { run_id: run }))
                .await?
                .into_inner();
            if args.json {
                println!("{}", run_json(&r));
            } else {
                print_run(&r);
            }
        }
        RunsCommand::Watch { run } => return watch(&client, &run, args.json).await,
        RunsCommand::Cancel { run, reason } => {
            let s = runs
                .cancel_run(client.request(pb::CancelRunRequest {
                    run_id: run,
                    reason,
                }))
                .await?
                .into_inner();
            print_summaries(&[s], args.json);
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
            let entries = runs
                .get_run_logs(client.request(pb::GetRunLogsRequest {
                    run_id: run.unwrap_or_default(),
                    workflow: workflow.unwrap_or_default(),
                    connection: connection.unwrap_or_default(),
                    tenant: tenant.unwrap_or_default(),
                    min_level: level.unwrap_or_default(),
                    kind: kind.to_owned(),
                    attempt,
                    limit,
                    stream: stream.unwrap_or_default(),
                }))
                .await?
                .into_inner()
                .entries;
            for e in entries {
                if args.json {
                    let request = e.request.as_ref().map(|r| {
                        json!({"method": r.method, "host": r.host, "path": r.path,
                               "status": r.status, "latency_ms": r.latency_ms, "waited_ms": r.waited_ms,
                               "bytes_received": r.bytes_received, "error": r.error})
                    });
                    println!(
                        "{}",
                        json!({"run_id": e.run_id, "at_unix_ms": e.at_unix_ms, "attempt": e.attempt,
                               "stream": e.stream, "level": e.level, "context": e.context,
                               "message": e.message, "request": request})
                    );
                } else {
                    println!(
                        "{} #{} {:<5} {} {}: {}",
                        time(e.at_unix_ms),
                        e.attempt,
                        e.level,
                        if e.stream.is_empty() { "-" } else { &e.stream },
                        e.context,
                        e.message
                    );
                }
            }
        }
        RunsCommand::Retry { run } => {
            let s = runs
                .retry_run(client.request(pb::GetRunRequest { run_id: run }))
                .await?
                .into_inner();
            print_summaries(&[s], args.json);
        }
    }
    Ok(())
}

async fn watch(client: &Client, run: &str, as_json: bool) -> anyhow::Result<()> {
    let mut stream = client
        .runs()
        .watch_run(client.request(pb::GetRunRequest {
            run_id: run.to_owned(),
        }))
        .await?
        .into_inner();
    let bar = if as_json {
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
        if as_json {
            println!(
                "{}",
                json!({
                    "status": status, "records": records,
                    "records_per_sec": update.records_per_sec,
                    "stream": update.current_stream, "finished": update.finished,
                })
            );
        } else {
            bar.set_message(format!(
                "{status}  {records} records  {:.0} records/s  {}",
                update.records_per_sec, update.current_stream
            ));
        }
        last = Some(r);
        if update.finished {
            break;
        }
    }
    bar.finish_and_clear();
    let Some(r) = last else {
        anyhow::bail!("the server closed the watch before sending the run");
    };
    if !as_json {
        print_run(&r);
    }
    let status = r.summary.map(|s| s.status).unwrap_or_default();
    if status != "completed" {
        return Err(RunsFailed(1).into());
    }
    Ok(())
}

/// Definitions (JSON documents from the API) as one JSON array on stdout.
fn print_definitions<'a>(docs: impl Iterator<Item = &'a str>) {
    let defs: Vec<Value> = docs.filter_map(|d| serde_json::from_str(d).ok()).collect();
    println!("{}", Value::Array(defs));
}

fn workflow_row(w: &pb::Workflow) -> Vec<String> {
    vec![
        w.name.clone(),
        w.connection.clone(),
        w.priority.to_string(),
        w.paused.to_string(),
    ]
}

/// `sluice workflows …`
pub async fn workflows(args: ClientArgs, command: WorkflowsCommand) -> anyhow::Result<()> {
    let client = Client::connect(&args).await?;
    let mut api = client.workflows();
    let print = |w: &pb::Workflow| {
        if args.json {
            println!("{}", w.definition_json);
        } else {
            println!(
                "{}",
                table(
                    &["workflow", "connection", "priority", "paused"],
                    [workflow_row(w)]
                )
            );
        }
    };
    match command {
        WorkflowsCommand::List => {
            let list = api
                .list_workflows(client.request(pb::ListWorkflowsRequest::default()))
                .await?
                .into_inner()
                .workflows;
            if args.json {
                print_definitions(list.iter().map(|w| w.definition_json.as_str()));
            } else {
                let rows = list.iter().map(workflow_row);
                println!(
                    "{}",
                    table(&["workflow", "connection", "priority", "paused"], rows)
                );
            }
        }
        WorkflowsCommand::Trigger { workflow } => {
            let s = api
                .trigger_workflow(client.request(pb::GetWorkflowRequest { name: workflow }))
                .await?
                .into_inner();
            print_summaries(&[s], args.json);
        }
        WorkflowsCommand::Pause { workflow } => {
            let w = api
                .pause_workflow(client.request(pb::GetWorkflowRequest { name: workflow }))
                .await?
                .into_inner();
            print(&w);
        }
        WorkflowsCommand::Resume { workflow } => {
            let w = api
                .resume_workflow(client.request(pb::GetWorkflowRequest { name: workflow }))
                .await?
                .into_inner();
            print(&w);
        }
        WorkflowsCommand::Delete { workflow } => {
            api.delete_workflow(client.request(pb::GetWorkflowRequest {
                name: workflow.clone(),
            }))
            .await?;
            if !args.json {
                println!("deleted {workflow}");
            }
        }
        WorkflowsCommand::Upcoming { workflow, count } => {
            let fires = api
                .list_upcoming_fires(client.request(pb::ListUpcomingFiresRequest {
                    name: workflow,
                    count,
                }))
                .await?
                .into_inner()
                .fire_at_unix_ms;
            if args.json {
                println!("{}", json!(fires));
            } else {
                for f in fires {
                    println!("{}", time(f));
                }
            }
        }
    }
    Ok(())
}

fn print_connectors(list: &[pb::ConnectorInfo], as_json: bool) {
    if as_json {
        let items: Vec<Value> = list
            .iter()
            .map(|c| {
                json!({"name": c.name, "version": c.version, "digest": c.digest,
                       "first_party": c.first_party, "used_by": c.used_by})
            })
            .collect();
        println!("{}", Value::Array(items));
        return;
    }
    let rows = list.iter().map(|c| {
        vec![
            c.name.clone(),
            if c.first_party {
                "first-party".to_owned()
            } else {
                c.version.clone()
            },
            c.digest.chars().take(19).collect(),
            c.used_by.join(", "),
        ]
    });
    println!(
        "{}",
        table(&["connector", "version", "digest", "used by"], rows)
    );
}

/// `sluice connectors …`
pub async fn connectors(args: ClientArgs, command: ConnectorsCommand) -> anyhow::Result<()> {
    let client = Client::connect(&args).await?;
    let mut api = client.connectors().max_encoding_message_size(128 << 20);
    match command {
        ConnectorsCommand::Register {
            name,
            file,
            version,
        } => {
            let wasm =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let info = api
                .register_connector(client.request(pb::RegisterConnectorRequest {
                    name,
                    version,
                    wasm,
                }))
                .await?
                .into_inner();
            print_connectors(&[info], args.json);
        }
        ConnectorsCommand::List => {
            let list = api
                .list_connectors(client.request(pb::ListConnectorsRequest {}))
                .await?
                .into_inner()
                .connectors;
            print_connectors(&list, args.json);
        }
        ConnectorsCommand::Get { name } => {
            let info = api
                .get_connector(client.request(pb::GetConnectorRequest { name }))
                .await?
                .into_inner();
            if args.json {
                println!("{}", info.spec_json);
            } else {
                print_connectors(std::slice::from_ref(&info), false);
                let spec: Value = serde_json::from_str(&info.spec_json).unwrap_or(Value::Null);
                println!(
                    "{}",
                    serde_json::to_string_pretty(&spec).unwrap_or_default()
                );
            }
        }
        ConnectorsCommand::Remove { name } => {
            api.remove_connector(client.request(pb::GetConnectorRequest { name: name.clone() }))
                .await?;
            if !args.json {
                println!("removed {name}");
            }
        }
    }
    Ok(())
}

/// `sluice connections …`
pub async fn connections(args: ClientArgs, command: ConnectionsCommand) -> anyhow::Result<()> {
    let client = Client::connect(&args).await?;
    let mut api = client.connections();
    match command {
        ConnectionsCommand::List { tenant } => {
            let list = api
                .list_connections(client.request(pb::ListConnectionsRequest {
                    tenant: tenant.unwrap_or_default(),
                }))
                .await?
                .into_inner()
                .connections;
            if args.json {
                print_definitions(list.iter().map(|c| c.definition_json.as_str()));
            } else {
                let rows = list.iter().map(|c| {
                    vec![
                        c.name.clone(),
                        c.tenant.clone(),
                        c.connector.clone(),
                        c.secret_names.join(", "),
                    ]
                });
                println!(
                    "{}",
                    table(&["connection", "tenant", "connector", "secrets"], rows)
                );
            }
        }
        ConnectionsCommand::Check { connection } => {
            let r = api
                .check_connection(client.request(pb::GetConnectionRequest { name: connection }))
                .await?
                .into_inner();
            if args.json {
                println!(
                    "{}",
                    json!({"ok": r.ok, "message": r.message, "error_kind": r.error_kind})
                );
            } else if r.ok {
                println!("ok");
            } else {
                println!("failed ({}): {}", r.error_kind, r.message);
            }
            if !r.ok {
                anyhow::bail!("the check failed");
            }
        }
    }
    Ok(())
}

pub async fn rate_limits(args: ClientArgs, filter: RateLimitsFilter) -> anyhow::Result<()> {
    let client = Client::connect(&args).await?;
    let r = RateLimitsClient::new(client.channel.clone())
        .list_rate_limits(client.request(pb::ListRateLimitsRequest {
            connector: filter.connector.unwrap_or_default(),
            credential: filter.credential.unwrap_or_default(),
        }))
        .await?
        .into_inner();
    if args.json {
        for k in &r.keys {
            println!(
                "{}",
                json!({"connector": k.connector, "credential": k.credential, "endpoint": k.endpoint,
                       "requests": k.requests, "throttled": k.throttled, "waits": k.waits,
                       "wait_seconds": k.wait_seconds, "saturated": k.saturated,
                       "in_flight": k.in_flight, "waiting": k.waiting,
                       "window_used": k.window_used, "window_limit": k.window_limit,
                       "learned_left": k.learned_left, "paused_ms": k.paused_ms})
            );
        }
        for b in &r.breakers {
            println!(
                "{}",
                json!({"breaker": b.host, "state": b.state, "failures": b.failures,
                       "opened": b.opened, "open_ms": b.open_ms})
            );
        }
        return Ok(());
    }
    let keys = r.keys.iter().map(|k| {
        vec![
            k.connector.clone(),
            k.credential.clone(),
            k.endpoint.clone(),
            k.requests.to_string(),
            k.throttled.to_string(),
            format!("{} ({:.1} s)", k.waits, k.wait_seconds),
            format!("{}/{}", k.in_flight, k.waiting),
            if k.window_limit > 0 {
                format!("{}/{}", k.window_used, k.window_limit)
            } else {
                "-".into()
            },
            if k.learned_left >= 0 {
                k.learned_left.to_string()
            } else {
                "-".into()
            },
            if k.paused_ms > 0 {
                format!("{} ms", k.paused_ms)
            } else {
                "-".into()
            },
        ]
    });
    let header = [
        "connector",
        "credential",
        "endpoint",
        "requests",
        "throttled",
        "waits",
        "in flight/waiting",
        "window",
        "API left",
        "paused",
    ];
    println!("{}", table(&header, keys));
    if !r.breakers.is_empty() {
        let rows = r.breakers.iter().map(|b| {
            vec![
                b.host.clone(),
                b.state.clone(),
                b.failures.to_string(),
                b.opened.to_string(),
                if b.open_ms > 0 {
                    format!("{} ms", b.open_ms)
                } else {
                    "-".into()
                },
            ]
        });
        println!(
            "{}",
            table(&["host", "breaker", "failures", "opened", "open for"], rows)
        );
    }
    Ok(())
}
