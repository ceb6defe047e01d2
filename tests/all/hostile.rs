//! The hostile-component suite: a source that misbehaves on purpose, run through the
//! host. Every misbehaviour must fail its call with its own named [`HostError`], poison
//! the reader it happened in, and leave the host serving: right after each failure a
//! fresh reader of the same connector, on the same host, reads the 30 records of the
//! `ok` mode to the end.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};
use sluice_host::{
    Connector, FailureKind, Grant, Host, HostError, Limits, RequestRecord, SyncMode,
};
use sluice_testkit::NodeBuilder;

/// The one stream of the hostile source.
pub(crate) const STREAM: &str = "items";
/// Records of the `ok` mode.
const OK_RECORDS: u64 = 30;
/// Records asked for per `next`.
pub(crate) const MAX_RECORDS: u32 = 1000;
/// The panic message of the `panic` mode.
const PANIC_MESSAGE: &str = "hostile connector panicked on purpose";
const SOURCE_INTERFACE: &str = "sluice:connector/source@0.1.0";
/// The call a reader's batches come from, where every violation happens.
pub(crate) const NEXT: &str = "source.reader.next";

/// A host of its own for each test (`NODE.host()`): no on-disk cache, room for a few
/// dozen instances of at most 256 MiB.
pub(crate) const NODE: NodeBuilder = NodeBuilder::new().pool(32, 256 << 20);

pub(crate) fn hostile(host: &Host) -> Connector {
    host.load_file(Path::new(sluice_artifacts::TEST_HOSTILE))
        .expect("hostile component loads")
}

/// Small limits, so that every violation is quick to reach.
pub(crate) fn limits() -> Limits {
    Limits {
        memory_bytes: 64 << 20,
        cpu_per_call: Duration::from_secs(5),
        call_timeout: Duration::from_secs(20),
        ..Limits::default()
    }
}

pub(crate) fn grant(limits: Limits) -> Arc<Grant> {
    Arc::new(Grant {
        limits,
        ..Grant::default()
    })
}

/// Open a reader of `config` and return the result of its first `next`, with the
/// reader (so a test can check it is poisoned).
pub(crate) async fn first_batch(
    connector: &Connector,
    grant: &Arc<Grant>,
    config: Value,
) -> (
    sluice_host::SourceReader,
    Result<Option<sluice_host::Batch>, HostError>,
) {
    let mut reader = connector
        .open(
            grant,
            &config.to_string(),
            STREAM,
            SyncMode::FullRefresh,
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("open with {config} must succeed: {e}"));
    let result = reader.next(MAX_RECORDS).await;
    (reader, result)
}

/// The error of the first `next` of `config`, after checking that the reader it
/// happened in is poisoned.
pub(crate) async fn sandbox_failure(
    connector: &Connector,
    grant: &Arc<Grant>,
    config: Value,
) -> HostError {
    let (mut reader, result) = first_batch(connector, grant, config.clone()).await;
    let err = match result {
        Ok(batch) => panic!("{config}: expected an error, got {batch:?}"),
        Err(e) => e,
    };
    match reader.next(MAX_RECORDS).await {
        Err(HostError::Poisoned { call }) => assert_eq!(call, NEXT),
        other => panic!("{config}: after {err}, the reader must be poisoned; got {other:?}"),
    }
    err
}

/// Read the `ok` mode to the end and check it: ids 1..=30 once each, in order,
/// checkpoints "1", "2", "3".
pub(crate) async fn read_ok(connector: &Connector, grant: &Arc<Grant>) {
    let config = json!({"mode": "ok"}).to_string();
    let mut reader = connector
        .open(grant, &config, STREAM, SyncMode::FullRefresh, None)
        .await
        .expect("ok mode opens");
    let mut ids = Vec::new();
    let mut checkpoints = Vec::new();
    while let Some(batch) = reader.next(MAX_RECORDS).await.expect("ok mode reads") {
        for line in batch.lines() {
            let record: Value = serde_json::from_slice(line).expect("record is JSON");
            ids.push(record["id"].as_u64().expect("id"));
        }
        checkpoints.extend(batch.checkpoint);
    }
    assert_eq!(ids, (1..=OK_RECORDS).collect::<Vec<_>>());
    assert_eq!(checkpoints, ["1", "2", "3"]);
}

