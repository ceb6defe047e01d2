//! Bounded outputs, through a real node (host, engine, store, gRPC API): whatever a
//! connector returns (a 100 MB checkpoint, a 20 MB error, an oversized record, bytes
//! that are not UTF-8, a secret cut short), the run fails with a named error, nothing
//! oversized or unreadable is stored, everything stays readable through the API, no
//! piece of a secret shows, and the node keeps serving: after each, another workflow
//! syncs to the end.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sluice_api::pb::connections_client::ConnectionsClient;
use sluice_api::pb::records_client::RecordsClient;
use sluice_api::pb::runs_client::RunsClient;
use sluice_api::pb::workflows_client::WorkflowsClient;
use sluice_api::pb::{self};
use sluice_api::{ApiServer, Tokens};
use sluice_testkit::{NodeBuilder, NodeDir};
use tonic::Code;
use tonic::transport::Channel;

/// Room for a connector that builds a 100 MB checkpoint.
const NODE: NodeBuilder = NodeBuilder::new()
    .pool(8, 512 << 20)
    .cache_under(env!("CARGO_TARGET_TMPDIR"), "hostile-outputs-components")
    .worker("outputs-node");

/// The hostile source's one stream.
const STREAM: &str = "items";
/// Records of the hostile `ok` mode.
const OK_RECORDS: u64 = 30;
/// The limits' defaults, as the errors must name them.
const MAX_CHECKPOINT_BYTES: usize = 64 << 10;
const MAX_ERROR_BYTES: usize = 4 << 10;
const MAX_RECORD_BYTES: usize = 4 << 20;
/// A secret of 19 bytes, with characters that URL-encoding changes.
const TOKEN: &str = "Zq9/Lk+2=x!Ab7#Pc4$";
/// Where the test server puts the token in its answer: the SDK quotes the first 200
/// bytes of a body, so 18 of the token's 19 bytes.
const TOKEN_AT: usize = 182;

