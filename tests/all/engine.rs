//! The engine as a user meets it: connections and workflows defined as JSON, runs
//! started, waited for, cancelled, retried and recovered, through the real connectors
//! (`sample`, `rest` against a local paged API, the `hostile` test component) into a
//! real store in a temporary directory. Every count is exact: the connectors are
//! deterministic, so a test knows what each run must have landed.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_engine::{Engine, EngineError, RetryPolicy, Trigger};
use sluice_store::faults::{Faults, FaultyBackend};
use sluice_store::hub::{Change, ChangeKind};
use sluice_store::log::{
    AttemptBegun, AttemptFailed, CheckpointCommitted, FailureKind, RetryScheduled, RunScheduled,
    RunStarted,
};
use sluice_store::log::{EventKind, StatusKind, StreamProgress};
use sluice_store::{LogError, RunEvent, RunId, RunState, RunStatus};
use sluice_testkit::node::{connection, now_ms, open_test_store, run, run_id, workflow};
use sluice_testkit::servers::pages;
use sluice_testkit::{NodeBuilder, NodeDir};

// ---------------------------------------------------------------------------------
// Building an engine
// ---------------------------------------------------------------------------------

/// A host per engine (a small pool: many engines live in this process); compiled
/// components are shared on disk between the tests.
const NODE: NodeBuilder = NodeBuilder::new()
    .pool(64, 512 << 20)
    .cache_under(env!("CARGO_TARGET_TMPDIR"), "engine-test-components");

/// A retry policy that keeps tests short and deterministic.
fn fast_retry() -> Value {
    json!({"initial_backoff_ms": 10, "max_backoff_ms": 50, "jitter": false, "max_attempts": 5})
}

/// A `rest` connection reading `/items` of the paged API at `addr`; with `cursor`, it
/// can read incrementally by `updated_at`.
fn rest_connection(name: &str, addr: SocketAddr, cursor: bool) -> Value {
    let mut stream = json!({
        "name": "items",
        "path": "/items",
        "records_path": "data",
        "primary_key": ["id"],
        "pagination": {"style": "next_link", "path": "next"}
    });
    if cursor {
        stream["cursor_field"] = json!("updated_at");
        stream["cursor_param"] = json!("updated_since");
    }
    json!({
        "name": name,
        "connector": "rest",
        "config": {"base_url": format!("http://{addr}"), "streams": [stream]},
        "allowed_hosts": [addr.to_string()]
    })
}

/// Items `ids`, each last changed at its id (in seconds after the data set's epoch).
fn items(ids: std::ops::RangeInclusive<u64>) -> Vec<Value> {
    ids.map(|id| pages::item(id, id)).collect()
}

// ---------------------------------------------------------------------------------
// Looking at runs
// ---------------------------------------------------------------------------------

fn progress<'a>(state: &'a RunState, stream: &str) -> &'a StreamProgress {
    state
        .progress
        .get(stream)
        .unwrap_or_else(|| panic!("run has no progress for stream `{stream}`: {state:?}"))
}

/// (records, created, updated, unchanged, deleted) of a stream in a run.
fn counts(state: &RunState, stream: &str) -> (u64, u64, u64, u64, u64) {
    let p = progress(state, stream);
    (p.records, p.created, p.updated, p.unchanged, p.deleted)
}

/// The cause of a dead-lettered run.
fn cause(state: &RunState) -> (FailureKind, &str) {
    match &state.status {
        RunStatus::DeadLettered { cause } => (cause.kind, cause.message.as_str()),
        other => panic!("run should be dead-lettered, is {other:?}"),
    }
}

async fn hub_count(engine: &Engine, connection: &str, stream: &str) -> u64 {
    engine
        .store()
        .hub()
        .count(connection, stream)
        .await
        .expect("hub count")
}

async fn feed(engine: &Engine, connection: &str, stream: &str) -> Vec<Change> {
    engine
        .store()
        .hub()
        .feed(connection, stream, 0, usize::MAX)
        .await
        .expect("change feed")
        .0
}

fn feed_count(feed: &[Change], kind: ChangeKind) -> u64 {
    feed.iter().filter(|c| c.kind == kind).count() as u64
}

/// The live record of `stream` with id `id`, as JSON, if any.
async fn hub_record(
    engine: &Engine,
    connection: &str,
    stream: &str,
    id: u64,
) -> Option<(u64, Value)> {
    engine
        .store()
        .hub()
        .get(connection, stream, &[json!(id)])
        .await
        .expect("hub get")
        .map(|r| {
            (
                r.version,
                serde_json::from_str(&r.data).expect("record JSON"),
            )
        })
}

async fn events(engine: &Engine, run: RunId) -> Vec<RunEvent> {
    engine.store().log().read(run).await.expect("run log")
}

/// The run's `AttemptFailed` events, with when they were recorded.
fn failed(events: &[RunEvent]) -> Vec<(i64, AttemptFailed)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AttemptFailed(f) => Some((e.at_unix_ms, f.clone())),
            _ => None,
        })
        .collect()
}

/// The run's `RetryScheduled` events.
fn retries(events: &[RunEvent]) -> Vec<RetryScheduled> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::RetryScheduled(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// The attempts begun, with when.
fn begun(events: &[RunEvent]) -> Vec<(i64, u32)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AttemptBegun(a) => Some((e.at_unix_ms, a.attempt)),
            _ => None,
        })
        .collect()
}

fn dead_letters(events: &[RunEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::RunDeadLettered(_)))
        .count()
}

