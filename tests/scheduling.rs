//! The engine's ready queue as a user meets it: with few slots, higher priority starts
//! first; a tenant limit keeps one tenant's runs from holding back another's; runs of
//! different workflows share slots, never more than the limit at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::json;
use sluice_engine::{Aging, ConnectionDef, Connectors, Engine, Limits, Trigger, WorkflowDef};
use sluice_host::{Host, HostSettings};
use sluice_store::{RunState, RunStatus, Store};

fn engine(dir: &Path, limits: Limits) -> Engine {
    let host = Host::new(HostSettings {
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("scheduling-components")),
        ..HostSettings::default()
    })
    .unwrap();
    let connectors = Connectors::new(
        host,
        [(
            "sample".to_string(),
            PathBuf::from(sluice_artifacts::SAMPLE),
        )],
    );
    Engine::with_limits(
        Store::open(dir).unwrap(),
        connectors,
        "test-node",
        limits,
        Aging::default(),
    )
}

fn define(engine: &Engine, tenant: &str, workflow: &str, priority: i32) {
    let conn: ConnectionDef = serde_json::from_value(json!({
        "name": format!("sample-{workflow}"), "tenant": tenant, "connector": "sample",
        "config": {"records": 40_000}
    }))
    .unwrap();
    engine.define_connection(&conn).unwrap();
    let wf: WorkflowDef = serde_json::from_value(json!({
        "name": workflow, "connection": format!("sample-{workflow}"),
        "streams": [{"name": "users"}], "priority": priority, "batch_size": 1000
    }))
    .unwrap();
    engine.define_workflow(&wf).unwrap();
}

/// Starts the workflows in order and waits for all; returns their final states.
async fn run_all(engine: &Engine, workflows: &[&str]) -> HashMap<String, RunState> {
    let mut runs = Vec::new();
    for w in workflows {
        runs.push(engine.start(w, Trigger::Manual).await.unwrap());
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
    let dir = tempfile::tempdir().unwrap();
    let e = engine(
        dir.path(),
        Limits {
            slots: 1,
            ..Limits::default()
        },
    );
    define(&e, "t", "first", 0);
    define(&e, "t", "low", 0);
    define(&e, "t", "high", 5);
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
    let dir = tempfile::tempdir().unwrap();
    let e = engine(
        dir.path(),
        Limits {
            slots: 2,
            per_tenant: Some(1),
            ..Limits::default()
        },
    );
    for w in ["big-1", "big-2", "big-3"] {
        define(&e, "big", w, 0);
    }
    define(&e, "small", "small-1", 0);
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
