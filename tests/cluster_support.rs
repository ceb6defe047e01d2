//! What the cluster tests share: several `sluice serve` nodes — real processes — on
//! one PostgreSQL store (a schema of its own per test), the test's own view of that
//! store, and the checks of what the cluster must never do.
//!
//! - [`Cluster`]: the store, the definitions file and the nodes; killing every node
//!   when dropped, before the schema goes.
//! - [`Node`]: one `sluice serve` process at a time under one name and data
//!   directory: started, killed (SIGKILL), frozen (SIGSTOP), thawed, stopped,
//!   restarted with the same flags; its API and metrics addresses as it printed them;
//!   optionally inside a network namespace.
//! - [`Probe`]: the store, opened by the test on a runtime of its own (which also
//!   serves the in-process APIs and the PostgreSQL forwarder).
//! - [`Netns`]: a network namespace joined to the host by a veth pair, whose link can
//!   be cut (no RST: packets are simply lost) and restored; removed when dropped.
//! - The checks: each schedule fire has one run; a workflow's runs never overlap;
//!   a long sync landed every record exactly once (see `crash_support`); and the
//!   tables themselves, read with `psql`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use sluice_store::log::{EventKind, RunEvent, RunFilter, RunId, RunState, RunSummary, StatusKind};
use sluice_store::{Location, Store};

use crate::crash_support::{Backend, TestStore};

/// The `sluice` binary under test.
pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// The cadence of every check that waits for the cluster to get somewhere.
pub const TICK: Duration = Duration::from_millis(50);

/// Longest wait for a node to print its addresses after it was started (a first
/// start compiles the connectors).
const START_PATIENCE: Duration = Duration::from_secs(180);

/// The cluster tests share two cores: one at a time, whatever `--test-threads` says.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the machine for one cluster test.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The random seed of a test: `SLUICE_CLUSTER_SEED`, else a new one; printed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("SLUICE_CLUSTER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{test}: seed {seed} (replay with SLUICE_CLUSTER_SEED={seed})");
    seed
}

/// A number from the environment, else `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Waits until `f` returns something, checking every [`TICK`]; panics with
/// `what()` past `patience`.
pub fn wait_for<T>(
    patience: Duration,
    what: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let began = Instant::now();
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(
            began.elapsed() < patience,
            "waited {patience:?} in vain: {}",
            what()
        );
        std::thread::sleep(TICK);
    }
}

// ---------------------------------------------------------------------------------
// The store, as the test sees it.

/// The test's own handle on the cluster's store, on a runtime of its own. The runtime
/// also runs the in-process servers (APIs, the forwarder), so it has threads of its
/// own: they keep serving while the test thread waits.
pub struct Probe {
    store: Store,
    rt: tokio::runtime::Runtime,
}

impl Probe {
    /// Opens the store at `url`; `dir` is the probe's own data directory.
    pub fn open(url: &str, dir: &Path) -> Probe {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let store = rt
            .block_on(Location::parse(url).open(dir))
            .unwrap_or_else(|e| panic!("the test opens the store: {e}"));
        Probe { store, rt }
    }

    /// Runs `f` to its end on the probe's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Every run, oldest first (`workflow`: only its runs).
    pub fn runs(&self, workflow: Option<&str>) -> Vec<RunSummary> {
        let filter = RunFilter {
            workflow: workflow.map(str::to_owned),
            ..RunFilter::default()
        };
        self.block_on(self.store.log().list(&filter))
            .unwrap_or_else(|e| panic!("listing runs: {e}"))
    }

    /// A run's folded state.
    pub fn state(&self, run: RunId) -> RunState {
        self.block_on(self.store.log().state(run))
            .unwrap_or_else(|e| panic!("the state of run {run}: {e}"))
    }

    /// A run's events.
    pub fn events(&self, run: RunId) -> Vec<RunEvent> {
        self.block_on(self.store.log().read(run))
            .unwrap_or_else(|e| panic!("the events of run {run}: {e}"))
    }

    /// Runs not ended yet (scheduled, running, waiting for a retry).
    pub fn in_flight(&self) -> Vec<RunSummary> {
        self.block_on(self.store.log().list_in_flight(&RunFilter::default()))
            .unwrap_or_else(|e| panic!("listing runs in flight: {e}"))
    }

    /// Records in the hub's stream.
    pub fn hub_count(&self, connection: &str, stream: &str) -> u64 {
        self.block_on(self.store.hub().count(connection, stream))
            .unwrap_or_else(|e| panic!("counting {connection}/{stream}: {e}"))
    }