fn scheduled(workflow: &str, connection: &str, streams: &[&str]) -> EventKind {
    EventKind::RunScheduled(RunScheduled {
        workflow: workflow.into(),
        connection: connection.into(),
        tenant: "default".into(),
        priority: 0,
        streams: streams.iter().map(|s| s.to_string()).collect(),
        trigger: Trigger::Manual,
        fire_at_unix_ms: 0,
    })
}

// ---------------------------------------------------------------------------------
// 1. sample → hub
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_lands_every_record_once_and_a_second_run_changes_nothing() {
    const N: u64 = 20_000;
    let node = NODE.temp().await;
    let e = &node.engine;
    connection(
        e,
        json!({"name": "demo", "connector": "sample", "config": {"records": N, "seed": 7}}),
    )
    .await;
    workflow(
        e,
        json!({"name": "demo", "connection": "demo",
               "streams": [{"name": "users"}, {"name": "orders"}], "batch_size": 1000}),
    )
    .await;

    let first = run(e, "demo").await;
    assert_eq!(first.status, RunStatus::Completed);
    assert_eq!(first.attempts, 1);
    assert_eq!(first.last_error, None);
    assert_eq!(first.trigger, Trigger::Manual);
    assert_eq!(first.streams, ["users", "orders"]);
    assert_eq!(first.total_records(), 2 * N);
    for stream in ["users", "orders"] {
        let p = progress(&first, stream);
        assert!(p.complete, "{stream}");
        assert_eq!(counts(&first, stream), (N, N, 0, 0, 0), "{stream}");
        assert_eq!(p.batches, N / 1000, "{stream}");
        assert_eq!(p.checkpoint.as_deref(), Some("20000"), "{stream}");
        assert_eq!(hub_count(e, "demo", stream).await, N, "{stream}");
        let changes = feed(e, "demo", stream).await;
        assert_eq!(changes.len() as u64, N, "{stream}");
        assert_eq!(feed_count(&changes, ChangeKind::Created), N, "{stream}");
    }
    let (version, user) = hub_record(e, "demo", "users", 1234)
        .await
        .expect("user 1234");
    assert_eq!(version, 1);
    assert_eq!(user["id"], 1234);
    assert!(hub_record(e, "demo", "users", N + 1).await.is_none());

    // The same data again: every record unchanged, nothing new in the feed.
    let second = run(e, "demo").await;
    assert_eq!(second.status, RunStatus::Completed);
    assert_ne!(second.run_id, first.run_id);
    for stream in ["users", "orders"] {
        assert!(progress(&second, stream).complete, "{stream}");
        assert_eq!(counts(&second, stream), (N, 0, 0, N, 0), "{stream}");
        assert_eq!(hub_count(e, "demo", stream).await, N, "{stream}");
        assert_eq!(feed(e, "demo", stream).await.len() as u64, N, "{stream}");
    }

    // A new generation rewrites every tenth record: exactly those are updated.
    connection(
        e,
        json!({"name": "demo", "connector": "sample",
               "config": {"records": N, "seed": 7, "generation": 1}}),
    )
    .await;
    let third = run(e, "demo").await;
    assert_eq!(third.status, RunStatus::Completed);
    for stream in ["users", "orders"] {
        assert_eq!(
            counts(&third, stream),
            (N, 0, N / 10, N - N / 10, 0),
            "{stream}"
        );
        assert_eq!(hub_count(e, "demo", stream).await, N, "{stream}");
        let changes = feed(e, "demo", stream).await;
        assert_eq!(feed_count(&changes, ChangeKind::Created), N, "{stream}");
        assert_eq!(
            feed_count(&changes, ChangeKind::Updated),
            N / 10,
            "{stream}"
        );
    }
    assert_eq!(
        hub_record(e, "demo", "users", 1230).await.map(|r| r.0),
        Some(2)
    );
    assert_eq!(
        hub_record(e, "demo", "users", 1231).await.map(|r| r.0),
        Some(1)
    );
}

// ---------------------------------------------------------------------------------
// 2. Full-refresh deletion detection
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refresh_that_misses_records_deletes_them_and_they_can_come_back() {
    const N: u64 = 10_000;
    let node = NODE.temp().await;
    let e = &node.engine;
    let sample = |config: Value| json!({"name": "s", "connector": "sample", "config": config});
    connection(e, sample(json!({"records": N}))).await;
    workflow(
        e,
        json!({"name": "s", "connection": "s", "batch_size": 1000,
               "streams": [{"name": "users", "mode": "full_refresh"}]}),
    )
    .await;

    let first = run(e, "s").await;
    assert_eq!(first.status, RunStatus::Completed);
    assert_eq!(counts(&first, "users"), (N, N, 0, 0, 0));
    assert_eq!(hub_count(e, "s", "users").await, N);

    // The source now leaves out every tenth record.
    connection(e, sample(json!({"records": N, "delete_every": 10}))).await;
    let second = run(e, "s").await;
    assert_eq!(second.status, RunStatus::Completed);
    assert!(progress(&second, "users").complete);
    assert_eq!(
        counts(&second, "users"),
        (N - N / 10, 0, 0, N - N / 10, N / 10)
    );
    assert_eq!(hub_count(e, "s", "users").await, N - N / 10);
    let changes = feed(e, "s", "users").await;
    assert_eq!(feed_count(&changes, ChangeKind::Created), N);
    assert_eq!(feed_count(&changes, ChangeKind::Deleted), N / 10);
    assert!(hub_record(e, "s", "users", 10).await.is_none());
    assert!(hub_record(e, "s", "users", 11).await.is_some());

    // They come back: created again, with a new version.
    connection(e, sample(json!({"records": N}))).await;
    let third = run(e, "s").await;
    assert_eq!(third.status, RunStatus::Completed);
    assert_eq!(counts(&third, "users"), (N, N / 10, 0, N - N / 10, 0));
    assert_eq!(hub_count(e, "s", "users").await, N);
    let changes = feed(e, "s", "users").await;
    assert_eq!(feed_count(&changes, ChangeKind::Created), N + N / 10);
    assert_eq!(feed_count(&changes, ChangeKind::Deleted), N / 10);
    // Created (1), deleted (2), created again (3).
    assert_eq!(hub_record(e, "s", "users", 10).await.map(|r| r.0), Some(3));
}

