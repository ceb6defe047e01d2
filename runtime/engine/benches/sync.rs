//! End-to-end sync benchmark: the `sample` connector → the hub, durably, one checkpoint
//! per batch, on each store backend side by side; then the time from a restart to a
//! resumed sync.
//!
//! `cargo bench -p sluice-engine --bench sync` (release). Settings:
//!
//! - `SLUICE_BENCH_RECORDS`: records per sync (default 1,000,000 records of ~200 bytes).
//! - `SLUICE_BENCH_STORE`: `sled`, `postgres` or `both` (the default).
//! - `SLUICE_BENCH_POSTGRES`: a PostgreSQL store URL to use as it is; by default each
//!   configuration gets a fresh schema of the test database (`SLUICE_TEST_POSTGRES`,
//!   `postgres://root@127.0.0.1:5432/test`), dropped afterwards. A given store keeps
//!   what the benchmark writes; its connections are named per run, so every first
//!   sync creates all its records.
//! - `SLUICE_BENCH_BATCHES`: batch sizes, comma-separated (default `1000,2000,5000`).
//!
//! For each backend and batch size: a first sync (every record created), the same
//! data again (every record unchanged) and a sync with every tenth record rewritten
//! (the sample connector's `generation`). One table shows them all: seconds,
//! records/s, and the CPU time this process (the node) and the PostgreSQL server used
//! in each phase — the server's backends serving this benchmark (found by their
//! `application_name` in `pg_stat_activity`, read from `/proc`) and its background
//! writers (WAL writer, checkpointer, background writer; shared with anything else the
//! server does at the time) — and how long they were ready to run but waited for a
//! CPU: for each other (the node's threads and the server share the cores), or for
//! other work on the machine, whose share makes a run's figures not the machine's.

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
use sluice_store::log::{AttemptBegun, CheckpointCommitted, EventKind, RunScheduled};
use sluice_store::{Location, RunStatus};
use sluice_testkit::NodeBuilder;
use sluice_testkit::node::{self, run_id};
use sluice_testkit::pg::TestSchema;
use sluice_testkit::stats::{
    BenchStore, ProcTimes, TimesReading, bench_postgres_url, bench_stores, env_or, own_times,
    process_times, rate,
};

/// The batch size whose store the restart benchmark reopens (or the first one run).
const RESTART_BATCH: u32 = 2_000;

/// Where one configuration's store lives, kept as long as it.
struct Site {
    kind: BenchStore,
    /// The sled store, or the node's files beside a PostgreSQL store.
    data: tempfile::TempDir,
    /// The PostgreSQL store's URL, naming this benchmark as its `application_name`.
    url: Option<String>,
    /// Its fresh schema, dropped with it.
    _schema: Option<TestSchema>,
    connection: String,
    workflow: String,
}

impl Site {
    async fn new(kind: BenchStore, batch_size: u32) -> Site {
        let data = tempfile::tempdir().unwrap();
        let (url, schema, tag) = match kind {
            BenchStore::Sled => (None, None, String::new()),
            BenchStore::Postgres => match bench_postgres_url() {
                // A store that may hold earlier runs: names of this run's own.
                Some(url) => (
                    Some(url),
                    None,
                    format!("-{}-{}", std::process::id(), node::now_ms()),
                ),
                None => {
                    let schema = TestSchema::create().await;
                    (Some(schema.url().to_owned()), Some(schema), String::new())
                }
            },
        };
        Site {
            kind,
            data,
            url: url.map(|u| with_application_name(&u, &application_name())),
            _schema: schema,
            connection: format!("sample-{batch_size}{tag}"),
            workflow: format!("users-{batch_size}{tag}"),
        }
    }

    async fn engine(&self, cache: &Path) -> Engine {
        let node = NodeBuilder::new().cache_dir(cache).worker("bench");
        let location = match &self.url {
            None => Location::Dir(self.data.path().to_path_buf()),
            Some(url) => Location::parse(url),
        };
        let store = location
            .open(self.data.path())
            .await
            .unwrap_or_else(|e| panic!("cannot open the store at {location}: {e}"));
        node.engine(store)
    }