    /// Forwards TCP connections on `ip` (any port; returned) to `target`, from the
    /// probe's runtime, for as long as it runs.
    pub fn forward(&self, ip: Ipv4Addr, target: String) -> SocketAddr {
        self.block_on(async move {
            let listener = tokio::net::TcpListener::bind((ip, 0))
                .await
                .unwrap_or_else(|e| panic!("the forwarder binds {ip}: {e}"));
            let addr = listener.local_addr().expect("the forwarder's address");
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let target = target.clone();
                    tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            });
            addr
        })
    }

    /// Watches the store every [`TICK`] until the returned monitor stops: any moment
    /// at which two runs of one workflow were running (or one running and one waiting
    /// for a retry) at once, in one consistent read of the runs in flight. Workflows
    /// in `allowed` may overlap.
    pub fn watch_overlaps(&self, url: &str, allowed: BTreeSet<String>) -> OverlapMonitor {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let snapshots = Arc::new(AtomicU32::new(0));
        let (url, stop2, seen2, snapshots2) = (
            url.to_owned(),
            stop.clone(),
            seen.clone(),
            snapshots.clone(),
        );
        let task = self.rt.spawn(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = match Location::parse(&url).open(dir.path()).await {
                Ok(s) => s,
                Err(e) => {
                    lock(&seen2).push(format!("the monitor cannot open the store: {e}"));
                    return;
                }
            };
            while !stop2.load(Ordering::Relaxed) {
                if let Ok(runs) = store.log().list_in_flight(&RunFilter::default()).await {
                    snapshots2.fetch_add(1, Ordering::Relaxed);
                    let mut holding: BTreeMap<&str, Vec<&RunSummary>> = BTreeMap::new();
                    for r in &runs {
                        if matches!(r.status, StatusKind::Running | StatusKind::RetryWaiting)
                            && !allowed.contains(&r.workflow)
                        {
                            holding.entry(&r.workflow).or_default().push(r);
                        }
                    }
                    for (workflow, runs) in holding {
                        if runs.len() > 1 {
                            let runs: Vec<String> = runs
                                .iter()
                                .map(|r| format!("{} {:?} on {:?}", r.run_id, r.status, r.worker))
                                .collect();
                            lock(&seen2).push(format!(
                                "{workflow}: {} runs in flight at once: {runs:?}",
                                runs.len()
                            ));
                        }
                    }
                }
                tokio::time::sleep(TICK).await;
            }
        });
        OverlapMonitor {
            stop,
            seen,
            snapshots,
            task: Some(task),
        }
    }
}

/// Watches a store for overlapping runs (see [`Probe::watch_overlaps`]).
pub struct OverlapMonitor {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    snapshots: Arc<AtomicU32>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl OverlapMonitor {
    /// Stops watching; returns the overlaps seen and how many snapshots were taken.
    pub fn finish(mut self, probe: &Probe) -> (Vec<String>, u32) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = probe.block_on(task);
        }
        (
            lock(&self.seen).clone(),
            self.snapshots.load(Ordering::Relaxed),
        )
    }
}

impl Drop for OverlapMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------
// The cluster.

/// Flags every node gets, beside its name, store and directories: a node heartbeats
/// every half second, is lost after three, and sweeps for expired leases every half
/// second (the tests' leases last a few seconds).
pub const CLUSTER_FLAGS: &[&str] = &[
    "--no-initial-runs",
    "--heartbeat-ms",
    "500",
    "--node-timeout-ms",
    "3000",
    "--sweep-ms",
    "500",
];

