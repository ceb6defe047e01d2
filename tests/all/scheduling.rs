//! The engine's ready queue and supervision as a user meets them: with few slots,
//! higher priority starts first; a tenant limit keeps one tenant's runs from holding
//! back another's; a stuck attempt is stopped and retried; a run past its timeout is
//! dead-lettered.

use std::collections::HashMap;
use std::path::Path;

use serde_json::json;
use sluice_engine::{Engine, Limits, Trigger};
use sluice_store::{RunId, RunState, RunStatus};
use sluice_testkit::node::{self, open_test_store};
use sluice_testkit::{NodeBuilder, NodeDir};

/// Compiled components are shared on disk between the tests.
const NODE: NodeBuilder =
    NodeBuilder::new().cache_under(env!("CARGO_TARGET_TMPDIR"), "scheduling-components");

async fn engine(dir: &Path, limits: Limits) -> Engine {
    NODE.engine_with(open_test_store(dir).await, limits)
}

async fn define(engine: &Engine, tenant: &str, workflow: &str, priority: i32) {
    node::connection(
        engine,
        json!({
            "name": format!("sample-{workflow}"), "tenant": tenant, "connector": "sample",
            "config": {"records": 40_000}
        }),
    )
    .await;
    node::workflow(
        engine,
        json!({
            "name": workflow, "connection": format!("sample-{workflow}"),
            "streams": [{"name": "users"}], "priority": priority, "batch_size": 1000
        }),
    )
    .await;
}