    async fn define(&self, engine: &Engine, records: u64, batch_size: u32, generation: u64) {
        node::connection(
            engine,
            serde_json::json!({
                "name": self.connection, "connector": "sample",
                "config": {"records": records, "record_bytes": 200, "generation": generation}
            }),
        )
        .await;
        node::workflow(
            engine,
            serde_json::json!({
                "name": self.workflow, "connection": self.connection,
                "streams": [{"name": "users"}], "batch_size": batch_size
            }),
        )
        .await;
    }
}

/// The `application_name` of this benchmark's connections to PostgreSQL, by which the
/// server's processes serving it are found.
fn application_name() -> String {
    format!("sluice-bench-{}", std::process::id())
}

/// `url` with `application_name` set to `name` (a later parameter wins).
fn with_application_name(url: &str, name: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={name}")
}

/// The CPU time the PostgreSQL server spends, read from `/proc` (so only for a server
/// on this machine).
struct Server {
    client: tokio_postgres::Client,
    /// The store's URL, to connect again after losing the server.
    url: String,
    application: String,
}

/// A reading of the server's processes: those serving this benchmark, the background
/// writers.
struct ServerReading {
    backends: TimesReading,
    background: TimesReading,
}

/// The server's times in one phase.
#[derive(Clone, Copy)]
struct ServerTimes {
    backends: ProcTimes,
    background: ProcTimes,
}

impl Server {
    /// Connects to the server of the store at `url`; `None` (said why) if it cannot, or
    /// if its processes are not on this machine.
    async fn connect(url: &str) -> Option<Server> {
        let probe = with_application_name(url, "sluice-bench-probe");
        let (client, connection) = match tokio_postgres::connect(&probe, tokio_postgres::NoTls)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                println!("(no server CPU figures: cannot connect to read pg_stat_activity: {e})");
                return None;
            }
        };
        tokio::spawn(connection);
        let server = Server {
            client,
            url: url.to_owned(),
            application: application_name(),
        };
        let row = server
            .client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .ok()?;
        let pid: i32 = row.get(0);
        if process_times(pid as u32).is_none() {
            println!("(no server CPU figures: the PostgreSQL server is not on this machine)");
            return None;
        }
        Some(server)
    }

    /// The times of the server's processes now; `None` (said why) if the server cannot
    /// be asked, when the probe connects again for the next reading.
    async fn reading(&mut self) -> Option<ServerReading> {
        let rows = match self
            .client
            .query(
                "SELECT pid, application_name = $1 FROM pg_stat_activity \
                 WHERE application_name = $1 \
                 OR backend_type IN ('walwriter', 'checkpointer', 'background writer')",
                &[&self.application],
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                // The server restarted, say: its processes are new, this phase's
                // figures are lost.
                println!("(no server CPU figures for this phase: {e})");
                if let Some(again) = Server::connect(&self.url).await {
                    *self = again;
                }
                return None;
            }
        };
        let pids = |ours: bool| {
            rows.iter()
                .filter(move |r| r.get::<_, bool>(1) == ours)
                .map(|r| r.get::<_, i32>(0) as u32)
                .collect::<Vec<_>>()
        };
        Some(ServerReading {
            backends: TimesReading::of(pids(true)),
            background: TimesReading::of(pids(false)),
        })
    }
}

/// One timed phase.
struct Row {
    store: &'static str,
    batch: u32,
    phase: &'static str,
    records: u64,
    elapsed: Duration,
    node: ProcTimes,
    server: Option<ServerTimes>,
}