struct Node {
    ch: Channel,
    dir: NodeDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn node() -> Node {
    let dir = NodeDir::new();
    let engine = NODE.test_engine_at(dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        ApiServer::new(engine, Tokens::default()).serve(listener, async {
            let _ = stopped.await;
        }),
    );
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Node {
        ch,
        dir,
        _stop: stop,
    }
}

async fn put_connection(ch: &Channel, def: Value) {
    ConnectionsClient::new(ch.clone())
        .put_connection(pb::PutConnectionRequest {
            definition_json: def.to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("connection {def}: {e}"));
}

/// A hostile connection `name` of `config`, with `extra` fields (limits, secrets).
async fn hostile_connection(ch: &Channel, name: &str, config: Value, extra: Value) {
    let mut def = json!({"name": name, "connector": "hostile", "config": config});
    if let (Some(def), Some(extra)) = (def.as_object_mut(), extra.as_object()) {
        def.extend(extra.clone());
    }
    put_connection(ch, def).await;
}

/// A workflow `name` of the `items` stream of `connection`.
async fn put_workflow(ch: &Channel, name: &str, connection: &str) {
    WorkflowsClient::new(ch.clone())
        .put_workflow(pb::PutWorkflowRequest {
            definition_json: json!({
                "name": name, "connection": connection,
                "streams": [{"name": STREAM, "primary_key": ["id"]}],
                "batch_size": 1000,
                "retry": {"max_attempts": 1}
            })
            .to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("workflow {name}: {e}"));
}

/// Trigger `workflow`, follow the run to its end, and read it back whole.
async fn run_to_end(ch: &Channel, workflow: &str) -> pb::Run {
    let run = WorkflowsClient::new(ch.clone())
        .trigger_workflow(pb::GetWorkflowRequest {
            name: workflow.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("trigger {workflow}: {e}"))
        .into_inner();
    let mut updates = RunsClient::new(ch.clone())
        .watch_run(pb::GetRunRequest {
            run_id: run.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(update) = updates.message().await.unwrap() {
        if update.finished {
            break;
        }
    }
    RunsClient::new(ch.clone())
        .get_run(pb::GetRunRequest { run_id: run.run_id })
        .await
        .unwrap_or_else(|e| panic!("the run of {workflow} cannot be read: {e}"))
        .into_inner()
}

fn status(run: &pb::Run) -> &str {
    run.summary.as_ref().map_or("", |s| s.status.as_str())
}

/// The run's failure, checked to be a dead letter of `kind`.
fn dead_letter<'a>(run: &'a pb::Run, kind: &str) -> &'a str {
    assert_eq!(status(run), "dead_lettered", "{run:?}");
    assert_eq!(run.last_error_kind, kind, "{}", run.last_error);
    &run.last_error
}

/// The node keeps serving: a workflow of the hostile `ok` mode syncs all its records.
async fn keeps_serving(ch: &Channel, tag: &str) {
    let name = format!("ok-after-{tag}");
    hostile_connection(ch, &name, json!({"mode": "ok"}), json!({})).await;
    put_workflow(ch, &name, &name).await;
    let run = run_to_end(ch, &name).await;
    assert_eq!(status(&run), "completed", "{run:?}");
    let records: u64 = run.streams.iter().map(|s| s.records).sum();
    assert_eq!(records, OK_RECORDS);
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_checkpoint_fails_the_run_by_name_and_is_never_stored() {
    let node = node().await;
    let checkpoint_bytes = 100_000_000usize;
    hostile_connection(
        &node.ch,
        "big-checkpoint",
        json!({"mode": "big_checkpoint", "bytes": checkpoint_bytes}),
        json!({"limits": {"memory_bytes": 480 << 20}}),
    )
    .await;
    put_workflow(&node.ch, "big-checkpoint", "big-checkpoint").await;
    let before = dir_bytes(node.dir.path());

    let run = run_to_end(&node.ch, "big-checkpoint").await;
    let error = dead_letter(&run, "schema");
    assert!(
        error.contains("max_checkpoint_bytes")
            && error.contains(&checkpoint_bytes.to_string())
            && error.contains(&MAX_CHECKPOINT_BYTES.to_string()),
        "{error}"
    );
    assert!(
        run.streams.iter().all(|s| s.checkpoint.is_empty()),
        "{:?}",
        run.streams
    );
    // Read through the API, the run is small.
    let encoded = prost::Message::encoded_len(&run);
    assert!(encoded < 64 << 10, "the run reads as {encoded} bytes");
    let grown = dir_bytes(node.dir.path()).saturating_sub(before);
    assert!(
        grown < (checkpoint_bytes / 10) as u64,
        "the data directory grew by {grown} bytes"
    );
    keeps_serving(&node.ch, "checkpoint").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mb_error_is_cut_to_its_limit_and_the_run_reads_back() {
    let node = node().await;
    let error_bytes = 20_000_000usize;
    hostile_connection(
        &node.ch,
        "big-error",
        json!({"mode": "big_error", "bytes": error_bytes}),
        json!({}),
    )
    .await;
    put_workflow(&node.ch, "big-error", "big-error").await;
    let before = dir_bytes(node.dir.path());

    let run = run_to_end(&node.ch, "big-error").await;
    let error = dead_letter(&run, "permanent");
    assert!(
        error.contains("failed on purpose with a long message"),
        "{}",
        &error[..error.len().min(300)]
    );
    assert!(
        error.contains(&format!(
            "{error_bytes} bytes in all; max_error_bytes is {MAX_ERROR_BYTES}"
        )),
        "{}",
        &error[error.len().saturating_sub(300)..]
    );
    // The connector's part is cut to the limit; the engine adds only where it was.
    assert!(error.len() < MAX_ERROR_BYTES + 512, "{} bytes", error.len());
    assert!(run.dead_letter_message.len() < MAX_ERROR_BYTES + 512);
    let grown = dir_bytes(node.dir.path()).saturating_sub(before);
    assert!(
        grown < (error_bytes / 4) as u64,
        "the data directory grew by {grown} bytes"
    );
    // The run's logs read too.
    RunsClient::new(node.ch.clone())
        .get_run_logs(pb::GetRunLogsRequest {
            run_id: run.summary.as_ref().unwrap().run_id.clone(),
            ..Default::default()
        })
        .await
        .expect("the run's logs read");
    keeps_serving(&node.ch, "error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_record_fails_the_run_by_name() {
    let node = node().await;
    let record_bytes = 8usize << 20;
    hostile_connection(
        &node.ch,
        "big-record",
        json!({"mode": "big_record", "bytes": record_bytes}),
        json!({}),
    )
    .await;
    put_workflow(&node.ch, "big-record", "big-record").await;
    let run = run_to_end(&node.ch, "big-record").await;
    let error = dead_letter(&run, "schema");
    assert!(
        error.contains("max_record_bytes")
            && error.contains("record 1 (line 1, byte 0 of the batch)")
            && error.contains(&MAX_RECORD_BYTES.to_string()),
        "{error}"
    );
    let changes = RecordsClient::new(node.ch.clone())
        .read_changes(pb::ReadChangesRequest {
            connection: "big-record".into(),
            stream: STREAM.into(),
            after: 0,
            limit: 100,
        })
        .await
        .expect("the change feed reads")
        .into_inner();
    assert!(changes.changes.is_empty(), "{:?}", changes.changes.len());
    keeps_serving(&node.ch, "record").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_is_not_utf8_is_refused_naming_its_line_and_the_hub_stays_readable() {
    let node = node().await;
    // The stream first holds good records, so the feed has something to read.
    hostile_connection(&node.ch, "utf8", json!({"mode": "ok"}), json!({})).await;
    put_workflow(&node.ch, "utf8", "utf8").await;
    assert_eq!(status(&run_to_end(&node.ch, "utf8").await), "completed");
    hostile_connection(&node.ch, "utf8", json!({"mode": "invalid_utf8"}), json!({})).await;

    let run = run_to_end(&node.ch, "utf8").await;
    let error = dead_letter(&run, "schema");
    // Record 1 is `{"id":1,"v":"x"}` and its newline: record 2 starts at byte 17.
    assert!(
        error.contains("record 2 (line 2, byte 17)") && error.contains("not valid UTF-8"),
        "{error}"
    );

    let mut records = RecordsClient::new(node.ch.clone());
    for id in [1, 2] {
        let record = records
            .get_record(pb::GetRecordRequest {
                connection: "utf8".into(),
                stream: STREAM.into(),
                primary_key_json: format!("[{id}]"),
            })
            .await
            .unwrap_or_else(|e| panic!("record {id} reads: {e}"))
            .into_inner();
        let data: Value = serde_json::from_str(&record.data_json).unwrap();
        assert_eq!(data["v"], "x", "{data}");
    }
    let mut after = 0;
    let mut changes = 0;
    loop {
        let page = records
            .read_changes(pb::ReadChangesRequest {
                connection: "utf8".into(),
                stream: STREAM.into(),
                after,
                limit: 10,
            })
            .await
            .expect("the change feed reads")
            .into_inner();
        if page.changes.is_empty() {
            break;
        }
        changes += page.changes.len() as u64;
        after = page.next_cursor;
    }
    assert_eq!(changes, OK_RECORDS);
    keeps_serving(&node.ch, "utf8").await;
}

/// Every form of the token that must not show: any 8 bytes of it, URL-encoded, and
/// the middle of `Basic base64(user:token)`.
fn leaked_forms() -> Vec<String> {
    let mut forms: Vec<String> = (0..=TOKEN.len() - 8)
        .map(|i| TOKEN[i..i + 8].to_owned())
        .collect();
    forms.push(form_encoded(TOKEN));
    forms.push(form_encoded(TOKEN).to_lowercase());
    let basic = STANDARD.encode(format!("user:{TOKEN}"));
    // `user:` is 5 bytes: characters 8 on (24 bits) hold the token's bytes alone.
    forms.push(basic[8..basic.len() - 4].to_owned());
    forms
}

fn form_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `text`, checked to show no form of the token.
fn assert_sealed(what: &str, text: &str) {
    for form in leaked_forms() {
        assert!(!text.contains(&form), "{what} shows {form:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_cut_short_shows_nowhere() {
    // An API that answers 401 quoting what it was sent: the bearer token, its Basic
    // form, the query, and the raw token where the SDK's 200-byte snippet cuts it.
    let hits = std::sync::Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let app = Router::new().route(
        "/leak",
        get(move |headers: HeaderMap, uri: Uri| async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let basic = STANDARD.encode(format!("user:{TOKEN}"));
            let mut body = format!(
                "denied: {auth} basic=Basic {basic} query={} ",
                uri.query().unwrap_or_default()
            );
            assert!(body.len() <= TOKEN_AT, "{body}");
            body.extend(std::iter::repeat_n('-', TOKEN_AT - body.len()));
            body.push_str(TOKEN);
            body.push_str(" and more");
            (StatusCode::UNAUTHORIZED, body)
        }),
    );
    let addr: SocketAddr = sluice_testkit::serve(app).await;
    let node = node().await;
    hostile_connection(
        &node.ch,
        "leaky",
        json!({"mode": "leak_secret", "url": format!("http://{addr}/leak")}),
        json!({"secrets": {"token": TOKEN}, "allowed_hosts": [addr.to_string()]}),
    )
    .await;
    put_workflow(&node.ch, "leaky", "leaky").await;

    let run = run_to_end(&node.ch, "leaky").await;
    let error = dead_letter(&run, "auth");
    // The answer was quoted, with the token masked where it was cut.
    assert!(
        error.contains("answered 401") && error.contains("***…"),
        "{error}"
    );
    assert_sealed("the run", &format!("{run:?}"));
    let logs = RunsClient::new(node.ch.clone())
        .get_run_logs(pb::GetRunLogsRequest {
            run_id: run.summary.as_ref().unwrap().run_id.clone(),
            ..Default::default()
        })
        .await
        .expect("the run's logs read")
        .into_inner();
    assert!(
        logs.entries.iter().any(|e| e.request.is_some()),
        "{:?}",
        logs.entries
    );
    assert!(
        logs.entries
            .iter()
            .any(|e| e.message.starts_with("about to send token ***")),
        "{:?}",
        logs.entries
    );
    assert_sealed("the run's logs", &format!("{logs:?}"));
    let runs = RunsClient::new(node.ch.clone())
        .list_runs(pb::ListRunsRequest {
            workflow: "leaky".into(),
            ..Default::default()
        })
        .await
        .expect("runs list")
        .into_inner();
    assert_sealed("the list of runs", &format!("{runs:?}"));

    let check = ConnectionsClient::new(node.ch.clone())
        .check_connection(pb::GetConnectionRequest {
            name: "leaky".into(),
        })
        .await
        .expect("check answers")
        .into_inner();
    assert!(
        !check.ok && check.message.contains("answered 401"),
        "{check:?}"
    );
    assert_sealed("the connection check", &format!("{check:?}"));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "the run and the check each asked once"
    );
    let connection = ConnectionsClient::new(node.ch.clone())
        .get_connection(pb::GetConnectionRequest {
            name: "leaky".into(),
        })
        .await
        .map(|r| format!("{:?}", r.into_inner()));
    match connection {
        Ok(text) => assert_sealed("the connection", &text),
        Err(status) => assert_ne!(status.code(), Code::Internal, "{status}"),
    }
    keeps_serving(&node.ch, "secret").await;
}
