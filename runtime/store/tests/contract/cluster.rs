//! What several nodes sharing a store rely on: an attempt that lost its run is fenced
//! off (every backend), and on a shared store a fire creates one run, and a run
//! starts only when its workflow is free and within its tenant's slots.

use sluice_store::log::{
    AttemptFailed, EventKind, FailureKind, FoldError, Heartbeat, LogError, RetryScheduled,
    RunCancelled, RunCompleted, RunId, RunScheduled, RunStarted, StatusKind, StreamCompleted,
    Trigger,
};

use crate::{Site, begun, run_id, scheduled};

fn completed() -> EventKind {
    EventKind::RunCompleted(RunCompleted {})
}

fn cancelled() -> EventKind {
    EventKind::RunCancelled(RunCancelled {
        reason: "stop".into(),
    })
}

pub async fn events_of_an_attempt_that_lost_the_run_are_fenced_off(site: &dyn Site) {
    let store = site.open().await;
    let log = store.log();
    let r = run_id(9);
    let of = |attempt| {
        vec![
            EventKind::Heartbeat(Heartbeat {
                attempt,
                lease_until_unix_ms: 1,
            }),
            EventKind::StreamCompleted(StreamCompleted {
                stream: "users".into(),
                full_refresh: false,
                attempt,
            }),
            EventKind::AttemptFailed(AttemptFailed {
                attempt,
                kind: FailureKind::Transient,
                message: "late".into(),
                retry_after_ms: 0,
            }),
        ]
    };
    log.append(r, vec![scheduled("wf", "c", "t"), begun(1)])
        .await
        .unwrap();
    // A node takes the run over from attempt 1's worker.
    let taken = log
        .append(r, vec![of(1).remove(2), begun(2)])
        .await
        .unwrap();
    let last = *taken.last().unwrap();
    for event in of(1) {
        let name = event.name();
        let refused = log.append(r, vec![event]).await;
        match refused {
            Err(LogError::Refused {
                error:
                    FoldError::Fenced {
                        attempt: 1,
                        current: 2,
                        ..
                    },
                ..
            }) => {}
            other => panic!("{name} of attempt 1 after attempt 2 began: {other:?}"),
        }
    }
    assert_eq!(log.summary(r).await.unwrap().unwrap().last_seq, last);
    // Attempt 2's events land; once it failed and a retry waits, no attempt holds
    // the run, so even its own late events are refused.
    log.append(r, of(2)).await.unwrap();
    log.append(
        r,
        vec![EventKind::RetryScheduled(RetryScheduled {
            attempt: 3,
            not_before_unix_ms: 0,
        })],
    )
    .await
    .unwrap();
    let late = log.append(r, vec![of(2).remove(0)]).await;
    assert!(matches!(&late, Err(e) if e.is_fenced()), "{late:?}");
}

/// `RunScheduled` of `workflow`'s fire at `fire_at_unix_ms`.
fn fired(workflow: &str, fire_at_unix_ms: i64) -> EventKind {
    match scheduled(workflow, "c", "t") {
        EventKind::RunScheduled(s) => EventKind::RunScheduled(RunScheduled {
            trigger: Trigger::Interval,
            fire_at_unix_ms,
            ..s
        }),
        other => other,
    }
}

pub async fn on_a_shared_store_a_fire_creates_one_run(site: &dyn Site) {
    let store = site.open().await;
    if !store.shared() {
        return; // One node: its scheduler handles each fire once.
    }
    let log = store.log();
    log.append(run_id(1), vec![fired("wf", 2_000)])
        .await
        .unwrap();
    // Another node, a moment behind, decides the same fire, or an earlier one.
    for (n, fire) in [(2, 2_000), (3, 1_000)] {
        let refused = log.append(run_id(n), vec![fired("wf", fire)]).await;
        assert!(
            matches!(&refused, Err(LogError::FireTaken { workflow, fire_at_unix_ms })
                if workflow == "wf" && *fire_at_unix_ms == fire),
            "{refused:?}"
        );
        assert!(matches!(
            log.read(run_id(n)).await.as_deref(),
            Ok([]) | Err(LogError::UnknownRun(_))
        ));
    }
    // Later fires, and other workflows' fires, create their runs.
    log.append(run_id(4), vec![fired("wf", 3_000)])
        .await
        .unwrap();
    log.append(run_id(5), vec![fired("other", 2_000)])
        .await
        .unwrap();
}

