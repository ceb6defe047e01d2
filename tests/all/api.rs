//! The gRPC control API as a program meets it: a real server on a TCP port and the
//! generated client. The whole lifecycle (define, trigger, watch live, inspect the
//! run and its events, read the hub's records and change feed, pause, resume,
//! upcoming fires, cancel), bad requests answered with the right status code while
//! the server keeps serving, bearer tokens with a read-only scope, secrets never
//! returned, and the standard health and reflection services.

use std::net::SocketAddr;

use serde_json::json;
use sluice_api::pb::connections_client::ConnectionsClient;
use sluice_api::pb::rate_limits_client::RateLimitsClient;
use sluice_api::pb::records_client::RecordsClient;
use sluice_api::pb::runs_client::RunsClient;
use sluice_api::pb::workflows_client::WorkflowsClient;
use sluice_api::pb::{self};
use sluice_api::{ApiServer, Scope, Tokens};
use sluice_testkit::{NodeBuilder, NodeDir};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Compiled components are shared on disk between the tests.
const NODE: NodeBuilder = NodeBuilder::new()
    .cache_under(env!("CARGO_TARGET_TMPDIR"), "api-components")
    .worker("api-node");

struct Node {
    addr: SocketAddr,
    metrics: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: NodeDir,
}

async fn node(tokens: Tokens) -> Node {
    node_with(tokens, None).await
}