/// Nodes of one store. Dropped, it kills every node first, then closes the probe,
/// then drops the schema and the directory.
pub struct Cluster {
    /// The nodes, in the order added.
    pub nodes: Vec<Node>,
    /// The test's view of the store.
    pub probe: Probe,
    /// The store's schema.
    store: TestStore,
    /// The store's URL.
    pub url: String,
    /// The definitions every node is given.
    pub definitions: PathBuf,
    /// Where every node's files are.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// A new store (a PostgreSQL schema of its own) and `definitions` in a file; no
    /// node yet.
    pub fn new(definitions: &serde_json::Value) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("definitions.json");
        std::fs::write(&path, definitions.to_string()).expect("write the definitions");
        let store = TestStore::create(Backend::Postgres, dir.path().join("test"));
        let Location::Postgres(url) = store.location() else {
            unreachable!("a PostgreSQL store")
        };
        let probe = Probe::open(&url, &dir.path().join("probe"));
        Cluster {
            nodes: Vec::new(),
            probe,
            store,
            url,
            definitions: path,
            dir,
        }
    }

    /// The store under test (for `crash_support`'s checks).
    pub fn test_store(&self) -> &TestStore {
        &self.store
    }

    /// Adds a node named `name` on the host, not started; returns its index.
    pub fn add(&mut self, name: &str) -> usize {
        self.add_node(name, None, &self.url.clone(), "127.0.0.1", &[])
    }

    /// Adds a node named `name`, not started: inside network namespace `netns` if
    /// any, reaching the store at `url` and listening on `ip`, with `extra` flags.
    pub fn add_node(
        &mut self,
        name: &str,
        netns: Option<String>,
        url: &str,
        ip: &str,
        extra: &[&str],
    ) -> usize {
        let dir = self.dir.path().join(format!("node-{name}"));
        std::fs::create_dir_all(&dir).expect("the node's directory");
        let mut args: Vec<OsString> = vec![
            self.definitions.clone().into_os_string(),
            "--store".into(),
            url.into(),
            "--data-dir".into(),
            dir.clone().into_os_string(),
            "--listen".into(),
            format!("{ip}:0").into(),
            "--metrics-listen".into(),
            format!("{ip}:0").into(),
            "--node-name".into(),
            name.into(),
        ];
        args.extend(CLUSTER_FLAGS.iter().map(OsString::from));
        args.extend(extra.iter().map(OsString::from));
        self.nodes.push(Node {
            name: name.to_owned(),
            dir,
            args,
            netns,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            api: None,
            metrics: None,
            pids: Vec::new(),
            starts: 0,
        });
        self.nodes.len() - 1
    }

    /// Starts every node not running, all at once, and waits for each to listen.
    pub fn start_all(&mut self) {
        let pending: Vec<_> = self
            .nodes
            .iter_mut()
            .filter(|n| n.child.is_none())
            .map(|n| (n.spawn(), n))
            .collect();
        for (rx, node) in pending {
            node.wait_listening(&rx);
        }
    }

    /// The node whose name or process `worker` (a run's lease holder) names, if any.
    pub fn node_of_worker(&self, worker: &str) -> Option<usize> {
        if worker.is_empty() {
            return None;
        }
        if let Some(i) = self.nodes.iter().position(|n| n.is_worker(worker)) {
            return Some(i);
        }
        // A node id: ask a node that answers which node has it.
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let Ok(list) = node.nodes_list() else {
                continue;
            };
            for entry in list.as_array().into_iter().flatten() {
                let id = entry.get("id").map(json_text).unwrap_or_default();
                let name = entry.get("name").map(json_text).unwrap_or_default();
                if id == worker
                    && let Some(i) = self.nodes.iter().position(|n| n.name == name)
                {
                    return Some(i);
                }
            }
        }
        None
    }

    /// The lease holder of `run` while it runs: (node index if known, worker, attempt).
    pub fn driver(&self, run: RunId) -> Option<(Option<usize>, String, u32)> {
        let state = self.probe.state(run);
        if !matches!(state.status.kind(), StatusKind::Running) {
            return None;
        }
        let lease = state.lease?;
        Some((
            self.node_of_worker(&lease.worker),
            lease.worker,
            lease.attempt,
        ))
    }

    /// Every node's output so far, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("=== node {} ===\n{}", n.name, n.log_tail(6_000)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// A JSON value as text: a string without its quotes, anything else as JSON.
pub fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What a node's stderr says as it starts.
enum Said {
    Api(SocketAddr),
    Metrics(SocketAddr),
    Ended,
}

/// One `sluice serve` node: at most one process at a time, always with the same flags.
pub struct Node {
    /// Its name (`--node-name`).
    pub name: String,
    dir: PathBuf,
    args: Vec<OsString>,
    netns: Option<String>,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    api: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    pids: Vec<u32>,
    /// Processes started so far.
    pub starts: u32,
}

