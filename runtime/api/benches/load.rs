//! API load benchmark: concurrent clients, each on its own connection, sending a mix
//! of reads (list and get runs, workflows, connections, hub records, the change feed,
//! upcoming fires) and writes (pause and resume a workflow) to a real server over
//! TCP. Reports errors, throughput and latency percentiles.
//!
//! `cargo bench -p sluice-api --bench load`; `SLUICE_BENCH_CLIENTS` (default 50),
//! `SLUICE_BENCH_REQUESTS` per client (default 1,000).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary"
)]

use std::time::Instant;

use sluice_api::pb;
use sluice_api::pb::connections_client::ConnectionsClient;
use sluice_api::pb::records_client::RecordsClient;
use sluice_api::pb::runs_client::RunsClient;
use sluice_api::pb::workflows_client::WorkflowsClient;
use sluice_api::{ApiServer, Scope, Tokens};
use sluice_testkit::NodeBuilder;
use sluice_testkit::node::{self, run};
use sluice_testkit::stats::{Millis, env_or, percentile, rate, spread};
use tonic::Request;
use tonic::transport::Channel;

const TOKEN: &str = "bench-token";

/// The mix, by `i % 10`.
const KINDS: [&str; 10] = [
    "Runs.ListRuns (20)",
    "Runs.GetRun (with events)",
    "Workflows.ListWorkflows",
    "Workflows.GetWorkflow",
    "Connections.ListConnections",
    "Records.GetRecord",
    "Records.GetRecord",
    "Records.ReadChanges (100)",
    "Workflows.ListUpcomingFires",
    "Workflows.PauseWorkflow + Resume",
];

fn authed<T>(message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

/// One request of the mix, chosen by `i`; returns whether it succeeded.
async fn one(ch: &Channel, i: usize, run_id: &str) -> bool {
    match i % 10 {
        0 => RunsClient::new(ch.clone())
            .list_runs(authed(pb::ListRunsRequest {
                limit: 20,
                ..pb::ListRunsRequest::default()
            }))
            .await
            .is_ok(),
        1 => RunsClient::new(ch.clone())
            .get_run(authed(pb::GetRunRequest {
                run_id: run_id.to_owned(),
            }))
            .await
            .is_ok(),
        2 => WorkflowsClient::new(ch.clone())
            .list_workflows(authed(pb::ListWorkflowsRequest::default()))
            .await
            .is_ok(),
        3 => WorkflowsClient::new(ch.clone())
            .get_workflow(authed(pb::GetWorkflowRequest {
                name: "users".into(),
            }))
            .await
            .is_ok(),
        4 => ConnectionsClient::new(ch.clone())
            .list_connections(authed(pb::ListConnectionsRequest::default()))
            .await
            .is_ok(),
        5 | 6 => RecordsClient::new(ch.clone())
            .get_record(authed(pb::GetRecordRequest {
                connection: "sample".into(),
                stream: "users".into(),
                primary_key_json: format!("[{}]", 1 + i % 10_000),
            }))
            .await
            .is_ok(),
        7 => RecordsClient::new(ch.clone())
            .read_changes(authed(pb::ReadChangesRequest {
                connection: "sample".into(),
                stream: "users".into(),
                after: 0,
                limit: 100,
            }))
            .await
            .is_ok(),
        8 => WorkflowsClient::new(ch.clone())
            .list_upcoming_fires(authed(pb::ListUpcomingFiresRequest {
                name: "users".into(),
                count: 5,
            }))
            .await
            .is_ok(),
        _ => {
            let paused = WorkflowsClient::new(ch.clone())
                .pause_workflow(authed(pb::GetWorkflowRequest {
                    name: "users".into(),
                }))
                .await
                .is_ok();
            paused
                && WorkflowsClient::new(ch.clone())
                    .resume_workflow(authed(pb::GetWorkflowRequest {
                        name: "users".into(),
                    }))
                    .await
                    .is_ok()
        }
    }
}

fn main() {
    let clients: usize = env_or("SLUICE_BENCH_CLIENTS", 50);
    let requests: usize = env_or("SLUICE_BENCH_REQUESTS", 1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let engine = NodeBuilder::new()
            .cache_dir(cache.path())
            .worker("bench")
            .engine_at(data.path());
        node::connection(
            &engine,
            serde_json::json!({
                "name": "sample", "tenant": "t", "connector": "sample",
                "config": {"records": 10_000}
            }),
        ).await;
        node::workflow(
            &engine,
            serde_json::json!({
                "name": "users", "connection": "sample", "streams": [{"name": "users"}],
                "schedule": {"trigger": {"kind": "interval", "every_secs": 3600}}
            }),
        ).await;
        let run_id = run(&engine, "users").await.run_id.to_string();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tokens = Tokens::new([(TOKEN.to_owned(), Scope::Write)]);
        tokio::spawn(ApiServer::new(engine, tokens).serve(listener, std::future::pending()));

        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let run_id = run_id.clone();
            tasks.push(tokio::spawn(async move {
                let ch = Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let mut latencies = Vec::with_capacity(requests);
                let mut errors = 0usize;
                for i in 0..requests {
                    let t = Instant::now();
                    let kind = (c * 7 + i) % 10;
                    if !one(&ch, c * 7 + i, &run_id).await {
                        errors += 1;
                    }
                    latencies.push((kind, t.elapsed()));
                }
                (latencies, errors)
            }));
        }
        let mut by_kind = vec![Vec::new(); KINDS.len()];
        let mut all = Vec::with_capacity(clients * requests);
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.unwrap();
            for (kind, d) in l {
                by_kind[kind].push(d);
                all.push(d);
            }
            errors += e;
        }
        let elapsed = started.elapsed();
        all.sort();
        println!(
            "{clients} clients x {requests} mixed requests over TCP with a bearer token: {} requests in {:.2} s = {:.0} requests/s, {errors} errors",
            all.len(),
            elapsed.as_secs_f64(),
            rate(all.len() as u64, elapsed)
        );
        println!("  latency {}", spread(&all));
        for (kind, mut l) in by_kind.into_iter().enumerate() {
            l.sort();
            println!(
                "  {:<34} p50 {}, p99 {}",
                KINDS[kind],
                percentile(&l, 0.5).ms(),
                percentile(&l, 0.99).ms(),
            );
        }
    });
}
