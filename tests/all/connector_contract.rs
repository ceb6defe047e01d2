//! Contract tests of the shipped connectors, run through the host exactly as the
//! engine runs them: `sample` (the synthetic source), `http-post` (the NDJSON
//! destination) against a local endpoint, and the `tickets-source` example against
//! a local implementation of the API its README describes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_host::{
    Connector, FailureKind, Grant, Host, HostError, Limits, SourceReader, StreamDescriptor,
    SyncMode,
};
use sluice_testkit::servers::{ndjson_sink, tickets};
use sluice_testkit::{NodeBuilder, serve};

/// A host of its own for each test (`NODE.host()`), without an on-disk cache.
const NODE: NodeBuilder = NodeBuilder::new().pool(32, 512 << 20);

fn load(host: &Host, path: &str) -> Connector {
    host.load_file(Path::new(path))
        .unwrap_or_else(|e| panic!("{path} loads: {e}"))
}

/// Limits that keep a runaway test short.
fn limits() -> Limits {
    Limits {
        cpu_per_call: Duration::from_secs(30),
        call_timeout: Duration::from_secs(60),
        http_request_timeout: Duration::from_secs(30),
        ..Limits::default()
    }
}

/// A grant reaching `hosts`, with `secrets` redacted.
fn grant(hosts: &[String], secrets: &[&str]) -> Arc<Grant> {
    Arc::new(Grant {
        allowed_hosts: hosts.to_vec(),
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
        limits: limits(),
        ..Grant::default()
    })
}

/// What a read returned: every record, and each batch's count and checkpoint.
#[derive(Debug, Default)]
struct Read {
    records: Vec<Value>,
    lines: Vec<usize>,
    batches: Vec<(u32, Option<String>)>,
}

impl Read {
    fn ids(&self) -> Vec<u64> {
        self.records
            .iter()
            .map(|r| r["id"].as_u64().expect("integer id"))
            .collect()
    }

    fn last_checkpoint(&self) -> Option<String> {
        self.batches.iter().rev().find_map(|(_, c)| c.clone())
    }
}

/// Read from `reader` in batches of `max_records`, at most `batches` of them.
async fn read(reader: &mut SourceReader, max_records: u32, batches: usize) -> Read {
    let mut out = Read::default();
    for _ in 0..batches {
        let Some(batch) = reader.next(max_records).await.expect("next") else {
            break;
        };
        assert!(
            batch.count <= max_records,
            "{} > {max_records}",
            batch.count
        );
        for line in batch.lines() {
            let record: Value = serde_json::from_slice(line).expect("every line is JSON");
            assert!(record.is_object(), "{record}");
            out.lines.push(line.len());
            out.records.push(record);
        }
        out.batches.push((batch.count, batch.checkpoint));
    }
    out
}

async fn read_all(
    connector: &Connector,
    grant: &Arc<Grant>,
    config: &Value,
    stream: &str,
    mode: SyncMode,
    checkpoint: Option<&str>,
    max_records: u32,
) -> Read {
    let mut reader = connector
        .open(grant, &config.to_string(), stream, mode, checkpoint)
        .await
        .unwrap_or_else(|e| panic!("open {stream} with {config}: {e}"));
    read(&mut reader, max_records, usize::MAX).await
}

/// The connector error of `result`, which must be one.
fn connector_error<T>(result: Result<T, HostError>) -> (&'static str, FailureKind, String) {
    match result {
        Err(HostError::Connector {
            call,
            kind,
            message,
            ..
        }) => (call, kind, message),
        Err(other) => panic!("expected a connector error, got {other:?}"),
        Ok(_) => panic!("expected a connector error, got success"),
    }
}

// ---------------------------------------------------------------------------------
// sample

