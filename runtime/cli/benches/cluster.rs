//! Cluster benchmark: 1, 2 and 3 `sluice serve` nodes — real processes, the release
//! binary cargo built for this bench — on one PostgreSQL store (a fresh schema of the
//! test database per measurement), measured three ways:
//!
//! 1. **Schedule throughput**: many workflows on 1 s interval schedules (each its own
//!    `sample` connection of a few records, so no two share a hub stream; overlap
//!    `skip`), run for a fixed time after a warm-up. Runs/s started and completed, due
//!    → started latency (the run's first `AttemptBegun` against its fire's jittered
//!    due time, clamped at 0: a fire is handled up to 100 ms ahead), runs per fire
//!    (must be exactly 1), fires that started nothing, and the runs each node drove;
//!    beside it, from the nodes' `/metrics`, the runs driven and waiting (sampled every
//!    second), the queue wait and the scheduler loops' own CPU, and from the log where
//!    the latency goes (fire recorded, queued, run).
//! 2. **Sync throughput**: several large `sample` syncs triggered together through
//!    the nodes' API (`sluice workflows trigger`): records/s from the first start to
//!    the last completion, and the runs and records each node drove. Each run is
//!    checked to have counted and created its records exactly once (and the hub to
//!    hold them); one that did not is printed with its log as a `DEFECT`.
//! 3. **Failover**: on 2 nodes, one long sync; once it committed a few batches its
//!    driver (the `worker` of its latest `AttemptBegun`, the node id a node prints as
//!    `node <id> joined the cluster`) is killed (SIGKILL), and the time from the kill
//!    to the next `AttemptBegun` on another node is set beside the lease
//!    (`timeouts.heartbeat_secs`), for two lease lengths; then the sync is checked to
//!    have landed every record exactly once.
//!
//! During (1) and (2) the CPU time of the node processes, of the PostgreSQL backends
//! serving them (found through the nodes' sockets and the backends' process titles)
//! and of the server's background writers is read from `/proc`, beside the machine's
//! total, so a table says where the time went: the nodes, the database, or other work
//! on the machine.
//!
//! `cargo bench -p sluice-cli --bench cluster`. The database: `SLUICE_TEST_POSTGRES`
//! (default `postgres://root@127.0.0.1:5432/test`), on this machine for the server
//! figures. Settings (environment):
//!
//! - `SLUICE_BENCH_NODES`: cluster sizes, default `1,2,3`.
//! - `SLUICE_BENCH_PHASES`: any of `schedule,sync,failover` (default all three).
//! - `SLUICE_BENCH_SLOTS`: each node's `--slots` (default 64).
//! - `SLUICE_BENCH_HEARTBEAT_MS`, `SLUICE_BENCH_NODE_TIMEOUT_MS`, `SLUICE_BENCH_SWEEP_MS`:
//!   the nodes' cluster flags (defaults are the node's: 1000, 10000, 1000).
//! - Schedules: `SLUICE_BENCH_WORKFLOWS` (1000), `SLUICE_BENCH_SCHEDULE_RECORDS` (records
//!   a run reads, 10), `SLUICE_BENCH_JITTER_MS` (the schedules' jitter, 1000),
//!   `SLUICE_BENCH_WARMUP_SECS` (5), `SLUICE_BENCH_SECS` (the measured window, 20).
//! - Syncs: `SLUICE_BENCH_SYNC_CONNECTIONS` (6), `SLUICE_BENCH_SYNC_RECORDS` (records
//!   each, 200000, of 200 bytes), `SLUICE_BENCH_SYNC_BATCH` (2000),
//!   `SLUICE_BENCH_SYNC_TRIGGER`: through which node each sync is triggered — `spread`
//!   (round robin, the default), `owner` (the workflow's owner by the cluster's
//!   rendezvous hash, where its schedule would start it) or `first` (all through one).
//! - Failover: `SLUICE_BENCH_FAILOVER_NODES` (2), `SLUICE_BENCH_FAILOVER_RECORDS`
//!   (1000000), `SLUICE_BENCH_FAILOVER_HEARTBEATS` (the workflow's
//!   `timeouts.heartbeat_secs`, one measurement each: `3,9`; the lease is that long),
//!   `SLUICE_BENCH_FAILOVER_AFTER_BATCHES` (batches committed before the kill, 5),
//!   `SLUICE_BENCH_FAILOVER_FINISH` (`0`: do not wait for the sync to end and check
//!   it). The sync is triggered at a random moment of the nodes' sweep period, so the
//!   wait for a sweep after the lease ends is a fair sample.
//! - `SLUICE_BENCH_VERBOSE`: also print the schedules' runs begun per second by node.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary"
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use sluice_engine::ScheduleDef;
use sluice_store::log::{EventKind, RunEvent, RunFilter, RunId};
use sluice_store::{Location, Store};
use sluice_testkit::pg::{TestSchema, database_url};
use sluice_testkit::stats::{ProcTimes, TimesReading, env_or, percentile, process_times, spread};

/// The `sluice` binary cargo built with this bench (the bench profile: release).
const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// Longest wait for a node to listen after it was started.
const START_PATIENCE: Duration = Duration::from_secs(180);

/// The stream every `sample` workflow syncs.
const STREAM: &str = "users";

/// Linux's `USER_HZ`: ticks per second in `/proc/stat`.
const TICKS: f64 = 100.0;

// ---------------------------------------------------------------------------------
// Settings.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    Spread,
    Owner,
    First,
}

struct Settings {
    nodes: Vec<usize>,
    phases: Vec<String>,
    slots: usize,
    heartbeat_ms: u64,
    node_timeout_ms: u64,
    sweep_ms: u64,
    workflows: usize,
    schedule_records: u64,
    jitter_ms: u64,
    warmup_secs: u64,
    secs: u64,
    sync_connections: usize,
    sync_records: u64,
    sync_batch: u32,
    placement: Placement,
    failover_nodes: usize,
    failover_records: u64,
    failover_heartbeats: Vec<u64>,
    failover_after_batches: usize,
    failover_finish: bool,
}

/// A comma-separated list from the environment, else `default`.
fn env_list<T: std::str::FromStr + Clone>(name: &str, default: &[T]) -> Vec<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: `{s}` does not parse"))
            })
            .collect(),
        _ => default.to_vec(),
    }
}