// ---------------------------------------------------------------------------------
// 3. Incremental runs
// ---------------------------------------------------------------------------------

/// A run of an incremental stream starts where the workflow's last run ended (the
/// sample's checkpoint is the last id read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_sample_run_reads_only_the_records_added_since_the_last_run() {
    let node = NODE.temp().await;
    let e = &node.engine;
    let sample = |records: u64| json!({"name": "inc", "connector": "sample", "config": {"records": records}});
    connection(e, sample(1000)).await;
    workflow(
        e,
        json!({"name": "inc", "connection": "inc", "batch_size": 100,
               "streams": [{"name": "users", "mode": "incremental"}]}),
    )
    .await;

    let first = run(e, "inc").await;
    assert_eq!(first.status, RunStatus::Completed);
    assert_eq!(counts(&first, "users"), (1000, 1000, 0, 0, 0));
    assert_eq!(
        progress(&first, "users").checkpoint.as_deref(),
        Some("1000")
    );

    connection(e, sample(1500)).await;
    let second = run(e, "inc").await;
    assert_eq!(second.status, RunStatus::Completed);
    assert_eq!(hub_count(e, "inc", "users").await, 1500);
    // Only ids 1001..=1500: the run resumes from where the last one ended.
    assert_eq!(
        counts(&second, "users"),
        (500, 500, 0, 0, 0),
        "an incremental run must start from the previous run's last checkpoint"
    );
    assert_eq!(progress(&second, "users").batches, 5);
    assert_eq!(
        progress(&second, "users").checkpoint.as_deref(),
        Some("1500")
    );
}

/// The same through `rest` with a cursor: the second run asks the API only for records
/// changed after the first run's largest `updated_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_rest_run_reads_only_new_and_changed_records() {
    let (app, server) = pages::router(items(1..=2500));
    let addr = sluice_testkit::serve(app).await;
    let node = NODE.temp().await;
    let e = &node.engine;
    connection(e, rest_connection("api", addr, true)).await;
    workflow(
        e,
        json!({"name": "api", "connection": "api", "batch_size": 1000,
               "streams": [{"name": "items", "mode": "incremental"}]}),
    )
    .await;

    let first = run(e, "api").await;
    assert_eq!(first.status, RunStatus::Completed);
    assert_eq!(counts(&first, "items"), (2500, 2500, 0, 0, 0));
    assert_eq!(server.requests(), 3);

    // Two records change (their updated_at moves past every other) and 100 are added.
    let mut data = items(1..=2600);
    data[9] = pages::item(10, 5010);
    data[19] = pages::item(20, 5020);
    server.set_records(data);
    let second = run(e, "api").await;
    assert_eq!(second.status, RunStatus::Completed);
    assert_eq!(hub_count(e, "api", "items").await, 2600);
    assert_eq!(
        hub_record(e, "api", "items", 10)
            .await
            .map(|r| r.1["updated_at"].clone()),
        Some(json!(pages::timestamp(5010)))
    );
    assert_eq!(
        counts(&second, "items"),
        (102, 100, 2, 0, 0),
        "an incremental run must read from the previous run's cursor"
    );
    // One page of changes after the cursor.
    assert_eq!(server.requests(), 3 + 1);
}