impl Node {
    fn spawn(&mut self) -> mpsc::Receiver<Said> {
        assert!(self.child.is_none(), "node {} is running", self.name);
        self.starts += 1;
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, SLUICE]);
                c
            }
            None => Command::new(SLUICE),
        };
        let stdout = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stdout"))
            .expect("the node's stdout file");
        cmd.arg("serve")
            .args(&self.args)
            .env_remove("SLUICE_STORE")
            .env_remove("SLUICE_DATA_DIR")
            .env_remove("SLUICE_CONFIG")
            .env_remove("SLUICE_LISTEN")
            .env_remove("SLUICE_METRICS_LISTEN")
            // The nodes of a cluster share one secrets key.
            .env("SLUICE_SECRETS_KEY", "5e".repeat(32))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting node {}: {e}", self.name));
        self.pids.push(child.id());
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let log = self.log.clone();
        lock(&log).push_str(&format!(
            "--- start {} (pid {}) ---\n",
            self.starts,
            child.id()
        ));
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
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
                let mut log = lock(&log);
                log.push_str(&line);
                log.push('\n');
            }
            let _ = tx.send(Said::Ended);
        });
        self.child = Some(child);
        self.api = None;
        self.metrics = None;
        rx
    }

    fn wait_listening(&mut self, rx: &mpsc::Receiver<Said>) {
        let began = Instant::now();
        while self.api.is_none() || self.metrics.is_none() {
            let left = START_PATIENCE.saturating_sub(began.elapsed());
            match rx.recv_timeout(left) {
                Ok(Said::Api(a)) => self.api = Some(a),
                Ok(Said::Metrics(a)) => self.metrics = Some(a),
                Ok(Said::Ended) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.wait().ok());
                    self.child = None;
                    panic!(
                        "node {} ended as it started ({status:?}):\n{}",
                        self.name,
                        self.log_tail(20_000)
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "node {} did not listen within {START_PATIENCE:?}:\n{}",
                    self.name,
                    self.log_tail(20_000)
                ),
            }
        }
    }

    /// Starts the node and waits until its API and metrics listen.
    pub fn start(&mut self) {
        let rx = self.spawn();
        self.wait_listening(&rx);
    }

    /// Whether its process is running (or frozen).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its current process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether `worker` (a run's lease holder) names this node or one of its processes.
    pub fn is_worker(&self, worker: &str) -> bool {
        worker == self.name
            || self.pids.iter().any(|p| worker == format!("pid-{p}"))
            || worker
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .any(|part| part == self.name)
            || worker.starts_with(&format!("{}-", self.name))
            || worker.starts_with(&format!("{}@", self.name))
    }

    /// Kills it (SIGKILL, which also ends a frozen process) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            lock(&self.log).push_str("--- killed ---\n");
        }
    }

    /// Sends `signal` (`-STOP`, `-CONT`, …) to its process.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            sluice_testkit::process::send_signal(pid, signal);
        }
    }

    /// Asks it to stop (SIGTERM) and waits for it (SIGKILL past 30 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        sluice_testkit::process::send_signal(child.id(), "-TERM");
        let began = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if began.elapsed() > Duration::from_secs(30) => {
                    eprintln!("node {} ignored SIGTERM for 30 s: killed", self.name);
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(TICK),
            }
        }
        lock(&self.log).push_str("--- stopped ---\n");
    }

    /// Panics with its output if its process ended by itself.
    pub fn assert_alive(&mut self, when: &str) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            panic!(
                "node {} ended ({status}) {when}:\n{}",
                self.name,
                self.log_tail(20_000)
            );
        }
    }

    /// The last `max` bytes of its stderr, over every process it was.
    pub fn log_tail(&self, max: usize) -> String {
        let log = lock(&self.log);
        let mut from = log.len().saturating_sub(max);
        while !log.is_char_boundary(from) {
            from += 1;
        }
        log[from..].to_owned()
    }

    /// Its API as a `--server` URL.
    pub fn server(&self) -> String {
        format!(
            "http://{}",
            self.api
                .unwrap_or_else(|| panic!("node {} is not listening", self.name))
        )
    }

    /// `sluice ARGS --server <this node> --json`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(SLUICE)
            .args(args)
            .args(["--server", &self.server(), "--json"])
            .env_remove("SLUICE_SERVER")
            .env_remove("SLUICE_TOKEN")
            .output()
            .expect("run the sluice client")
    }

    /// `sluice ARGS` through this node, its stdout as JSON; panics on failure.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`sluice {}` on node {} failed ({}): {}{}",
            args.join(" "),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "`sluice {}` printed no JSON ({e}): {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Triggers a run of `workflow` through this node's API; returns its id.
    pub fn trigger(&self, workflow: &str) -> RunId {
        let v = self.cli_json(&["workflows", "trigger", workflow]);
        let summary = v.as_array().and_then(|a| a.first()).unwrap_or(&v);
        let id = summary
            .get("run_id")
            .map(json_text)
            .unwrap_or_else(|| panic!("no run id in {v}"));
        id.parse()
            .unwrap_or_else(|e| panic!("run id {id:?} of {workflow}: {e:?}"))
    }

    /// `sluice nodes list --json` through this node: the nodes as a JSON array.
    pub fn nodes_list(&self) -> Result<serde_json::Value, String> {
        let out = self.cli(&["nodes", "list"]);
        if !out.status.success() {
            return Err(format!(
                "`sluice nodes list` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("`sluice nodes list` printed no JSON: {e}"))?;
        Ok(match v.get("nodes") {
            Some(nodes) => nodes.clone(),
            None => v,
        })
    }

    /// Its metrics as Prometheus text.
    pub fn metrics_text(&self) -> Result<String, String> {
        let addr = self
            .metrics
            .ok_or_else(|| format!("node {} is not listening", self.name))?;
        http_get(addr, "/metrics")
    }

    /// The sum of every sample of metric `name` (any labels); 0 when absent.
    pub fn metric(&self, name: &str) -> Result<f64, String> {
        Ok(metric_sum(&self.metrics_text()?, name))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET path` from `addr` over HTTP/1.0; the body of a 200.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|e| format!("asking {addr}: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("reading from {addr}: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer from {addr}: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!("{addr}{path} answered {head}"));
    }
    Ok(body.to_owned())
}

/// The sum of the samples of metric `name` in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                rest.rsplit_once('}')?.1
            } else if rest.starts_with(' ') {
                rest
            } else {
                return None;
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

// ---------------------------------------------------------------------------------
// A network namespace.

static NETNS: AtomicU32 = AtomicU32::new(0);

/// A network namespace of this test process, joined to the host by a veth pair on a
/// private /30: the host side is `host_ip`, the namespace's side `ns_ip`. Dropped, it
/// kills what still runs in it and removes the namespace and the pair.
pub struct Netns {
    /// The namespace's name (`ip netns exec NAME …`).
    pub name: String,
    host_if: String,
    /// The host's address on the link.
    pub host_ip: Ipv4Addr,
    /// The namespace's address on the link.
    pub ns_ip: Ipv4Addr,
}

/// Runs `ip ARGS`; panics with its output if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running `ip {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// Creates a namespace and its link, up. Namespaces left behind by test processes
    /// that no longer run are removed first.
    pub fn create() -> Netns {
        remove_orphan_namespaces();
        let pid = std::process::id();
        let n = NETNS.fetch_add(1, Ordering::Relaxed);
        let name = format!("sluice-cl-{pid}-{n}");
        let host_if = format!("sc{pid}h{n}");
        let ns_if = format!("sc{pid}n{n}");
        // A /30 of 10.0.0.0/8 picked by process and namespace, away from 10.0.x.
        let key = (pid << 2) | (n & 3);
        let a = 100 + ((key >> 14) % 150) as u8;
        let b = ((key >> 6) & 0xff) as u8;
        let c = ((key & 0x3f) * 4) as u8;
        let host_ip = Ipv4Addr::new(10, a, b, c + 1);
        let ns_ip = Ipv4Addr::new(10, a, b, c + 2);
        let netns = Netns {
            name,
            host_if,
            host_ip,
            ns_ip,
        };
        ip(&["netns", "add", &netns.name]);
        ip(&[
            "link",
            "add",
            &netns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &netns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &netns.host_if,
        ]);
        ip(&["link", "set", &netns.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all: Vec<&str> = vec!["netns", "exec", netns.name.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if]);
        inside(&["link", "set", &ns_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        netns
    }

    /// Cuts the link: the host's side goes down, so packets either way are lost —
    /// nothing answers, nothing resets a connection.
    pub fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]);
    }

    /// Restores the link.
    pub fn restore(&self) {
        ip(&["link", "set", &self.host_if, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove_namespace(&self.name, &self.host_if);
    }
}

/// Kills every process in namespace `name`, removes the host side of its link (which
/// removes the pair) and the namespace. Best effort, never panics.
fn remove_namespace(name: &str, host_if: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<u32>() {
                sluice_testkit::process::send_signal(pid, "-KILL");
            }
        }
    }
    let quiet = |args: &[&str]| {
        let _ = Command::new("ip")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    quiet(&["link", "del", host_if]);
    quiet(&["netns", "del", name]);
}

/// Removes the namespaces (and links) made by test processes that no longer run.
fn remove_orphan_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix("sluice-cl-") else {
            continue;
        };
        let mut parts = rest.split('-');
        let (Some(pid), Some(n)) = (parts.next(), parts.next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            remove_namespace(name, &format!("sc{pid}h{n}"));
        }
    }
}

/// `url` with its host and port replaced by `addr`, and the host and port it named
/// (5432 by default).
pub fn via(url: &str, addr: SocketAddr) -> (String, String) {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), authority),
    };
    let target = if host.rsplit_once(':').is_some() {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    let rewritten = format!(
        "{}{user}{addr}{}",
        &url[..scheme_end],
        &rest[authority_end..]
    );
    (rewritten, target)
}

// ---------------------------------------------------------------------------------
// The checks.

/// Runs several checks and fails with every one that failed, not just the first.
#[derive(Default)]
pub struct Verdicts {
    failed: Vec<String>,
    passed: Vec<String>,
}

impl Verdicts {
    /// Runs check `what`; a panic in it is kept as its failure.
    pub fn check(&mut self, what: &str, f: impl FnOnce()) {
        let began = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        eprintln!(
            "check {what}: {} in {:.1?}",
            if outcome.is_ok() { "ok" } else { "FAILED" },
            began.elapsed()
        );
        match outcome {
            Ok(()) => self.passed.push(what.to_owned()),
            Err(e) => {
                let message = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                self.failed.push(format!("{what}: {message}"));
            }
        }
    }

    /// Fails with every failed check, naming the ones that passed.
    pub fn finish(self) {
        assert!(
            self.failed.is_empty(),
            "{} check(s) failed (passed: {:?}):\n\n{}",
            self.failed.len(),
            self.passed,
            self.failed.join("\n\n")
        );
    }
}

/// What the log says of one run, for the cluster-wide checks.
#[derive(Debug)]
pub struct RunFacts {
    /// The run.
    pub run: RunId,
    /// Its workflow.
    pub workflow: String,
    /// The schedule fire it runs for (0: none).
    pub fire_at: i64,
    /// When it started (`RunStarted`), if it did.
    pub started: Option<i64>,
    /// How many `RunStarted` it has.
    pub starts: usize,
    /// When it ended (completed, dead-lettered or cancelled), if it did.
    pub ended: Option<i64>,
    /// Its status.
    pub status: StatusKind,
    /// The attempts begun, with their workers.
    pub attempts: Vec<(u32, String)>,
    /// Its events in short (`seq@time kind…`), for a failure message.
    pub timeline: Vec<String>,
}

/// The facts of every run in the store.
pub fn run_facts(probe: &Probe) -> Vec<RunFacts> {
    probe
        .runs(None)
        .into_iter()
        .map(|summary| {
            let mut facts = RunFacts {
                run: summary.run_id,
                workflow: summary.workflow.clone(),
                fire_at: 0,
                started: None,
                starts: 0,
                ended: None,
                status: summary.status,
                attempts: Vec::new(),
                timeline: Vec::new(),
            };
            for event in probe.events(summary.run_id) {
                facts.timeline.push(describe(&event));
                match &event.kind {
                    EventKind::RunScheduled(s) => facts.fire_at = s.fire_at_unix_ms,
                    EventKind::RunStarted(_) => {
                        facts.starts += 1;
                        facts.started.get_or_insert(event.at_unix_ms);
                    }
                    EventKind::AttemptBegun(a) => {
                        facts.attempts.push((a.attempt, a.worker.clone()))
                    }
                    EventKind::RunCompleted(_)
                    | EventKind::RunDeadLettered(_)
                    | EventKind::RunCancelled(_) => facts.ended = Some(event.at_unix_ms),
                    _ => {}
                }
            }
            facts
        })
        .collect()
}

/// An event in short: `seq@time Kind #attempt (detail)`.
fn describe(event: &RunEvent) -> String {
    let detail = match &event.kind {
        EventKind::AttemptBegun(a) => format!(" #{} by {}", a.attempt, a.worker),
        EventKind::RunStarted(s) => format!(" {s:?}"),
        EventKind::AttemptFailed(f) => format!(" #{} {:?}: {}", f.attempt, f.kind, f.message),
        EventKind::RunScheduled(s) => format!(" fire {}", s.fire_at_unix_ms),
        EventKind::CheckpointCommitted(c) => format!(
            " #{} {} at {:?}: {} records ({} created, {} unchanged)",
            c.attempt, c.stream, c.checkpoint, c.records, c.created, c.unchanged
        ),
        other => attempt_of(other)
            .map(|a| format!(" #{a}"))
            .unwrap_or_default(),
    };
    format!(
        "{}@{} {}{detail}",
        event.seq,
        event.at_unix_ms,
        event.kind.name()
    )
}

/// No two runs for one (workflow, fire), and no run started twice. Returns the
/// number of scheduled runs.
pub fn assert_each_fire_once(runs: &[RunFacts]) -> usize {
    let mut by_fire: HashMap<(&str, i64), Vec<RunId>> = HashMap::new();
    for r in runs.iter().filter(|r| r.fire_at != 0) {
        by_fire
            .entry((r.workflow.as_str(), r.fire_at))
            .or_default()
            .push(r.run);
    }
    let twice: Vec<_> = by_fire.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "{} fires have more than one run: {twice:?}",
        twice.len()
    );
    let restarted: Vec<_> = runs.iter().filter(|r| r.starts > 1).collect();
    assert!(
        restarted.is_empty(),
        "runs started more than once: {restarted:?}"
    );
    by_fire.len()
}