async fn timed_run(
    engine: &Engine,
    site: &Site,
    mut server: Option<&mut Server>,
    batch: u32,
    phase: &'static str,
) -> Row {
    let server_before = match server.as_deref_mut() {
        Some(s) => s.reading().await,
        None => None,
    };
    let node_before = own_times();
    let t = Instant::now();
    let run = engine.start(&site.workflow, Trigger::Manual).await.unwrap();
    let state = engine.wait(run).await.unwrap();
    let elapsed = t.elapsed();
    let node = own_times().since(node_before);
    let server = match (server, server_before) {
        (Some(s), Some(before)) => s.reading().await.map(|after| ServerTimes {
            backends: after.backends.since(&before.backends),
            background: after.background.since(&before.background),
        }),
        _ => None,
    };
    assert!(matches!(state.status, RunStatus::Completed), "{state:?}");
    let p = &state.progress["users"];
    println!(
        "{:<8} batch {batch:>5}: {phase:<26} {:>9} records in {:>7.2} s = {:>9.0} records/s  ({} batches; created {}, updated {}, unchanged {})",
        site.kind.name(),
        state.total_records(),
        elapsed.as_secs_f64(),
        rate(state.total_records(), elapsed),
        p.batches,
        p.created,
        p.updated,
        p.unchanged
    );
    Row {
        store: site.kind.name(),
        batch,
        phase,
        records: state.total_records(),
        elapsed,
        node,
        server,
    }
}

/// The three phases on a fresh store: first sync, the same again, a tenth changed.
async fn phases(site: &Site, cache: &Path, records: u64, batch: u32, rows: &mut Vec<Row>) {
    let engine = site.engine(cache).await;
    let mut server = match &site.url {
        Some(url) => Server::connect(url).await,
        None => None,
    };
    site.define(&engine, records, batch, 0).await;
    for (generation, phase) in [
        (0, "first sync (all created)"),
        (0, "again (all unchanged)"),
        (1, "10% changed"),
    ] {
        if generation > 0 {
            site.define(&engine, records, batch, generation).await;
        }
        rows.push(timed_run(&engine, site, server.as_mut(), batch, phase).await);
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<8} {:>5}  {:<26} {:>9} {:>8} {:>10}  {:>8}  {:>22}  {:>13}  {:>17}",
        "store",
        "batch",
        "phase",
        "records",
        "seconds",
        "records/s",
        "node CPU",
        "server CPU (ours + bg)",
        "CPU µs/record",
        "waited for a CPU"
    );
    for r in rows {
        let secs = |d: Duration| d.as_secs_f64();
        let per_record = |d: Duration| d.as_secs_f64() * 1e6 / r.records.max(1) as f64;
        let (server, per, waited) = match r.server {
            Some(s) => {
                let total = s.backends + s.background;
                (
                    format!(
                        "{:.2} s ({:.2} + {:.2})",
                        secs(total.cpu),
                        secs(s.backends.cpu),
                        secs(s.background.cpu)
                    ),
                    format!(
                        "{:.1} + {:.1}",
                        per_record(r.node.cpu),
                        per_record(total.cpu)
                    ),
                    format!("{:.2} + {:.2} s", secs(r.node.waited), secs(total.waited)),
                )
            }
            None => (
                "-".to_owned(),
                format!("{:.1}", per_record(r.node.cpu)),
                format!("{:.2} s", secs(r.node.waited)),
            ),
        };
        println!(
            "{:<8} {:>5}  {:<26} {:>9} {:>8.2} {:>10.0}  {:>6.2} s  {:>22}  {:>13}  {:>17}",
            r.store,
            r.batch,
            r.phase,
            r.records,
            secs(r.elapsed),
            rate(r.records, r.elapsed),
            secs(r.node.cpu),
            server,
            per,
            waited
        );
    }
    println!(
        "(CPU µs/record and waited: node + server. The node runs the connector, the engine \
         and the store's client side; \"bg\" is the server's WAL writer, checkpointer and \
         background writer. Waited for a CPU: time ready to run while every core was busy, \
         with each other or with other work.)"
    );
}

