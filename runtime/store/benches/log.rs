//! Durable event appends per second, with 1 and with 64 concurrent appenders, on each
//! store backend side by side: the sled event log and PostgreSQL's run log (through
//! the `RunLog` of its backend).
//!
//! Run: `cargo bench -p sluice-store --bench log`. Each configuration appends
//! `SLUICE_BENCH_EVENTS` events (default 20,000) of about 200 bytes to a fresh store
//! (sled: a temporary directory; PostgreSQL: a fresh schema of the test database, or
//! the store `SLUICE_BENCH_POSTGRES` names, used as it is); every append is
//! acknowledged only once durable. `SLUICE_BENCH_STORE` picks `sled`, `postgres` or
//! `both` (the default). Prints events/s, p50/p99 append latency and the store's size.
//!
//! Then, for sled, the cost of opening a store of many runs: `SLUICE_BENCH_RUNS` runs
//! (default 100,000) of 10 events each, the time to open it again, and within that
//! the check that every run's events are there.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

/// The allocator `sluice` itself runs with, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_store::log::{CheckpointCommitted, EventKind, RunId, RunScheduled, Trigger};
use sluice_store::postgres::PgStore;
use sluice_store::sled::EventLog;
use sluice_store::{Backend, RunLog};
use sluice_testkit::pg::TestSchema;
use sluice_testkit::stats::{BenchStore, bench_postgres_url, bench_stores, env_or, percentile};

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

/// A run log under test. Cheap to clone.
#[derive(Clone)]
enum Log {
    Sled(EventLog),
    Postgres(PgStore),
}

impl Log {
    fn log(&self) -> &dyn RunLog {
        match self {
            Log::Sled(log) => log,
            Log::Postgres(store) => store.log(),
        }
    }

    async fn size_on_disk(&self) -> u64 {
        match self {
            Log::Sled(log) => log.size_on_disk().unwrap(),
            Log::Postgres(store) => store.size_on_disk().await.unwrap(),
        }
    }
}

/// A fresh log, and what must live as long as it.
async fn open(kind: BenchStore) -> (Log, Option<tempfile::TempDir>, Option<TestSchema>) {
    match kind {
        BenchStore::Sled => {
            let dir = tempfile::tempdir().unwrap();
            let log = EventLog::open(dir.path()).unwrap();
            (Log::Sled(log), Some(dir), None)
        }
        BenchStore::Postgres => {
            let (url, schema) = match bench_postgres_url() {
                Some(url) => (url, None),
                None => {
                    let schema = TestSchema::create().await;
                    (schema.url().to_owned(), Some(schema))
                }
            };
            let store = PgStore::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("cannot open the PostgreSQL store: {e}"));
            (Log::Postgres(store), None, schema)
        }
    }
}

/// One configuration's figures.
struct Row {
    store: &'static str,
    appenders: usize,
    events: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    size_kib: u64,
}

async fn run(kind: BenchStore, appenders: usize, total: usize) -> Row {
    let (log, _dir, _schema) = open(kind).await;
    // Runs of their own, even in a store that holds earlier ones.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let runs: Vec<RunId> = (0..appenders)
        .map(|i| RunId::v7(now + i as u64, [i as u8; 10]))
        .collect();
    for (i, r) in runs.iter().enumerate() {
        log.log().append(*r, vec![scheduled(i)]).await.unwrap();
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
                log.log().append(r, vec![checkpoint(n)]).await.unwrap();
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
    let row = Row {
        store: kind.name(),
        appenders,
        events: lat.len(),
        elapsed,
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        size_kib: log.size_on_disk().await / 1024,
    };
    let s = log.log().state(runs[0]).await.unwrap();
    assert_eq!(s.last_seq as usize, share(0) + 1);
    println!(
        "{:<8} appenders={appenders:>3} events={} elapsed={:.2}s events/s={:.0}",
        row.store,
        row.events,
        elapsed.as_secs_f64(),
        row.events as f64 / elapsed.as_secs_f64(),
    );
    row
}

/// Opens a sled log of `runs` runs of 10 events each again, timing the open and the
/// check of every run's events it makes.
async fn reopen(runs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let made = Instant::now();
    let mut tasks = Vec::new();
    for part in 0..64usize {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in (part..runs).step_by(64) {
                let run = RunId::v7(now + i as u64, [(i % 251) as u8; 10]);
                let mut events = vec![scheduled(i)];
                events.extend((0..9).map(checkpoint));
                log.append(run, events).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let made = made.elapsed();
    drop(log);
    let opened = Instant::now();
    let log = EventLog::open(dir.path()).unwrap();
    let opened = opened.elapsed();
    let checked = Instant::now();
    let (checked_runs, keys) = log.check_runs().unwrap();
    let checked = checked.elapsed();
    assert_eq!(checked_runs as usize, runs);
    println!(
        "sled open: {runs} runs of 10 events (written in {:.1}s, {} MiB): open {:.2}s, \
         of which the check of every run's events ({keys} event keys) {:.2}s",
        made.as_secs_f64(),
        log.size_on_disk().unwrap() / (1 << 20),
        opened.as_secs_f64(),
        checked.as_secs_f64()
    );
}

fn main() {
    let total: usize = env_or("SLUICE_BENCH_EVENTS", 20_000);
    let stores = bench_stores();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for &kind in &stores {
        for appenders in [1, 64] {
            rows.push(rt.block_on(run(kind, appenders, total)));
        }
    }
    if stores.contains(&BenchStore::Sled) {
        rt.block_on(reopen(env_or("SLUICE_BENCH_RUNS", 100_000)));
    }
    println!();
    println!(
        "{:<8} {:>9} {:>7} {:>8} {:>9} {:>9} {:>9} {:>10}",
        "store", "appenders", "events", "seconds", "events/s", "p50 ms", "p99 ms", "size KiB"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for r in &rows {
        println!(
            "{:<8} {:>9} {:>7} {:>8.2} {:>9.0} {:>9.2} {:>9.2} {:>10}",
            r.store,
            r.appenders,
            r.events,
            r.elapsed.as_secs_f64(),
            r.events as f64 / r.elapsed.as_secs_f64(),
            ms(r.p50),
            ms(r.p99),
            r.size_kib
        );
    }
}