impl Settings {
    fn from_env() -> Settings {
        let placement = match std::env::var("SLUICE_BENCH_SYNC_TRIGGER")
            .unwrap_or_default()
            .as_str()
        {
            "" | "spread" => Placement::Spread,
            "owner" => Placement::Owner,
            "first" => Placement::First,
            other => panic!("SLUICE_BENCH_SYNC_TRIGGER={other}: name spread, owner or first"),
        };
        let phases = env_list(
            "SLUICE_BENCH_PHASES",
            &["schedule".to_owned(), "sync".into(), "failover".into()],
        );
        for p in &phases {
            assert!(
                ["schedule", "sync", "failover"].contains(&p.as_str()),
                "SLUICE_BENCH_PHASES: unknown phase `{p}` (schedule, sync, failover)"
            );
        }
        Settings {
            nodes: env_list("SLUICE_BENCH_NODES", &[1, 2, 3]),
            phases,
            slots: env_or("SLUICE_BENCH_SLOTS", 64),
            heartbeat_ms: env_or("SLUICE_BENCH_HEARTBEAT_MS", 1_000),
            node_timeout_ms: env_or("SLUICE_BENCH_NODE_TIMEOUT_MS", 10_000),
            sweep_ms: env_or("SLUICE_BENCH_SWEEP_MS", 1_000),
            workflows: env_or("SLUICE_BENCH_WORKFLOWS", 1_000),
            schedule_records: env_or("SLUICE_BENCH_SCHEDULE_RECORDS", 10),
            jitter_ms: env_or("SLUICE_BENCH_JITTER_MS", 1_000),
            warmup_secs: env_or("SLUICE_BENCH_WARMUP_SECS", 5),
            secs: env_or("SLUICE_BENCH_SECS", 20),
            sync_connections: env_or("SLUICE_BENCH_SYNC_CONNECTIONS", 6),
            sync_records: env_or("SLUICE_BENCH_SYNC_RECORDS", 200_000),
            sync_batch: env_or("SLUICE_BENCH_SYNC_BATCH", 2_000),
            placement,
            failover_nodes: env_or("SLUICE_BENCH_FAILOVER_NODES", 2).max(2),
            failover_records: env_or("SLUICE_BENCH_FAILOVER_RECORDS", 1_000_000),
            failover_heartbeats: env_list("SLUICE_BENCH_FAILOVER_HEARTBEATS", &[3, 9]),
            failover_after_batches: env_or("SLUICE_BENCH_FAILOVER_AFTER_BATCHES", 5),
            failover_finish: env_or("SLUICE_BENCH_FAILOVER_FINISH", 1) != 0,
        }
    }

    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------
// Nodes.

/// What a node's stderr says as it starts.
enum Said {
    Joined(String),
    Api(SocketAddr),
    Metrics(SocketAddr),
    Ended,
}

/// One `sluice serve` process.
struct Node {
    name: String,
    child: Option<Child>,
    pid: u32,
    /// Its id in the cluster: the `worker` of the attempts it runs.
    id: String,
    api: SocketAddr,
    /// Its Prometheus endpoint.
    metrics: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
}

impl Node {
    fn server(&self) -> String {
        format!("http://{}", self.api)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self, max: usize) -> String {
        let log = lock(&self.log);
        let mut from = log.len().saturating_sub(max);
        while !log.is_char_boundary(from) {
            from += 1;
        }
        log[from..].to_owned()
    }
}

/// Nodes on one fresh store; kills them when dropped, before the schema goes.
struct Cluster {
    nodes: Vec<Node>,
    /// The bench's own handle on the store.
    store: Store,
    _dir: tempfile::TempDir,
    _schema: TestSchema,
}

/// `url` with `key=value` added to its query.
fn with_param(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

impl Cluster {
    /// A fresh schema, `definitions` in a file and `n` nodes on it, started together;
    /// returns once every node listens.
    fn start(
        rt: &tokio::runtime::Runtime,
        settings: &Settings,
        cache: &Path,
        n: usize,
        definitions: &serde_json::Value,
    ) -> Cluster {
        let schema = rt.block_on(TestSchema::create());
        let dir = tempfile::tempdir().unwrap();
        let defs = dir.path().join("definitions.json");
        std::fs::write(&defs, definitions.to_string()).unwrap();
        let store = rt
            .block_on(Location::parse(schema.url()).open(&dir.path().join("bench")))
            .unwrap_or_else(|e| panic!("the bench opens the store: {e}"));
        let began = Instant::now();
        let mut pending = Vec::new();
        for i in 1..=n {
            let name = format!("n{i}");
            let data = dir.path().join(&name);
            std::fs::create_dir_all(&data).unwrap();
            let url = with_param(schema.url(), "application_name", &format!("sluice-{name}"));
            let mut cmd = Command::new(SLUICE);
            cmd.arg("serve")
                .arg(&defs)
                .arg("--store")
                .arg(&url)
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
                .args(["--node-name", &name, "--no-initial-runs"])
                .args(["--slots", &settings.slots.to_string()])
                .args(["--heartbeat-ms", &settings.heartbeat_ms.to_string()])
                .args(["--node-timeout-ms", &settings.node_timeout_ms.to_string()])
                .args(["--sweep-ms", &settings.sweep_ms.to_string()])
                .env("SLUICE_CACHE_DIR", cache);
            for var in [
                "SLUICE_STORE",
                "SLUICE_DATA_DIR",
                "SLUICE_CONFIG",
                "SLUICE_LISTEN",
                "SLUICE_METRICS_LISTEN",
                "SLUICE_TOKENS",
                "SLUICE_READ_TOKENS",
            ] {
                cmd.env_remove(var);
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("starting {SLUICE}: {e}"));
            let stderr = child.stderr.take().unwrap();
            let log = Arc::new(Mutex::new(String::new()));
            let (tx, rx) = mpsc::channel();
            let log2 = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(id) = line
                        .strip_prefix("node ")
                        .and_then(|l| l.strip_suffix(" joined the cluster"))
                    {
                        let _ = tx.send(Said::Joined(id.to_owned()));
                    }
                    if let Some(a) = line.strip_prefix("API listening on ")
                        && let Ok(addr) = a.trim().parse()
                    {
                        let _ = tx.send(Said::Api(addr));
                    }
                    if let Some(a) = line.strip_prefix("metrics on http://")
                        && let Ok(addr) = a.trim().trim_end_matches("/metrics").parse()
                    {
                        let _ = tx.send(Said::Metrics(addr));
                    }
                    let mut log = lock(&log2);
                    // The last 64 KiB, for a failure's message.
                    if log.len() > 128 * 1024 {
                        let mut cut = log.len() - 64 * 1024;
                        while !log.is_char_boundary(cut) {
                            cut += 1;
                        }
                        log.drain(..cut);
                    }
                    log.push_str(&line);
                    log.push('\n');
                }
                let _ = tx.send(Said::Ended);
            });
            pending.push((name, child, log, rx));
        }
        let mut nodes = Vec::new();
        for (name, child, log, rx) in pending {
            let mut node = Node {
                name,
                pid: child.id(),
                child: Some(child),
                id: String::new(),
                api: SocketAddr::from(([127, 0, 0, 1], 0)),
                metrics: None,
                log,
            };
            let mut api = false;
            while !api || node.metrics.is_none() {
                let left = START_PATIENCE.saturating_sub(began.elapsed());
                match rx.recv_timeout(left) {
                    Ok(Said::Joined(id)) => node.id = id,
                    Ok(Said::Api(a)) => {
                        node.api = a;
                        api = true;
                    }
                    Ok(Said::Metrics(a)) => node.metrics = Some(a),
                    Ok(Said::Ended) | Err(_) => {
                        node.kill();
                        panic!(
                            "node {} did not start (or did not listen within {START_PATIENCE:?}):\n{}",
                            node.name,
                            node.log_tail(20_000)
                        );
                    }
                }
            }
            assert!(
                !node.id.is_empty(),
                "node {} listens but never said it joined the cluster:\n{}",
                node.name,
                node.log_tail(20_000)
            );
            nodes.push(node);
        }
        println!(
            "  {n} node(s) listening {:.1} s after their start",
            began.elapsed().as_secs_f64()
        );
        Cluster {
            nodes,
            store,
            _dir: dir,
            _schema: schema,
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.pid).collect()
    }

    /// The node whose id is `worker`.
    fn node_of(&self, worker: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == worker)
    }

    /// The name of the node whose id is `worker`, or the worker itself.
    fn name_of(&self, worker: &str) -> String {
        self.node_of(worker)
            .map_or_else(|| format!("?{worker}"), |i| self.nodes[i].name.clone())
    }

    fn kill_all(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("=== node {} ({}) ===\n{}", n.name, n.id, n.log_tail(6_000)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// `sluice workflows trigger NAME` through each `(workflow, node)`, all at once.
fn trigger(cluster: &Cluster, targets: &[(String, usize)]) {
    let children: Vec<_> = targets
        .iter()
        .map(|(workflow, i)| {
            let child = Command::new(SLUICE)
                .args(["workflows", "trigger", workflow, "--json", "--server"])
                .arg(cluster.nodes[*i].server())
                .env_remove("SLUICE_SERVER")
                .env_remove("SLUICE_TOKEN")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (workflow, child)
        })
        .collect();
    for (workflow, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "`sluice workflows trigger {workflow}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The owner of `workflow` among `ids`, as the cluster computes it (rendezvous
/// hashing with FNV-1a over the node id and the workflow name).
fn owner(ids: &[&str], workflow: &str) -> usize {
    let fnv = |parts: &[&[u8]]| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for part in parts {
            for b in part.iter().chain(std::iter::once(&0xff)) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    };
    (0..ids.len())
        .max_by_key(|&i| fnv(&[ids[i].as_bytes(), workflow.as_bytes()]))
        .unwrap_or(0)
}

/// The samples of a node's `/metrics` whose names start with `sluice_runs_` or
/// `sluice_scheduler_cpu`: (name with labels, value). Empty if it does not answer.
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return HashMap::new();
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    if conn
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return HashMap::new();
    }
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    text.lines()
        .filter(|l| {
            l.starts_with("sluice_runs_")
                || l.starts_with("sluice_scheduler_cpu")
                || l.starts_with("sluice_queue_wait_seconds_sum")
                || l.starts_with("sluice_queue_wait_seconds_count")
        })
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Summed over the nodes: the scheduler loops' own CPU seconds so far (fire passes +
/// dispatcher), and the sum and count of the queue-wait histogram (due -> dispatched).
fn scheduler_figures(cluster: &Cluster) -> (f64, f64, f64) {
    let (mut cpu, mut wait, mut count) = (0.0, 0.0, 0.0);
    for node in &cluster.nodes {
        let Some(a) = node.metrics else { continue };
        for (k, v) in scrape(a) {
            if k.starts_with("sluice_scheduler_cpu_seconds_total") {
                cpu += v;
            } else if k.starts_with("sluice_queue_wait_seconds_sum") {
                wait += v;
            } else if k.starts_with("sluice_queue_wait_seconds_count") {
                count += v;
            }
        }
    }
    (cpu, wait, count)
}

/// Samples every node's runs driven and waiting once a second until `until`; returns
/// the averages of their sums over the nodes: (driven, waiting).
fn sample_queue(cluster: &Cluster, until: Instant) -> (f64, f64) {
    let (mut driven, mut waiting, mut samples) = (0.0, 0.0, 0u32);
    while Instant::now() < until {
        let next = Instant::now() + Duration::from_secs(1);
        let (mut d, mut w) = (0.0, 0.0);
        for node in &cluster.nodes {
            if let Some(a) = node.metrics {
                let m = scrape(a);
                d += m.get("sluice_runs_driven").copied().unwrap_or(0.0);
                w += m.get("sluice_runs_waiting").copied().unwrap_or(0.0);
            }
        }
        driven += d;
        waiting += w;
        samples += 1;
        std::thread::sleep(next.min(until).saturating_duration_since(Instant::now()));
    }
    let n = f64::from(samples.max(1));
    (driven / n, waiting / n)
}

// ---------------------------------------------------------------------------------
// CPU, from /proc.

/// The port of the test database's server (its processes name their clients' ports).
fn database_port() -> u16 {
    let url = database_url();
    let after_at = url.rsplit_once('@').map_or(url.as_str(), |(_, h)| h);
    let host = after_at.split(['/', '?']).next().unwrap_or("");
    host.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(5432)
}

/// Socket inode → (local port, remote port), for every TCP socket of this network
/// namespace.
fn tcp_sockets() -> HashMap<u64, (u16, u16)> {
    let mut out = HashMap::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = |addr: &str| {
                addr.rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            };
            if let (Some(local), Some(remote), Some(inode)) = (
                f.get(1).and_then(|a| port(a)),
                f.get(2).and_then(|a| port(a)),
                f.get(9).and_then(|i| i.parse().ok()),
            ) {
                out.insert(inode, (local, remote));
            }
        }
    }
    out
}

/// The local ports of `pid`'s connections to port `server`.
fn client_ports(pid: u32, server: u16, sockets: &HashMap<u64, (u16, u16)>) -> Vec<u16> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            let inode: u64 = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            let (local, remote) = sockets.get(&inode)?;
            (*remote == server).then_some(*local)
        })
        .collect()
}