/// Restart to resumed sync on `site`'s store, which holds the stream's records: a run
/// in flight half-way is added and the node closed as a crash would leave it; then
/// open, recover, first new commit. Returns (open, recover, first commit).
fn restart(
    rt: &tokio::runtime::Runtime,
    site: &Site,
    cache: &Path,
    records: u64,
) -> (Duration, Duration, Duration) {
    let run = run_id(7);
    rt.block_on(async {
        let engine = site.engine(cache).await;
        engine
            .store()
            .log()
            .append(
                run,
                vec![
                    EventKind::RunScheduled(RunScheduled {
                        workflow: site.workflow.clone(),
                        connection: site.connection.clone(),
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
        let engine = site.engine(cache).await;
        let opened = t.elapsed();
        let recovery = engine.recover().await.unwrap();
        let recovered = t.elapsed();
        assert!(recovery.resumed.contains(&run), "{:?}", recovery.resumed);
        let mut rx = engine.watch(run).unwrap();
        // The run had committed half the records before the restart.
        rx.wait_for(|p| p.records > records / 2 || p.finished)
            .await
            .unwrap();
        let first_commit = t.elapsed();
        let state = engine.wait(run).await.unwrap();
        assert!(matches!(state.status, RunStatus::Completed), "{state:?}");
        (opened, recovered, first_commit)
    })
}

fn main() {
    let records: u64 = env_or("SLUICE_BENCH_RECORDS", 1_000_000);
    let stores = bench_stores();
    let batches: Vec<u32> = std::env::var("SLUICE_BENCH_BATCHES")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.split(',')
                .map(|b| {
                    b.trim().parse().unwrap_or_else(|_| {
                        panic!("SLUICE_BENCH_BATCHES: `{b}` is not a batch size")
                    })
                })
                .collect()
        })
        .unwrap_or_else(|| vec![1_000, 2_000, 5_000]);
    let restart_batch = if batches.contains(&RESTART_BATCH) {
        RESTART_BATCH
    } else {
        batches[0]
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let names: Vec<&str> = stores.iter().map(|s| s.name()).collect();
    println!(
        "sample -> hub, {records} records of ~200 bytes, one durable checkpoint per batch; \
         stores: {}; batches: {batches:?}",
        names.join(", ")
    );
    // The connector compiled once, before anything is timed.
    {
        let warm = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let site = Site {
                kind: BenchStore::Sled,
                data: warm,
                url: None,
                _schema: None,
                connection: "warm".into(),
                workflow: "warm".into(),
            };
            let engine = site.engine(cache.path()).await;
            site.define(&engine, 1_000, 1_000, 0).await;
            let run = engine.start("warm", Trigger::Manual).await.unwrap();
            engine.wait(run).await.unwrap();
        });
    }

    let mut rows = Vec::new();
    let mut restarts = Vec::new();
    for &kind in &stores {
        let mut kept = None;
        for &batch in &batches {
            let site = rt.block_on(Site::new(kind, batch));
            rt.block_on(phases(&site, cache.path(), records, batch, &mut rows));
            if batch == restart_batch {
                kept = Some(site);
            }
        }
        if let Some(site) = kept {
            let (opened, recovered, first) = restart(&rt, &site, cache.path(), records);
            restarts.push((kind, opened, recovered, first));
        }
    }

    print_table(&rows);
    println!();
    println!(
        "restart to resumed sync, on the store of batch {restart_batch} after its phases \
         ({records} records in the hub):"
    );
    println!(
        "{:<8}  {:>10}  {:>10}  {:>21}   (ms after the start)",
        "store", "store open", "recovered", "first new checkpoint"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (kind, opened, recovered, first) in restarts {
        println!(
            "{:<8}  {:>10.1}  {:>10.1}  {:>21.1}",
            kind.name(),
            ms(opened),
            ms(recovered),
            ms(first)
        );
    }
}
