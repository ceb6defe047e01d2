//! [`Store`]: the storage contract's front door, which the engine and the API hold:
//! a backend and the node's data directory. Opening one picks the backend; nothing
//! above this crate names a backend's trees, tables or keys.

use std::path::Path;
use std::sync::Arc;

use sluice_model::{EventKind, RunId};

use crate::backend::{Backend, BatchCommit, Committed, StoreError, StreamEnd};
use crate::catalog::Catalog;
use crate::hub::{Hub, HubBulk};
use crate::log::RunLog;
use crate::run_logs::RunLogs;

/// The store of one node: a backend and the node's data directory. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    dir: Arc<Path>,
}

impl Store {
    /// Opens (or creates) the embedded sled store in the directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, crate::sled::LogConfig::default())
    }

    /// Opens the embedded sled store with a log configuration.
    pub fn open_with(
        path: impl AsRef<Path>,
        config: crate::sled::LogConfig,
    ) -> Result<Self, StoreError> {
        let backend = crate::sled::SledStore::open_with(path.as_ref(), config)?;
        Ok(Self::with_backend(Arc::new(backend), path))
    }

    /// A store over `backend`, whose node keeps its files (such as registered
    /// connector components) under `dir`.
    pub fn with_backend(backend: Arc<dyn Backend>, dir: impl AsRef<Path>) -> Self {
        Store {
            backend,
            dir: Arc::from(dir.as_ref()),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The node's data directory (files that live beside the store, such as
    /// registered connector components, go in subdirectories of it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run log.
    pub fn log(&self) -> &dyn RunLog {
        self.backend.log()
    }

    /// The hub's reads (a run's batches go through [`Store::commit_batch`]).
    pub fn hub(&self) -> &dyn Hub {
        self.backend.hub()
    }

    /// The catalog of definitions.
    pub fn catalog(&self) -> &dyn Catalog {
        self.backend.catalog()
    }

    /// The per-run logs (connector lines and HTTP requests).
    pub fn run_logs(&self) -> &dyn RunLogs {
        self.backend.run_logs()
    }

    /// The hub's bulk reads and writes (see [`crate::copy`]).
    pub fn hub_bulk(&self) -> &dyn HubBulk {
        self.backend.hub_bulk()
    }

    /// Bytes the store takes on disk.
    pub async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.backend.size_on_disk().await
    }

    /// See [`Backend::shared`].
    pub fn shared(&self) -> bool {
        self.backend.shared()
    }

    /// See [`Backend::shared_budgets`].
    pub fn shared_budgets(&self) -> Option<Arc<dyn crate::budgets::SharedBudgets>> {
        self.backend.shared_budgets()
    }

    /// See [`Backend::commit_batch`].
    pub async fn commit_batch(
        &self,
        run: RunId,
        batch: BatchCommit,
    ) -> Result<Committed, StoreError> {
        self.backend.commit_batch(run, batch).await
    }

    /// See [`Backend::complete_stream`].
    pub async fn complete_stream(&self, run: RunId, end: StreamEnd) -> Result<u64, StoreError> {
        self.backend.complete_stream(run, end).await
    }

    /// See [`Backend::append_with_document`]: for a schedule, the run started for a
    /// fire and the schedule's progress past that fire, so that after a crash a fire
    /// has either its run and its progress, or neither.
    pub async fn append_with_document(
        &self,
        run: RunId,
        at_unix_ms: i64,
        events: Vec<EventKind>,
        kind: &str,
        name: &str,
        document: Vec<u8>,
    ) -> Result<Vec<u64>, StoreError> {
        self.backend
            .append_with_document(run, at_unix_ms, events, kind, name, document)
            .await
    }
}
