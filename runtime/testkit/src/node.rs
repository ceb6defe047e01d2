//! Nodes for tests and benchmarks: a connector host, the connectors by name, and an
//! engine over a store, built in one place; and the few steps every engine test takes
//! (define a connection or workflow from JSON, run a workflow to its end).
//!
//! A test module keeps its settings in one constant and builds what it needs from it:
//!
//! ```ignore
//! const NODE: NodeBuilder = NodeBuilder::new()
//!     .pool(64, 512 << 20)
//!     .cache_under(env!("CARGO_TARGET_TMPDIR"), "engine-test-components");
//!
//! let node = NODE.temp().await;                       // an engine over a store of its own
//! let engine = NODE.test_engine_at(dir.path()).await; // or of the node in a directory
//! let host = NODE.host();                             // or just the host
//! ```
//!
//! The store is on the backend the tests run on, chosen by `SLUICE_TEST_STORE`
//! ([`TestBackend::from_env`]): the embedded sled store in the node's directory (unset, or
//! `sled`), or a PostgreSQL schema of its own in the test database (`postgres`; see
//! [`crate::pg`]), named in the node's directory so that a node opened again on the
//! directory (a restart) finds its store. A [`NodeDir`] drops that schema with the
//! directory.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sluice_engine::{Aging, ConnectionDef, Connectors, Engine, Limits, Trigger, WorkflowDef};
use sluice_host::{Host, HostSettings};
use sluice_store::{Location, RunId, RunState, Store};

/// The connectors every node built here knows by name: the first-party `sample` and
/// `rest`, and the `hostile` test component.
pub fn connector_paths() -> [(String, PathBuf); 3] {
    [
        (
            "sample".to_string(),
            PathBuf::from(sluice_artifacts::SAMPLE),
        ),
        ("rest".to_string(), PathBuf::from(sluice_artifacts::REST)),
        (
            "hostile".to_string(),
            PathBuf::from(sluice_artifacts::TEST_HOSTILE),
        ),
    ]
}

/// Where a host keeps the components it compiled.
#[derive(Clone, Copy, Debug)]
enum Cache<'a> {
    /// Nowhere: every host compiles again.
    None,
    /// `name` under a directory (a test target's `CARGO_TARGET_TMPDIR`): shared by the
    /// tests and by later runs.
    Under(&'a str, &'a str),
    /// This directory.
    Dir(&'a Path),
}

/// How to build a node: the host's pool, its cache of compiled components and the
/// name the engine records as its worker. Every method takes and returns the builder,
/// so a test module can keep its settings in a `const`.
#[derive(Clone, Copy, Debug)]
pub struct NodeBuilder<'a> {
    /// Instances and memory ceiling of the pooling allocator; `None`: the host's
    /// defaults.
    pool: Option<(u32, usize)>,
    cache: Cache<'a>,
    worker: &'a str,
}

impl Default for NodeBuilder<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> NodeBuilder<'a> {
    /// The host's default pool, no on-disk cache, worker `test-node`.
    pub const fn new() -> Self {
        Self {
            pool: None,
            cache: Cache::None,
            worker: "test-node",
        }
    }

    /// At most `max_instances` connector instances at once, each of at most
    /// `max_memory_bytes`. Many engines live in one test process: a small pool keeps
    /// the address space they reserve small.
    pub const fn pool(self, max_instances: u32, max_memory_bytes: usize) -> Self {
        Self {
            pool: Some((max_instances, max_memory_bytes)),
            ..self
        }
    }

    /// Keep compiled components in `name` under `dir` (pass
    /// `env!("CARGO_TARGET_TMPDIR")`), shared between tests and runs.
    pub const fn cache_under(self, dir: &'a str, name: &'a str) -> Self {
        Self {
            cache: Cache::Under(dir, name),
            ..self
        }
    }

    /// Keep compiled components in `dir`.
    pub const fn cache_dir(self, dir: &'a Path) -> Self {
        Self {
            cache: Cache::Dir(dir),
            ..self
        }
    }

    /// The name the engine records as the worker of its attempts.
    pub const fn worker(self, worker: &'a str) -> Self {
        Self { worker, ..self }
    }

    /// The host's settings.
    pub fn settings(&self) -> HostSettings {
        let defaults = HostSettings::default();
        let (max_instances, max_memory_bytes) = self
            .pool
            .unwrap_or((defaults.max_instances, defaults.max_memory_bytes));
        let cache_dir = match self.cache {
            Cache::None => None,
            Cache::Under(dir, name) => Some(Path::new(dir).join(name)),
            Cache::Dir(dir) => Some(dir.to_path_buf()),
        };
        HostSettings {
            max_instances,
            max_memory_bytes,
            cache_dir,
        }
    }

    /// A connector host of its own.
    pub fn host(&self) -> Host {
        Host::new(self.settings())
            .unwrap_or_else(|e| panic!("cannot start the connector host: {e}"))
    }

    /// The [named connectors](connector_paths) on a host of their own.
    pub fn connectors(&self) -> Connectors {
        Connectors::new(self.host(), connector_paths())
    }

    /// An engine over `store`, with the default limits.
    pub fn engine(&self, store: Store) -> Engine {
        self.engine_with(store, Limits::default())
    }

    /// An engine over `store` that drives at most `limits` runs at once.
    pub fn engine_with(&self, store: Store, limits: Limits) -> Engine {
        Engine::with_limits(
            store,
            self.connectors(),
            self.worker,
            limits,
            Aging::default(),
        )
    }

    /// An engine over the sled store in `dir` (opened, or made there), whatever the
    /// backend the tests run on: for benchmarks. Tests take [`Self::test_engine_at`].
    pub fn engine_at(&self, dir: &Path) -> Engine {
        self.engine(open_store(dir))
    }

    /// An engine over the store of the node whose files are in `dir`, on the backend
    /// the tests run on ([`open_test_store`]). A new engine on the same `dir` is the
    /// node restarted.
    pub async fn test_engine_at(&self, dir: &Path) -> Engine {
        self.engine(open_test_store(dir).await)
    }

    /// An engine over a store of its own, on the backend the tests run on, with its
    /// files in a temporary directory.
    pub async fn temp(&self) -> TempNode {
        let dir = NodeDir::new();
        let engine = self.test_engine_at(dir.path()).await;
        TempNode { engine, dir }
    }
}