// ---------------------------------------------------------------------------------
// 4. Retries
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_server_errors_are_retried_from_the_last_checkpoint() {
    const N: u64 = 5000;
    let (app, server) = pages::router(items(1..=N));
    // Pages 1 and 2, then three failures, then the rest.
    server.script([None, None, Some(500), Some(503), Some(500)]);
    let addr = sluice_testkit::serve(app).await;
    let node = NODE.temp().await;
    let e = &node.engine;
    connection(e, rest_connection("flaky", addr, false)).await;
    workflow(
        e,
        json!({"name": "flaky", "connection": "flaky", "batch_size": 1000,
               "streams": [{"name": "items"}], "retry": fast_retry()}),
    )
    .await;

    let state = run(e, "flaky").await;
    assert_eq!(state.status, RunStatus::Completed, "{state:?}");
    assert_eq!(state.attempts, 4);
    // Every record exactly once: the pages committed before a failure are not read again.
    assert_eq!(counts(&state, "items"), (N, N, 0, 0, 0));
    assert_eq!(progress(&state, "items").batches, N / 1000);
    assert_eq!(hub_count(e, "flaky", "items").await, N);
    assert_eq!(feed(e, "flaky", "items").await.len() as u64, N);
    assert_eq!(server.requests(), N / 1000 + 3);
    assert_eq!(
        state.last_error.as_ref().map(|f| f.kind),
        Some(FailureKind::Transient)
    );

    let log = events(e, state.run_id).await;
    let failed = failed(&log);
    assert_eq!(
        failed.iter().map(|(_, f)| f.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for ((_, f), status) in failed.iter().zip(["500", "503", "500"]) {
        assert_eq!(f.kind, FailureKind::Transient, "{f:?}");
        assert!(
            f.message.contains(&format!("answered {status}")),
            "{}",
            f.message
        );
        assert!(f.message.contains("stream `items`"), "{}", f.message);
    }
    let retries = retries(&log);
    assert_eq!(
        retries.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    // Backoff without jitter: the policy's delay after each failure was recorded
    // (10, 20, 40 ms; the policy's own rounding is pinned by
    // `backoff_delays_grow_exactly_by_the_multiplier`).
    let policy: RetryPolicy = serde_json::from_value(fast_retry()).expect("policy");
    for (((at, _), r), n) in failed.iter().zip(&retries).zip(1..) {
        let delay = i64::try_from(policy.backoff(n).as_millis()).expect("delay");
        assert!(
            r.not_before_unix_ms - at >= delay,
            "{r:?} after failure at {at}, delay {delay} ms"
        );
    }
    assert_eq!(dead_letters(&log), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_keeps_failing_is_dead_lettered_and_a_manual_retry_finishes_it() {
    const N: u64 = 5000;
    let (app, server) = pages::router(items(1..=N));
    // Pages 1 and 2, then every request fails.
    server.script([None, None]);
    server.always(Some(500));
    let addr = sluice_testkit::serve(app).await;
    let node = NODE.temp().await;
    let e = &node.engine;
    // This test is about attempts and dead letters: the host's breaker, which would
    // fail the manual retry fast for its cool-down, stays out of it.
    let mut down = rest_connection("down", addr, false);
    down["rate_limits"] = json!({"breaker": {"failures": 1000}});
    connection(e, down).await;
    workflow(
        e,
        json!({"name": "down", "connection": "down", "batch_size": 1000,
               "streams": [{"name": "items"}], "retry": fast_retry()}),
    )
    .await;

    let state = run(e, "down").await;
    let run = state.run_id;
    let (kind, message) = cause(&state);
    assert_eq!(kind, FailureKind::Transient);
    assert!(message.contains("answered 500"), "{message}");
    assert!(message.contains("stream `items`"), "{message}");
    assert_eq!(state.attempts, 5);
    assert_eq!(counts(&state, "items"), (2000, 2000, 0, 0, 0));
    assert!(!progress(&state, "items").complete);
    assert_eq!(hub_count(e, "down", "items").await, 2000);
    assert_eq!(server.requests(), 2 + 5);
    let log = events(e, run).await;
    assert_eq!(failed(&log).len(), 5);
    assert_eq!(retries(&log).len(), 4);
    assert_eq!(dead_letters(&log), 1);
    assert_eq!(e.in_flight_run("down").await.unwrap(), None);

    // The server is fixed; a manual retry resumes after page 2.
    server.always(None);
    e.retry(run, "test").await.expect("retry");
    let state = e.wait(run).await.expect("state");
    assert_eq!(state.status, RunStatus::Completed, "{state:?}");
    assert_eq!(state.attempts, 6);
    assert_eq!(counts(&state, "items"), (N, N, 0, 0, 0));
    assert!(progress(&state, "items").complete);
    assert_eq!(hub_count(e, "down", "items").await, N);
    assert_eq!(feed(e, "down", "items").await.len() as u64, N);
    assert_eq!(server.requests(), 2 + 5 + 3);
    let log = events(e, run).await;
    let manual: Vec<&str> = log
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ManualRetryRequested(m) => Some(m.requested_by.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(manual, ["test"]);
    assert!(matches!(
        log.last().map(|e| &e.kind),
        Some(EventKind::RunCompleted(_))
    ));

    // Only a dead-lettered run can be retried, and a completed one cannot be cancelled.
    assert!(matches!(
        e.retry(run, "test").await,
        Err(EngineError::WrongStatus { .. })
    ));
    assert!(matches!(
        e.cancel(run, "test").await,
        Err(EngineError::WrongStatus { .. })
    ));
}

// ---------------------------------------------------------------------------------
// 5. Dead letters without retry
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_that_waiting_cannot_fix_dead_letter_at_once_and_lose_nothing() {
    let node = NODE.temp().await;
    let e = &node.engine;
    let hostile = |config: Value| json!({"name": "h", "connector": "hostile", "config": config});
    connection(e, hostile(json!({"mode": "ok"}))).await;
    workflow(
        e,
        json!({"name": "h", "connection": "h", "batch_size": 1000,
               "streams": [{"name": "items"}], "retry": fast_retry()}),
    )
    .await;
    let ok = run(e, "h").await;
    assert_eq!(ok.status, RunStatus::Completed);
    assert_eq!(counts(&ok, "items"), (30, 30, 0, 0, 0));
    assert_eq!(hub_count(e, "h", "items").await, 30);

    for (kind, expected) in [
        ("auth", FailureKind::Auth),
        ("config", FailureKind::Config),
        ("permanent", FailureKind::Permanent),
        ("schema", FailureKind::Schema),
    ] {
        connection(e, hostile(json!({"mode": "error_kind", "kind": kind}))).await;
        let state = run(e, "h").await;
        let (got, message) = cause(&state);
        assert_eq!(got, expected, "{kind}: {message}");
        assert!(
            message.contains("hostile connector failed on purpose"),
            "{kind}: {message}"
        );
        assert!(message.contains("stream `items`"), "{kind}: {message}");
        assert_eq!(state.attempts, 1, "{kind}");
        let log = events(e, state.run_id).await;
        assert_eq!(failed(&log).len(), 1, "{kind}");
        assert!(retries(&log).is_empty(), "{kind}");
        assert_eq!(hub_count(e, "h", "items").await, 30, "{kind}");
    }

    // Output the host rejects is a schema failure naming the stream.
    for mode in ["not_object", "malformed_json"] {
        connection(e, hostile(json!({"mode": mode}))).await;
        let state = run(e, "h").await;
        let (got, message) = cause(&state);
        assert_eq!(got, FailureKind::Schema, "{mode}: {message}");
        assert!(message.contains("stream `items`"), "{mode}: {message}");
        assert_eq!(state.attempts, 1, "{mode}");
        assert_eq!(state.total_records(), 0, "{mode}");
        assert_eq!(hub_count(e, "h", "items").await, 30, "{mode}");
    }

    // Failures that may pass (the sandbox, transient) are retried up to max_attempts.
    for (config, expected, says) in [
        (
            json!({"mode": "panic"}),
            FailureKind::Sandbox,
            "panicked on purpose",
        ),
        (
            json!({"mode": "error_kind", "kind": "transient"}),
            FailureKind::Transient,
            "failed on purpose",
        ),
    ] {
        connection(e, hostile(config.clone())).await;
        let state = run(e, "h").await;
        let (got, message) = cause(&state);
        assert_eq!(got, expected, "{config}: {message}");
        assert!(message.contains(says), "{config}: {message}");
        assert_eq!(state.attempts, 5, "{config}");
        assert_eq!(hub_count(e, "h", "items").await, 30, "{config}");
    }

    // The engine carries on: the same workflow, and another one.
    connection(e, hostile(json!({"mode": "ok"}))).await;
    let again = run(e, "h").await;
    assert_eq!(again.status, RunStatus::Completed);
    assert_eq!(counts(&again, "items"), (30, 0, 0, 30, 0));
    assert_eq!(hub_count(e, "h", "items").await, 30);
    connection(
        e,
        json!({"name": "other", "connector": "sample", "config": {"records": 500}}),
    )
    .await;
    workflow(
        e,
        json!({"name": "other", "connection": "other", "streams": [{"name": "events"}]}),
    )
    .await;
    let other = run(e, "other").await;
    assert_eq!(other.status, RunStatus::Completed);
    assert_eq!(counts(&other, "events"), (500, 500, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_their_primary_key_dead_letter_as_schema_naming_the_field() {
    let (app, server) = pages::router(items(1..=2000));
    let addr = sluice_testkit::serve(app).await;
    let node = NODE.temp().await;
    let e = &node.engine;
    connection(e, rest_connection("pk", addr, false)).await;
    workflow(
        e,
        json!({"name": "pk", "connection": "pk", "batch_size": 1000,
               "streams": [{"name": "items"}], "retry": fast_retry()}),
    )
    .await;
    let first = run(e, "pk").await;
    assert_eq!(first.status, RunStatus::Completed);
    assert_eq!(hub_count(e, "pk", "items").await, 2000);

    // The second page's records lost their `id`.
    let mut data = items(1..=1000);
    data.extend((1001..=2000).map(|n| json!({"key": n, "updated_at": pages::timestamp(n)})));
    server.set_records(data);
    let state = run(e, "pk").await;
    let (kind, message) = cause(&state);
    assert_eq!(kind, FailureKind::Schema, "{message}");
    assert!(message.contains("primary key field `id`"), "{message}");
    assert!(message.contains("stream `items`"), "{message}");
    assert_eq!(state.attempts, 1);
    // The first page committed; the bad one wrote nothing; nothing was deleted.
    assert_eq!(counts(&state, "items"), (1000, 0, 0, 1000, 0));
    assert!(!progress(&state, "items").complete);
    assert_eq!(hub_count(e, "pk", "items").await, 2000);

    server.set_records(items(1..=2000));
    let fixed = run(e, "pk").await;
    assert_eq!(fixed.status, RunStatus::Completed);
    assert_eq!(counts(&fixed, "items"), (2000, 0, 0, 2000, 0));
    assert_eq!(hub_count(e, "pk", "items").await, 2000);
}

/// A checkpoint the connector rejects. The public API offers no way to store an
/// arbitrary checkpoint, so the run's log is written directly (as a crashed node would
/// have left it) and the engine resumes it with `recover`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_the_connector_rejects_dead_letters_the_run_as_config() {
    let node = NODE.temp().await;
    let e = &node.engine;
    connection(
        e,
        json!({"name": "h", "connector": "hostile", "config": {"mode": "ok"}}),
    )
    .await;
    workflow(
        e,
        json!({"name": "h", "connection": "h", "streams": [{"name": "items"}],
               "retry": fast_retry()}),
    )
    .await;
    assert_eq!(run(e, "h").await.status, RunStatus::Completed);
    assert_eq!(hub_count(e, "h", "items").await, 30);

    let run = run_id(1);
    let log = e.store().log();
    log.append(run, vec![scheduled("h", "h", &["items"])])
        .await
        .unwrap();
    log.append(
        run,
        vec![EventKind::CheckpointCommitted(CheckpointCommitted {
            stream: "items".into(),
            checkpoint: "99".into(),
            ..Default::default()
        })],
    )
    .await
    .unwrap();
    let recovery = e.recover().await.expect("recover");
    assert_eq!(recovery.resumed, [run]);
    assert!(recovery.unreadable.is_empty());

    let state = e.wait(run).await.expect("state");
    let (kind, message) = cause(&state);
    assert_eq!(kind, FailureKind::Config, "{message}");
    assert!(message.contains("invalid checkpoint"), "{message}");
    assert!(message.contains("99"), "{message}");
    assert!(message.contains("stream `items`"), "{message}");
    assert_eq!(state.attempts, 1);
    assert_eq!(hub_count(e, "h", "items").await, 30);
}

// ---------------------------------------------------------------------------------
// 6. Rate limits
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_run_waits_as_long_as_the_source_asked_without_spending_attempts() {
    /// The retry-after the hostile component reports.
    const RETRY_AFTER_MS: u64 = 1500;
    let node = NODE.temp().await;
    let e = &node.engine;
    connection(
        e,
        json!({"name": "rl", "connector": "hostile",
               "config": {"mode": "error_kind", "kind": "rate_limited"}}),
    )
    .await;
    // One wait allowed, and a single failed attempt would be enough to dead-letter: a
    // rate limit must not count as one.
    workflow(
        e,
        json!({"name": "rl", "connection": "rl", "streams": [{"name": "items"}],
               "retry": {"max_attempts": 1, "max_rate_limit_waits": 1, "jitter": false,
                         "initial_backoff_ms": 10, "max_backoff_ms": 50}}),
    )
    .await;
    let run = e.start("rl", Trigger::Manual).await.expect("start");

    // It goes to RetryWaiting, with not_before at least the retry-after from now.
    wait_for_retry(e, run).await;
    let waiting = e.state(run).await.expect("state");
    if !matches!(waiting.status, RunStatus::RetryWaiting { .. }) {
        panic!("never waited: {waiting:?}");
    }
    assert_eq!(
        waiting.last_error.as_ref().map(|f| f.kind),
        Some(FailureKind::RateLimited)
    );
    let RunStatus::RetryWaiting {
        attempt,
        not_before_unix_ms,
    } = waiting.status
    else {
        unreachable!()
    };
    assert_eq!(attempt, 2);

    let state = e.wait(run).await.expect("state");
    let (kind, _) = cause(&state);
    assert_eq!(kind, FailureKind::RateLimited);
    assert_eq!(state.attempts, 2);
    let log = events(e, run).await;
    let failed = failed(&log);
    assert_eq!(failed.len(), 2);
    for (_, f) in &failed {
        assert_eq!(f.kind, FailureKind::RateLimited);
        assert_eq!(f.retry_after_ms, RETRY_AFTER_MS);
    }
    let retries = retries(&log);
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].not_before_unix_ms, not_before_unix_ms);
    assert!(
        retries[0].not_before_unix_ms - failed[0].0 >= RETRY_AFTER_MS as i64,
        "not before {} but failed at {}",
        retries[0].not_before_unix_ms,
        failed[0].0
    );
    // The second attempt did not begin before the time the source asked for.
    let begun = begun(&log);
    assert_eq!(begun.iter().map(|b| b.1).collect::<Vec<_>>(), [1, 2]);
    assert!(begun[1].0 >= retries[0].not_before_unix_ms, "{begun:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_a_rate_limit_can_be_cancelled() {
    let node = NODE.temp().await;
    let e = &node.engine;
    connection(
        e,
        json!({"name": "rl", "connector": "hostile",
               "config": {"mode": "error_kind", "kind": "rate_limited"}}),
    )
    .await;
    workflow(
        e,
        json!({"name": "rl", "connection": "rl", "streams": [{"name": "items"}]}),
    )
    .await;
    let run = e.start("rl", Trigger::Manual).await.expect("start");
    wait_for_retry(e, run).await;
    let state = e.state(run).await.expect("state");
    if !matches!(state.status, RunStatus::RetryWaiting { .. }) {
        panic!("never waited: {state:?}");
    }
    e.cancel(run, "test").await.expect("cancel");
    let state = e.wait(run).await.expect("state");
    assert_eq!(state.status, RunStatus::Cancelled);
    let log = events(e, run).await;
    assert!(matches!(
        log.last().map(|e| &e.kind),
        Some(EventKind::RunCancelled(_))
    ));
}

// ---------------------------------------------------------------------------------
// 7. Cancellation
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stops_at_a_batch_boundary_with_nothing_half_written() {
    const N: u64 = 2_000_000;
    let node = NODE.temp().await;
    let e = &node.engine;
    connection(
        e,
        json!({"name": "big", "connector": "sample", "config": {"records": N}}),
    )
    .await;
    workflow(
        e,
        json!({"name": "big", "connection": "big", "batch_size": 1000,
               "streams": [{"name": "users"}]}),
    )
    .await;
    let run = e.start("big", Trigger::Manual).await.expect("start");
    let mut watch = e.watch(run).expect("the node drives the run");
    watch
        .wait_for(|p| p.records > 0)
        .await
        .expect("records committed");
    // Runs of one workflow never overlap.
    match e.start("big", Trigger::Manual).await {
        Err(EngineError::AlreadyRunning { run: r, .. }) => assert_eq!(r, run),
        other => panic!("a second run started: {other:?}"),
    }
    e.cancel(run, "test").await.expect("cancel");
    let state = e.wait(run).await.expect("state");
    assert_eq!(state.status, RunStatus::Cancelled);

    let committed = state.total_records();
    assert!(committed > 0 && committed < N, "{committed}");
    assert_eq!(committed % 1000, 0, "whole batches only");
    let p = progress(&state, "users");
    assert!(!p.complete);
    assert_eq!(p.batches, committed / 1000);
    assert_eq!(p.checkpoint, Some(committed.to_string()));
    assert_eq!(counts(&state, "users"), (committed, committed, 0, 0, 0));
    assert_eq!(hub_count(e, "big", "users").await, committed);
    assert_eq!(feed(e, "big", "users").await.len() as u64, committed);

    assert!(matches!(
        e.cancel(run, "again").await,
        Err(EngineError::WrongStatus { .. })
    ));
    assert!(matches!(
        e.retry(run, "test").await,
        Err(EngineError::WrongStatus { .. })
    ));
    assert_eq!(e.in_flight_run("big").await.unwrap(), None);
}

// ---------------------------------------------------------------------------------
// 8. Recovery
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_resumes_runs_left_scheduled_waiting_or_running() {
    let dir = NodeDir::new();
    let (a, b, c) = (run_id(1), run_id(2), run_id(3));
    {
        let e = NODE.test_engine_at(dir.path()).await;
        for (name, records) in [("a", 3000), ("b", 4000), ("c", 5000)] {
            connection(
                &e,
                json!({"name": name, "connector": "sample", "config": {"records": records}}),
            )
            .await;
            workflow(
                &e,
                json!({"name": name, "connection": name, "batch_size": 1000,
                       "streams": [{"name": "users"}], "retry": fast_retry()}),
            )
            .await;
        }
        let log = e.store().log();
        // a: scheduled, never started.
        log.append(a, vec![scheduled("a", "a", &["users"])])
            .await
            .unwrap();
        // b: its first attempt failed and it waits for the second.
        log.append(b, vec![scheduled("b", "b", &["users"])])
            .await
            .unwrap();
        log.append(
            b,
            vec![
                EventKind::RunStarted(RunStarted {
                    worker: "old-node".into(),
                    exclusive: true,
                    tenant_slots: 0,
                }),
                EventKind::AttemptBegun(AttemptBegun {
                    attempt: 1,
                    ..Default::default()
                }),
                EventKind::AttemptFailed(AttemptFailed {
                    attempt: 1,
                    kind: FailureKind::Transient,
                    message: "crafted".into(),
                    retry_after_ms: 0,
                }),
                EventKind::RetryScheduled(RetryScheduled {
                    attempt: 2,
                    not_before_unix_ms: now_ms() as i64,
                }),
            ],
        )
        .await
        .unwrap();
        // c: running when its node stopped.
        log.append(c, vec![scheduled("c", "c", &["users"])])
            .await
            .unwrap();
        log.append(
            c,
            vec![
                EventKind::RunStarted(RunStarted {
                    worker: "old-node".into(),
                    exclusive: true,
                    tenant_slots: 0,
                }),
                EventKind::AttemptBegun(AttemptBegun {
                    attempt: 1,
                    ..Default::default()
                }),
            ],
        )
        .await
        .unwrap();
        let mut in_flight = vec![a, b, c];
        in_flight.sort();
        assert_eq!(log.in_flight().await.unwrap(), in_flight);
    }

    // A new node over the same store.
    let e = NODE.test_engine_at(dir.path()).await;
    let recovery = e.recover().await.expect("recover");
    let mut resumed = recovery.resumed.clone();
    resumed.sort();
    let mut expected = vec![a, b, c];
    expected.sort();
    assert_eq!(resumed, expected);
    assert!(recovery.unreadable.is_empty());

    for (run, name, records, attempts) in [(a, "a", 3000, 1), (b, "b", 4000, 2), (c, "c", 5000, 2)]
    {
        let state = e.wait(run).await.expect("state");
        assert_eq!(state.status, RunStatus::Completed, "{name}: {state:?}");
        assert_eq!(state.attempts, attempts, "{name}");
        assert_eq!(
            counts(&state, "users"),
            (records, records, 0, 0, 0),
            "{name}"
        );
        assert_eq!(hub_count(&e, name, "users").await, records, "{name}");
    }
    // The interrupted attempt is recorded as such, not as the run's failure.
    let log = events(&e, c).await;
    let failed = failed(&log);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].1.kind, FailureKind::Orchestration);
    assert!(failed[0].1.message.contains("interrupted"), "{failed:?}");
    // Nothing is left to resume.
    let again = e.recover().await.expect("recover");
    assert!(again.resumed.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_reports_an_unreadable_log_and_resumes_the_other_runs() {
    let dir = NodeDir::new();
    let (x, y) = (run_id(1), run_id(2));
    {
        let e = NODE.test_engine_at(dir.path()).await;
        for (name, records) in [("x", 2000), ("y", 3000)] {
            connection(
                &e,
                json!({"name": name, "connector": "sample", "config": {"records": records}}),
            )
            .await;
            workflow(
                &e,
                json!({"name": name, "connection": name, "batch_size": 1000,
                       "streams": [{"name": "users"}]}),
            )
            .await;
        }
        let log = e.store().log();
        log.append(x, vec![scheduled("x", "x", &["users"])])
            .await
            .unwrap();
        log.append(y, vec![scheduled("y", "y", &["users"])])
            .await
            .unwrap();
    }
    // x's events cannot be read when the store opens again, as if damaged on disk (the
    // store's own tests show each kind of damage is reported so).
    let store = open_test_store(dir.path()).await;
    let faults = Faults::new();
    faults.make_unreadable(
        x,
        LogError::Corrupt {
            run: x,
            seq: 1,
            reason: "damaged on disk".into(),
        },
    );
    let faulty = FaultyBackend::new(std::sync::Arc::clone(store.backend()), faults);
    let e = NODE.engine(sluice_store::Store::with_backend(
        std::sync::Arc::new(faulty),
        store.dir(),
    ));
    let recovery = e.recover().await.expect("recover");
    assert_eq!(recovery.resumed, [y]);
    assert_eq!(recovery.unreadable.len(), 1, "{recovery:?}");
    let (run, error) = &recovery.unreadable[0];
    assert_eq!(*run, x);
    assert!(
        matches!(error, LogError::Corrupt { run, seq: 1, .. } if *run == x),
        "{error}"
    );

    let state = e.wait(y).await.expect("state");
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(counts(&state, "users"), (3000, 3000, 0, 0, 0));
    assert_eq!(hub_count(&e, "y", "users").await, 3000);

    // x keeps its status and is reported again, never dropped.
    assert!(e.state(x).await.is_err());
    let summary = e.store().log().summary(x).await.unwrap().expect("summary");
    assert_eq!(summary.status, StatusKind::Scheduled);
    let again = e.recover().await.expect("recover");
    assert!(again.resumed.is_empty(), "{again:?}");
    assert_eq!(
        again.unreadable.iter().map(|u| u.0).collect::<Vec<_>>(),
        [x]
    );
    assert_eq!(hub_count(&e, "x", "users").await, 0);
}

// ---------------------------------------------------------------------------------
// Definitions and policies
// ---------------------------------------------------------------------------------

/// The policy's delays, exactly: 10 ms doubled twice is 40 ms, not 39.999999 ms
/// (which the engine truncates to a retry 39 ms after the failure).
#[test]
fn backoff_delays_grow_exactly_by_the_multiplier() {
    let policy: RetryPolicy = serde_json::from_value(fast_retry()).expect("policy");
    let delays: Vec<Duration> = (1..=5).map(|n| policy.backoff(n)).collect();
    assert_eq!(delays, [10, 20, 40, 50, 50].map(Duration::from_millis));
}

/// Two starts at once: exactly one run may be created. (A race: when the engine
/// checks for a run in flight and then appends without holding anything, both starts
/// usually pass the check; the test can never fail when starts are serialized.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_of_one_workflow_never_overlap() {
    let node = NODE.temp().await;
    let e = &node.engine;
    connection(
        e,
        json!({"name": "once", "connector": "sample", "config": {"records": 100_000}}),
    )
    .await;
    workflow(
        e,
        json!({"name": "once", "connection": "once", "batch_size": 1000,
               "streams": [{"name": "users"}]}),
    )
    .await;
    let (first, second) = tokio::join!(
        e.start("once", Trigger::Manual),
        e.start("once", Trigger::Manual)
    );
    let started: Vec<RunId> = [&first, &second]
        .into_iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    for run in &started {
        e.cancel(*run, "test").await.expect("cancel");
        e.wait(*run).await.expect("state");
    }
    assert_eq!(
        started.len(),
        1,
        "two runs of one workflow in flight at once: {first:?}, {second:?}"
    );
    let refused = [first, second].into_iter().find_map(Result::err);
    assert!(
        matches!(refused, Some(EngineError::AlreadyRunning { run, .. }) if run == started[0]),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_connector_does_not_offer_dead_letters_as_config() {
    let node = NODE.temp().await;
    let e = &node.engine;
    connection(
        e,
        json!({"name": "s", "connector": "sample", "config": {"records": 10}}),
    )
    .await;
    workflow(
        e,
        json!({"name": "s", "connection": "s",
               "streams": [{"name": "users"}, {"name": "invoices"}]}),
    )
    .await;
    let state = run(e, "s").await;
    let (kind, message) = cause(&state);
    assert_eq!(kind, FailureKind::Config, "{message}");
    assert!(message.contains("stream `invoices`"), "{message}");
    assert!(message.contains("users, orders, events"), "{message}");
    assert_eq!(state.attempts, 1);
    // The stream before it was synced and stays.
    assert_eq!(counts(&state, "users"), (10, 10, 0, 0, 0));
    assert!(progress(&state, "users").complete);
    assert_eq!(hub_count(e, "s", "users").await, 10);
}

/// Waits until the engine puts `run` back in its queue for a retry, or lets it go.
async fn wait_for_retry(e: &Engine, run: RunId) {
    let mut progress = e.watch(run).expect("the node holds the run");
    progress
        .wait_for(|p| p.retry_at_unix_ms.is_some() || p.finished)
        .await
        .expect("progress");
}

/// Runs of one connection reuse a recent discovery; a run needing a stream the
/// connector does not offer still gets the clear error (the discovery is asked again
/// and still lacks it), and the next good run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_discovery_still_refuses_a_stream_the_connector_does_not_offer() {
    let node = NODE.temp().await;
    let e = &node.engine;
    connection(
        e,
        json!({"name": "s", "connector": "sample", "config": {"records": 5}}),
    )
    .await;
    workflow(
        e,
        json!({"name": "good", "connection": "s", "streams": [{"name": "users"}]}),
    )
    .await;
    workflow(
        e,
        json!({"name": "bad", "connection": "s", "streams": [{"name": "users"}, {"name": "nope"}]}),
    )
    .await;
    assert_eq!(run(e, "good").await.status, RunStatus::Completed);
    let bad = run(e, "bad").await;
    let (kind, message) = cause(&bad);
    assert_eq!(kind, FailureKind::Config, "{message}");
    assert!(message.contains("offers no such stream"), "{message}");
    assert!(message.contains("`nope`"), "{message}");
    let again = run(e, "good").await;
    assert_eq!(again.status, RunStatus::Completed);
    assert_eq!(counts(&again, "users"), (5, 0, 0, 5, 0));
}