/// No two runs of one workflow overlapped: sorted by start, each started at or after
/// the one before it ended (by the times of their `RunStarted` and end events).
/// Workflows in `allowed` are not checked.
pub fn assert_no_overlap(runs: &[RunFacts], allowed: &BTreeSet<String>) {
    let mut by_workflow: BTreeMap<&str, Vec<&RunFacts>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.started.is_some()) {
        if !allowed.contains(&r.workflow) {
            by_workflow.entry(r.workflow.as_str()).or_default().push(r);
        }
    }
    let mut overlaps = Vec::new();
    for (workflow, mut list) in by_workflow {
        list.sort_by_key(|r| r.started);
        for pair in list.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            let overlapped = match before.ended {
                None => true,
                Some(end) => after.started < Some(end),
            };
            if overlapped {
                overlaps.push(format!(
                    "{workflow}: run {} ({:?}..{:?}) and run {} ({:?}..{:?})\n  {}: {:?}\n  \
                     {}: {:?}",
                    before.run,
                    before.started,
                    before.ended,
                    after.run,
                    after.started,
                    after.ended,
                    before.run,
                    before.timeline,
                    after.run,
                    after.timeline
                ));
            }
        }
    }
    assert!(
        overlaps.is_empty(),
        "{} pairs of runs of one workflow overlapped:\n{}",
        overlaps.len(),
        overlaps.join("\n")
    );
}