/// Every PostgreSQL process: (pid, process title).
fn postgres_processes() -> Vec<(u32, String)> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| {
            let pid: u32 = p.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(p.path().join("comm")).ok()?;
            if comm.trim() != "postgres" {
                return None;
            }
            let title = std::fs::read(p.path().join("cmdline")).ok()?;
            let title = String::from_utf8_lossy(&title).replace('\0', " ");
            Some((pid, title))
        })
        .collect()
}

/// Busy and total CPU ticks of the whole machine.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU times at one moment.
struct CpuReading {
    at: Instant,
    nodes: Vec<ProcTimes>,
    backends: TimesReading,
    background: TimesReading,
    /// How many backends serve the nodes.
    connections: usize,
    machine: (u64, u64),
    /// Every other process: pid -> (name, CPU ticks so far).
    others: HashMap<u32, (String, u64)>,
}

/// Every process's name and CPU ticks (user + system) so far, but `except`.
fn all_processes(except: &HashSet<u32>) -> HashMap<u32, (String, u64)> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    procs
        .flatten()
        .filter_map(|p| {
            let pid: u32 = p.file_name().to_str()?.parse().ok()?;
            if except.contains(&pid) {
                return None;
            }
            let stat = std::fs::read_to_string(p.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(').map_or("", |(_, n)| n).to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime: fields 14 and 15, the 12th and 13th after the name.
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some((pid, (name, ticks)))
        })
        .collect()
}

impl CpuReading {
    fn take(node_pids: &[u32]) -> CpuReading {
        let port = database_port();
        let sockets = tcp_sockets();
        let ports: HashSet<u16> = node_pids
            .iter()
            .flat_map(|&pid| client_ports(pid, port, &sockets))
            .collect();
        let pg = postgres_processes();
        let backends: Vec<u32> = pg
            .iter()
            .filter(|(_, title)| ports.iter().any(|p| title.contains(&format!("({p})"))))
            .map(|(pid, _)| *pid)
            .collect();
        let background: Vec<u32> = pg
            .iter()
            .filter(|(_, t)| {
                t.contains("walwriter")
                    || t.contains("checkpointer")
                    || t.contains("background writer")
            })
            .map(|(pid, _)| *pid)
            .collect();
        let mut ours: HashSet<u32> = node_pids.iter().copied().collect();
        ours.extend(&backends);
        ours.extend(&background);
        CpuReading {
            others: all_processes(&ours),
            at: Instant::now(),
            nodes: node_pids
                .iter()
                .map(|&p| process_times(p).unwrap_or_default())
                .collect(),
            connections: backends.len(),
            backends: TimesReading::of(backends),
            background: TimesReading::of(background),
            machine: machine_ticks(),
        }
    }
}

/// Where the CPU went between two readings, in cores (CPU seconds per second).
struct CpuUse {
    secs: f64,
    /// Per node.
    nodes: Vec<f64>,
    /// The nodes' threads ready to run but waiting for a core.
    nodes_waited: f64,
    backends: f64,
    backends_waited: f64,
    background: f64,
    connections: usize,
    machine: f64,
    /// Everything else on the machine (this bench included).
    other: f64,
    /// The other processes that used the most, by name: (name, cores).
    other_top: Vec<(String, f64)>,
}

impl CpuUse {
    fn between(a: &CpuReading, b: &CpuReading) -> CpuUse {
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let cores = |d: Duration| d.as_secs_f64() / secs;
        let node_times: Vec<ProcTimes> = a
            .nodes
            .iter()
            .zip(&b.nodes)
            .map(|(x, y)| y.since(*x))
            .collect();
        let nodes: Vec<f64> = node_times.iter().map(|t| cores(t.cpu)).collect();
        let nodes_waited = node_times.iter().map(|t| cores(t.waited)).sum();
        let backends = b.backends.since(&a.backends);
        let background = b.background.since(&a.background);
        let busy = b.machine.0.saturating_sub(a.machine.0) as f64 / TICKS / secs;
        let ours = nodes.iter().sum::<f64>() + cores(backends.cpu) + cores(background.cpu);
        CpuUse {
            secs,
            nodes,
            nodes_waited,
            backends: cores(backends.cpu),
            backends_waited: cores(backends.waited),
            background: cores(background.cpu),
            connections: b.connections,
            machine: busy,
            other: (busy - ours).max(0.0),
            other_top: {
                let mut by_name: HashMap<&str, u64> = HashMap::new();
                for (pid, (name, ticks)) in &b.others {
                    let before = a.others.get(pid).map_or(0, |(_, t)| *t);
                    // A process that started meanwhile counts whole.
                    *by_name.entry(name.as_str()).or_default() += ticks.saturating_sub(before);
                }
                let mut top: Vec<(String, f64)> = by_name
                    .into_iter()
                    .map(|(n, t)| (n.to_owned(), t as f64 / TICKS / secs))
                    .filter(|(_, c)| *c >= 0.05)
                    .collect();
                top.sort_by(|x, y| y.1.total_cmp(&x.1));
                top.truncate(4);
                top
            },
        }
    }

    /// `rustc 0.91, sluice 0.12`, or `none`.
    fn other_text(&self) -> String {
        if self.other_top.is_empty() {
            return "nothing much".to_owned();
        }
        self.other_top
            .iter()
            .map(|(n, c)| format!("{n} {c:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn node_total(&self) -> f64 {
        self.nodes.iter().sum()
    }

    /// `1.23 (0.61+0.62)`.
    fn nodes_text(&self) -> String {
        let each: Vec<String> = self.nodes.iter().map(|c| format!("{c:.2}")).collect();
        if self.nodes.len() > 1 {
            format!("{:.2} ({})", self.node_total(), each.join("+"))
        } else {
            format!("{:.2}", self.node_total())
        }
    }
}

// ---------------------------------------------------------------------------------
// Reading runs.

/// What a run's log says, for the tables.
#[derive(Default, Clone)]
struct Facts {
    run: Option<RunId>,
    workflow: String,
    fire_at: i64,
    scheduled_at: i64,
    /// The first `AttemptBegun`: when, by whom.
    begun: Option<(i64, String)>,
    completed_at: Option<i64>,
    dead_lettered: bool,
    attempts: u32,
    /// Records committed, by the worker whose attempt committed them.
    records_by: BTreeMap<String, u64>,
    records: u64,
    created: u64,
}

fn facts_of(events: &[RunEvent]) -> Facts {
    let mut f = Facts::default();
    let mut worker = String::new();
    for e in events {
        f.run = Some(e.run);
        match &e.kind {
            EventKind::RunScheduled(s) => {
                f.workflow = s.workflow.clone();
                f.fire_at = s.fire_at_unix_ms;
                f.scheduled_at = e.at_unix_ms;
            }
            EventKind::AttemptBegun(b) => {
                f.attempts += 1;
                worker = b.worker.clone();
                if f.begun.is_none() {
                    f.begun = Some((e.at_unix_ms, b.worker.clone()));
                }
            }
            EventKind::CheckpointCommitted(c) => {
                f.records += c.records;
                f.created += c.created;
                *f.records_by.entry(worker.clone()).or_default() += c.records;
            }
            EventKind::RunCompleted(_) => f.completed_at = Some(e.at_unix_ms),
            EventKind::RunDeadLettered(_) => f.dead_lettered = true,
            _ => {}
        }
    }
    f
}

/// The facts of every run of `runs`, read 16 at a time.
fn read_facts(rt: &tokio::runtime::Runtime, store: &Store, runs: Vec<RunId>) -> Vec<Facts> {
    rt.block_on(async {
        let mut out = Vec::with_capacity(runs.len());
        let mut set = tokio::task::JoinSet::new();
        let mut runs = runs.into_iter();
        loop {
            while set.len() < 16 {
                let Some(run) = runs.next() else { break };
                let store = store.clone();
                set.spawn(async move {
                    let events = store
                        .log()
                        .read(run)
                        .await
                        .unwrap_or_else(|e| panic!("reading run {run}: {e}"));
                    facts_of(&events)
                });
            }
            match set.join_next().await {
                Some(f) => out.push(f.unwrap()),
                None => break,
            }
        }
        out
    })
}

/// A run's log, one event a line, its workers named by node.
fn describe(cluster: &Cluster, events: &[RunEvent]) -> String {
    let t0 = events.first().map_or(0, |e| e.at_unix_ms);
    events
        .iter()
        .map(|e| {
            let what = match &e.kind {
                EventKind::AttemptBegun(b) => format!(
                    "AttemptBegun attempt {} by {}",
                    b.attempt,
                    cluster.name_of(&b.worker)
                ),
                EventKind::CheckpointCommitted(c) => format!(
                    "CheckpointCommitted attempt {} records {} created {} unchanged {} \
                     checkpoint {}",
                    c.attempt, c.records, c.created, c.unchanged, c.checkpoint
                ),
                EventKind::Heartbeat(h) => format!("Heartbeat attempt {}", h.attempt),
                EventKind::AttemptFailed(f) => {
                    format!(
                        "AttemptFailed attempt {} {:?}: {}",
                        f.attempt, f.kind, f.message
                    )
                }
                other => other.name().to_owned(),
            };
            format!("    {:>4} +{:>6} ms  {what}", e.seq, e.at_unix_ms - t0)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------
// 1. Schedules.

struct ScheduleRow {
    nodes: usize,
    secs: f64,
    due: usize,
    started: usize,
    completed: usize,
    latency: Vec<i64>,
    early: usize,
    runs_per_fire_max: usize,
    duplicates: usize,
    fires_expected: usize,
    fires_recorded: usize,
    dead: usize,
    by_node: Vec<usize>,
    /// Runs begun by their workflow's owner among all the nodes.
    by_owner: usize,
    /// Started -> completed, ms, sorted.
    durations: Vec<i64>,
    /// Due -> the fire's run recorded (`RunScheduled`), ms, sorted (negative: ahead).
    recorded: Vec<i64>,
    /// Recorded -> started, ms, sorted.
    queued: Vec<i64>,
    /// Runs driven and waiting, summed over the nodes, on average.
    driven: f64,
    waiting: f64,
    /// The nodes' scheduler loops (fire passes, dispatcher), cores.
    scheduler: f64,
    /// Due -> dispatched (the nodes' queue-wait histogram), mean ms, for the runs
    /// dispatched in the window.
    dispatched_wait_ms: f64,
    cpu: CpuUse,
}

fn schedule_definitions(s: &Settings) -> serde_json::Value {
    let schedule = serde_json::json!({
        "trigger": {"kind": "interval", "every_secs": 1}, "jitter_ms": s.jitter_ms
    });
    let connections: Vec<_> = (0..s.workflows)
        .map(|i| {
            serde_json::json!({
                "name": format!("c{i:05}"), "tenant": format!("t{}", i % 100),
                "connector": "sample", "config": {"records": s.schedule_records}
            })
        })
        .collect();
    let workflows: Vec<_> = (0..s.workflows)
        .map(|i| {
            serde_json::json!({
                "name": format!("w{i:05}"), "connection": format!("c{i:05}"),
                "streams": [{"name": STREAM}], "schedule": schedule, "overlap": "skip"
            })
        })
        .collect();
    serde_json::json!({"connections": connections, "workflows": workflows})
}

fn schedule_phase(
    rt: &tokio::runtime::Runtime,
    s: &Settings,
    cache: &Path,
    n: usize,
) -> ScheduleRow {
    println!(
        "schedules: {} workflows on 1 s intervals, {n} node(s): warm-up {} s, then {} s measured",
        s.workflows, s.warmup_secs, s.secs
    );
    let mut cluster = Cluster::start(rt, s, cache, n, &schedule_definitions(s));
    std::thread::sleep(Duration::from_secs(s.warmup_secs));
    let before = CpuReading::take(&cluster.pids());
    let scheduler0 = scheduler_figures(&cluster);
    let t0 = now_ms();
    let (driven, waiting) = sample_queue(&cluster, Instant::now() + Duration::from_secs(s.secs));
    let t1 = now_ms();
    let after = CpuReading::take(&cluster.pids());
    let scheduler1 = scheduler_figures(&cluster);
    let scheduler = (scheduler1.0 - scheduler0.0) / ((t1 - t0) as f64 / 1e3);
    let dispatched_wait_ms =
        (scheduler1.1 - scheduler0.1) * 1e3 / (scheduler1.2 - scheduler0.2).max(1.0);
    let cpu = CpuUse::between(&before, &after);
    // The fires due by the window's end, jitter included, get time to start.
    std::thread::sleep(Duration::from_millis(s.jitter_ms + 2_000));
    for node in &mut cluster.nodes {
        if let Some(child) = node.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            println!(
                "  NODE {} ENDED BY ITSELF ({status}):\n{}",
                node.name,
                node.log_tail(6_000)
            );
        }
    }
    cluster.kill_all();

    let summaries = rt
        .block_on(cluster.store.log().list(&RunFilter {
            created_from_unix_ms: Some(t0 - 2_000),
            ..RunFilter::default()
        }))
        .unwrap();
    let read = Instant::now();
    let facts = read_facts(
        rt,
        &cluster.store,
        summaries.iter().map(|r| r.run_id).collect(),
    );
    println!(
        "  read {} runs' events in {:.1} s",
        facts.len(),
        read.elapsed().as_secs_f64()
    );
    let schedule: ScheduleDef = serde_json::from_value(serde_json::json!({
        "trigger": {"kind": "interval", "every_secs": 1}, "jitter_ms": s.jitter_ms
    }))
    .unwrap();
    let compiled = schedule.compile().unwrap();
    let mut per_fire: HashMap<(String, i64), Vec<&Facts>> = HashMap::new();
    for f in facts.iter().filter(|f| f.fire_at > 0) {
        per_fire
            .entry((f.workflow.clone(), f.fire_at))
            .or_default()
            .push(f);
    }
    let runs_per_fire_max = per_fire.values().map(Vec::len).max().unwrap_or(0);
    let dupes: Vec<_> = per_fire.iter().filter(|(_, v)| v.len() > 1).collect();
    for ((workflow, fire), runs) in dupes.iter().take(5) {
        let each: Vec<String> = runs
            .iter()
            .map(|f| {
                format!(
                    "{} begun by {}",
                    f.run.map(|r| r.to_string()).unwrap_or_default(),
                    f.begun
                        .as_ref()
                        .map_or("nobody".to_owned(), |(_, w)| cluster.name_of(w))
                )
            })
            .collect();
        println!(
            "  DEFECT: fire {fire} of {workflow} has {} runs: {}",
            runs.len(),
            each.join("; ")
        );
    }
    let fires_recorded = per_fire
        .keys()
        .filter(|(_, fire)| (t0..t1).contains(fire))
        .count();
    let mut latency = Vec::new();
    let mut early = 0;
    let mut due = 0;
    let mut started = 0;
    let mut completed = 0;
    let mut dead = 0;
    let mut by_node = vec![0; n];
    let mut by_owner = 0;
    let mut durations = Vec::new();
    let mut recorded = Vec::new();
    let mut queued = Vec::new();
    let ids: Vec<&str> = cluster.nodes.iter().map(|n| n.id.as_str()).collect();
    for f in &facts {
        if f.fire_at == 0 || !(t0..t1).contains(&f.fire_at) {
            continue;
        }
        due += 1;
        let fire = chrono::DateTime::from_timestamp_millis(f.fire_at).unwrap();
        let due_at = compiled.jittered(&f.workflow, fire).timestamp_millis();
        if let Some((at, worker)) = &f.begun {
            started += 1;
            if *at < due_at {
                early += 1;
            }
            latency.push((at - due_at).max(0));
            recorded.push(f.scheduled_at - due_at);
            queued.push(at - f.scheduled_at);
            if let Some(i) = cluster.node_of(worker) {
                by_node[i] += 1;
                if owner(&ids, &f.workflow) == i {
                    by_owner += 1;
                }
            }
        }
        if let Some(done) = f.completed_at {
            completed += 1;
            if let Some((at, _)) = &f.begun {
                durations.push(done - at);
            }
        }
        if f.dead_lettered {
            dead += 1;
        }
    }
    if std::env::var_os("SLUICE_BENCH_VERBOSE").is_some() {
        // Runs begun per second of due time, by node.
        let mut per_second: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for f in &facts {
            if let Some((at, w)) = &f.begun
                && let Some(i) = cluster.node_of(w)
            {
                per_second.entry(at / 1000).or_insert_with(|| vec![0; n])[i] += 1;
            }
        }
        let line: Vec<String> = per_second
            .iter()
            .map(|(sec, c)| {
                let c: Vec<String> = c.iter().map(ToString::to_string).collect();
                format!("{}:{}", sec - t0 / 1000, c.join("/"))
            })
            .collect();
        println!(
            "  runs begun by second (from the window's start), by node: {}",
            line.join(" ")
        );
    }
    latency.sort_unstable();
    durations.sort_unstable();
    recorded.sort_unstable();
    queued.sort_unstable();
    let row = ScheduleRow {
        nodes: n,
        secs: (t1 - t0) as f64 / 1e3,
        due,
        started,
        completed,
        latency,
        early,
        runs_per_fire_max,
        duplicates: dupes.len(),
        fires_expected: s.workflows * s.secs as usize,
        fires_recorded,
        dead,
        by_node,
        by_owner,
        durations,
        recorded,
        queued,
        driven,
        waiting,
        scheduler,
        dispatched_wait_ms,
        cpu,
    };
    println!(
        "  {} runs for fires in the window, {} started ({} by their workflow's owner), \
         {:.0} runs/s; latency {}",
        row.due,
        row.started,
        row.by_owner,
        row.started as f64 / row.secs,
        spread(&row.latency)
    );
    row
}

fn print_schedule_table(s: &Settings, rows: &[ScheduleRow]) {
    println!();
    println!(
        "1. schedules: {} workflows on 1 s interval schedules (jitter {} ms, overlap skip, \
         {} records a run, one connection each), {} s measured after {} s warm-up, \
         {} slots a node",
        s.workflows, s.jitter_ms, s.schedule_records, s.secs, s.warmup_secs, s.slots
    );
    println!(
        "{:>5}  {:>8} {:>8}  {:>9}  {:>6} {:>6} {:>6} {:>6}  {:>9}  {:>11}  {:>17}  {:>18}  {:>11}  {:>9}  {:>7}  {:>7}",
        "nodes",
        "runs/s",
        "done/s",
        "fires",
        "p50",
        "p90",
        "p99",
        "max",
        "runs/fire",
        "no run",
        "runs by node",
        "node CPU",
        "PG backends",
        "PG bg",
        "other",
        "machine"
    );
    for r in rows {
        let by_node: Vec<String> = r.by_node.iter().map(ToString::to_string).collect();
        println!(
            "{:>5}  {:>8.0} {:>8.0}  {:>9}  {:>6} {:>6} {:>6} {:>6}  {:>9}  {:>11}  {:>17}  {:>18}  {:>11}  {:>9.2}  {:>7.2}  {:>7.2}",
            r.nodes,
            r.started as f64 / r.secs,
            r.completed as f64 / r.secs,
            r.fires_recorded,
            percentile(&r.latency, 0.5),
            percentile(&r.latency, 0.9),
            percentile(&r.latency, 0.99),
            r.latency.last().copied().unwrap_or(0),
            if r.duplicates == 0 {
                format!("{}", r.runs_per_fire_max.min(1))
            } else {
                format!("{} x{}", r.runs_per_fire_max, r.duplicates)
            },
            format!(
                "{} ({:.1}%)",
                r.fires_expected.saturating_sub(r.fires_recorded),
                100.0 * r.fires_expected.saturating_sub(r.fires_recorded) as f64
                    / r.fires_expected.max(1) as f64
            ),
            by_node.join("/"),
            r.cpu.nodes_text(),
            format!("{:.2} ({})", r.cpu.backends, r.cpu.connections),
            r.cpu.background,
            r.cpu.other,
            r.cpu.machine
        );
    }
    println!(
        "(runs/s: runs for the window's fires that began an attempt, per second; done/s: \
         those completed. p50..max: due -> started in ms, the due time being the fire's \
         jittered time, clamped at 0{}. runs/fire: most runs one fire created, must be 1. \
         no run: fires of the window with no run (skipped while the previous run was in \
         flight, or never handled). CPU in cores (of {}): node CPU per node; PG backends: \
         the server processes serving the nodes (count); PG bg: WAL writer, checkpointer, \
         background writer; other: the rest of the machine, this bench and other work \
         included.)",
        {
            let early: usize = rows.iter().map(|r| r.early).sum();
            if early > 0 {
                format!("; {early} began before due")
            } else {
                String::new()
            }
        },
        cores()
    );
    for r in rows {
        let per_run = |c: f64| c * r.secs * 1e6 / r.started.max(1) as f64;
        println!(
            "  {} node(s): due -> run recorded p50 {} ms, p99 {} ms; recorded -> started p50 {} ms, \
             p99 {} ms; due -> dispatched mean {:.0} ms (the nodes' queue wait), due -> started \
             mean {:.0} ms; run started -> completed p50 {} ms, p99 {} ms; runs driven at once {:.0} \
             of {} slots, waiting {:.0}, on average; the scheduler loops' own CPU {:.2} cores; CPU per run started: node {:.0} µs, PG {:.0} µs \
             (backends) + {:.0} µs (bg); waited for a core: nodes {:.2}, PG backends {:.2} \
             cores; due {}, dead-lettered {}; other processes: {}",
            r.nodes,
            percentile(&r.recorded, 0.5),
            percentile(&r.recorded, 0.99),
            percentile(&r.queued, 0.5),
            percentile(&r.queued, 0.99),
            r.dispatched_wait_ms,
            r.latency.iter().sum::<i64>() as f64 / r.latency.len().max(1) as f64,
            percentile(&r.durations, 0.5),
            percentile(&r.durations, 0.99),
            r.driven,
            r.nodes * s.slots,
            r.waiting,
            r.scheduler,
            per_run(r.cpu.node_total()),
            per_run(r.cpu.backends),
            per_run(r.cpu.background),
            r.cpu.nodes_waited,
            r.cpu.backends_waited,
            r.due,
            r.dead,
            r.cpu.other_text()
        );
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

// ---------------------------------------------------------------------------------
// 2. Syncs.

struct SyncRow {
    nodes: usize,
    records: u64,
    secs: f64,
    statuses: String,
    by_node: Vec<(usize, u64)>,
    moved: usize,
    /// Runs that did not land their records exactly once.
    twice: usize,
    cpu: CpuUse,
}

fn sync_definitions(s: &Settings) -> serde_json::Value {
    let connections: Vec<_> = (0..s.sync_connections)
        .map(|i| {
            serde_json::json!({
                "name": format!("s{i}"), "connector": "sample",
                "config": {"records": s.sync_records, "record_bytes": 200}
            })
        })
        .collect();
    let workflows: Vec<_> = (0..s.sync_connections)
        .map(|i| {
            serde_json::json!({
                "name": format!("s{i}"), "connection": format!("s{i}"),
                "streams": [{"name": STREAM}], "batch_size": s.sync_batch
            })
        })
        .collect();
    serde_json::json!({"connections": connections, "workflows": workflows})
}

fn sync_phase(rt: &tokio::runtime::Runtime, s: &Settings, cache: &Path, n: usize) -> SyncRow {
    println!(
        "syncs: {} x {} records, {n} node(s)",
        s.sync_connections, s.sync_records
    );
    let cluster = Cluster::start(rt, s, cache, n, &sync_definitions(s));
    let ids: Vec<&str> = cluster.nodes.iter().map(|n| n.id.as_str()).collect();
    let targets: Vec<(String, usize)> = (0..s.sync_connections)
        .map(|i| {
            let w = format!("s{i}");
            let node = match s.placement {
                Placement::Spread => i % n,
                Placement::Owner => owner(&ids, &w),
                Placement::First => 0,
            };
            (w, node)
        })
        .collect();
    let before = CpuReading::take(&cluster.pids());
    trigger(&cluster, &targets);
    let patience = Duration::from_secs(600);
    let began = Instant::now();
    let summaries = loop {
        let runs = rt
            .block_on(cluster.store.log().list(&RunFilter::default()))
            .unwrap();
        let ended = runs.iter().filter(|r| r.status.is_terminal()).count();
        if runs.len() >= s.sync_connections && ended == runs.len() {
            break runs;
        }
        assert!(
            began.elapsed() < patience,
            "the syncs did not end within {patience:?}:\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let after = CpuReading::take(&cluster.pids());
    let cpu = CpuUse::between(&before, &after);
    let facts = read_facts(
        rt,
        &cluster.store,
        summaries.iter().map(|r| r.run_id).collect(),
    );
    let first = facts
        .iter()
        .filter_map(|f| f.begun.as_ref().map(|b| b.0))
        .min()
        .unwrap_or(0);
    let last = facts
        .iter()
        .filter_map(|f| f.completed_at)
        .max()
        .unwrap_or(0);
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &summaries {
        *statuses.entry(r.status.as_str()).or_default() += 1;
    }
    let mut by_node = vec![(0usize, 0u64); n];
    let mut moved = 0;
    for f in &facts {
        if let Some((_, w)) = &f.begun
            && let Some(i) = cluster.node_of(w)
        {
            by_node[i].0 += 1;
        }
        if f.attempts > 1 {
            moved += 1;
        }
        for (w, records) in &f.records_by {
            if let Some(i) = cluster.node_of(w) {
                by_node[i].1 += records;
            }
        }
    }
    // Each sync must land its records exactly once: counted once in its log, created
    // once in the hub.
    let mut twice = 0;
    for f in &facts {
        let hub = rt
            .block_on(cluster.store.hub().count(&f.workflow, STREAM))
            .unwrap();
        if f.records == s.sync_records && f.created == s.sync_records && hub == s.sync_records {
            continue;
        }
        twice += 1;
        let run = f.run.unwrap();
        let through = targets
            .iter()
            .find(|(w, _)| *w == f.workflow)
            .map_or(0, |(_, i)| *i);
        println!(
            "  DEFECT: run {run} of {} counted {} records, created {}, the hub holds {hub} \
             (expected {} each); triggered through {}, the workflow's owner is {}; its log:",
            f.workflow,
            f.records,
            f.created,
            s.sync_records,
            cluster.nodes[through].name,
            cluster.nodes[owner(&ids, &f.workflow)].name
        );
        let events = rt.block_on(cluster.store.log().read(run)).unwrap();
        println!("{}", describe(&cluster, &events));
    }
    let records = facts.iter().map(|f| f.records).sum();
    let row = SyncRow {
        nodes: n,
        records,
        secs: (last - first).max(1) as f64 / 1e3,
        statuses: statuses
            .iter()
            .map(|(s, c)| format!("{c} {s}"))
            .collect::<Vec<_>>()
            .join(", "),
        by_node,
        moved,
        twice,
        cpu,
    };
    println!(
        "  {} records in {:.1} s: {:.0} records/s ({})",
        row.records,
        row.secs,
        row.records as f64 / row.secs,
        row.statuses
    );
    row
}

fn print_sync_table(s: &Settings, rows: &[SyncRow]) {
    println!();
    println!(
        "2. syncs: {} sample connections x {} records of 200 bytes, batch {}, triggered together \
         ({}), {} slots a node",
        s.sync_connections,
        s.sync_records,
        s.sync_batch,
        match s.placement {
            Placement::Spread => "round robin over the nodes",
            Placement::Owner => "each through its workflow's owner",
            Placement::First => "all through the first node",
        },
        s.slots
    );
    println!(
        "{:>5}  {:>9}  {:>8}  {:>10}  {:>30}  {:>18}  {:>11}  {:>6}  {:>6}  {:>7}  {:>13}",
        "nodes",
        "records",
        "seconds",
        "records/s",
        "runs (records) by node",
        "node CPU",
        "PG backends",
        "PG bg",
        "other",
        "machine",
        "node µs/rec"
    );
    for r in rows {
        let by_node: Vec<String> = r
            .by_node
            .iter()
            .map(|(runs, rec)| format!("{runs} ({}k)", rec / 1000))
            .collect();
        let per_record = |c: f64| c * r.cpu.secs * 1e6 / r.records.max(1) as f64;
        println!(
            "{:>5}  {:>9}  {:>8.1}  {:>10.0}  {:>30}  {:>18}  {:>11}  {:>6.2}  {:>6.2}  {:>7.2}  {:>13}",
            r.nodes,
            r.records,
            r.secs,
            r.records as f64 / r.secs,
            by_node.join(" / "),
            r.cpu.nodes_text(),
            format!("{:.2} ({})", r.cpu.backends, r.cpu.connections),
            r.cpu.background,
            r.cpu.other,
            r.cpu.machine,
            format!(
                "{:.1} + PG {:.1}",
                per_record(r.cpu.node_total()),
                per_record(r.cpu.backends + r.cpu.background)
            )
        );
    }
    println!(
        "(seconds: the first attempt's start to the last run's completion. runs by node: \
         the node that began each run's first attempt; records: committed by each node's \
         attempts. CPU in cores (of {}) from the trigger to the last completion; node \
         µs/rec: CPU per record, node + PostgreSQL.)",
        cores()
    );
    for r in rows {
        println!(
            "  {} node(s): {}; runs with more than one attempt: {}; runs that did not land \
             their records exactly once: {}; waited for a core: nodes {:.2}, PG backends \
             {:.2} cores; other processes: {}",
            r.nodes,
            r.statuses,
            r.moved,
            r.twice,
            r.cpu.nodes_waited,
            r.cpu.backends_waited,
            r.cpu.other_text()
        );
    }
}

// ---------------------------------------------------------------------------------
// 3. Failover.

struct FailoverRow {
    heartbeat_secs: u64,
    nodes: usize,
    records_at_kill: u64,
    lease_left_ms: i64,
    takeover_ms: Option<i64>,
    takeover_by: String,
    first_commit_ms: Option<i64>,
    outcome: String,
}

fn failover_phase(
    rt: &tokio::runtime::Runtime,
    s: &Settings,
    cache: &Path,
    heartbeat_secs: u64,
) -> FailoverRow {
    let n = s.failover_nodes;
    println!(
        "failover: {} records, heartbeat_secs {heartbeat_secs}, {n} nodes",
        s.failover_records
    );
    let defs = serde_json::json!({
        "connections": [{"name": "big", "connector": "sample",
                         "config": {"records": s.failover_records, "record_bytes": 200}}],
        "workflows": [{"name": "big", "connection": "big", "streams": [{"name": STREAM}],
                       "batch_size": s.sync_batch,
                       "timeouts": {"heartbeat_secs": heartbeat_secs}}]
    });
    let mut cluster = Cluster::start(rt, s, cache, n, &defs);
    // At a random moment against the nodes' sweeps (which began as they started), so
    // that the lease ends at a random point of the sweep's period.
    std::thread::sleep(Duration::from_millis(fastrand::u64(0..s.sweep_ms.max(1))));
    trigger(&cluster, &[("big".to_owned(), 0)]);
    let read = |cluster: &Cluster, run: RunId| rt.block_on(cluster.store.log().read(run)).unwrap();
    let began = Instant::now();
    let run = loop {
        let runs = rt
            .block_on(cluster.store.log().list(&RunFilter::default()))
            .unwrap();
        if let Some(r) = runs.first() {
            break r.run_id;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "no run was created"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Until it committed a few batches.
    let (driver, attempt) = loop {
        let events = read(&cluster, run);
        let batches = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::CheckpointCommitted(_)))
            .count();
        if batches >= s.failover_after_batches {
            let begun = events
                .iter()
                .rev()
                .find_map(|e| match &e.kind {
                    EventKind::AttemptBegun(b) => Some(b.clone()),
                    _ => None,
                })
                .unwrap();
            break (begun.worker, begun.attempt);
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "the sync committed {batches} batches in 120 s:\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let victim = cluster.node_of(&driver).unwrap_or_else(|| {
        panic!(
            "the run's worker `{driver}` is none of the nodes:\n{}",
            cluster.logs()
        )
    });
    let killed_at = now_ms();
    cluster.nodes[victim].kill();
    println!(
        "  killed {} (its driver, attempt {attempt}) at {killed_at}",
        cluster.nodes[victim].name
    );
    let events = read(&cluster, run);
    let f = facts_of(&events);
    let lease_until = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AttemptBegun(b) if b.attempt == attempt => Some(b.lease_until_unix_ms),
            EventKind::Heartbeat(h) if h.attempt == attempt => Some(h.lease_until_unix_ms),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    // The next attempt, on another node.
    let patience = Duration::from_secs(heartbeat_secs + 60);
    let waited = Instant::now();
    let mut takeover = None;
    let mut first_commit = None;
    while waited.elapsed() < patience && first_commit.is_none() {
        let events = read(&cluster, run);
        let mut next_attempt = None;
        for e in &events {
            match &e.kind {
                EventKind::AttemptBegun(b) if b.attempt > attempt => {
                    if takeover.is_none() {
                        takeover = Some((e.at_unix_ms, b.worker.clone()));
                    }
                    next_attempt = Some(b.attempt);
                }
                EventKind::CheckpointCommitted(c)
                    if Some(c.attempt) == next_attempt && first_commit.is_none() =>
                {
                    first_commit = Some(e.at_unix_ms);
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut outcome = String::new();
    match &takeover {
        None => {
            outcome = format!("DEFECT: no node took the run over within {patience:?}");
            println!("  {outcome}:\n{}", cluster.logs());
        }
        Some((_, w)) if w == &driver => {
            outcome = "DEFECT: the killed node's id began the next attempt".to_owned();
        }
        Some(_) => {}
    }
    if takeover.is_some() && s.failover_finish {
        let waited = Instant::now();
        loop {
            let state = rt.block_on(cluster.store.log().state(run)).unwrap();
            let kind = state.status.kind();
            if kind.is_terminal() {
                let done = facts_of(&read(&cluster, run));
                let hub = rt
                    .block_on(cluster.store.hub().count("big", STREAM))
                    .unwrap();
                let exact = done.created == s.failover_records && hub == s.failover_records;
                outcome = format!(
                    "{} in {:.1} s after the kill; hub {hub}, created {}{}",
                    kind.as_str(),
                    (done.completed_at.unwrap_or(now_ms()) - killed_at) as f64 / 1e3,
                    done.created,
                    if exact {
                        " (exactly once)"
                    } else {
                        " DEFECT: not exactly once"
                    }
                );
                break;
            }
            if waited.elapsed() > Duration::from_secs(300) {
                outcome = format!("still {} 300 s after the takeover", kind.as_str());
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    } else if outcome.is_empty() {
        outcome = "not waited for".to_owned();
    }
    let row = FailoverRow {
        heartbeat_secs,
        nodes: n,
        records_at_kill: f.records,
        lease_left_ms: lease_until - killed_at,
        takeover_ms: takeover.as_ref().map(|(at, _)| at - killed_at),
        takeover_by: takeover
            .as_ref()
            .map_or("-".to_owned(), |(_, w)| cluster.name_of(w)),
        first_commit_ms: first_commit.map(|at| at - killed_at),
        outcome,
    };
    println!(
        "  taken over by {} {} ms after the kill (lease had {} ms left)",
        row.takeover_by,
        row.takeover_ms.map_or("-".to_owned(), |t| t.to_string()),
        row.lease_left_ms
    );
    row
}

fn print_failover_table(s: &Settings, rows: &[FailoverRow]) {
    println!();
    println!(
        "3. failover: one sample sync of {} records (batch {}); its driver killed (SIGKILL) after {} \
         batches; nodes sweep every {} ms",
        s.failover_records, s.sync_batch, s.failover_after_batches, s.sweep_ms
    );
    println!(
        "{:>5}  {:>14}  {:>8}  {:>15}  {:>15}  {:>14}  {:>17}  {:>18}  outcome",
        "nodes",
        "heartbeat_secs",
        "lease",
        "records at kill",
        "lease left (ms)",
        "kill->takeover",
        "after lease (ms)",
        "kill->first commit"
    );
    for r in rows {
        let opt = |v: Option<i64>| v.map_or("-".to_owned(), |v| format!("{v} ms"));
        println!(
            "{:>5}  {:>14}  {:>7}s  {:>15}  {:>15}  {:>14}  {:>17}  {:>18}  by {}; {}",
            r.nodes,
            r.heartbeat_secs,
            lease_secs(r.heartbeat_secs),
            r.records_at_kill,
            r.lease_left_ms,
            opt(r.takeover_ms),
            r.takeover_ms
                .map_or("-".to_owned(), |t| (t - r.lease_left_ms).to_string()),
            opt(r.first_commit_ms),
            r.takeover_by,
            r.outcome
        );
    }
    println!(
        "(lease: three heartbeats of heartbeat_secs / 3 (0.25..10 s each); lease left: from the \
         kill to the end of the lease the log last showed; after lease: kill->takeover minus \
         that, i.e. the wait for a sweep plus the takeover's own appends.)"
    );
}

/// The lease of an attempt whose workflow has `heartbeat_secs`, in seconds (as the
/// engine computes it: three beats of a third of it, each 0.25 to 10 s).
fn lease_secs(heartbeat_secs: u64) -> f64 {
    let beat = (heartbeat_secs as f64 / 3.0).clamp(0.25, 10.0);
    3.0 * beat
}

// ---------------------------------------------------------------------------------

fn main() {
    let s = Settings::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    println!(
        "cluster benchmark: {SLUICE}, store {} (a fresh schema per measurement), {} cores; \
         node sizes {:?}, phases {:?}",
        sluice_store::postgres::redact_url(&database_url()),
        cores(),
        s.nodes,
        s.phases
    );
    // The connectors compiled into the cache every node shares, before anything is
    // timed.
    let warm = Command::new(SLUICE)
        .args([
            "connector",
            "discover",
            "--wasm",
            "sample",
            "--config-json",
            r#"{"records": 1}"#,
        ])
        .env("SLUICE_CACHE_DIR", cache.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(warm.success(), "`sluice connector discover` failed: {warm}");
    let all = Instant::now();

    let mut schedules = Vec::new();
    let mut syncs = Vec::new();
    let mut failovers = Vec::new();
    if s.runs("schedule") {
        for &n in &s.nodes {
            schedules.push(schedule_phase(&rt, &s, cache.path(), n));
        }
    }
    if s.runs("sync") {
        for &n in &s.nodes {
            syncs.push(sync_phase(&rt, &s, cache.path(), n));
        }
    }
    if s.runs("failover") {
        for &h in &s.failover_heartbeats {
            failovers.push(failover_phase(&rt, &s, cache.path(), h));
        }
    }
    if !schedules.is_empty() {
        print_schedule_table(&s, &schedules);
    }
    if !syncs.is_empty() {
        print_sync_table(&s, &syncs);
    }
    if !failovers.is_empty() {
        print_failover_table(&s, &failovers);
    }
    println!();
    println!("total {:.0} s", all.elapsed().as_secs_f64());
}