/// Starts the workflows in order and waits for all; returns their final states. The
/// first one is running before the others are queued: else the dispatcher may find
/// them all waiting and rightly start the highest priority first.
async fn run_all(engine: &Engine, workflows: &[&str]) -> HashMap<String, RunState> {
    let mut runs = Vec::new();
    for w in workflows {
        let run = engine.start(w, Trigger::Manual).await.unwrap();
        while runs.is_empty()
            && engine
                .state(run)
                .await
                .unwrap()
                .started_at_unix_ms
                .is_none()
        {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        runs.push(run);
    }
    let mut out = HashMap::new();
    for run in runs {
        let state = engine.wait(run).await.unwrap();
        assert!(matches!(state.status, RunStatus::Completed), "{state:?}");
        out.insert(state.workflow.clone(), state);
    }
    out
}

fn span(s: &RunState) -> (i64, i64) {
    (
        s.started_at_unix_ms.expect("started"),
        s.finished_at_unix_ms.expect("finished"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_slot_higher_priority_starts_first_and_runs_never_share_it() {
    let dir = NodeDir::new();
    let e = engine(
        dir.path(),
        Limits {
            slots: 1,
            ..Limits::default()
        },
    )
    .await;
    define(&e, "t", "first", 0).await;
    define(&e, "t", "low", 0).await;
    define(&e, "t", "high", 5).await;
    let states = run_all(&e, &["first", "low", "high"]).await;
    let (first, low, high) = (
        span(&states["first"]),
        span(&states["low"]),
        span(&states["high"]),
    );
    assert!(first.1 <= high.0, "high started before first finished");
    assert!(
        high.1 <= low.0,
        "low started before high finished: {high:?} {low:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_limit_lets_another_tenant_through() {
    let dir = NodeDir::new();
    let e = engine(
        dir.path(),
        Limits {
            slots: 2,
            per_tenant: Some(1),
            ..Limits::default()
        },
    )
    .await;
    for w in ["big-1", "big-2", "big-3"] {
        define(&e, "big", w, 0).await;
    }
    define(&e, "small", "small-1", 0).await;
    let states = run_all(&e, &["big-1", "big-2", "big-3", "small-1"]).await;
    let big: Vec<(i64, i64)> = ["big-1", "big-2", "big-3"]
        .iter()
        .map(|w| span(&states[*w]))
        .collect();
    let small = span(&states["small-1"]);
    // The small tenant did not wait behind the big tenant's queue.
    assert!(small.0 < big[0].1, "small waited: {small:?} vs {big:?}");
    // The big tenant never had two runs at once.
    let mut sorted = big.clone();
    sorted.sort();
    for pair in sorted.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "big runs overlapped: {sorted:?}");
    }
}

/// A workflow over the hostile component sleeping `millis` per batch, forever.
async fn sleeper(engine: &Engine, millis: u64, workflow: serde_json::Value) {
    node::connection(
        engine,
        json!({
            "name": "sleeper", "connector": "hostile", "config": {"mode": "sleep", "millis": millis}
        }),
    )
    .await;
    let mut wf = json!({"name": "slow", "connection": "sleeper", "streams": [{"name": "items"}],
                        "retry": {"max_attempts": 2, "initial_backoff_ms": 10, "jitter": false}});
    for (k, v) in workflow.as_object().unwrap() {
        wf[k] = v.clone();
    }
    node::workflow(engine, wf).await;
}

async fn events_of(engine: &Engine, run: sluice_store::RunId) -> Vec<sluice_store::log::EventKind> {
    engine
        .store()
        .log()
        .read(run)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_attempt_is_stopped_heartbeats_and_is_retried_by_policy() {
    use sluice_store::log::EventKind;
    let dir = NodeDir::new();
    let e = engine(dir.path(), Limits::default()).await;
    // Each batch takes 5 s; an attempt that commits nothing for 1 s is stuck.
    sleeper(&e, 5_000, json!({"timeouts": {"heartbeat_secs": 1}})).await;
    let run = e.start("slow", Trigger::Manual).await.unwrap();
    let state = e.wait(run).await.unwrap();
    let RunStatus::DeadLettered { cause } = &state.status else {
        panic!("expected dead-lettered, got {state:?}");
    };
    assert!(cause.message.contains("stopped as stuck"), "{cause:?}");
    assert_eq!(
        state.attempts, 2,
        "retried once by the policy, then dead-lettered"
    );
    let events = events_of(&e, run).await;
    let stuck = events
        .iter()
        .filter(|k| matches!(k, EventKind::AttemptFailed(f) if f.message.contains("stuck")))
        .count();
    assert_eq!(stuck, 2);
    assert!(
        events.iter().any(|k| matches!(k, EventKind::Heartbeat(_))),
        "a running attempt heartbeats"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_timeout_is_dead_lettered() {
    let dir = NodeDir::new();
    let e = engine(dir.path(), Limits::default()).await;
    // A batch takes 3 s, well within the 10 s heartbeat timeout, but the run may
    // last only 1 s.
    sleeper(
        &e,
        3_000,
        json!({"timeouts": {"run_secs": 1, "heartbeat_secs": 10}}),
    )
    .await;
    let run = e.start("slow", Trigger::Manual).await.unwrap();
    let state = e.wait(run).await.unwrap();
    let RunStatus::DeadLettered { cause } = &state.status else {
        panic!("expected dead-lettered, got {state:?}");
    };
    assert!(cause.message.contains("timed out"), "{cause:?}");
    assert_eq!(state.attempts, 1, "a run timeout is not retried");
    let elapsed = state.finished_at_unix_ms.unwrap() - state.started_at_unix_ms.unwrap();
    assert!(
        elapsed < 3_000,
        "stopped before the batch ended: {elapsed} ms"
    );
}

/// Writes what another node running `workflow` would have: scheduled, started and
/// attempt 1 begun under a lease until `lease_until`; returns the run.
async fn run_of_another_node(engine: &Engine, workflow: &str, lease_until: i64) -> RunId {
    use sluice_store::log::{AttemptBegun, EventKind, RunScheduled, RunStarted, Trigger};
    let run = RunId::v7(
        u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap(),
        rand_tail(workflow),
    );
    let events = vec![
        EventKind::RunScheduled(RunScheduled {
            workflow: workflow.into(),
            connection: format!("sample-{workflow}"),
            tenant: "t".into(),
            priority: 0,
            streams: vec!["users".into()],
            trigger: Trigger::Manual,
            fire_at_unix_ms: 0,
        }),
        EventKind::RunStarted(RunStarted {
            worker: "node-b".into(),
            exclusive: true,
            tenant_slots: 0,
        }),
        EventKind::AttemptBegun(AttemptBegun {
            attempt: 1,
            worker: "node-b".into(),
            lease_until_unix_ms: lease_until,
        }),
    ];
    engine.store().log().append(run, events).await.unwrap();
    run
}

fn rand_tail(seed: &str) -> [u8; 10] {
    let mut tail = [0u8; 10];
    for (i, b) in seed.bytes().enumerate() {
        tail[i % 10] ^= b;
    }
    tail
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_nodes_run_is_taken_over_only_once_its_lease_expired() {
    use sluice_store::log::{AttemptFailed, EventKind, FailureKind, Heartbeat};
    let dir = NodeDir::new();
    let e = engine(dir.path(), Limits::default()).await;
    define(&e, "t", "expired", 0).await;
    define(&e, "t", "alive", 0).await;
    let now = chrono::Utc::now().timestamp_millis();
    let expired = run_of_another_node(&e, "expired", now - 1_000).await;
    let alive = run_of_another_node(&e, "alive", now + 3_600_000).await;

    // Only the run whose lease expired moves to this node.
    assert_eq!(e.take_over_expired(now).await.unwrap(), vec![expired]);
    let state = e.wait(expired).await.unwrap();
    assert_eq!(state.status, RunStatus::Completed, "{state:?}");
    assert_eq!(state.total_records(), 40_000);
    let events = events_of(&e, expired).await;
    let taken = events.iter().any(|k| {
        matches!(k, EventKind::AttemptFailed(f)
            if f.kind == FailureKind::Orchestration && f.message.contains("node-b"))
    });
    assert!(taken, "{events:?}");
    assert!(events.iter().any(|k| matches!(k,
        EventKind::AttemptBegun(a) if a.attempt == 2 && a.worker == "test-node")));

    // The live node heartbeats: its lease moves past the first expiry.
    let alive_state = e.state(alive).await.unwrap();
    assert_eq!(alive_state.lease.as_ref().unwrap().worker, "node-b");
    assert!(e.watch(alive).is_none());
    e.store()
        .log()
        .append(
            alive,
            vec![EventKind::Heartbeat(Heartbeat {
                attempt: 1,
                lease_until_unix_ms: now + 7_200_000,
            })],
        )
        .await
        .unwrap();
    assert!(
        e.take_over_expired(now + 3_600_001)
            .await
            .unwrap()
            .is_empty()
    );
    // A node that read the run before that heartbeat cannot take it: its append is
    // conditional on the log not having moved.
    let stale = alive_state.last_seq;
    let takeover = EventKind::AttemptFailed(AttemptFailed {
        attempt: 1,
        kind: FailureKind::Orchestration,
        message: "taken over".into(),
        retry_after_ms: 0,
    });
    let err = e
        .store()
        .log()
        .append_expecting(alive, stale, vec![takeover])
        .await
        .unwrap_err();
    assert!(
        matches!(err, sluice_store::LogError::Conflict { .. }),
        "{err:?}"
    );

    assert_eq!(
        e.take_over_expired(now + 7_200_001).await.unwrap(),
        vec![alive]
    );
    let state = e.wait(alive).await.unwrap();
    assert_eq!(state.status, RunStatus::Completed, "{state:?}");
    assert_eq!(state.total_records(), 40_000);
    assert_eq!(state.lease, None);
}

/// More runs at once than the connector host's pool has instances: the runs past
/// the pool wait for an instance and every one completes on its first attempt; none
/// fails for the node's own limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_past_the_instance_pool_wait_for_an_instance_and_all_complete() {
    const POOL: u32 = 2;
    const RUNS: usize = 8;
    let dir = NodeDir::new();
    let small_pool = NODE.pool(POOL, 64 << 20);
    let e = small_pool.engine_with(
        open_test_store(dir.path()).await,
        Limits {
            slots: RUNS,
            ..Limits::default()
        },
    );
    let names: Vec<String> = (0..RUNS).map(|i| format!("pooled-{i}")).collect();
    for w in &names {
        define(&e, "t", w, 0).await;
    }
    let mut runs = Vec::new();
    for w in &names {
        runs.push(e.start(w, Trigger::Manual).await.unwrap());
    }
    for run in runs {
        let state = e.wait(run).await.unwrap();
        assert!(matches!(state.status, RunStatus::Completed), "{state:?}");
        assert_eq!(state.attempts, 1, "{state:?}");
        assert_eq!(state.total_records(), 40_000, "{state:?}");
    }
}
