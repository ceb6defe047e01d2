//! Tenant-scoped API tokens through the real gRPC server: an operator token of tenant
//! `a` calls every method of every service of the API (enumerated from the API's own
//! descriptors, so a method added later without a case here fails the test) on
//! tenant `b`'s objects and gets NOT_FOUND, PERMISSION_DENIED or an answer without
//! them, while the same calls on `a`'s objects work; `b`'s objects are unchanged
//! afterwards. Also: the roles of a tokens file with a hashed token, and `/metrics`
//! behind its own token.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use prost::Message;
use serde_json::json;
use sluice_api::pb::connections_client::ConnectionsClient;
use sluice_api::pb::connectors_client::ConnectorsClient;
use sluice_api::pb::nodes_client::NodesClient;
use sluice_api::pb::rate_limits_client::RateLimitsClient;
use sluice_api::pb::records_client::RecordsClient;
use sluice_api::pb::runs_client::RunsClient;
use sluice_api::pb::workflows_client::WorkflowsClient;
use sluice_api::pb::{self};
use sluice_api::{ApiServer, Scope, TokenEntry, Tokens};
use sluice_testkit::servers::limited_api::{self, LimitConfig, LimitHeaders, RetryAfter};
use sluice_testkit::{NodeBuilder, NodeDir};
use tonic::transport::Channel;

use crate::api::{channel, with_token};
use tonic::{Code, Status};

const NODE: NodeBuilder = NodeBuilder::new()
    .cache_under(env!("CARGO_TARGET_TMPDIR"), "api-tenants-components")
    .worker("api-tenants-node");

const ROOT: &str = "root-token";
const TOKEN_A: &str = "operator-of-a";
const READER_A: &str = "reader-of-a";

/// The parts of `google.protobuf.FileDescriptorSet` naming services and methods.
#[derive(Clone, PartialEq, Message)]
struct FileSet {
    #[prost(message, repeated, tag = "1")]
    file: Vec<File>,
}

#[derive(Clone, PartialEq, Message)]
struct File {
    #[prost(string, tag = "2")]
    package: String,
    #[prost(message, repeated, tag = "6")]
    service: Vec<Service>,
}

#[derive(Clone, PartialEq, Message)]
struct Service {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    method: Vec<Method>,
}

#[derive(Clone, PartialEq, Message)]
struct Method {
    #[prost(string, tag = "1")]
    name: String,
}

/// Every `Service/Method` of the `sluice.v1` API.
fn api_methods() -> BTreeSet<String> {
    let set = FileSet::decode(sluice_api::FILE_DESCRIPTOR_SET).unwrap();
    set.file
        .iter()
        .filter(|f| f.package == "sluice.v1")
        .flat_map(|f| &f.service)
        .flat_map(|s| {
            s.method
                .iter()
                .map(move |m| format!("{}/{}", s.name, m.name))
        })
        .collect()
}

struct Node {
    addr: SocketAddr,
    metrics: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: NodeDir,
}

fn entry(value: serde_json::Value) -> TokenEntry {
    serde_json::from_value(value).unwrap()
}