/// The sled store in `dir`, opened (or made there), whatever the backend the tests
/// run on: for benchmarks. Tests take [`open_test_store`].
pub fn open_store(dir: &Path) -> Store {
    Store::open(dir).unwrap_or_else(|e| panic!("cannot open the store in {}: {e}", dir.display()))
}

/// The variable that chooses the store the tests run on ([`TestBackend::from_env`]).
pub const STORE_VAR: &str = "SLUICE_TEST_STORE";

/// A backend of the store the tests can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestBackend {
    /// The embedded sled store, in the node's directory.
    Sled,
    /// A PostgreSQL schema of its own in the test database ([`crate::pg`]).
    Postgres,
}

impl TestBackend {
    /// The backend `SLUICE_TEST_STORE` names: `sled` (also when unset or empty) or
    /// `postgres`. Panics, naming the choices, on anything else, so that a typo
    /// never runs the tests on a backend nobody chose.
    pub fn from_env() -> TestBackend {
        let value = std::env::var(STORE_VAR).unwrap_or_default();
        match value.trim() {
            "" | "sled" => TestBackend::Sled,
            "postgres" | "postgresql" => TestBackend::Postgres,
            other => panic!("{STORE_VAR}={other:?}: the tests run on `sled` or `postgres`"),
        }
    }
}

/// Where the store of the node whose files are in `dir` is, on the backend the tests
/// run on: `dir` itself for sled, the schema `dir` names (made on first use) for
/// PostgreSQL.
pub async fn store_location(dir: &Path) -> Location {
    match TestBackend::from_env() {
        TestBackend::Sled => Location::Dir(dir.to_path_buf()),
        TestBackend::Postgres => Location::Postgres(crate::pg::node_url(dir).await),
    }
}

/// The store of the node whose files are in `dir`, opened (or made), on the backend
/// the tests run on ([`TestBackend::from_env`]). Opening the same `dir` again opens the
/// same store.
pub async fn open_test_store(dir: &Path) -> Store {
    let location = store_location(dir).await;
    location
        .open(dir)
        .await
        .unwrap_or_else(|e| panic!("cannot open the store at {location}: {e}"))
}

/// A temporary directory for a node's files (and its sled store), removed when
/// dropped, with the PostgreSQL schema of the node's store if it has one.
pub struct NodeDir {
    dir: tempfile::TempDir,
}

impl NodeDir {
    /// A new, empty directory.
    pub fn new() -> NodeDir {
        NodeDir {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary directory: {e}")),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for NodeDir {
    fn default() -> Self {
        Self::new()
    }
}

impl AsRef<Path> for NodeDir {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

impl Drop for NodeDir {
    fn drop(&mut self) {
        crate::pg::drop_node_schema(self.dir.path());
    }
}

/// An engine over a store of its own that lives as long as it.
pub struct TempNode {
    /// The engine.
    pub engine: Engine,
    /// The node's directory, removed (with its store) when the node is dropped, after
    /// the engine.
    pub dir: NodeDir,
}

/// Defines the connection `def` (as a user writes it in JSON) on `engine`.
pub async fn connection(engine: &Engine, def: Value) {
    let def: ConnectionDef =
        serde_json::from_value(def).unwrap_or_else(|e| panic!("connection JSON: {e}"));
    engine
        .define_connection(&def)
        .await
        .unwrap_or_else(|e| panic!("connection `{}` not defined: {e}", def.name));
}

/// Defines the workflow `def` (as a user writes it in JSON) on `engine`.
pub async fn workflow(engine: &Engine, def: Value) {
    let def: WorkflowDef =
        serde_json::from_value(def).unwrap_or_else(|e| panic!("workflow JSON: {e}"));
    engine
        .define_workflow(&def)
        .await
        .unwrap_or_else(|e| panic!("workflow `{}` not defined: {e}", def.name));
}

/// Starts a run of `workflow` by hand and waits for it to stop.
pub async fn run(engine: &Engine, workflow: &str) -> RunState {
    let run = engine
        .start(workflow, Trigger::Manual)
        .await
        .unwrap_or_else(|e| panic!("a run of `{workflow}` does not start: {e}"));
    engine
        .wait(run)
        .await
        .unwrap_or_else(|e| panic!("no state of the run of `{workflow}`: {e}"))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A fresh run id, as the engine makes them (UUID v7), distinct per `n`.
pub fn run_id(n: u8) -> RunId {
    RunId::v7(now_ms(), [n; 10])
}
