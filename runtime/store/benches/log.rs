//! Durable event appends per second, with 1 and with 64 concurrent appenders.
//!
//! Run: `cargo bench -p sluice-store --bench log`. Each configuration appends
//! `SLUICE_BENCH_EVENTS` events (default 20,000) of about 200 bytes to a fresh
//! database in a temporary directory; every append is acknowledged only once
//! flushed. Prints events/s and p50/p99 append latency.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

/// The allocator `sluice` itself runs with, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use sluice_store::RunLog;
use sluice_store::log::{CheckpointCommitted, EventKind, RunId, RunScheduled, Trigger};
use sluice_store::sled::EventLog;

fn scheduled(i: usize) -> EventKind {
    EventKind::RunScheduled(RunScheduled {
        workflow: format!("wf-{}", i % 4),
        connection: format!("conn-{i}"),
        tenant: format!("tenant-{}", i % 8),
        priority: 0,
        streams: vec!["orders".into()],
        trigger: Trigger::Manual,
        fire_at_unix_ms: 0,
    })
}

/// A checkpoint event of about 200 bytes once encoded.
fn checkpoint(n: usize) -> EventKind {
    EventKind::CheckpointCommitted(CheckpointCommitted {
        stream: "orders".into(),
        checkpoint: format!(
            "{{\"cursor\":\"{n:0>12}\",\"page\":\"{}\"}}",
            "x".repeat(120)
        ),
        records: 1000,
        bytes: 200_000,
        created: 600,
        updated: 300,
        unchanged: 100,
        attempt: 1,
        deleted: 0,
    })
}

async fn run(appenders: usize, total: usize) {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let runs: Vec<RunId> = (0..appenders)
        .map(|i| RunId::v7(1_700_000_000_000 + i as u64, [i as u8; 10]))
        .collect();
    for (i, r) in runs.iter().enumerate() {
        log.append(*r, vec![scheduled(i)]).await.unwrap();
    }
    let share = |i: usize| total / appenders + usize::from(i < total % appenders);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, r) in runs.iter().copied().enumerate() {
        let log = log.clone();
        let per = share(i);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for n in 0..per {
                let t = Instant::now();
                log.append(r, vec![checkpoint(n)]).await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::with_capacity(total);
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let events = lat.len();
    println!(
        "appenders={appenders:>3} events={events} elapsed={:.2}s events/s={:.0} p50={:.2}ms p99={:.2}ms disk={}KiB",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        log.size_on_disk().unwrap() / 1024,
    );
    let s = log.state(runs[0]).await.unwrap();
    assert_eq!(s.last_seq as usize, share(0) + 1);
}

fn main() {
    let total: usize = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for appenders in [1, 64] {
        rt.block_on(run(appenders, total));
    }
}