async fn node() -> Node {
    let dir = NodeDir::new();
    let engine = NODE.test_engine_at(dir.path()).await;
    // Tenant `a`'s operator token is stored as its SHA-256 only.
    let hashed = sluice_api::token_sha256(TOKEN_A);
    let tokens = Tokens::new([(ROOT.to_owned(), Scope::Write)])
        .with_entries(&[
            entry(json!({"token_sha256": hashed, "role": "operator", "tenants": ["a"]})),
            entry(json!({"token": READER_A, "role": "read-only", "tenants": ["a"]})),
        ])
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = metrics_listener.local_addr().unwrap();
    tokio::spawn(sluice_api::serve_metrics_with_token(
        engine.clone(),
        metrics_listener,
        Some("scrape-secret".to_owned()),
        std::future::pending(),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ApiServer::new(engine, tokens).serve(listener, async {
        let _ = stopped.await;
    }));
    Node {
        addr,
        metrics,
        _stop: stop,
        _dir: dir,
    }
}

/// A `rest` connection of `tenant` to the API at `addr`, on a named credential.
fn connection(name: &str, tenant: &str, addr: SocketAddr) -> String {
    json!({
        "name": name, "tenant": tenant, "connector": "rest",
        "config": {
            "base_url": format!("http://{addr}"),
            "streams": [{
                "name": "items", "path": "/items/page-1.json", "records_path": "data",
                "primary_key": ["id"], "pagination": {"style": "next_link", "path": "next"}
            }]
        },
        "secrets": {"auth": {"type": "bearer", "token": format!("secret-of-{tenant}")}},
        "allowed_hosts": [addr.to_string()],
        "rate_limits": {"credential": format!("cred-{tenant}")}
    })
    .to_string()
}

fn workflow(name: &str, connection: &str) -> String {
    json!({
        "name": name, "connection": connection,
        "streams": [{"name": "items"}], "batch_size": 1000,
        "schedule": {"trigger": {"kind": "interval", "every_secs": 3600}}
    })
    .to_string()
}

/// Waits (polling every 20 ms, at most 60 s) until the run ends; its status.
async fn finished(ch: &Channel, run: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = RunsClient::new(ch.clone())
            .get_run(with_token(pb::GetRunRequest { run_id: run.into() }, ROOT))
            .await
            .unwrap()
            .into_inner();
        let status = r.summary.unwrap().status;
        if ["completed", "cancelled", "dead_lettered"].contains(&status.as_str()) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run} is still {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The methods called, to compare with the API's.
struct Covered(Mutex<BTreeSet<String>>);

impl Covered {
    fn mark(&self, method: &str) {
        self.0.lock().unwrap().insert(method.to_owned());
    }
}

#[track_caller]
fn denied<T: std::fmt::Debug>(what: &str, got: Result<T, Status>, code: Code) -> Status {
    match got {
        Ok(v) => panic!("{what}: answered {v:?}, expected {code:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {s:?}");
            s
        }
    }
}

#[tokio::test]
async fn a_tenants_token_sees_and_changes_nothing_of_another_tenant_through_any_method() {
    let (app, _api) = limited_api::router(LimitConfig {
        records: 3,
        page_size: 10,
        limit: 1000,
        window: Duration::from_secs(1),
        headers: LimitHeaders::None,
        retry_after: RetryAfter::Seconds,
    });
    let http = sluice_testkit::serve(app).await;
    let node = node().await;
    let ch = channel(node.addr).await;
    let mut connections = ConnectionsClient::new(ch.clone());
    let mut workflows = WorkflowsClient::new(ch.clone());
    let mut runs = RunsClient::new(ch.clone());
    let mut records = RecordsClient::new(ch.clone());
    let mut connectors = ConnectorsClient::new(ch.clone());
    let mut rate_limits = RateLimitsClient::new(ch.clone());
    let mut nodes = NodesClient::new(ch.clone());

    // Tenant b's objects, made by the admin; tenant a's, made by a's own token.
    for (tenant, token) in [("b", ROOT), ("a", TOKEN_A)] {
        connections
            .put_connection(with_token(
                pb::PutConnectionRequest {
                    definition_json: connection(&format!("conn-{tenant}"), tenant, http),
                },
                token,
            ))
            .await
            .unwrap();
        workflows
            .put_workflow(with_token(
                pb::PutWorkflowRequest {
                    definition_json: workflow(&format!("wf-{tenant}"), &format!("conn-{tenant}")),
                },
                token,
            ))
            .await
            .unwrap();
    }
    let mut run_of = std::collections::HashMap::new();
    for (tenant, token) in [("b", ROOT), ("a", TOKEN_A)] {
        let run = workflows
            .trigger_workflow(with_token(
                pb::GetWorkflowRequest {
                    name: format!("wf-{tenant}"),
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner()
            .run_id;
        assert_eq!(finished(&ch, &run).await, "completed", "run of {tenant}");
        run_of.insert(tenant, run);
    }
    let (run_a, run_b) = (run_of["a"].clone(), run_of["b"].clone());
    let covered = Covered(Mutex::new(BTreeSet::new()));
    let a = TOKEN_A;
    let unknown_connection = |name: &str| format!("no connection named `{name}` is defined");

    // ---- Connections
    covered.mark("Connections/PutConnection");
    let s = denied(
        "put into tenant b",
        connections
            .put_connection(with_token(
                pb::PutConnectionRequest {
                    definition_json: connection("conn-new", "b", http),
                },
                a,
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(
        s.message(),
        "tenant `b` is outside this API token's tenants (a)"
    );
    denied(
        "replace b's connection",
        connections
            .put_connection(with_token(
                pb::PutConnectionRequest {
                    definition_json: connection("conn-b", "a", http),
                },
                a,
            ))
            .await,
        Code::AlreadyExists,
    );
    connections
        .put_connection(with_token(
            pb::PutConnectionRequest {
                definition_json: connection("conn-a", "a", http),
            },
            a,
        ))
        .await
        .unwrap();

    covered.mark("Connections/GetConnection");
    let hidden = denied(
        "get b's connection",
        connections
            .get_connection(with_token(
                pb::GetConnectionRequest {
                    name: "conn-b".into(),
                },
                a,
            ))
            .await,
        Code::NotFound,
    );
    let missing = denied(
        "get a missing connection",
        connections
            .get_connection(with_token(
                pb::GetConnectionRequest {
                    name: "conn-zz".into(),
                },
                a,
            ))
            .await,
        Code::NotFound,
    );
    // Another tenant's object looks exactly like one that does not exist.
    assert_eq!(
        hidden.message().replace("conn-b", "X"),
        missing.message().replace("conn-zz", "X")
    );
    assert!(
        hidden.message().contains(&unknown_connection("conn-b")),
        "{hidden:?}"
    );
    let own = connections
        .get_connection(with_token(
            pb::GetConnectionRequest {
                name: "conn-a".into(),
            },
            a,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.tenant, "a");

    covered.mark("Connections/ListConnections");
    let names = |l: Vec<pb::Connection>| l.into_iter().map(|c| c.name).collect::<Vec<_>>();
    let listed = connections
        .list_connections(with_token(pb::ListConnectionsRequest::default(), a))
        .await
        .unwrap()
        .into_inner()
        .connections;
    assert_eq!(names(listed), ["conn-a"]);
    let of_b = connections
        .list_connections(with_token(
            pb::ListConnectionsRequest {
                tenant: "b".into(),
                ..Default::default()
            },
            a,
        ))
        .await
        .unwrap()
        .into_inner()
        .connections;
    assert!(of_b.is_empty(), "{of_b:?}");

    covered.mark("Connections/CheckConnection");
    denied(
        "check b's connection",
        connections
            .check_connection(with_token(
                pb::GetConnectionRequest {
                    name: "conn-b".into(),
                },
                a,
            ))
            .await,
        Code::NotFound,
    );
    assert!(
        connections
            .check_connection(with_token(
                pb::GetConnectionRequest {
                    name: "conn-a".into()
                },
                a
            ))
            .await
            .unwrap()
            .into_inner()
            .ok
    );

    covered.mark("Connections/DiscoverConnection");
    denied(
        "discover b's connection",
        connections
            .discover_connection(with_token(
                pb::GetConnectionRequest {
                    name: "conn-b".into(),
                },
                a,
            ))
            .await,
        Code::NotFound,
    );
    let streams = connections
        .discover_connection(with_token(
            pb::GetConnectionRequest {
                name: "conn-a".into(),
            },
            a,
        ))
        .await
        .unwrap()
        .into_inner()
        .streams;
    assert_eq!(streams[0].name, "items");

    // ---- Workflows
    let wf = |name: &str| pb::GetWorkflowRequest { name: name.into() };
    covered.mark("Workflows/PutWorkflow");
    denied(
        "a workflow on b's connection",
        workflows
            .put_workflow(with_token(
                pb::PutWorkflowRequest {
                    definition_json: workflow("wf-new", "conn-b"),
                },
                a,
            ))
            .await,
        Code::NotFound,
    );
    denied(
        "replace b's workflow",
        workflows
            .put_workflow(with_token(
                pb::PutWorkflowRequest {
                    definition_json: workflow("wf-b", "conn-a"),
                },
                a,
            ))
            .await,
        Code::AlreadyExists,
    );

    covered.mark("Workflows/GetWorkflow");
    denied(
        "get b's workflow",
        workflows.get_workflow(with_token(wf("wf-b"), a)).await,
        Code::NotFound,
    );
    workflows
        .get_workflow(with_token(wf("wf-a"), a))
        .await
        .unwrap();

    covered.mark("Workflows/ListWorkflows");
    let listed: Vec<String> = workflows
        .list_workflows(with_token(pb::ListWorkflowsRequest::default(), a))
        .await
        .unwrap()
        .into_inner()
        .workflows
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(listed, ["wf-a"]);
    let on_b = workflows
        .list_workflows(with_token(
            pb::ListWorkflowsRequest {
                connection: "conn-b".into(),
                ..Default::default()
            },
            a,
        ))
        .await
        .unwrap()
        .into_inner()
        .workflows;
    assert!(on_b.is_empty());

    covered.mark("Workflows/PauseWorkflow");
    denied(
        "pause b's workflow",
        workflows.pause_workflow(with_token(wf("wf-b"), a)).await,
        Code::NotFound,
    );
    assert!(
        workflows
            .pause_workflow(with_token(wf("wf-a"), a))
            .await
            .unwrap()
            .into_inner()
            .paused
    );
    covered.mark("Workflows/ResumeWorkflow");
    denied(
        "resume b's workflow",
        workflows.resume_workflow(with_token(wf("wf-b"), a)).await,
        Code::NotFound,
    );
    workflows
        .resume_workflow(with_token(wf("wf-a"), a))
        .await
        .unwrap();

    covered.mark("Workflows/ListUpcomingFires");
    denied(
        "b's upcoming fires",
        workflows
            .list_upcoming_fires(with_token(
                pb::ListUpcomingFiresRequest {
                    name: "wf-b".into(),
                    count: 3,
                },
                a,
            ))
            .await,
        Code::NotFound,
    );
    let fires = workflows
        .list_upcoming_fires(with_token(
            pb::ListUpcomingFiresRequest {
                name: "wf-a".into(),
                count: 3,
            },
            a,
        ))
        .await
        .unwrap()
        .into_inner()
        .fire_at_unix_ms;
    assert_eq!(fires.len(), 3);

    covered.mark("Workflows/TriggerWorkflow");
    denied(
        "trigger b's workflow",
        workflows.trigger_workflow(with_token(wf("wf-b"), a)).await,
        Code::NotFound,
    );
    let again = workflows
        .trigger_workflow(with_token(wf("wf-a"), a))
        .await
        .unwrap()
        .into_inner()
        .run_id;
    assert_eq!(finished(&ch, &again).await, "completed");

    // ---- Runs
    let run = |id: &str| pb::GetRunRequest { run_id: id.into() };
    covered.mark("Runs/ListRuns");
    let listed = runs
        .list_runs(with_token(pb::ListRunsRequest::default(), a))
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert!(
        !listed.is_empty() && listed.iter().all(|r| r.tenant == "a"),
        "{listed:?}"
    );
    assert!(listed.iter().any(|r| r.run_id == run_a));
    for filter in [
        pb::ListRunsRequest {
            tenant: "b".into(),
            ..Default::default()
        },
        pb::ListRunsRequest {
            workflow: "wf-b".into(),
            ..Default::default()
        },
        pb::ListRunsRequest {
            connection: "conn-b".into(),
            ..Default::default()
        },
        pb::ListRunsRequest {
            status: "completed".into(),
            ..Default::default()
        },
    ] {
        let got = runs
            .list_runs(with_token(filter.clone(), a))
            .await
            .unwrap()
            .into_inner()
            .runs;
        assert!(got.iter().all(|r| r.tenant == "a"), "{filter:?}: {got:?}");
    }

    covered.mark("Runs/GetRun");
    denied(
        "get b's run",
        runs.get_run(with_token(run(&run_b), a)).await,
        Code::NotFound,
    );
    runs.get_run(with_token(run(&run_a), a)).await.unwrap();

    covered.mark("Runs/WatchRun");
    denied(
        "watch b's run",
        runs.watch_run(with_token(run(&run_b), a)).await,
        Code::NotFound,
    );
    let mut watch = runs
        .watch_run(with_token(run(&run_a), a))
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.run.unwrap().summary.unwrap().run_id, run_a);

    covered.mark("Runs/CancelRun");
    denied(
        "cancel b's run",
        runs.cancel_run(with_token(
            pb::CancelRunRequest {
                run_id: run_b.clone(),
                reason: String::new(),
            },
            a,
        ))
        .await,
        Code::NotFound,
    );
    // a's run ended: refused for its status, not hidden.
    denied(
        "cancel a's ended run",
        runs.cancel_run(with_token(
            pb::CancelRunRequest {
                run_id: run_a.clone(),
                reason: String::new(),
            },
            a,
        ))
        .await,
        Code::FailedPrecondition,
    );

    covered.mark("Runs/RetryRun");
    denied(
        "retry b's run",
        runs.retry_run(with_token(run(&run_b), a)).await,
        Code::NotFound,
    );
    denied(
        "retry a's completed run",
        runs.retry_run(with_token(run(&run_a), a)).await,
        Code::FailedPrecondition,
    );

    covered.mark("Runs/GetRunLogs");
    denied(
        "b's run logs",
        runs.get_run_logs(with_token(
            pb::GetRunLogsRequest {
                run_id: run_b.clone(),
                ..Default::default()
            },
            a,
        ))
        .await,
        Code::NotFound,
    );
    for filter in [
        pb::GetRunLogsRequest {
            tenant: "b".into(),
            ..Default::default()
        },
        pb::GetRunLogsRequest {
            workflow: "wf-b".into(),
            ..Default::default()
        },
        pb::GetRunLogsRequest {
            connection: "conn-b".into(),
            ..Default::default()
        },
    ] {
        let got = runs
            .get_run_logs(with_token(filter.clone(), a))
            .await
            .unwrap()
            .into_inner();
        assert!(got.entries.is_empty(), "{filter:?}: {:?}", got.entries);
    }
    let own_logs = runs
        .get_run_logs(with_token(
            pb::GetRunLogsRequest {
                run_id: run_a.clone(),
                ..Default::default()
            },
            a,
        ))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(!own_logs.is_empty());

    // ---- Records
    covered.mark("Records/GetRecord");
    let key = |connection: &str| pb::GetRecordRequest {
        connection: connection.into(),
        stream: "items".into(),
        primary_key_json: "[1]".into(),
    };
    denied(
        "b's record",
        records.get_record(with_token(key("conn-b"), a)).await,
        Code::NotFound,
    );
    records
        .get_record(with_token(key("conn-a"), a))
        .await
        .unwrap();
    covered.mark("Records/ReadChanges");
    let feed = |connection: &str| pb::ReadChangesRequest {
        connection: connection.into(),
        stream: "items".into(),
        after: 0,
        limit: 10,
    };
    denied(
        "b's change feed",
        records.read_changes(with_token(feed("conn-b"), a)).await,
        Code::NotFound,
    );
    let own_feed = records
        .read_changes(with_token(feed("conn-a"), a))
        .await
        .unwrap()
        .into_inner();
    assert!(!own_feed.changes.is_empty());

    // ---- Rate limits: only the keys of a's credentials.
    covered.mark("RateLimits/ListRateLimits");
    let all = rate_limits
        .list_rate_limits(with_token(pb::ListRateLimitsRequest::default(), ROOT))
        .await
        .unwrap()
        .into_inner();
    let credentials = |keys: &[pb::RateLimitKey]| {
        keys.iter()
            .map(|k| k.credential.clone())
            .collect::<BTreeSet<_>>()
    };
    assert!(credentials(&all.keys).contains("cred-b"), "{:?}", all.keys);
    let seen = rate_limits
        .list_rate_limits(with_token(pb::ListRateLimitsRequest::default(), a))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        credentials(&seen.keys),
        BTreeSet::from(["cred-a".to_owned()])
    );
    let asked_for_b = rate_limits
        .list_rate_limits(with_token(
            pb::ListRateLimitsRequest {
                credential: "cred-b".into(),
                ..Default::default()
            },
            a,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(asked_for_b.keys.is_empty());

    // ---- Connectors: the registry belongs to no tenant.
    covered.mark("Connectors/ListConnectors");
    let rest =
        |list: Vec<pb::ConnectorInfo>| list.into_iter().find(|c| c.name == "rest").unwrap().used_by;
    let listed = connectors
        .list_connectors(with_token(pb::ListConnectorsRequest::default(), a))
        .await
        .unwrap()
        .into_inner()
        .connectors;
    assert_eq!(rest(listed), ["conn-a"]);
    covered.mark("Connectors/GetConnector");
    let got = connectors
        .get_connector(with_token(
            pb::GetConnectorRequest {
                name: "rest".into(),
            },
            a,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.used_by, ["conn-a"]);
    covered.mark("Connectors/RegisterConnector");
    let wasm = std::fs::read(sluice_artifacts::TICKETS_SOURCE).unwrap();
    let s = denied(
        "register with a tenant's token",
        connectors
            .register_connector(with_token(
                pb::RegisterConnectorRequest {
                    name: "tickets".into(),
                    version: "1".into(),
                    wasm,
                },
                a,
            ))
            .await,
        Code::PermissionDenied,
    );
    assert!(s.message().contains("needs admin"), "{s:?}");
    covered.mark("Connectors/RemoveConnector");
    denied(
        "remove with a tenant's token",
        connectors
            .remove_connector(with_token(
                pb::GetConnectorRequest {
                    name: "rest".into(),
                },
                a,
            ))
            .await,
        Code::PermissionDenied,
    );

    // ---- Nodes: no tenant's.
    covered.mark("Nodes/ListNodes");
    denied(
        "list nodes",
        nodes
            .list_nodes(with_token(pb::ListNodesRequest {}, a))
            .await,
        Code::PermissionDenied,
    );
    covered.mark("Nodes/DrainNode");
    denied(
        "drain a node",
        nodes
            .drain_node(with_token(pb::DrainNodeRequest { node: "any".into() }, a))
            .await,
        Code::PermissionDenied,
    );

    covered.mark("Workflows/DeleteWorkflow");
    denied(
        "delete b's workflow",
        workflows.delete_workflow(with_token(wf("wf-b"), a)).await,
        Code::NotFound,
    );
    workflows
        .put_workflow(with_token(
            pb::PutWorkflowRequest {
                definition_json: workflow("wf-a-spare", "conn-a"),
            },
            a,
        ))
        .await
        .unwrap();
    workflows
        .delete_workflow(with_token(wf("wf-a-spare"), a))
        .await
        .unwrap();

    // Every method of the API was called above; a new one needs a case here.
    let covered = covered.0.into_inner().unwrap();
    assert_eq!(covered, api_methods(), "methods without a tenant case");

    // Tenant b's objects are as they were.
    let b = connections
        .get_connection(with_token(
            pb::GetConnectionRequest {
                name: "conn-b".into(),
            },
            ROOT,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.tenant, "b");
    let wf_b = workflows
        .get_workflow(with_token(wf("wf-b"), ROOT))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((wf_b.connection.as_str(), wf_b.paused), ("conn-b", false));
    let runs_b = runs
        .list_runs(with_token(
            pb::ListRunsRequest {
                tenant: "b".into(),
                ..Default::default()
            },
            ROOT,
        ))
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(runs_b.len(), 1);

    // A read-only token of a reads a's objects and changes nothing.
    let s = denied(
        "trigger with a read-only token",
        workflows
            .trigger_workflow(with_token(wf("wf-a"), READER_A))
            .await,
        Code::PermissionDenied,
    );
    assert!(s.message().contains("read-only"), "{s:?}");
    workflows
        .get_workflow(with_token(wf("wf-a"), READER_A))
        .await
        .unwrap();
    denied(
        "read-only token on b",
        workflows
            .get_workflow(with_token(wf("wf-b"), READER_A))
            .await,
        Code::NotFound,
    );
}

/// `GET /metrics` with an optional `Authorization` header; the status line and body.
async fn scrape(addr: SocketAddr, token: Option<&str>) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: sluice\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[tokio::test]
async fn metrics_need_the_metrics_token_and_no_api_token_opens_them() {
    let node = node().await;
    let (status, body) = scrape(node.metrics, None).await;
    assert!(status.contains("401"), "{status}");
    assert!(!body.contains("sluice_"), "{body}");
    // An API token, even the admin's, is not the metrics token.
    let (status, _) = scrape(node.metrics, Some(ROOT)).await;
    assert!(status.contains("401"), "{status}");
    let (status, body) = scrape(node.metrics, Some("scrape-secret")).await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("# EOF"), "{body}");
}

#[tokio::test]
async fn through_the_api_a_connector_comes_only_from_the_registry() {
    let node = node().await;
    let ch = channel(node.addr).await;
    let mut connections = ConnectionsClient::new(ch.clone());
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("passwords.wasm");
    std::fs::write(&text, "root:hunter2-first-line\nsecond line\n").unwrap();
    let put = |connector: String| pb::PutConnectionRequest {
        definition_json: json!({
            "name": "c", "tenant": "a", "connector": connector, "config": {"records": 3}
        })
        .to_string(),
    };
    // A text file, a real component anywhere on disk, a missing file: all refused
    // alike, naming what is accepted, echoing no file.
    for path in [
        text.display().to_string(),
        sluice_artifacts::SAMPLE.to_owned(),
        "/etc/passwd".to_owned(),
    ] {
        let s = denied(
            &path,
            connections
                .put_connection(with_token(put(path.clone()), ROOT))
                .await,
            Code::InvalidArgument,
        );
        assert!(
            s.message()
                .contains("not a first-party or registered connector"),
            "{s:?}"
        );
        assert!(
            !s.message().contains("hunter2") && !s.message().contains("root:"),
            "{s:?}"
        );
    }
    // First-party by name and by digest; a registered one by name, name@version and
    // digest.
    connections
        .put_connection(with_token(put("sample".into()), ROOT))
        .await
        .unwrap();
    let mut registry = ConnectorsClient::new(ch.clone());
    let sample = registry
        .get_connector(with_token(
            pb::GetConnectorRequest {
                name: "sample".into(),
            },
            ROOT,
        ))
        .await
        .unwrap()
        .into_inner();
    connections
        .put_connection(with_token(put(sample.digest.clone()), ROOT))
        .await
        .unwrap();
    let tickets = registry
        .register_connector(with_token(
            pb::RegisterConnectorRequest {
                name: "tickets".into(),
                version: "1.2.0".into(),
                wasm: std::fs::read(sluice_artifacts::TICKETS_SOURCE).unwrap(),
            },
            ROOT,
        ))
        .await
        .unwrap()
        .into_inner();
    for reference in [
        "tickets".to_owned(),
        "tickets@1.2.0".into(),
        tickets.digest.clone(),
    ] {
        let def = json!({
            "name": "t", "tenant": "a", "connector": reference,
            "config": {"base_url": "http://127.0.0.1:9"}, "allowed_hosts": ["127.0.0.1"]
        });
        let got = connections
            .put_connection(with_token(
                pb::PutConnectionRequest {
                    definition_json: def.to_string(),
                },
                ROOT,
            ))
            .await;
        let got = got.unwrap_or_else(|s| panic!("{reference}: {s:?}"));
        assert_eq!(got.into_inner().connector, reference);
        let used = registry
            .get_connector(with_token(
                pb::GetConnectorRequest {
                    name: "tickets".into(),
                },
                ROOT,
            ))
            .await
            .unwrap()
            .into_inner()
            .used_by;
        assert_eq!(used, ["t"], "{reference}");
    }
    let s = denied(
        "an unregistered version",
        connections
            .put_connection(with_token(put("tickets@9.9.9".into()), ROOT))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        s.message().contains("not a first-party or registered"),
        "{s:?}"
    );
}
