//! Schedules through the engine, under a controllable clock: `tick_schedules(now)` is
//! called with chosen times (in the past, so the runs it queues start at once). Fires
//! start once, survive a restart, follow the catch-up and overlap policies, and a
//! paused workflow or scheduler fires nothing.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};
use sluice_engine::Engine;
use sluice_store::RunStatus;
use sluice_testkit::node::{self, open_test_store};
use sluice_testkit::{NodeBuilder, NodeDir};

/// Compiled components are shared on disk between the tests. A new engine over the
/// same store (`NODE.engine(store)`) is a restart of the node as far as the engine
/// goes: it keeps nothing of a run or a schedule in memory.
const NODE: NodeBuilder =
    NodeBuilder::new().cache_under(env!("CARGO_TARGET_TMPDIR"), "schedules-components");

async fn define(engine: &Engine, records: u64, workflow: Value) {
    node::connection(
        engine,
        json!({"name": "sample", "connector": "sample", "config": {"records": records}}),
    )
    .await;
    let mut wf = json!({"name": "wf", "connection": "sample", "streams": [{"name": "users"}]});
    for (k, v) in workflow.as_object().unwrap() {
        wf[k] = v.clone();
    }
    node::workflow(engine, wf).await;
}

/// An hour ago, on a whole minute: runs queued for times after it are already due.
fn t0() -> DateTime<Utc> {
    let now = Utc::now() - Duration::hours(1);
    Utc.timestamp_opt(now.timestamp() / 60 * 60, 0).unwrap()
}

fn every_minute(extra: Value) -> Value {
    let mut schedule = json!({"trigger": {"kind": "interval", "every_secs": 60}, "grace_ms": 5000});
    for (k, v) in extra.as_object().unwrap() {
        schedule[k] = v.clone();
    }
    json!({"schedule": schedule})
}

