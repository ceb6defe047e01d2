//! Faults injected through the contract: a failed commit writes nothing and the store
//! keeps serving; a run that cannot be read is reported, and others still are.

use std::sync::Arc;

use sluice_store::faults::{Faults, FaultyBackend, INJECTED, Op};
use sluice_store::log::LogError;
use sluice_store::{BatchCommit, Store, StoreError};

use crate::{Site, begun, run_id, scheduled};

async fn faulty(site: &dyn Site) -> (Store, Arc<Faults>) {
    let store = site.open().await;
    let faults = Faults::new();
    let backend = FaultyBackend::new(Arc::clone(store.backend()), Arc::clone(&faults));
    (Store::with_backend(Arc::new(backend), store.dir()), faults)
}

fn batch(from: u32, to: u32, checkpoint: &str) -> BatchCommit {
    let records = (from..to)
        .flat_map(|id| format!("{{\"id\":{id}}}\n").into_bytes())
        .collect();
    BatchCommit {
        connection: "c".into(),
        stream: "users".into(),
        primary_key: vec!["id".into()],
        records,
        checkpoint: checkpoint.into(),
        attempt: 1,
        generation: 0,
        incremental: true,
    }
}

pub async fn a_failed_commit_writes_nothing_and_the_next_one_lands(site: &dyn Site) {
    let run = run_id(1);
    {
        let (store, faults) = faulty(site).await;
        store
            .log()
            .append(run, vec![scheduled("wf", "c", "t"), begun(1)])
            .await
            .unwrap();
        faults.fail_nth(Op::CommitBatch, 2);
        store.commit_batch(run, batch(0, 10, "10")).await.unwrap();
        let failed = store.commit_batch(run, batch(10, 20, "20")).await;
        assert!(
            matches!(&failed, Err(StoreError::Storage(m)) if m == INJECTED),
            "{failed:?}"
        );
        assert_eq!(store.hub().count("c", "users").await.unwrap(), 10);
        store.commit_batch(run, batch(10, 20, "20")).await.unwrap();
        faults.fail_next(Op::Append);
        let refused = store.log().append(run, vec![begun(2)]).await;
        assert!(matches!(refused, Err(LogError::Storage(_))), "{refused:?}");
        assert_eq!(faults.calls(Op::CommitBatch), 3);
    }
    // Reopened without faults: the failed commit and append left no trace.
    let store = site.open().await;
    let state = store.log().state(run).await.unwrap();
    let users = &state.progress["users"];
    assert_eq!((users.batches, users.records), (2, 20));
    assert_eq!(users.checkpoint.as_deref(), Some("20"));
    assert_eq!(state.attempts, 1);
    assert_eq!(store.hub().count("c", "users").await.unwrap(), 20);
}

pub async fn an_unreadable_run_is_reported_and_others_read(site: &dyn Site) {
    let (store, faults) = faulty(site).await;
    let (bad, good) = (run_id(2), run_id(3));
    for run in [bad, good] {
        store
            .log()
            .append(run, vec![scheduled("wf", "c", "t")])
            .await
            .unwrap();
    }
    faults.make_unreadable(
        bad,
        LogError::Corrupt {
            run: bad,
            seq: 1,
            reason: "damaged".into(),
        },
    );
    assert!(matches!(
        store.log().state(bad).await,
        Err(LogError::Corrupt { seq: 1, .. })
    ));
    assert!(store.log().read(bad).await.is_err());
    assert_eq!(store.log().state(good).await.unwrap().workflow, "wf");
    let mut in_flight = store.log().in_flight().await.unwrap();
    in_flight.sort();
    assert_eq!(in_flight, [bad, good]);
}