const SAMPLE_STREAMS: [&str; 3] = ["users", "orders", "events"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_spec_is_an_object_schema() {
    let host = NODE.host();
    let sample = load(&host, sluice_artifacts::SAMPLE);
    let spec = sample.spec().await.expect("spec");
    assert_eq!(spec["type"], "object", "{spec}");
    let properties = spec["properties"].as_object().expect("properties");
    for field in [
        "records",
        "record_bytes",
        "seed",
        "generation",
        "delete_every",
    ] {
        assert!(properties.contains_key(field), "spec lacks {field}: {spec}");
    }
    // The empty configuration is valid: every field has a default.
    sample
        .check(&grant(&[], &[]), "{}")
        .await
        .expect("check of {}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_discovers_three_incremental_streams() {
    let host = NODE.host();
    let sample = load(&host, sluice_artifacts::SAMPLE);
    let streams = sample
        .discover(&grant(&[], &[]), "{}")
        .await
        .expect("discover");
    let names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, SAMPLE_STREAMS);
    for s in &streams {
        assert_eq!(s.primary_key, ["id"], "{}", s.name);
        assert_eq!(s.cursor_field.as_deref(), Some("updated_at"), "{}", s.name);
        assert!(s.sync_modes.contains(&SyncMode::FullRefresh), "{}", s.name);
        assert!(s.sync_modes.contains(&SyncMode::Incremental), "{}", s.name);
        assert_eq!(s.json_schema["type"], "object", "{}", s.name);
        let properties = s.json_schema["properties"].as_object().expect("properties");
        assert!(properties.contains_key("id") && properties.contains_key("updated_at"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_reads_every_id_once_in_batches() {
    let host = NODE.host();
    let sample = load(&host, sluice_artifacts::SAMPLE);
    let grant = grant(&[], &[]);
    let records = 10_050u64;
    let record_bytes = 300usize;
    let config = json!({"records": records, "record_bytes": record_bytes});
    for stream in SAMPLE_STREAMS {
        let read = read_all(
            &sample,
            &grant,
            &config,
            stream,
            SyncMode::FullRefresh,
            None,
            1000,
        )
        .await;
        assert_eq!(read.ids(), (1..=records).collect::<Vec<_>>(), "{stream}");
        let counts: Vec<u32> = read.batches.iter().map(|(c, _)| *c).collect();
        assert_eq!(counts, [[1000; 10].as_slice(), &[50]].concat(), "{stream}");
        // Each batch's checkpoint is the last id it holds.
        let mut last = 0;
        for (count, checkpoint) in &read.batches {
            last += u64::from(*count);
            assert_eq!(
                checkpoint.as_deref(),
                Some(last.to_string().as_str()),
                "{stream}"
            );
        }
        for (record, len) in read.records.iter().zip(&read.lines) {
            let slack = record_bytes / 10;
            assert!(
                len.abs_diff(record_bytes) <= slack,
                "{stream}: record {} is {len} bytes, asked for about {record_bytes}",
                record["id"]
            );
        }
        // updated_at grows with the id, as an incremental cursor must.
        let stamps: Vec<&str> = read
            .records
            .iter()
            .map(|r| r["updated_at"].as_str().expect("updated_at"))
            .collect();
        assert!(
            stamps.windows(2).all(|w| w[0] < w[1]),
            "{stream}: updated_at not increasing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_resumes_after_a_checkpoint() {
    let host = NODE.host();
    let sample = load(&host, sluice_artifacts::SAMPLE);
    let grant = grant(&[], &[]);
    let records = 10_050u64;
    let config = json!({"records": records});
    for (batch_size, batches) in [(1000u32, 5usize), (777, 3)] {
        let mut reader = sample
            .open(
                &grant,
                &config.to_string(),
                "users",
                SyncMode::Incremental,
                None,
            )
            .await
            .expect("open");
        let first = read(&mut reader, batch_size, batches).await;
        drop(reader);
        let checkpoint = first.last_checkpoint().expect("a checkpoint");
        let seen = u64::from(batch_size) * batches as u64;
        assert_eq!(checkpoint, seen.to_string());
        let rest = read_all(
            &sample,
            &grant,
            &config,
            "users",
            SyncMode::Incremental,
            Some(&checkpoint),
            batch_size,
        )
        .await;
        assert_eq!(first.ids(), (1..=seen).collect::<Vec<_>>());
        assert_eq!(rest.ids(), (seen + 1..=records).collect::<Vec<_>>());
    }
    // The final checkpoint resumes to an empty read.
    let done = read_all(
        &sample,
        &grant,
        &config,
        "users",
        SyncMode::Incremental,
        Some("10050"),
        1000,
    )
    .await;
    assert!(
        done.records.is_empty(),
        "{} records after the end",
        done.records.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_refuses_bad_input_as_config_errors() {
    let host = NODE.host();
    let sample = load(&host, sluice_artifacts::SAMPLE);
    let grant = grant(&[], &[]);
    let ok = json!({"records": 10}).to_string();

    let (call, kind, message) = connector_error(
        sample
            .open(&grant, &ok, "users", SyncMode::Incremental, Some("xyz"))
            .await,
    );
    assert_eq!((call, kind), ("source.open", FailureKind::Config));
    assert!(message.contains("xyz"), "{message}");

    let (call, kind, message) = connector_error(
        sample
            .open(&grant, &ok, "widgets", SyncMode::FullRefresh, None)
            .await,
    );
    assert_eq!((call, kind), ("source.open", FailureKind::Config));
    assert!(message.contains("widgets"), "{message}");

    let unknown = json!({"records": 10, "colour": "red"}).to_string();
    let (call, kind, message) = connector_error(sample.check(&grant, &unknown).await);
    assert_eq!((call, kind), ("source.check", FailureKind::Config));
    assert!(message.contains("colour"), "{message}");
    let (call, kind, message) = connector_error(sample.discover(&grant, &unknown).await);
    assert_eq!((call, kind), ("source.discover", FailureKind::Config));
    assert!(message.contains("colour"), "{message}");
    let (_, kind, message) = connector_error(
        sample
            .open(&grant, &unknown, "users", SyncMode::FullRefresh, None)
            .await,
    );
    assert_eq!(kind, FailureKind::Config);
    assert!(message.contains("colour"), "{message}");

    let (_, kind, _) = connector_error(sample.check(&grant, "not json").await);
    assert_eq!(kind, FailureKind::Config);
    let zero = json!({"delete_every": 0}).to_string();
    let (_, kind, message) = connector_error(sample.check(&grant, &zero).await);
    assert_eq!(kind, FailureKind::Config);
    assert!(message.contains("delete_every"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_delete_every_leaves_out_those_ids() {
    let host = NODE.host();
    let sample = load(&host, sluice_artifacts::SAMPLE);
    let grant = grant(&[], &[]);
    let config = json!({"records": 1000, "delete_every": 7});
    for stream in SAMPLE_STREAMS {
        let read = read_all(
            &sample,
            &grant,
            &config,
            stream,
            SyncMode::FullRefresh,
            None,
            64,
        )
        .await;
        let expected: Vec<u64> = (1..=1000).filter(|id| id % 7 != 0).collect();
        assert_eq!(read.ids(), expected, "{stream}");
        // Batches still advance by the ids they covered, deleted ones included.
        assert_eq!(read.last_checkpoint().as_deref(), Some("1000"), "{stream}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_generation_rewrites_every_tenth_record() {
    let host = NODE.host();
    let sample = load(&host, sluice_artifacts::SAMPLE);
    let grant = grant(&[], &[]);
    for stream in SAMPLE_STREAMS {
        let mut reads = Vec::new();
        for generation in [0, 1, 1] {
            let config = json!({"records": 500, "generation": generation});
            reads.push(
                read_all(
                    &sample,
                    &grant,
                    &config,
                    stream,
                    SyncMode::FullRefresh,
                    None,
                    100,
                )
                .await,
            );
        }
        // The same configuration reads the same records.
        assert_eq!(reads[1].records, reads[2].records, "{stream}");
        let changed: Vec<u64> = reads[0]
            .records
            .iter()
            .zip(&reads[1].records)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a["id"].as_u64().expect("id"))
            .collect();
        assert_eq!(
            changed,
            (1..=50).map(|k| k * 10).collect::<Vec<_>>(),
            "{stream}"
        );
        for (old, new) in reads[0].records.iter().zip(&reads[1].records) {
            if old != new {
                assert_eq!(old["id"], new["id"]);
                let (old_at, new_at) = (old["updated_at"].as_str(), new["updated_at"].as_str());
                assert!(
                    new_at > old_at,
                    "{stream}: a rewrite must move updated_at forward"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// http-post

const SINK_TOKEN: &str = "sink-token-5f1e9a";

fn users_stream() -> StreamDescriptor {
    StreamDescriptor {
        name: "users".into(),
        json_schema: json!({"type": "object", "properties": {"id": {"type": "integer"}}}),
        primary_key: vec!["id".into()],
        cursor_field: Some("updated_at".into()),
        sync_modes: vec![SyncMode::FullRefresh, SyncMode::Incremental],
    }
}

/// NDJSON of records `ids`.
fn ndjson(ids: std::ops::RangeInclusive<u64>) -> (Vec<u8>, u32) {
    let mut buf = Vec::new();
    let mut count = 0;
    for id in ids {
        let record = json!({"id": id, "name": format!("user {id}"), "tags": ["a", "b"]});
        buf.extend_from_slice(record.to_string().as_bytes());
        buf.push(b'\n');
        count += 1;
    }
    (buf, count)
}

/// A sink on loopback, the http-post connector, and a configuration posting to
/// `path` with the token both as bearer auth and in the query string.
async fn sink(path: &str) -> (Connector, Arc<ndjson_sink::Sink>, SocketAddr, String, Host) {
    let (app, state) = ndjson_sink::router(SINK_TOKEN);
    let addr = serve(app).await;
    let host = NODE.host();
    let post = load(&host, sluice_artifacts::HTTP_POST);
    let config = json!({
        "url": format!("http://{addr}{path}?key={SINK_TOKEN}"),
        "auth": {"type": "bearer", "token": SINK_TOKEN},
    })
    .to_string();
    (post, state, addr, config, host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_post_delivers_batches_in_order() {
    let (post, sink, addr, config, _host) = sink("/ingest").await;
    let grant = grant(&[addr.to_string()], &[SINK_TOKEN]);
    let spec = post.spec().await.expect("spec");
    assert_eq!(spec["type"], "object");
    post.check(&grant, &config).await.expect("check");

    let n = 250u64;
    let mut writer = post
        .open_writer(&grant, &config, &users_stream())
        .await
        .expect("open_writer");
    for k in 0..3 {
        let (buf, count) = ndjson(k * n + 1..=(k + 1) * n);
        let durable = writer.write(&buf, count).await.expect("write");
        assert_eq!(
            durable,
            (k + 1) * n,
            "each write is one request, durable at once"
        );
    }
    assert_eq!(writer.flush().await.expect("flush"), 3 * n);

    assert_eq!(sink.refused(), Vec::<String>::new());
    let received = sink.received();
    // The probe of `check`, then one request per write.
    assert_eq!(received.len(), 4, "{received:?}");
    assert!(received[0].records.is_empty());
    for r in &received[1..] {
        assert_eq!(r.stream.as_deref(), Some("users"));
        assert_eq!(r.records.len() as u64, n);
    }
    let ids: Vec<u64> = sink
        .records()
        .iter()
        .map(|r| r["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, (1..=3 * n).collect::<Vec<_>>());
    assert_eq!(
        sink.records()[0],
        json!({"id": 1, "name": "user 1", "tags": ["a", "b"]})
    );

    // The request log: every POST, answered 200, its bytes counted, the token
    // never recorded.
    let requests = grant.activity.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(r.method, "POST");
        assert_eq!(r.status, Some(200));
        assert_eq!(r.host, addr.to_string());
        assert_eq!(r.path, "/ingest?key=***");
        assert_eq!(r.error, None);
        assert!(r.bytes_received > 0);
        if i > 0 {
            assert!(r.bytes_sent > 0, "{r:?}");
        }
    }
    let (one_batch, _) = ndjson(1..=n);
    assert_eq!(requests[1].bytes_sent, one_batch.len() as u64);
    let log = format!("{requests:?}{:?}", grant.activity.lines());
    assert!(
        !log.contains(SINK_TOKEN),
        "the token leaked into the activity: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_post_groups_records_per_request() {
    let (post, sink, addr, config, _host) = sink("/ingest").await;
    let mut config: Value = serde_json::from_str(&config).expect("config");
    config["batch_records"] = json!(100);
    let config = config.to_string();
    let grant = grant(&[addr.to_string()], &[SINK_TOKEN]);
    let mut writer = post
        .open_writer(&grant, &config, &users_stream())
        .await
        .expect("open_writer");
    let (buf, count) = ndjson(1..=250);
    assert_eq!(writer.write(&buf, count).await.expect("write"), 200);
    let (buf, count) = ndjson(251..=260);
    assert_eq!(writer.write(&buf, count).await.expect("write"), 200);
    assert_eq!(writer.flush().await.expect("flush"), 260);
    let sizes: Vec<usize> = sink.received().iter().map(|r| r.records.len()).collect();
    assert_eq!(sizes, [100, 100, 60]);
    let ids: Vec<u64> = sink
        .records()
        .iter()
        .map(|r| r["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, (1..=260).collect::<Vec<_>>());
    // Flushing again sends nothing.
    assert_eq!(writer.flush().await.expect("flush"), 260);
    assert_eq!(sink.received().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_post_maps_answers_to_error_kinds() {
    let (post, _sink, addr, _, _host) = sink("/ingest").await;
    // Every answer here is read for its kind, so the host's breaker must not open
    // after the failing ones (it would fail the rest fast, as transient).
    let grant = Arc::new(Grant {
        rates: Arc::new(sluice_host::RateScope {
            breaker: sluice_host::limiter::BreakerSettings {
                failures: u32::MAX,
                ..Default::default()
            },
            ..Default::default()
        }),
        ..Grant::clone(&grant(&[addr.to_string()], &[SINK_TOKEN]))
    });
    for (code, expected) in [
        (500, FailureKind::Transient),
        (503, FailureKind::Transient),
        (401, FailureKind::Auth),
        (403, FailureKind::Auth),
        (400, FailureKind::Permanent),
    ] {
        let config = json!({
            "url": format!("http://{addr}/status/{code}?key={SINK_TOKEN}"),
            "auth": {"type": "bearer", "token": SINK_TOKEN},
        })
        .to_string();
        let (call, kind, message) = connector_error(post.check(&grant, &config).await);
        assert_eq!((call, kind), ("destination.check", expected), "{code}");
        assert!(!message.contains(SINK_TOKEN), "{code}: token in {message}");

        let mut writer = post
            .open_writer(&grant, &config, &users_stream())
            .await
            .expect("open_writer");
        let (buf, count) = ndjson(1..=10);
        let (call, kind, message) = connector_error(writer.write(&buf, count).await);
        assert_eq!(
            (call, kind),
            ("destination.writer.write", expected),
            "{code}"
        );
        assert!(message.contains(&code.to_string()), "{code}: {message}");
        assert!(!message.contains(SINK_TOKEN), "{code}: token in {message}");
        // The connector's own error leaves the writer usable; the records are still
        // pending, and the flush tries them again.
        let (call, kind, _) = connector_error(writer.flush().await);
        assert_eq!(
            (call, kind),
            ("destination.writer.flush", expected),
            "{code}"
        );
    }
    let requests = grant.activity.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.method == "POST" && r.status.is_some())
    );
    assert!(!format!("{requests:?}").contains(SINK_TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_post_to_an_unlisted_host_is_denied() {
    let (post, sink, addr, config, _host) = sink("/ingest").await;
    // Loopback is allowed, but not the sink's port.
    let other = format!(
        "127.0.0.1:{}",
        if addr.port() == 1 { 2 } else { addr.port() - 1 }
    );
    let grant = grant(&[other], &[SINK_TOKEN]);
    match post.check(&grant, &config).await {
        Err(HostError::DisallowedHost { call, host }) => {
            assert_eq!((call, host), ("destination.check", addr.to_string()));
        }
        other => panic!("expected DisallowedHost, got {other:?}"),
    }
    let mut writer = post
        .open_writer(&grant, &config, &users_stream())
        .await
        .expect("open_writer sends nothing");
    let (buf, count) = ndjson(1..=10);
    match writer.write(&buf, count).await {
        Err(HostError::DisallowedHost { call, host }) => {
            assert_eq!((call, host), ("destination.writer.write", addr.to_string()));
        }
        other => panic!("expected DisallowedHost, got {other:?}"),
    }
    match writer.flush().await {
        Err(HostError::Poisoned { call }) => assert_eq!(call, "destination.writer.flush"),
        other => panic!("expected Poisoned, got {other:?}"),
    }
    assert!(sink.received().is_empty() && sink.refused().is_empty());
    let requests = grant.activity.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for r in &requests {
        assert_eq!((r.method.as_str(), r.status), ("POST", None));
        assert_eq!(r.path, "/ingest?key=***");
        assert!(
            r.error.as_deref().is_some_and(|e| e.contains("denied")),
            "{r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_post_is_never_handed_malformed_records() {
    let (post, sink, addr, config, _host) = sink("/ingest").await;
    let grant = grant(&[addr.to_string()], &[SINK_TOKEN]);
    let mut writer = post
        .open_writer(&grant, &config, &users_stream())
        .await
        .expect("open_writer");
    for (buf, count) in [
        (&b"{\"id\":1}\n[1]\n"[..], 2),
        (b"{\"id\":1}\n", 2),
        (b"{\"id\":1}", 1),
    ] {
        match writer.write(buf, count).await {
            Err(HostError::MalformedOutput { call, reason }) => {
                assert_eq!(call, "destination.writer.write");
                assert!(reason.contains("refusing to send"), "{reason}");
            }
            other => panic!("expected MalformedOutput, got {other:?}"),
        }
    }
    // Refused before the connector saw it: the writer still works.
    let (buf, count) = ndjson(1..=3);
    assert_eq!(writer.write(&buf, count).await.expect("write"), 3);
    assert_eq!(sink.records().len(), 3);
}

// ---------------------------------------------------------------------------------
// tickets-source

const TICKETS_TOKEN: &str = "tickets-token-8c2d71";

async fn tickets_api(
    tickets: u64,
    agents: u64,
) -> (Connector, Arc<tickets::TicketsApi>, Arc<Grant>, Value, Host) {
    let (app, api) = tickets::router(TICKETS_TOKEN, tickets, agents);
    let addr = serve(app).await;
    let host = NODE.host();
    let source = load(&host, sluice_artifacts::TICKETS_SOURCE);
    let grant = grant(&[addr.to_string()], &[TICKETS_TOKEN]);
    let config = json!({
        "base_url": format!("http://{addr}"),
        "api_token": TICKETS_TOKEN,
        "page_size": 100,
    });
    (source, api, grant, config, host)
}

/// The parts of a tickets-source checkpoint (see its README).
#[derive(Debug)]
struct TicketsCheckpoint {
    url: Option<String>,
    skip: u64,
    cursor: Option<String>,
}

fn parse_checkpoint(text: &str) -> TicketsCheckpoint {
    let v: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("checkpoint {text:?}: {e}"));
    assert!(v.is_object(), "checkpoint {text:?} is not an object");
    TicketsCheckpoint {
        url: v["url"].as_str().map(str::to_owned),
        skip: v["skip"].as_u64().unwrap_or(0),
        cursor: v["cursor"].as_str().map(str::to_owned),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_reads_both_streams_in_full() {
    let (source, api, grant, config, _host) = tickets_api(250, 120).await;
    let config_text = config.to_string();
    source.check(&grant, &config_text).await.expect("check");
    assert_eq!(api.requests(), ["/api/agents?per_page=1"]);

    let streams = source
        .discover(&grant, &config_text)
        .await
        .expect("discover");
    let by_name = |n: &str| streams.iter().find(|s| s.name == n).expect(n).clone();
    let (t, a) = (by_name("tickets"), by_name("agents"));
    assert_eq!(
        (t.primary_key.as_slice(), a.primary_key.as_slice()),
        (&["id".to_string()][..], &["id".to_string()][..])
    );
    assert_eq!(t.cursor_field.as_deref(), Some("updated_at"));
    assert!(t.sync_modes.contains(&SyncMode::Incremental));
    assert_eq!(
        (a.cursor_field, a.sync_modes),
        (None, vec![SyncMode::FullRefresh])
    );

    let read = read_all(
        &source,
        &grant,
        &config,
        "tickets",
        SyncMode::FullRefresh,
        None,
        1000,
    )
    .await;
    assert_eq!(
        read.records,
        api.tickets(),
        "every ticket once, in the API's order"
    );
    let counts: Vec<u32> = read.batches.iter().map(|(c, _)| *c).collect();
    assert_eq!(counts, [100, 100, 50], "one page per batch");
    let last = parse_checkpoint(&read.last_checkpoint().expect("checkpoint"));
    assert_eq!(last.url, None, "a complete read ends with url null");
    let newest = api
        .tickets()
        .iter()
        .filter_map(|t| t["updated_at"].as_str().map(str::to_owned))
        .max();
    assert_eq!(last.cursor, newest);

    let agents = read_all(
        &source,
        &grant,
        &config,
        "agents",
        SyncMode::FullRefresh,
        None,
        1000,
    )
    .await;
    assert_eq!(agents.ids(), api.agent_ids());
    assert_eq!(agents.batches.len(), 2);

    let requests = grant.activity.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.method == "GET" && r.status == Some(200)),
        "{requests:?}"
    );
    assert!(!format!("{requests:?}").contains(TICKETS_TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_resumes_mid_page_without_gaps() {
    let (source, api, grant, config, _host) = tickets_api(250, 0).await;
    for mode in [SyncMode::FullRefresh, SyncMode::Incremental] {
        let mut reader = source
            .open(&grant, &config.to_string(), "tickets", mode, None)
            .await
            .expect("open");
        // Batches of 30 end mid-page, and never span two pages: 30, 30, 30, 10 from
        // the first page, then 30 from the second, whose checkpoint points 30
        // records into the second page.
        let first = read(&mut reader, 30, 5).await;
        drop(reader);
        let counts: Vec<u32> = first.batches.iter().map(|(c, _)| *c).collect();
        assert_eq!(counts, [30, 30, 30, 10, 30]);
        let checkpoint = first.last_checkpoint().expect("checkpoint");
        let cp = parse_checkpoint(&checkpoint);
        assert!(
            cp.url.as_deref().is_some_and(|u| u.contains("page=2")),
            "{checkpoint}"
        );
        assert_eq!(cp.skip, 30, "{checkpoint}");
        let rest = read_all(
            &source,
            &grant,
            &config,
            "tickets",
            mode,
            Some(&checkpoint),
            30,
        )
        .await;
        let all: Vec<u64> = first.ids().into_iter().chain(rest.ids()).collect();
        assert_eq!(
            all,
            api.ids_since(None),
            "{mode:?}: nothing skipped, nothing repeated"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_incremental_read_picks_up_changes_since_the_cursor() {
    let (source, api, grant, config, _host) = tickets_api(250, 0).await;
    let first = read_all(
        &source,
        &grant,
        &config,
        "tickets",
        SyncMode::Incremental,
        None,
        1000,
    )
    .await;
    assert_eq!(first.ids(), api.ids_since(None));
    let checkpoint = first.last_checkpoint().expect("checkpoint");
    let cursor = parse_checkpoint(&checkpoint).cursor.expect("a cursor");

    // Two tickets change and two are created after the first read.
    let later = tickets::timestamp(10_000);
    for id in [10, 20, 251, 252] {
        api.upsert(id, later.clone());
    }
    let before = api.requests().len();
    let second = read_all(
        &source,
        &grant,
        &config,
        "tickets",
        SyncMode::Incremental,
        Some(&checkpoint),
        1000,
    )
    .await;
    let expected = api.ids_since(Some(&cursor));
    assert_eq!(second.ids(), expected);
    // Exactly the changed tickets, plus those at the cursor itself (re-reading the
    // boundary is allowed; skipping is not).
    let changed: BTreeSet<u64> = [10, 20, 251, 252].into();
    let got: BTreeSet<u64> = second.ids().into_iter().collect();
    assert!(changed.is_subset(&got), "{got:?}");
    let at_cursor: BTreeSet<u64> = second
        .records
        .iter()
        .filter(|r| r["updated_at"].as_str() == Some(cursor.as_str()))
        .filter_map(|r| r["id"].as_u64())
        .collect();
    assert_eq!(&got - &changed, at_cursor);
    assert!(
        at_cursor.len() <= 2,
        "only the boundary is re-read: {at_cursor:?}"
    );
    // It asked the API for changes since the cursor.
    let asked = &api.requests()[before];
    assert!(asked.contains(&format!("since={cursor}")), "{asked}");
    let next = parse_checkpoint(&second.last_checkpoint().expect("checkpoint"));
    assert_eq!((next.url, next.cursor), (None, Some(later)));

    // A full refresh from the same checkpoint starts over.
    let full = read_all(
        &source,
        &grant,
        &config,
        "tickets",
        SyncMode::FullRefresh,
        Some(&checkpoint),
        1000,
    )
    .await;
    assert_eq!(full.ids(), api.ids_since(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_wrong_token_is_an_auth_error() {
    let (source, _api, grant, mut config, _host) = tickets_api(10, 3).await;
    config["api_token"] = json!("not-the-token");
    let config_text = config.to_string();
    let (call, kind, _) = connector_error(source.check(&grant, &config_text).await);
    assert_eq!((call, kind), ("source.check", FailureKind::Auth));
    let mut reader = source
        .open(&grant, &config_text, "tickets", SyncMode::FullRefresh, None)
        .await
        .expect("open sends nothing");
    let (call, kind, _) = connector_error(reader.next(100).await);
    assert_eq!((call, kind), ("source.reader.next", FailureKind::Auth));
    assert!(
        grant
            .activity
            .requests()
            .iter()
            .all(|r| r.status == Some(401))
    );

    // Other bad input is a config error.
    config["api_token"] = json!(TICKETS_TOKEN);
    let good = config.to_string();
    for (stream, mode, checkpoint) in [
        ("agents", SyncMode::Incremental, None),
        ("nope", SyncMode::FullRefresh, None),
        ("tickets", SyncMode::Incremental, Some("{\"page\": 3}")),
    ] {
        let (_, kind, message) =
            connector_error(source.open(&grant, &good, stream, mode, checkpoint).await);
        assert_eq!(kind, FailureKind::Config, "{stream} {mode:?}: {message}");
    }
    let mut bad_size = config.clone();
    bad_size["page_size"] = json!(0);
    let (_, kind, _) = connector_error(source.check(&grant, &bad_size.to_string()).await);
    assert_eq!(kind, FailureKind::Config);
}