async fn node_with(tokens: Tokens, tls: Option<sluice_api::Tls>) -> Node {
    let dir = NodeDir::new();
    let engine = NODE.test_engine_at(dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = metrics_listener.local_addr().unwrap();
    tokio::spawn(sluice_api::serve_metrics(
        engine.clone(),
        metrics_listener,
        std::future::pending(),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = ApiServer::new(engine, tokens);
    if let Some(tls) = tls {
        server = server.with_tls(tls);
    }
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    Node {
        addr,
        metrics,
        _stop: stop,
        _dir: dir,
    }
}

/// `GET /metrics` over plain HTTP/1.0; the body.
async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: sluice\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// A channel to the API at `addr`.
pub(crate) async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `message` carrying `token` as its bearer token.
pub(crate) fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn connection_json(records: u64) -> String {
    json!({
        "name": "crm", "tenant": "acme", "connector": "sample",
        "config": {"records": records}
    })
    .to_string()
}

/// A `rest` connection whose bearer token is a secret.
fn secret_connection_json() -> String {
    json!({
        "name": "vault", "tenant": "acme", "connector": "rest",
        "config": {
            "base_url": "http://127.0.0.1:9",
            "auth": {"type": "bearer"},
            "streams": [{"name": "contacts", "path": "/c", "records_path": "data",
                         "primary_key": ["id"]}]
        },
        "secrets": {"auth": {"token": "s3cret-value"}},
        "allowed_hosts": ["127.0.0.1"]
    })
    .to_string()
}

fn workflow_json(name: &str) -> String {
    json!({
        "name": name, "connection": "crm",
        "streams": [{"name": "users", "primary_key": ["id"]}],
        "batch_size": 1000,
        "schedule": {"trigger": {"kind": "interval", "every_secs": 3600}}
    })
    .to_string()
}

async fn define(ch: &Channel, records: u64, workflow: &str) {
    ConnectionsClient::new(ch.clone())
        .put_connection(pb::PutConnectionRequest {
            definition_json: connection_json(records),
        })
        .await
        .unwrap();
    WorkflowsClient::new(ch.clone())
        .put_workflow(pb::PutWorkflowRequest {
            definition_json: workflow_json(workflow),
        })
        .await
        .unwrap();
}

/// Starts a run of `workflow` now.
async fn trigger(ch: &Channel, workflow: &str) -> pb::RunSummary {
    WorkflowsClient::new(ch.clone())
        .trigger_workflow(pb::GetWorkflowRequest {
            name: workflow.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Follows a run's watch stream to its end; returns the updates.
async fn watch_to_end(ch: &Channel, run_id: &str) -> Vec<pb::RunUpdate> {
    let mut stream = RunsClient::new(ch.clone())
        .watch_run(pb::GetRunRequest {
            run_id: run_id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut updates = Vec::new();
    while let Some(u) = stream.message().await.unwrap() {
        let finished = u.finished;
        updates.push(u);
        if finished {
            break;
        }
    }
    updates
}

fn status_of(u: &pb::RunUpdate) -> String {
    u.run
        .as_ref()
        .unwrap()
        .summary
        .as_ref()
        .unwrap()
        .status
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_defines_triggers_watches_and_reads_what_a_run_synced() {
    let node = node(Tokens::default()).await;
    let ch = channel(node.addr).await;
    define(&ch, 30_000, "crm-users").await;

    // Secrets are write-only: the connection comes back with their names only.
    let mut connections = ConnectionsClient::new(ch.clone());
    let put = connections
        .put_connection(pb::PutConnectionRequest {
            definition_json: secret_connection_json(),
        })
        .await
        .unwrap()
        .into_inner();
    let conn = connections
        .get_connection(pb::GetConnectionRequest {
            name: "vault".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(conn.secret_names, vec!["auth".to_owned()]);
    assert_eq!(put, conn);
    let listed = connections
        .list_connections(pb::ListConnectionsRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.connections.len(), 2);
    assert!(!format!("{conn:?}{listed:?}").contains("s3cret-value"));
    let other = connections
        .list_connections(pb::ListConnectionsRequest {
            tenant: "globex".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(other.connections.is_empty());
    let check = connections
        .check_connection(pb::GetConnectionRequest { name: "crm".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(check.ok, "{check:?}");
    let streams = connections
        .discover_connection(pb::GetConnectionRequest { name: "crm".into() })
        .await
        .unwrap()
        .into_inner()
        .streams;
    assert!(streams.iter().any(|s| s.name == "users"), "{streams:?}");

    // Trigger, then watch it live to the end.
    let run = trigger(&ch, "crm-users").await;
    assert_eq!(run.workflow, "crm-users");
    assert_eq!(run.tenant, "acme");
    let updates = watch_to_end(&ch, &run.run_id).await;
    let last = updates.last().unwrap();
    assert!(last.finished);
    assert_eq!(status_of(last), "completed");
    let records: u64 = last
        .run
        .as_ref()
        .unwrap()
        .streams
        .iter()
        .map(|s| s.records)
        .sum();
    assert_eq!(records, 30_000);

    // The run with its events, and in the filtered list.
    let mut runs = RunsClient::new(ch.clone());
    let got = runs
        .get_run(pb::GetRunRequest {
            run_id: run.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.attempts, 1);
    assert_eq!(got.streams[0].created, 30_000);
    assert!(got.streams[0].complete);
    assert!(got.events.len() >= 5, "{} events", got.events.len());
    assert_eq!(got.events[0].seq, 1);
    let completed = runs
        .list_runs(pb::ListRunsRequest {
            workflow: "crm-users".into(),
            status: "completed".into(),
            ..pb::ListRunsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].run_id, run.run_id);
    let running = runs
        .list_runs(pb::ListRunsRequest {
            status: "running".into(),
            ..pb::ListRunsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert!(running.is_empty());

    // The hub: a record by key, and the change feed read on with its cursor.
    let mut hub = RecordsClient::new(ch.clone());
    let record = hub
        .get_record(pb::GetRecordRequest {
            connection: "crm".into(),
            stream: "users".into(),
            primary_key_json: "[42]".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.version, 1);
    let data: serde_json::Value = serde_json::from_str(&record.data_json).unwrap();
    assert_eq!(data["id"], 42);
    let mut after = 0;
    let mut created = 0;
    loop {
        let page = hub
            .read_changes(pb::ReadChangesRequest {
                connection: "crm".into(),
                stream: "users".into(),
                after,
                limit: 7_000,
            })
            .await
            .unwrap()
            .into_inner();
        if page.changes.is_empty() {
            break;
        }
        assert!(page.changes.iter().all(|c| c.kind == "created"));
        created += page.changes.len();
        after = page.next_cursor;
    }
    assert_eq!(created, 30_000);

    // What operators see: the run counted, its records, its queue wait.
    let text = scrape(node.metrics).await;
    assert_eq!(metric(&text, "sluice_records_total"), 30_000.0);
    assert_eq!(
        metric(&text, r#"sluice_runs_ended_total{kind="completed"}"#),
        1.0
    );
    assert_eq!(metric(&text, "sluice_queue_wait_seconds_count"), 1.0);
    assert_eq!(metric(&text, "sluice_run_duration_seconds_count"), 1.0);
    assert_eq!(metric(&text, "sluice_runs_driven"), 0.0);
    assert!(metric(&text, "sluice_store_bytes") > 0.0);
    // The scheduler's own CPU time, apart from the runs' work.
    assert!(
        metric(
            &text,
            r#"sluice_scheduler_cpu_seconds_total{kind="dispatch"}"#
        ) > 0.0
    );

    // Pause, resume, upcoming fires.
    let mut workflows = WorkflowsClient::new(ch.clone());
    let paused = workflows
        .pause_workflow(pb::GetWorkflowRequest {
            name: "crm-users".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(paused.paused);
    let resumed = workflows
        .resume_workflow(pb::GetWorkflowRequest {
            name: "crm-users".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resumed.paused);
    let fires = workflows
        .list_upcoming_fires(pb::ListUpcomingFiresRequest {
            name: "crm-users".into(),
            count: 3,
        })
        .await
        .unwrap()
        .into_inner()
        .fire_at_unix_ms;
    assert_eq!(fires.len(), 3);
    assert!(
        fires.windows(2).all(|w| w[1] - w[0] == 3_600_000),
        "{fires:?}"
    );
}

/// Runs list newest first: a limit keeps the newest, `created_before_unix_ms` pages
/// back from there, and `oldest_first` turns the order round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_list_newest_first_and_page_back() {
    let node = node(Tokens::default()).await;
    let ch = channel(node.addr).await;
    define(&ch, 10, "crm-users").await;
    let mut runs = RunsClient::new(ch.clone());
    let mut triggered = Vec::new();
    for _ in 0..5 {
        let run = trigger(&ch, "crm-users").await;
        watch_to_end(&ch, &run.run_id).await;
        triggered.push(run.run_id);
    }
    let mut list = async |request: pb::ListRunsRequest| -> Vec<pb::RunSummary> {
        let request = pb::ListRunsRequest {
            workflow: "crm-users".into(),
            ..request
        };
        runs.list_runs(request).await.unwrap().into_inner().runs
    };
    let ids = |listed: &[pb::RunSummary]| -> Vec<String> {
        listed.iter().map(|r| r.run_id.clone()).collect()
    };
    let newest: Vec<String> = triggered.iter().rev().cloned().collect();
    let all = list(pb::ListRunsRequest::default()).await;
    assert_eq!(ids(&all), newest);
    let first_page = list(pb::ListRunsRequest {
        limit: 2,
        ..pb::ListRunsRequest::default()
    })
    .await;
    assert_eq!(ids(&first_page), newest[..2]);
    // The next page: runs created before the oldest one shown.
    let before = first_page[1].created_at_unix_ms;
    let next_page = list(pb::ListRunsRequest {
        created_before_unix_ms: before,
        limit: 2,
        ..pb::ListRunsRequest::default()
    })
    .await;
    let expected: Vec<&pb::RunSummary> = all
        .iter()
        .filter(|r| r.created_at_unix_ms < before)
        .take(2)
        .collect();
    assert_eq!(
        ids(&next_page),
        expected
            .iter()
            .map(|r| r.run_id.clone())
            .collect::<Vec<_>>()
    );
    let oldest = list(pb::ListRunsRequest {
        limit: 2,
        oldest_first: true,
        ..pb::ListRunsRequest::default()
    })
    .await;
    assert_eq!(ids(&oldest), triggered[..2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_run_cannot_be_triggered_twice_and_can_be_cancelled() {
    let node = node(Tokens::default()).await;
    let ch = channel(node.addr).await;
    define(&ch, 5_000_000, "big").await;
    let mut workflows = WorkflowsClient::new(ch.clone());
    let run = workflows
        .trigger_workflow(pb::GetWorkflowRequest { name: "big".into() })
        .await
        .unwrap()
        .into_inner();
    let again = workflows
        .trigger_workflow(pb::GetWorkflowRequest { name: "big".into() })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert!(again.message().contains(&run.run_id), "{}", again.message());

    let e = workflows
        .delete_workflow(pb::GetWorkflowRequest { name: "big".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    let cancelled = RunsClient::new(ch.clone())
        .cancel_run(pb::CancelRunRequest {
            run_id: run.run_id.clone(),
            reason: "not today".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.run_id, run.run_id);
    let updates = watch_to_end(&ch, &run.run_id).await;
    assert_eq!(status_of(updates.last().unwrap()), "cancelled");
    // A cancelled run is not dead-lettered: retrying it is refused.
    let retry = RunsClient::new(ch.clone())
        .retry_run(pb::GetRunRequest {
            run_id: run.run_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(retry.code(), Code::FailedPrecondition, "{retry:?}");

    // With nothing in flight it can be deleted; its runs keep their history.
    workflows
        .delete_workflow(pb::GetWorkflowRequest { name: "big".into() })
        .await
        .unwrap();
    let e = workflows
        .get_workflow(pb::GetWorkflowRequest { name: "big".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let kept = RunsClient::new(ch.clone())
        .get_run(pb::GetRunRequest {
            run_id: run.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.summary.unwrap().status, "cancelled");
}

/// Answers that must be refusals, each with its code and a message that says what is
/// wrong; checked as they come, and every wrong one reported by what it was once all
/// are in.
#[derive(Default)]
struct Refusals {
    checked: usize,
    wrong: Vec<String>,
}

impl Refusals {
    fn check<T>(
        &mut self,
        what: &str,
        answer: Result<tonic::Response<T>, Status>,
        code: Code,
        says: fn(&str) -> bool,
    ) {
        self.checked += 1;
        match answer {
            Ok(_) => self.wrong.push(format!("- {what}: accepted")),
            Err(e) if e.code() == code && says(e.message()) => {}
            Err(e) => self.wrong.push(format!(
                "- {what}: expected {code:?}, got {:?}: {}",
                e.code(),
                e.message()
            )),
        }
    }

    fn assert_all_right(self) {
        assert!(
            self.wrong.is_empty(),
            "{} of {} bad requests were answered wrongly:\n{}",
            self.wrong.len(),
            self.checked,
            self.wrong.join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_code_naming_what_is_wrong_and_the_server_keeps_serving() {
    let node = node(Tokens::default()).await;
    let ch = channel(node.addr).await;
    let mut connections = ConnectionsClient::new(ch.clone());
    let mut workflows = WorkflowsClient::new(ch.clone());
    let mut runs = RunsClient::new(ch.clone());
    let mut records = RecordsClient::new(ch.clone());
    const NO_RUN: &str = "00000000-0000-7000-8000-000000000000";
    let mut refusals = Refusals::default();

    refusals.check(
        "a connection that is not JSON",
        connections
            .put_connection(pb::PutConnectionRequest {
                definition_json: "{not json".into(),
            })
            .await,
        Code::InvalidArgument,
        |m| m.starts_with("definition_json"),
    );
    let unknown_connector =
        json!({"name": "x", "tenant": "t", "connector": "no-such-connector", "config": {}});
    refusals.check(
        "a connection of an unknown connector",
        connections
            .put_connection(pb::PutConnectionRequest {
                definition_json: unknown_connector.to_string(),
            })
            .await,
        Code::InvalidArgument,
        |m| m.contains("no-such-connector"),
    );

    define(&ch, 100, "ok").await;
    let bad_cron = json!({
        "name": "cron", "connection": "crm", "streams": [{"name": "users"}],
        "schedule": {"trigger": {"kind": "cron", "expression": "every tuesday", "timezone": "UTC"}}
    });
    refusals.check(
        "a workflow with a bad cron expression",
        workflows
            .put_workflow(pb::PutWorkflowRequest {
                definition_json: bad_cron.to_string(),
            })
            .await,
        Code::InvalidArgument,
        |m| m.contains("schedule"),
    );
    let orphan = json!({"name": "orphan", "connection": "nowhere", "streams": [{"name": "users"}]});
    refusals.check(
        "a workflow of a connection that does not exist",
        workflows
            .put_workflow(pb::PutWorkflowRequest {
                definition_json: orphan.to_string(),
            })
            .await,
        Code::NotFound,
        |m| m.contains("nowhere"),
    );
    refusals.check(
        "a trigger of a workflow that does not exist",
        workflows
            .trigger_workflow(pb::GetWorkflowRequest {
                name: "missing".into(),
            })
            .await,
        Code::NotFound,
        |_| true,
    );
    refusals.check(
        "a trigger of a blank name",
        workflows
            .trigger_workflow(pb::GetWorkflowRequest { name: " ".into() })
            .await,
        Code::InvalidArgument,
        |m| m.starts_with("name"),
    );
    refusals.check(
        "a run id that is not one",
        runs.get_run(pb::GetRunRequest {
            run_id: "not-a-run".into(),
        })
        .await,
        Code::InvalidArgument,
        |m| m.starts_with("run_id"),
    );
    refusals.check(
        "a run that does not exist",
        runs.get_run(pb::GetRunRequest {
            run_id: NO_RUN.into(),
        })
        .await,
        Code::NotFound,
        |_| true,
    );
    refusals.check(
        "a watch of a run that does not exist",
        runs.watch_run(pb::GetRunRequest {
            run_id: NO_RUN.into(),
        })
        .await,
        Code::NotFound,
        |_| true,
    );
    refusals.check(
        "a list of runs by an unknown status",
        runs.list_runs(pb::ListRunsRequest {
            status: "sleeping".into(),
            ..pb::ListRunsRequest::default()
        })
        .await,
        Code::InvalidArgument,
        |m| m.contains("dead_lettered"),
    );
    refusals.check(
        "a primary key that is not a JSON array",
        records
            .get_record(pb::GetRecordRequest {
                connection: "crm".into(),
                stream: "users".into(),
                primary_key_json: "42".into(),
            })
            .await,
        Code::InvalidArgument,
        |m| m.starts_with("primary_key_json"),
    );
    refusals.assert_all_right();

    // Still serving, and nothing of the refused requests was stored.
    let listed = workflows
        .list_workflows(pb::ListWorkflowsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workflows;
    let names: Vec<&str> = listed.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, vec!["ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_a_read_only_token_cannot_change_anything() {
    let tokens = Tokens::new([
        ("writer-token".to_owned(), Scope::Write),
        ("reader-token".to_owned(), Scope::Read),
    ]);
    let node = node(tokens).await;
    let ch = channel(node.addr).await;
    let mut workflows = WorkflowsClient::new(ch.clone());

    let e = workflows
        .list_workflows(pb::ListWorkflowsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = workflows
        .list_workflows(with_token(pb::ListWorkflowsRequest::default(), "guess"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(!e.message().contains("writer-token"));

    let put = |token: &str| {
        with_token(
            pb::PutConnectionRequest {
                definition_json: connection_json(10),
            },
            token,
        )
    };
    let mut connections = ConnectionsClient::new(ch.clone());
    let e = connections
        .put_connection(put("reader-token"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("read-only"), "{}", e.message());
    connections
        .put_connection(put("writer-token"))
        .await
        .unwrap();

    let listed = connections
        .list_connections(with_token(
            pb::ListConnectionsRequest::default(),
            "reader-token",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.connections.len(), 1);
    let e = RunsClient::new(ch.clone())
        .cancel_run(with_token(
            pb::CancelRunRequest {
                run_id: "00000000-0000-7000-8000-000000000000".into(),
                reason: String::new(),
            },
            "reader-token",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_serving_and_reflection_lists_the_services() {
    use reflection::ServerReflectionRequest;
    use reflection::server_reflection_client::ServerReflectionClient;
    use reflection::server_reflection_request::MessageRequest;
    use reflection::server_reflection_response::MessageResponse;
    use tokio_stream::StreamExt;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1 as reflection;

    // Both stay open when tokens are required, as probes and grpcurl expect.
    let node = node(Tokens::new([("t".to_owned(), Scope::Write)])).await;
    let ch = channel(node.addr).await;
    for service in ["", "sluice.v1.Runs", "sluice.v1.Workflows"] {
        let health = HealthClient::new(ch.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            health.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(ch.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "sluice.v1.Connectors",
        "sluice.v1.Connections",
        "sluice.v1.Workflows",
        "sluice.v1.Runs",
        "sluice.v1.Records",
        "sluice.v1.RateLimits",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_are_registered_inspected_and_removed_only_when_unused() {
    use sluice_api::pb::connectors_client::ConnectorsClient;
    let node = node(Tokens::default()).await;
    let ch = channel(node.addr).await;
    let mut connectors = ConnectorsClient::new(ch.clone());

    let listed = connectors
        .list_connectors(pb::ListConnectorsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .connectors;
    for name in ["sample", "rest"] {
        let c = listed.iter().find(|c| c.name == name).unwrap();
        assert!(c.first_party && c.digest.starts_with("sha256:"), "{c:?}");
    }

    let wasm = std::fs::read(sluice_artifacts::TICKETS_SOURCE).unwrap();
    let register = |name: &str, wasm: Vec<u8>| pb::RegisterConnectorRequest {
        name: name.into(),
        version: "1.2.0".into(),
        wasm,
    };
    let tickets = connectors
        .register_connector(register("tickets", wasm.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (tickets.version.as_str(), tickets.first_party),
        ("1.2.0", false)
    );
    assert_eq!(tickets.digest.len(), "sha256:".len() + 64, "{tickets:?}");
    let got = connectors
        .get_connector(pb::GetConnectorRequest {
            name: "tickets".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let spec: serde_json::Value = serde_json::from_str(&got.spec_json).unwrap();
    assert!(spec.is_object(), "{spec}");

    // A connection may use it; then it cannot be removed.
    ConnectionsClient::new(ch.clone())
        .put_connection(pb::PutConnectionRequest {
            definition_json: json!({"name": "helpdesk", "tenant": "acme",
                                    "connector": "tickets", "config": {}})
            .to_string(),
        })
        .await
        .unwrap();
    let e = connectors
        .remove_connector(pb::GetConnectorRequest {
            name: "tickets".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("helpdesk"), "{}", e.message());

    // An unused one goes, and is gone.
    connectors
        .register_connector(register("tickets-old", wasm.clone()))
        .await
        .unwrap();
    connectors
        .remove_connector(pb::GetConnectorRequest {
            name: "tickets-old".into(),
        })
        .await
        .unwrap();
    let e = connectors
        .get_connector(pb::GetConnectorRequest {
            name: "tickets-old".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // What cannot be registered, and why.
    let not_a_connector = std::fs::read(sluice_artifacts::TEST_NOT_A_CONNECTOR).unwrap();
    for (name, bytes, code, says) in [
        ("odd", not_a_connector, Code::InvalidArgument, "odd"),
        ("junk", b"not wasm".to_vec(), Code::InvalidArgument, "junk"),
        (
            "sample",
            wasm.clone(),
            Code::FailedPrecondition,
            "first-party",
        ),
        ("../escape", wasm.clone(), Code::InvalidArgument, "letters"),
        ("empty", Vec::new(), Code::InvalidArgument, "wasm"),
    ] {
        let e = connectors
            .register_connector(register(name, bytes))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{name}: {e:?}");
        assert!(e.message().contains(says), "{name}: {}", e.message());
    }
    let registered: Vec<(String, Vec<String>)> = connectors
        .list_connectors(pb::ListConnectorsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .connectors
        .into_iter()
        .filter(|c| !c.first_party)
        .map(|c| (c.name, c.used_by))
        .collect();
    assert_eq!(
        registered,
        vec![("tickets".to_owned(), vec!["helpdesk".to_owned()])]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_http_requests_and_connector_lines_are_kept_and_filtered() {
    let (app, _contacts) = sluice_testkit::servers::contacts::router(2_500);
    let api_addr = sluice_testkit::serve(app).await;
    let node = node(Tokens::default()).await;
    let ch = channel(node.addr).await;
    let mut config = sluice_testkit::servers::contacts::rest_config(api_addr);
    config["auth"] = json!({"type": "bearer"});
    ConnectionsClient::new(ch.clone())
        .put_connection(pb::PutConnectionRequest {
            definition_json: json!({
                "name": "contacts", "tenant": "acme", "connector": "rest",
                "config": config, "secrets": {"auth": {"token": "tok-s3cret"}},
                "allowed_hosts": ["127.0.0.1"]
            })
            .to_string(),
        })
        .await
        .unwrap();
    WorkflowsClient::new(ch.clone())
        .put_workflow(pb::PutWorkflowRequest {
            definition_json: json!({"name": "contacts-sync", "connection": "contacts",
                                    "streams": [{"name": "contacts"}]})
            .to_string(),
        })
        .await
        .unwrap();
    let run = trigger(&ch, "contacts-sync").await;
    let updates = watch_to_end(&ch, &run.run_id).await;
    assert_eq!(status_of(updates.last().unwrap()), "completed");

    let logs = |kind: &str, min_level: &str, limit: u32| pb::GetRunLogsRequest {
        run_id: run.run_id.clone(),
        min_level: min_level.into(),
        kind: kind.into(),
        attempt: 0,
        limit,
        ..pb::GetRunLogsRequest::default()
    };
    let mut runs = RunsClient::new(ch.clone());
    let requests = runs
        .get_run_logs(logs("requests", "", 0))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(!requests.is_empty());
    for e in &requests {
        let r = e.request.as_ref().unwrap();
        let host = api_addr.to_string();
        assert_eq!(
            (r.method.as_str(), r.host.as_str(), r.status),
            ("GET", host.as_str(), 200),
            "{e:?}"
        );
        assert!(r.path.starts_with("/contacts/"), "{e:?}");
        assert!(r.bytes_received > 0);
        assert_eq!(e.attempt, 1);
        assert_eq!(e.stream, "contacts", "{e:?}");
    }
    let everything = runs
        .get_run_logs(logs("", "", 0))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(!format!("{everything:?}").contains("tok-s3cret"));
    // Nothing failed, so nothing is at warn or above; a limit keeps the newest.
    let warnings = runs
        .get_run_logs(logs("", "warn", 0))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(warnings.is_empty(), "{warnings:?}");
    let newest = runs
        .get_run_logs(logs("requests", "", 2))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(newest.as_slice(), &requests[requests.len() - 2..]);
    let other_stream = runs
        .get_run_logs(pb::GetRunLogsRequest {
            stream: "deals".into(),
            ..logs("", "", 0)
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(other_stream.is_empty(), "{other_stream:?}");
    // Across runs: the newest runs of a connection (here one), each entry naming it.
    let of_connection = runs
        .get_run_logs(pb::GetRunLogsRequest {
            connection: "contacts".into(),
            tenant: "acme".into(),
            ..pb::GetRunLogsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(of_connection.len(), everything.len());
    assert!(of_connection.iter().all(|e| e.run_id == run.run_id));
    let of_other_tenant = runs
        .get_run_logs(pb::GetRunLogsRequest {
            tenant: "globex".into(),
            ..pb::GetRunLogsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(of_other_tenant.is_empty());
    let e = runs
        .get_run_logs(pb::GetRunLogsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("run_id"), "{}", e.message());
    let e = runs
        .get_run_logs(logs("everything", "", 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("kind"), "{}", e.message());

    // The limiter's view: one key for the run's requests, named by a digest of the
    // secret and never by the secret; the host's breaker closed.
    let mut limits = RateLimitsClient::new(ch.clone());
    let view = limits
        .list_rate_limits(pb::ListRateLimitsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!format!("{view:?}").contains("tok-s3cret"));
    assert_eq!(view.keys.len(), 1, "{view:?}");
    let key = &view.keys[0];
    assert_eq!(
        (key.connector.as_str(), key.endpoint.as_str()),
        ("rest", api_addr.to_string().as_str())
    );
    assert!(key.credential.starts_with("secrets:"), "{key:?}");
    assert_eq!(key.requests, requests.len() as u64);
    assert_eq!((key.in_flight, key.waiting, key.throttled), (0, 0, 0));
    assert_eq!(
        (key.window_limit, key.learned_left, key.paused_ms),
        (0, -1, 0)
    );
    assert_eq!(view.breakers.len(), 1);
    assert_eq!(
        (view.breakers[0].state.as_str(), view.breakers[0].opened),
        ("closed", 0)
    );
    let none = limits
        .list_rate_limits(pb::ListRateLimitsRequest {
            connector: "sample".into(),
            ..pb::ListRateLimitsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.keys.is_empty());
    let metrics = scrape(node.metrics).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_rate_limit_requests_total{connector=\"rest\"")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_over_tls_and_a_plaintext_client_gets_nothing() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let tls = sluice_api::Tls {
        cert_pem: cert_pem.clone().into_bytes(),
        key_pem: certified.signing_key.serialize_pem().into_bytes(),
    };
    let node = node_with(Tokens::new([("t".to_owned(), Scope::Write)]), Some(tls)).await;
    let secure = Channel::from_shared(format!("https://localhost:{}", node.addr.port()))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(cert_pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let listed = WorkflowsClient::new(secure)
        .list_workflows(with_token(pb::ListWorkflowsRequest::default(), "t"))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.workflows.is_empty());

    // Plaintext to a TLS port never reaches a handler.
    let plain = Channel::from_shared(format!("http://{}", node.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(plain) = plain {
        let e = WorkflowsClient::new(plain)
            .list_workflows(with_token(pb::ListWorkflowsRequest::default(), "t"))
            .await
            .unwrap_err();
        assert_ne!(e.code(), Code::Ok);
    }
}