/// The host still serves: a fresh reader of the same connector and of the same
/// component loaded again read the `ok` mode to the end.
pub(crate) async fn still_serves(host: &Host, connector: &Connector) {
    let grant = grant(limits());
    read_ok(connector, &grant).await;
    read_ok(&hostile(host), &grant).await;
    connector
        .check(&grant, &json!({"mode": "ok"}).to_string())
        .await
        .expect("check still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_mode_reads_thirty_records() {
    let host = NODE.host();
    let connector = hostile(&host);
    assert!(connector.is_source() && !connector.is_destination());
    let grant = grant(limits());
    read_ok(&connector, &grant).await;
    // Resuming after the second checkpoint gives the last ten.
    let mut reader = connector
        .open(
            &grant,
            r#"{"mode":"ok"}"#,
            STREAM,
            SyncMode::FullRefresh,
            Some("2"),
        )
        .await
        .expect("resume");
    let batch = reader
        .next(MAX_RECORDS)
        .await
        .expect("next")
        .expect("a batch");
    let first: Value = serde_json::from_slice(batch.lines().next().expect("a line")).expect("JSON");
    assert_eq!((batch.count, first["id"].as_u64()), (10, Some(21)));
}

/// One sandbox violation: the hostile mode that commits it, the limits it runs under,
/// and the one error its call must fail with.
struct Violation {
    /// What the row shows (as the test it was once), named in its failure.
    name: &'static str,
    /// The hostile source's configuration.
    config: Value,
    /// The grant's limits.
    limits: Limits,
    /// Whether the error, and the requests the grant recorded, are the expected ones.
    expect: fn(&HostError, &[RequestRecord]) -> bool,
}

/// Every violation, each checked by [`violation`].
fn violations() -> Vec<Violation> {
    const CPU: Duration = Duration::from_millis(300);
    const TIMEOUT: Duration = Duration::from_millis(300);
    const SLOW_TIMEOUT: Duration = Duration::from_millis(500);
    const MEMORY_CAP: usize = 64 << 20;
    const MAX_BYTES: usize = 1 << 20;
    vec![
        Violation {
            name: "infinite_loop_exhausts_the_cpu_budget",
            config: json!({"mode": "infinite_loop"}),
            limits: Limits {
                cpu_per_call: CPU,
                call_timeout: Duration::from_secs(30),
                ..limits()
            },
            expect: |e, _| {
                matches!(e, HostError::CpuLimit { call, limit }
                    if *call == NEXT && *limit == CPU)
            },
        },
        Violation {
            name: "infinite_loop_past_the_call_timeout_is_a_timeout",
            config: json!({"mode": "infinite_loop"}),
            limits: Limits {
                cpu_per_call: Duration::from_secs(30),
                call_timeout: TIMEOUT,
                ..limits()
            },
            expect: |e, _| {
                matches!(e, HostError::Timeout { call, limit }
                    if *call == NEXT && *limit == TIMEOUT)
            },
        },
        Violation {
            name: "memory_bomb_hits_the_memory_cap",
            config: json!({"mode": "memory_bomb"}),
            limits: Limits {
                memory_bytes: MEMORY_CAP,
                ..limits()
            },
            expect: |e, _| {
                matches!(e, HostError::MemoryLimit { call, limit, requested }
                    if *call == NEXT && *limit == MEMORY_CAP && *requested > MEMORY_CAP)
            },
        },
        Violation {
            name: "request_to_an_unlisted_host_is_denied_and_recorded",
            config: json!({"mode": "disallowed_host", "url": "http://example.invalid:9/x"}),
            limits: limits(),
            expect: |e, requests| {
                matches!(e, HostError::DisallowedHost { call, host }
                    if *call == NEXT && host == "example.invalid:9")
                    && matches!(requests, [denied]
                        if (denied.method.as_str(), denied.host.as_str(), denied.path.as_str())
                            == ("GET", "example.invalid:9", "/x")
                            && denied.status.is_none()
                            && denied.error.as_deref().is_some_and(|e| e.contains("denied")))
            },
        },
        Violation {
            name: "panic_is_reported_with_its_message",
            config: json!({"mode": "panic"}),
            limits: limits(),
            expect: |e, _| {
                matches!(e, HostError::Panic { call, message }
                    if *call == NEXT && message.contains(PANIC_MESSAGE))
            },
        },
        Violation {
            name: "malformed_json_names_the_record",
            config: json!({"mode": "malformed_json"}),
            limits: limits(),
            expect: |e, _| {
                matches!(e, HostError::MalformedOutput { call, reason }
                    if *call == NEXT && reason.contains("record 2"))
            },
        },
        Violation {
            name: "a_line_that_is_not_an_object_is_malformed",
            config: json!({"mode": "not_object"}),
            limits: limits(),
            expect: |e, _| {
                matches!(e, HostError::MalformedOutput { call, reason }
                    if *call == NEXT
                        && reason.contains("record 2")
                        && reason.contains("JSON object"))
            },
        },
        Violation {
            name: "a_count_that_disagrees_with_the_lines_is_malformed",
            config: json!({"mode": "wrong_count"}),
            limits: limits(),
            expect: |e, _| {
                matches!(e, HostError::MalformedOutput { call, reason }
                    if *call == NEXT && reason.contains("says 2") && reason.contains("5 lines"))
            },
        },
        Violation {
            name: "an_oversized_batch_is_refused",
            config: json!({"mode": "oversized_batch", "bytes": 4 << 20}),
            limits: Limits {
                max_batch_bytes: MAX_BYTES,
                ..limits()
            },
            expect: |e, _| {
                matches!(e,
                    HostError::BatchTooLarge { call, bytes, records, max_bytes, max_records }
                    if *call == NEXT
                        && *max_bytes == MAX_BYTES
                        && *bytes >= 4 << 20
                        && *max_records == MAX_RECORDS
                        && *records <= u64::from(MAX_RECORDS))
            },
        },
        Violation {
            name: "a_slow_host_call_times_out",
            config: json!({"mode": "sleep", "millis": 10_000}),
            limits: Limits {
                call_timeout: SLOW_TIMEOUT,
                ..limits()
            },
            expect: |e, _| {
                matches!(e, HostError::Timeout { call, limit }
                    if *call == NEXT && *limit == SLOW_TIMEOUT)
            },
        },
    ]
}

/// One violation on a host of its own: the first `next` fails with the expected
/// error and poisons its reader, and the host still serves.
async fn violation(v: Violation) {
    let host = NODE.host();
    let connector = hostile(&host);
    let grant = grant(v.limits);
    let err = sandbox_failure(&connector, &grant, v.config.clone()).await;
    let requests = grant.activity.requests();
    assert!(
        (v.expect)(&err, &requests),
        "{} failed with an unexpected error: {err:?}; requests recorded: {requests:?}",
        v.config
    );
    still_serves(&host, &connector).await;
}

/// Every violation fails its call with its own named error, poisons the reader it
/// happened in and leaves the host serving. The rows run one after another, each on a
/// host of its own; a failing row is reported by its name, after all have run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_violation_fails_its_call_alone() {
    let rows = violations();
    let total = rows.len();
    let mut failed = Vec::new();
    for v in rows {
        let name = v.name;
        if let Err(e) = tokio::spawn(violation(v)).await {
            let why = match e.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            failed.push(format!("- {name}: {why}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {total} violations went wrong:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_server_on_another_port_of_an_allowed_host_is_not_reached() {
    let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = hits.clone();
    let app = Router::new().route(
        "/x",
        get(move || async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            "reached"
        }),
    );
    let addr = sluice_testkit::serve(app).await;
    let host = NODE.host();
    let connector = hostile(&host);
    // 127.0.0.1 is allowed, but only on a port the server is not on.
    let other_port = if addr.port() == 1 { 2 } else { addr.port() - 1 };
    let grant = Arc::new(Grant {
        allowed_hosts: vec![format!("127.0.0.1:{other_port}")],
        limits: limits(),
        ..Grant::default()
    });
    let config = json!({"mode": "disallowed_host", "url": format!("http://{addr}/x")});
    match sandbox_failure(&connector, &grant, config).await {
        HostError::DisallowedHost { host, .. } => assert_eq!(host, addr.to_string()),
        other => panic!("expected DisallowedHost, got {other:?}"),
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let requests = grant.activity.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].host, addr.to_string());
    assert!(requests[0].error.is_some());

    // The same request with the server's port allowed goes through.
    let allowed = Arc::new(Grant {
        allowed_hosts: vec![addr.to_string()],
        limits: limits(),
        ..Grant::default()
    });
    let config = json!({"mode": "disallowed_host", "url": format!("http://{addr}/x")});
    let (_, result) = first_batch(&connector, &allowed, config).await;
    let batch = result.expect("allowed request").expect("a batch");
    let record: Value =
        serde_json::from_slice(batch.lines().next().expect("a line")).expect("JSON");
    assert_eq!(record["v"], "status 200");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(allowed.activity.requests()[0].status, Some(200));
    still_serves(&host, &connector).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_cap_is_passed_down_to_the_source() {
    let host = NODE.host();
    let connector = hostile(&host);
    let cap = 5;
    let grant = grant(Limits {
        max_batch_records: cap,
        ..limits()
    });
    // The caller asks for more than the grant accepts. The source is only told what
    // the caller asked for unless the host caps it, and a source that honours the
    // number it is given must never be refused for it.
    let mut reader = connector
        .open(
            &grant,
            r#"{"mode":"ok"}"#,
            STREAM,
            SyncMode::FullRefresh,
            None,
        )
        .await
        .expect("ok mode opens");
    let mut records = 0;
    loop {
        match reader.next(MAX_RECORDS).await {
            Ok(Some(batch)) => {
                assert!(batch.count <= cap, "{} records", batch.count);
                records += u64::from(batch.count);
            }
            Ok(None) => break,
            Err(e) => panic!(
                "asked for {MAX_RECORDS} records under a cap of {cap}, a source that returns \
                 at most what it is asked for was refused: {e}"
            ),
        }
    }
    assert_eq!(records, OK_RECORDS);
    still_serves(&host, &connector).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_errors_keep_their_kind_and_do_not_poison() {
    let host = NODE.host();
    let connector = hostile(&host);
    let grant = grant(limits());
    let kinds = [
        ("auth", FailureKind::Auth, None),
        ("config", FailureKind::Config, None),
        ("rate_limited", FailureKind::RateLimited, Some(1500)),
        ("transient", FailureKind::Transient, None),
        ("permanent", FailureKind::Permanent, None),
        ("schema", FailureKind::Schema, None),
    ];
    for (name, expected, retry_after) in kinds {
        let config = json!({"mode": "error_kind", "kind": name});
        let (mut reader, result) = first_batch(&connector, &grant, config).await;
        match result {
            Err(HostError::Connector {
                call,
                kind,
                retry_after_ms,
                message,
            }) => {
                assert_eq!(call, NEXT);
                assert_eq!(kind, expected, "{name}");
                assert_eq!(retry_after_ms, retry_after, "{name}");
                assert!(message.contains("failed on purpose"), "{message}");
            }
            other => panic!("{name}: expected a connector error, got {other:?}"),
        }
        // A connector's own error leaves the reader usable: it answers again.
        match reader.next(MAX_RECORDS).await {
            Err(HostError::Connector { kind, .. }) => assert_eq!(kind, expected),
            other => panic!("{name}: expected the same error again, got {other:?}"),
        }
    }
    // An unknown mode is refused at open, as a configuration error.
    match connector
        .open(
            &grant,
            r#"{"mode":"nonsense"}"#,
            STREAM,
            SyncMode::FullRefresh,
            None,
        )
        .await
    {
        Err(HostError::Connector { call, kind, .. }) => {
            assert_eq!((call, kind), ("source.open", FailureKind::Config));
        }
        Err(other) => panic!("expected a config error, got {other:?}"),
        Ok(_) => panic!("expected a config error, got a reader"),
    }
    still_serves(&host, &connector).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_is_not_a_connector_is_refused() {
    let host = NODE.host();
    match host.load_file(Path::new(sluice_artifacts::TEST_NOT_A_CONNECTOR)) {
        Err(HostError::NotAConnector { digest, reason }) => {
            assert!(digest.starts_with("sha256:"), "{digest}");
            assert!(reason.contains("sluice:connector/source"), "{reason}");
        }
        Err(other) => panic!("expected NotAConnector, got {other:?}"),
        Ok(_) => panic!("a WASI command must not load as a connector"),
    }
    still_serves(&host, &hostile(&host)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_wasm_do_not_compile() {
    let host = NODE.host();
    for bytes in [
        &b"definitely not wasm"[..],
        b"",
        b"\0asm\x0d\0\x01\0garbage",
    ] {
        match host.load(bytes) {
            Err(HostError::Compile { what, message }) => {
                assert!(what.starts_with("sha256:"), "{what}");
                assert!(!message.is_empty());
            }
            Err(other) => panic!("expected Compile, got {other:?}"),
            Ok(_) => panic!("{bytes:?} must not load"),
        }
    }
    // A file that does not exist names the file.
    match host.load_file(Path::new("/nonexistent/connector.wasm")) {
        Err(HostError::Compile { what, .. }) => assert!(what.contains("connector.wasm"), "{what}"),
        Err(other) => panic!("expected Compile, got {other:?}"),
        Ok(_) => panic!("a missing file must not load"),
    }
    still_serves(&host, &hostile(&host)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_cannot_be_read_from() {
    let host = NODE.host();
    let post = host
        .load_file(Path::new(sluice_artifacts::HTTP_POST))
        .expect("http-post loads");
    assert!(post.is_destination() && !post.is_source());
    let grant = grant(limits());
    let config = json!({"url": "http://127.0.0.1:9/in"}).to_string();
    match post.discover(&grant, &config).await {
        Err(HostError::MissingExport { digest, interface }) => {
            assert_eq!(digest, post.digest());
            assert_eq!(interface, SOURCE_INTERFACE);
        }
        other => panic!("expected MissingExport, got {other:?}"),
    }
    match post
        .open(&grant, &config, "users", SyncMode::FullRefresh, None)
        .await
    {
        Err(HostError::MissingExport { interface, .. }) => assert_eq!(interface, SOURCE_INTERFACE),
        Err(other) => panic!("expected MissingExport, got {other:?}"),
        Ok(_) => panic!("a destination has no reader"),
    }
    // And a source cannot be written to.
    let connector = hostile(&host);
    let stream = sluice_host::StreamDescriptor {
        name: STREAM.into(),
        json_schema: json!({"type": "object"}),
        primary_key: vec!["id".into()],
        cursor_field: None,
        sync_modes: vec![SyncMode::FullRefresh],
    };
    match connector
        .open_writer(&grant, r#"{"mode":"ok"}"#, &stream)
        .await
    {
        Err(HostError::MissingExport { interface, .. }) => {
            assert_eq!(interface, "sluice:connector/destination@0.1.0");
        }
        Err(other) => panic!("expected MissingExport, got {other:?}"),
        Ok(_) => panic!("a source has no writer"),
    }
    still_serves(&host, &connector).await;
}

/// What one concurrent hostile call must fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Cpu,
    Memory,
    Denied,
    Panic,
    Malformed,
    TooLarge,
    Timeout,
    Auth,
}

fn matches_expectation(expect: Expect, err: &HostError) -> bool {
    match (expect, err) {
        (Expect::Cpu, HostError::CpuLimit { .. })
        | (Expect::Memory, HostError::MemoryLimit { .. })
        | (Expect::TooLarge, HostError::BatchTooLarge { .. })
        | (Expect::Timeout, HostError::Timeout { .. }) => true,
        (Expect::Denied, HostError::DisallowedHost { host, .. }) => host == "example.invalid:9",
        (Expect::Panic, HostError::Panic { message, .. }) => message.contains(PANIC_MESSAGE),
        (Expect::Malformed, HostError::MalformedOutput { reason, .. }) => {
            reason.contains("record 2")
        }
        (
            Expect::Auth,
            HostError::Connector {
                kind: FailureKind::Auth,
                ..
            },
        ) => true,
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_calls_in_parallel_fail_alone() {
    let host = NODE.host();
    let connector = hostile(&host);
    let cases = [
        (
            Expect::Cpu,
            json!({"mode": "infinite_loop"}),
            Limits {
                cpu_per_call: Duration::from_millis(300),
                call_timeout: Duration::from_secs(60),
                ..limits()
            },
        ),
        (Expect::Memory, json!({"mode": "memory_bomb"}), limits()),
        (
            Expect::Denied,
            json!({"mode": "disallowed_host", "url": "http://example.invalid:9/x"}),
            limits(),
        ),
        (Expect::Panic, json!({"mode": "panic"}), limits()),
        (
            Expect::Malformed,
            json!({"mode": "malformed_json"}),
            limits(),
        ),
        (
            Expect::TooLarge,
            json!({"mode": "oversized_batch", "bytes": 4 << 20}),
            Limits {
                max_batch_bytes: 1 << 20,
                ..limits()
            },
        ),
        (
            Expect::Timeout,
            json!({"mode": "sleep", "millis": 10_000}),
            Limits {
                call_timeout: Duration::from_millis(500),
                ..limits()
            },
        ),
        (
            Expect::Auth,
            json!({"mode": "error_kind", "kind": "auth"}),
            limits(),
        ),
    ];
    let mut calls = tokio::task::JoinSet::new();
    for (expect, config, limits) in cases {
        let connector = connector.clone();
        calls.spawn(async move {
            let grant = grant(limits);
            let (_, result) = first_batch(&connector, &grant, config).await;
            (expect, result.map(|b| b.map(|b| b.count)))
        });
    }
    let ok_read = {
        let connector = connector.clone();
        tokio::spawn(async move { read_ok(&connector, &grant(limits())).await })
    };
    let mut seen = Vec::new();
    while let Some(joined) = calls.join_next().await {
        let (expect, result) = joined.expect("no call panics the test");
        match result {
            Err(e) => assert!(matches_expectation(expect, &e), "{expect:?}: got {e:?}"),
            Ok(batch) => panic!("{expect:?}: expected an error, got {batch:?}"),
        }
        seen.push(expect);
    }
    assert_eq!(seen.len(), 8);
    ok_read.await.expect("the ok read completes");
    still_serves(&host, &connector).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instantiation_never_fails_on_the_cpu_budget() {
    // Instantiating runs guest code (the component's start functions) before any
    // call has set a CPU budget. An epoch tick during that window must not fail the
    // attempt. Ticks come every 10 ms, so a thousand instantiations cross many.
    let host = NODE.host();
    let connector = hostile(&host);
    let grant = grant(limits());
    let attempts = 1000;
    let mut failures = Vec::new();
    for _ in 0..attempts {
        if let Err(e) = connector.instantiate_only(&grant).await {
            failures.push(format!("instantiate_only: {e:?}"));
        }
        if let Err(e) = connector
            .open(
                &grant,
                r#"{"mode":"ok"}"#,
                STREAM,
                SyncMode::FullRefresh,
                None,
            )
            .await
        {
            failures.push(format!("open: {e:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} instantiations failed, e.g. {:?}",
        failures.len(),
        2 * attempts,
        failures.first()
    );
}