async fn completed(engine: &Engine, runs: &[sluice_store::RunId]) {
    for run in runs {
        let s = engine.wait(*run).await.unwrap();
        assert!(matches!(s.status, RunStatus::Completed), "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_starts_one_run_once_even_across_a_restart() {
    let dir = NodeDir::new();
    let t0 = t0();
    let store = open_test_store(dir.path()).await;
    {
        let e = NODE.engine(store.clone());
        define(&e, 100, every_minute(json!({}))).await;
        assert!(e.tick_schedules(t0).await.unwrap().started.is_empty());
        let tick = e.tick_schedules(t0 + Duration::seconds(59)).await.unwrap();
        assert!(tick.started.is_empty());
        assert_eq!(tick.next, Some(t0 + Duration::seconds(60)));
        let tick = e.tick_schedules(t0 + Duration::seconds(60)).await.unwrap();
        assert_eq!(tick.started.len(), 1);
        assert!(
            e.tick_schedules(t0 + Duration::seconds(61))
                .await
                .unwrap()
                .started
                .is_empty()
        );
        completed(&e, &tick.started).await;
        let state = e.state(tick.started[0]).await.unwrap();
        assert_eq!(state.trigger, sluice_store::log::Trigger::Interval);
    }
    // A restart: the fire already handled is not started again; the next one is.
    let e = NODE.engine(store);
    assert!(
        e.tick_schedules(t0 + Duration::seconds(62))
            .await
            .unwrap()
            .started
            .is_empty()
    );
    let tick = e.tick_schedules(t0 + Duration::seconds(120)).await.unwrap();
    assert_eq!(tick.started.len(), 1);
    completed(&e, &tick.started).await;
}

async fn after_downtime(catch_up: Value) -> (usize, usize) {
    let dir = NodeDir::new();
    let e = NODE.test_engine_at(dir.path()).await;
    let mut wf = every_minute(json!({"catch_up": catch_up}));
    // Caught-up fires queue behind each other instead of being skipped as overlaps.
    wf["overlap"] = "buffer_all".into();
    define(&e, 10, wf).await;
    let t0 = t0();
    e.tick_schedules(t0).await.unwrap();
    // Down from t0 until 10:30 later: fires 1:00 .. 10:00 were missed.
    let tick = e.tick_schedules(t0 + Duration::seconds(630)).await.unwrap();
    completed(&e, &tick.started).await;
    (tick.started.len(), tick.dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_fires_follow_the_catch_up_policy() {
    assert_eq!(after_downtime(json!({"policy": "skip"})).await, (0, 10));
    assert_eq!(after_downtime(json!({"policy": "run_once"})).await, (1, 9));
    // Within 130 s of 10:30: the fires at 9:00 and 10:00, one after another.
    assert_eq!(
        after_downtime(json!({"policy": "all_within", "window_secs": 130})).await,
        (2, 8)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_policies_decide_what_a_fire_does_while_a_run_is_in_flight() {
    for (policy, started, dropped) in [("skip", 1, 2), ("buffer_all", 3, 0), ("buffer_one", 2, 1)] {
        let dir = NodeDir::new();
        let e = NODE.test_engine_at(dir.path()).await;
        // Big enough that the first run is still going when the next fires come.
        define(
            &e,
            300_000,
            json!({"overlap": policy, "schedule": {"trigger": {"kind": "interval", "every_secs": 60}}}),
        ).await;
        let t0 = t0();
        e.tick_schedules(t0).await.unwrap();
        let mut runs = Vec::new();
        let mut drops = 0;
        for minute in 1..=3 {
            let tick = e
                .tick_schedules(t0 + Duration::seconds(60 * minute))
                .await
                .unwrap();
            runs.extend(tick.started);
            drops += tick.dropped;
        }
        assert_eq!((runs.len(), drops), (started, dropped), "{policy}");
        completed(&e, &runs).await;
        // However many were queued, they ran one after another.
        let mut spans = Vec::new();
        for run in &runs {
            let s = e.state(*run).await.unwrap();
            spans.push((
                s.started_at_unix_ms.unwrap(),
                s.finished_at_unix_ms.unwrap(),
            ));
        }
        spans.sort();
        for pair in spans.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "{policy}: runs overlapped: {spans:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_schedules_do_not_fire_and_upcoming_fires_are_listed() {
    let dir = NodeDir::new();
    let e = NODE.test_engine_at(dir.path()).await;
    define(
        &e,
        10,
        every_minute(json!({"catch_up": {"policy": "skip"}})),
    )
    .await;
    let t0 = t0();
    e.tick_schedules(t0).await.unwrap();
    assert_eq!(
        e.upcoming("wf", t0, 2).await.unwrap(),
        vec![t0 + Duration::seconds(60), t0 + Duration::seconds(120)]
    );
    e.pause_workflow("wf", true).await.unwrap();
    assert!(
        e.tick_schedules(t0 + Duration::seconds(60))
            .await
            .unwrap()
            .started
            .is_empty()
    );
    e.pause_workflow("wf", false).await.unwrap();
    e.pause_scheduler(true).await.unwrap();
    assert!(
        e.tick_schedules(t0 + Duration::seconds(120))
            .await
            .unwrap()
            .started
            .is_empty()
    );
    e.pause_scheduler(false).await.unwrap();
    let tick = e.tick_schedules(t0 + Duration::seconds(180)).await.unwrap();
    assert_eq!(
        tick.started.len(),
        1,
        "the fire on time after resuming runs"
    );
    completed(&e, &tick.started).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jittered_fire_is_handled_when_its_run_is_due_not_before() {
    let dir = NodeDir::new();
    let e = NODE.test_engine_at(dir.path()).await;
    define(&e, 10, every_minute(json!({"jitter_ms": 30_000}))).await;
    let t0 = t0();
    e.tick_schedules(t0).await.unwrap();
    let fire = t0 + Duration::seconds(60);
    let schedule: sluice_engine::ScheduleDef = serde_json::from_value(
        json!({"trigger": {"kind": "interval", "every_secs": 60}, "jitter_ms": 30_000}),
    )
    .unwrap();
    let due = schedule.compile().unwrap().jittered("wf", fire);
    assert!(due >= fire && due < fire + Duration::seconds(30));
    if due > fire {
        // Past the fire but before its jittered time: nothing is recorded yet, and the
        // scheduler knows when to look again.
        let tick = e
            .tick_schedules(due - Duration::milliseconds(1))
            .await
            .unwrap();
        assert!(tick.started.is_empty(), "{tick:?}");
        assert_eq!(tick.next, Some(due));
    }
    let tick = e.tick_schedules(due).await.unwrap();
    assert_eq!(tick.started.len(), 1);
    completed(&e, &tick.started).await;
    // The run's fire is the schedule's own time, not the jittered one.
    let events = e.store().log().read(tick.started[0]).await.unwrap();
    let sluice_store::log::EventKind::RunScheduled(s) = &events[0].kind else {
        panic!("{:?}", events[0]);
    };
    assert_eq!(s.fire_at_unix_ms, fire.timestamp_millis());
}

/// The running scheduler handles a fire `FIRE_AHEAD` of its time, so that the run is
/// recorded and queued before it is due; it still starts only when due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_scheduler_records_a_fire_ahead_and_starts_it_when_due() {
    use sluice_store::log::{EventKind, RunFilter};
    let dir = NodeDir::new();
    let e = NODE.test_engine_at(dir.path()).await;
    define(
        &e,
        1,
        json!({"schedule": {"trigger": {"kind": "interval", "every_secs": 1}}}),
    )
    .await;
    e.start_scheduler(std::time::Duration::from_millis(50));
    let filter = RunFilter {
        workflow: Some("wf".into()),
        ..RunFilter::default()
    };
    let runs = loop {
        let runs = e.store().log().list(&filter).await.unwrap();
        if runs.len() >= 3 {
            break runs;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    e.pause_scheduler(true).await.unwrap();
    for r in &runs {
        let state = e.wait(r.run_id).await.unwrap();
        assert!(matches!(state.status, RunStatus::Completed), "{state:?}");
        let events = e.store().log().read(r.run_id).await.unwrap();
        let EventKind::RunScheduled(s) = &events[0].kind else {
            panic!("{:?}", events[0]);
        };
        let started = events
            .iter()
            .find(|ev| matches!(ev.kind, EventKind::RunStarted(_)))
            .map(|ev| ev.at_unix_ms)
            .unwrap();
        // Recorded at most FIRE_AHEAD before its fire, started not before it.
        let ahead = i64::try_from(sluice_engine::FIRE_AHEAD.as_millis()).unwrap();
        assert!(
            events[0].at_unix_ms >= s.fire_at_unix_ms - ahead,
            "recorded {} for a fire at {}",
            events[0].at_unix_ms,
            s.fire_at_unix_ms
        );
        assert!(
            started >= s.fire_at_unix_ms,
            "started {started} before its fire at {}",
            s.fire_at_unix_ms
        );
    }
    // Its own work is counted apart from the runs', in both of its loops.
    let text = e.metrics_text().await;
    for part in ["fire_pass", "dispatch"] {
        let line = format!("sluice_scheduler_cpu_seconds_total{{kind=\"{part}\"}}");
        let secs: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{text}"));
        assert!(secs > 0.0, "{line} {secs}");
    }
    assert!(e.scheduler_cpu_seconds() > 0.0);
}
