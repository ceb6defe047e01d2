//! End-to-end sync benchmark: the `sample` connector → the hub, durably, one checkpoint
//! per batch; then the time from a restart to a resumed sync.
//!
//! `cargo bench -p sluice-engine --bench sync` (release). `SLUICE_BENCH_RECORDS`
//! changes the record count (default 1,000,000 records of ~200 bytes).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary"
)]

/// The allocator `sluice` itself runs with, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_engine::{Engine, Trigger};
use sluice_store::RunStatus;
use sluice_store::log::{AttemptBegun, CheckpointCommitted, EventKind, RunScheduled};
use sluice_testkit::NodeBuilder;
use sluice_testkit::node::{self, run_id};
use sluice_testkit::stats::{env_or, rate};

fn engine(data: &Path, cache: &Path) -> Engine {
    NodeBuilder::new()
        .cache_dir(cache)
        .worker("bench")
        .engine_at(data)
}

async fn define(engine: &Engine, records: u64, batch_size: u32, generation: u64) {
    node::connection(
        engine,
        serde_json::json!({
            "name": "sample", "connector": "sample",
            "config": {"records": records, "record_bytes": 200, "generation": generation}
        }),
    )
    .await;
    node::workflow(
        engine,
        serde_json::json!({
            "name": "users", "connection": "sample",
            "streams": [{"name": "users"}], "batch_size": batch_size
        }),
    )
    .await;
}

async fn timed_run(engine: &Engine, label: &str) -> f64 {
    let t = Instant::now();
    let run = engine.start("users", Trigger::Manual).await.unwrap();
    let state = engine.wait(run).await.unwrap();
    let elapsed = t.elapsed();
    let secs = elapsed.as_secs_f64();
    assert!(matches!(state.status, RunStatus::Completed), "{state:?}");
    let p = &state.progress["users"];
    let rate = rate(state.total_records(), elapsed);
    println!(
        "{label:<44} {:>9} records in {:>6.2} s = {:>9.0} records/s  ({} batches; created {}, updated {}, unchanged {})",
        state.total_records(),
        secs,
        rate,
        p.batches,
        p.created,
        p.updated,
        p.unchanged
    );
    rate
}

fn main() {
    let records: u64 = env_or("SLUICE_BENCH_RECORDS", 1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    println!("sample -> hub, {records} records of ~200 bytes, one durable checkpoint per batch");
    for batch_size in [1_000u32, 2_000, 5_000] {
        let data = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let engine = engine(data.path(), cache.path());
            define(&engine, records, batch_size, 0).await;
            timed_run(
                &engine,
                &format!("batch {batch_size}: first sync (all created)"),
            )
            .await;
            timed_run(
                &engine,
                &format!("batch {batch_size}: again (all unchanged)"),
            )
            .await;
            define(&engine, records, batch_size, 1).await;
            timed_run(&engine, &format!("batch {batch_size}: 10% changed")).await;
        });
    }

    // Restart to resumed sync: a store holding the stream's records and a run in flight
    // half-way, closed as a crash would leave it; then open, recover, first new commit.
    let data = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let engine = engine(data.path(), cache.path());
        define(&engine, records, 2_000, 0).await;
        timed_run(&engine, "restart bench setup: first sync").await;
        let run = run_id(7);
        engine
            .store()
            .log()
            .append(
                run,
                vec![
                    EventKind::RunScheduled(RunScheduled {
                        workflow: "users".into(),
                        connection: "sample".into(),
                        tenant: "default".into(),
                        priority: 0,
                        streams: vec!["users".into()],
                        trigger: Trigger::Manual,
                        fire_at_unix_ms: 0,
                    }),
                    EventKind::AttemptBegun(AttemptBegun {
                        attempt: 1,
                        ..Default::default()
                    }),
                    EventKind::CheckpointCommitted(CheckpointCommitted {
                        stream: "users".into(),
                        checkpoint: (records / 2).to_string(),
                        records: records / 2,
                        attempt: 1,
                        ..Default::default()
                    }),
                ],
            )
            .await
            .unwrap();
    });
    // Let the finished drivers drop their handles on the store before it is reopened.
    std::thread::sleep(Duration::from_millis(200));
    rt.block_on(async {
        let t = Instant::now();
        let engine = engine(data.path(), cache.path());
        let opened = t.elapsed();
        let recovery = engine.recover().await.unwrap();
        let recovered = t.elapsed();
        let run = recovery.resumed[0];
        let mut rx = engine.watch(run).unwrap();
        // The run had committed half the records before the restart.
        rx.wait_for(|p| p.records > records / 2 || p.finished)
            .await
            .unwrap();
        let first_commit = t.elapsed();
        let state = engine.wait(run).await.unwrap();
        assert!(matches!(state.status, RunStatus::Completed), "{state:?}");
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "restart to resumed sync ({records} records in the hub): store open {:.1} ms, \
             recover {:.1} ms, first new checkpoint committed {:.1} ms after start",
            ms(opened),
            ms(recovered),
            ms(first_commit)
        );
    });
}