pub async fn on_a_shared_store_a_run_starts_only_when_its_workflow_is_free(site: &dyn Site) {
    let store = site.open().await;
    if !store.shared() {
        return; // One node: its ready queue never starts two runs of a workflow.
    }
    let log = store.log();
    let start = |exclusive| {
        vec![
            EventKind::RunStarted(RunStarted {
                worker: "n".into(),
                exclusive,
                tenant_slots: 0,
            }),
            begun(1),
        ]
    };
    let (first, second, third) = (run_id(1), run_id(2), run_id(3));
    for r in [first, second, third] {
        log.append(r, vec![scheduled("wf", "c", "t")])
            .await
            .unwrap();
    }
    log.append(first, start(true)).await.unwrap();
    let busy = log.append(second, start(true)).await;
    assert!(
        matches!(&busy, Err(LogError::WorkflowBusy { run, workflow, holder })
            if *run == second && workflow == "wf" && *holder == first),
        "{busy:?}"
    );
    assert_eq!(
        log.summary(second).await.unwrap().unwrap().status,
        StatusKind::Scheduled
    );
    // A workflow that lets its runs overlap starts them at once.
    log.append(third, start(false)).await.unwrap();
    // A run waiting for a retry still holds its workflow; its end frees it.
    log.append(
        first,
        vec![EventKind::RetryScheduled(RetryScheduled {
            attempt: 2,
            not_before_unix_ms: 0,
        })],
    )
    .await
    .unwrap();
    assert!(matches!(
        log.append(second, start(true)).await,
        Err(LogError::WorkflowBusy { .. })
    ));
    log.append(first, vec![cancelled()]).await.unwrap();
    log.append(third, vec![completed()]).await.unwrap();
    log.append(second, start(true)).await.unwrap();
}

pub async fn on_a_shared_store_a_run_starts_only_within_its_tenants_slots(site: &dyn Site) {
    let store = site.open().await;
    if !store.shared() {
        return; // One node: its ready queue keeps the tenant's slots.
    }
    let log = store.log();
    let start = |slots| {
        vec![
            EventKind::RunStarted(RunStarted {
                worker: "n".into(),
                exclusive: false,
                tenant_slots: slots,
            }),
            begun(1),
        ]
    };
    let runs: Vec<RunId> = (1..=4).map(run_id).collect();
    for (i, r) in runs.iter().enumerate() {
        log.append(*r, vec![scheduled(&format!("wf{i}"), "c", "acme")])
            .await
            .unwrap();
    }
    log.append(runs[0], start(2)).await.unwrap();
    log.append(runs[1], start(2)).await.unwrap();
    let busy = log.append(runs[2], start(2)).await;
    assert!(
        matches!(&busy, Err(LogError::TenantBusy { run, tenant, limit: 2 })
            if *run == runs[2] && tenant == "acme"),
        "{busy:?}"
    );
    // A start with no limit is not held back, and its run counts all the same.
    log.append(runs[3], start(0)).await.unwrap();
    log.append(runs[0], vec![completed()]).await.unwrap();
    assert!(matches!(
        log.append(runs[2], start(2)).await,
        Err(LogError::TenantBusy { .. })
    ));
    // Runs that end free their slots.
    log.append(runs[3], vec![completed()]).await.unwrap();
    log.append(runs[2], start(2)).await.unwrap();
}