/// The attempt an event belongs to, for the events that name one.
fn attempt_of(kind: &EventKind) -> Option<u32> {
    match kind {
        EventKind::CheckpointCommitted(e) => Some(e.attempt),
        EventKind::StreamCompleted(e) => Some(e.attempt),
        EventKind::AttemptFailed(e) => Some(e.attempt),
        EventKind::Heartbeat(e) => Some(e.attempt),
        _ => None,
    }
}

/// No run's log holds an event of an attempt after a later attempt began: once a run
/// was taken over, nothing of its former holder was accepted (the fence).
pub fn assert_no_stale_events(probe: &Probe, runs: &[RunFacts]) {
    let mut stale = Vec::new();
    for r in runs.iter().filter(|r| r.attempts.len() > 1) {
        let mut current = 0;
        for event in probe.events(r.run) {
            if let EventKind::AttemptBegun(a) = &event.kind {
                current = current.max(a.attempt);
            }
            if let Some(attempt) = attempt_of(&event.kind)
                && attempt < current
            {
                stale.push(format!(
                    "run {} ({}): seq {} of attempt {attempt} after attempt {current} \
                     began: {:?}",
                    r.run, r.workflow, event.seq, event.kind
                ));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "events of attempts that had lost the run were accepted:\n{}",
        stale.join("\n")
    );
}

/// Sessions of the test database idle in a transaction (a frozen or cut-off node's
/// open transaction holds its locks), waiting for a lock, or in a transaction open for
/// more than a few seconds, for a failure message.
pub fn open_transactions(url: &str) -> String {
    let rows = psql(
        url,
        "SELECT pid, client_addr, state, now() - xact_start, wait_event_type, \
         pg_blocking_pids(pid), left(query, 100) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND (state LIKE 'idle in transaction%' OR wait_event_type = 'Lock' \
              OR xact_start < now() - interval '5 seconds')",
    );
    format!(
        "sessions in a transaction left open or waiting for a lock (pid, client, state, \
         open for, wait, blocked by, query): {rows:#?}"
    )
}

/// `psql URL -c SQL`: the rows, tab-separated fields.
pub fn psql(url: &str, sql: &str) -> Vec<Vec<String>> {
    let out = Command::new("psql")
        .args([
            url,
            "-X",
            "-q",
            "-A",
            "-t",
            "-F",
            "\t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .unwrap_or_else(|e| panic!("running psql (the PostgreSQL client): {e}"));
    assert!(
        out.status.success(),
        "psql `{sql}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// The `fires` table (one row per workflow: its latest fire that created a run)
/// agrees with the runs: each scheduled workflow's row names its run of its latest
/// fire in the log.
pub fn assert_fires_table(url: &str, runs: &[RunFacts]) {
    let rows = psql(
        url,
        "SELECT workflow, fire_at_ms, run_id::text FROM fires ORDER BY 1",
    );
    let table: BTreeMap<String, (i64, String)> = rows
        .into_iter()
        .map(|r| {
            (
                r[0].clone(),
                (r[1].parse().expect("fire_at_ms"), r[2].clone()),
            )
        })
        .collect();
    let mut latest: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.fire_at != 0) {
        let entry = latest
            .entry(r.workflow.clone())
            .or_insert((r.fire_at, r.run.to_string()));
        if r.fire_at > entry.0 {
            *entry = (r.fire_at, r.run.to_string());
        }
    }
    assert_eq!(
        table, latest,
        "the fires table (workflow -> latest fire, its run) does not agree with the log"
    );
}

/// The hub's tables for `connection`/`stream`: exactly `n` live records, keys `[1]`
/// .. `[n]` once each, and exactly `n` changes in the feed, all creations (kind 1).
pub fn assert_hub_tables(url: &str, connection: &str, stream: &str, n: u64) {
    let stream_id = format!(
        "(SELECT id FROM hub_streams WHERE connection = '{connection}' AND stream = '{stream}')"
    );
    let changes = psql(
        url,
        &format!(
            "SELECT kind, count(*), count(DISTINCT pk), min(version), max(version) \
             FROM hub_changes WHERE stream_id = {stream_id} GROUP BY kind ORDER BY kind"
        ),
    );
    let expected = vec![vec![
        "1".to_owned(),
        n.to_string(),
        n.to_string(),
        "1".to_owned(),
        "1".to_owned(),
    ]];
    assert_eq!(
        changes, expected,
        "{connection}/{stream}: the feed's rows by kind (kind, rows, distinct keys, \
         versions) are not {n} creations"
    );
    let records = psql(
        url,
        &format!(
            "SELECT count(*), count(*) FILTER (WHERE NOT deleted), \
             count(*) FILTER (WHERE pk ~ '^\\[[0-9]+\\]$' \
               AND trim(both '[]' from pk)::int8 BETWEEN 1 AND {n}) \
             FROM hub_records WHERE stream_id = {stream_id}"
        ),
    );
    assert_eq!(
        records,
        vec![vec![n.to_string(), n.to_string(), n.to_string()]],
        "{connection}/{stream}: hub_records (rows, live, keys within [1]..[{n}])"
    );
}

/// The one run of `workflow` counted each of its `n` records once (`records` and
/// `created` are `n`, nothing unchanged or updated); else panics with its events.
pub fn assert_counted_once(probe: &Probe, runs: &[RunFacts], workflow: &str, stream: &str, n: u64) {
    let mine: Vec<&RunFacts> = runs.iter().filter(|r| r.workflow == workflow).collect();
    assert_eq!(mine.len(), 1, "runs of {workflow}: {mine:#?}");
    let state = probe.state(mine[0].run);
    assert_eq!(
        state.status.kind(),
        StatusKind::Completed,
        "{workflow}: {:#?}",
        mine[0].timeline
    );
    let p = state.progress.get(stream).cloned().unwrap_or_default();
    assert!(
        p.complete && (p.records, p.created, p.unchanged, p.updated) == (n, n, 0, 0),
        "{workflow}: the run's counts (records, created, unchanged, updated) are \
         ({}, {}, {}, {}), not ({n}, {n}, 0, 0): a batch was committed twice\n{:#?}",
        p.records,
        p.created,
        p.unchanged,
        p.updated,
        mine[0].timeline
    );
}

/// Waits until `run` has ended; panics with `context()` past `patience`.
pub fn wait_ended(
    cluster: &mut Cluster,
    run: RunId,
    patience: Duration,
    context: impl Fn(&Cluster) -> String,
) -> RunState {
    let began = Instant::now();
    loop {
        let state = cluster.probe.state(run);
        if matches!(
            state.status.kind(),
            StatusKind::Completed | StatusKind::DeadLettered | StatusKind::Cancelled
        ) {
            return state;
        }
        for node in &mut cluster.nodes {
            if node.is_running() {
                node.assert_alive("while a run was waited for");
            }
        }
        assert!(
            began.elapsed() < patience,
            "run {run} did not end within {patience:?}: {state:?}\n{}\n{}",
            context(cluster),
            cluster.logs()
        );
        std::thread::sleep(TICK);
    }
}
