//! The definitions service: connections and workflows as the catalog holds them,
//! checked on the way in and parsed once on the way out.
//!
//! Owns validation on write (a definition that does not hold together, a connection
//! whose connector does not load or a workflow whose connection is unknown is never
//! stored), the catalog's `connection` and `workflow` documents, and the in-memory
//! copies of them: hot paths (queueing a run, driving it, a schedule pass) look
//! definitions up per run, and parsing the catalog's JSON each time was a large share
//! of a short run's cost. Writes go through: the catalog first, then the copy, so this
//! never serves a definition the catalog does not hold; a miss reads the catalog.
//! `generation` changes with every workflow written, so the schedule table knows when
//! to rebuild. It never starts, queues or drives runs, and owns no other kind of
//! catalog document (it only names them all, in [`kind`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use sluice_store::Store;

use crate::connectors::Connectors;
use crate::definition::{ConnectionDef, WorkflowDef};
use crate::error::EngineError;

/// The kinds of document the engine keeps in the store's catalog, named once: a
/// misspelt kind would read as an empty catalog, not fail.
pub(crate) mod kind {
    /// A connection definition (this module).
    pub(crate) const CONNECTION: &str = "connection";
    /// A workflow definition (this module).
    pub(crate) const WORKFLOW: &str = "workflow";
    /// A schedule's progress, by workflow (module `schedules`).
    pub(crate) const SCHEDULE: &str = "schedule";
    /// Whether the whole scheduler is paused (module `schedules`).
    pub(crate) const SCHEDULER: &str = "scheduler";
    /// A connector registered through the API (module `registry`).
    pub(crate) const CONNECTOR: &str = "connector";
    /// A node of the cluster, by node id (module `cluster`).
    pub(crate) const NODE: &str = "node";
    /// A request that a node drain, by node id (module `cluster`).
    pub(crate) const DRAIN: &str = "node-drain";
}

/// Connections and workflows: the catalog's, with parsed copies by name.
pub(crate) struct DefinitionService {
    store: Store,
    connections: RwLock<HashMap<String, Arc<ConnectionDef>>>,
    workflows: RwLock<HashMap<String, Arc<WorkflowDef>>>,
    generation: AtomicU64,
}

fn cached<T>(map: &RwLock<HashMap<String, Arc<T>>>, name: &str) -> Option<Arc<T>> {
    map.read().ok().and_then(|m| m.get(name).cloned())
}

fn remember<T>(map: &RwLock<HashMap<String, Arc<T>>>, name: &str, def: Arc<T>) {
    if let Ok(mut m) = map.write() {
        m.insert(name.to_owned(), def);
    }
}

/// Drops the copies in `map` that `documents` (the catalog's, by name) no longer
/// match; returns whether any document is new, changed or gone.
fn stale<T: serde::Serialize>(
    map: &RwLock<HashMap<String, Arc<T>>>,
    documents: &[(String, Vec<u8>)],
) -> bool {
    let Ok(mut m) = map.write() else {
        return false;
    };
    let mut changed = false;
    let names: std::collections::HashSet<&str> =
        documents.iter().map(|(n, _)| n.as_str()).collect();
    m.retain(|name, _| {
        let keep = names.contains(name.as_str());
        changed |= !keep;
        keep
    });
    for (name, raw) in documents {
        let same = m
            .get(name)
            .and_then(|def| serde_json::to_vec(def.as_ref()).ok())
            .is_some_and(|mine| mine == *raw);
        if !same {
            changed = true;
            m.remove(name);
        }
    }
    changed
}

fn corrupt(kind: &'static str, name: &str, e: &serde_json::Error) -> EngineError {
    EngineError::CorruptDefinition {
        kind,
        name: name.to_owned(),
        message: e.to_string(),
    }
}

impl DefinitionService {
    /// The definitions of `store`'s catalog; nothing is read until asked for.
    pub(crate) fn new(store: Store) -> Self {
        DefinitionService {
            store,
            connections: RwLock::default(),
            workflows: RwLock::default(),
            generation: AtomicU64::new(0),
        }
    }

    /// Stores (or replaces) a connection, after checking it and that its connector
    /// loads through `connectors`.
    pub(crate) async fn define_connection(
        &self,
        def: &ConnectionDef,
        connectors: &Connectors,
    ) -> Result<(), EngineError> {
        def.validate("")?;
        connectors
            .load(&def.connector)
            .map_err(|e| EngineError::Connector {
                reference: def.connector.clone(),
                message: e.to_string(),
            })?;
        self.put(kind::CONNECTION, &def.name, def).await?;
        remember(&self.connections, &def.name, Arc::new(def.clone()));
        Ok(())
    }

    /// Stores (or replaces) a workflow, after checking it and that its connection
    /// exists.
    pub(crate) async fn define_workflow(&self, def: &WorkflowDef) -> Result<(), EngineError> {
        def.validate("")?;
        self.connection(&def.connection).await?;
        self.put(kind::WORKFLOW, &def.name, def).await?;
        remember(&self.workflows, &def.name, Arc::new(def.clone()));
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Removes a workflow from the catalog, then its copy (schedules rebuild).
    pub(crate) async fn remove_workflow(&self, name: &str) -> Result<(), EngineError> {
        self.store.catalog().remove(kind::WORKFLOW, name).await?;
        if let Ok(mut m) = self.workflows.write() {
            m.remove(name);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The connection named `name`.
    pub(crate) async fn connection(&self, name: &str) -> Result<Arc<ConnectionDef>, EngineError> {
        if let Some(def) = cached(&self.connections, name) {
            return Ok(def);
        }
        let def: Arc<ConnectionDef> = self
            .get::<ConnectionDef>(kind::CONNECTION, name)
            .await?
            .ok_or_else(|| EngineError::UnknownConnection(name.to_owned()))?
            .into();
        remember(&self.connections, &def.name, Arc::clone(&def));
        Ok(def)
    }

    /// The workflow named `name`.
    pub(crate) async fn workflow(&self, name: &str) -> Result<Arc<WorkflowDef>, EngineError> {
        if let Some(def) = cached(&self.workflows, name) {
            return Ok(def);
        }
        let def: Arc<WorkflowDef> = self
            .get::<WorkflowDef>(kind::WORKFLOW, name)
            .await?
            .ok_or_else(|| EngineError::UnknownWorkflow(name.to_owned()))?
            .into();
        remember(&self.workflows, &def.name, Arc::clone(&def));
        Ok(def)
    }

    /// Every connection, by name; an unreadable one fails the whole listing.
    pub(crate) async fn connections(&self) -> Result<Vec<Arc<ConnectionDef>>, EngineError> {
        self.all(kind::CONNECTION).await
    }

    /// Every workflow, by name; an unreadable one fails the whole listing.
    pub(crate) async fn workflows(&self) -> Result<Vec<Arc<WorkflowDef>>, EngineError> {
        self.all(kind::WORKFLOW).await
    }

    /// Every workflow that can be read, by name, refreshing the copies: a schedule
    /// pass must go on for the others when one is unreadable (it is logged).
    pub(crate) async fn readable_workflows(&self) -> Result<Vec<Arc<WorkflowDef>>, EngineError> {
        let mut out = Vec::new();
        for (name, raw) in self.store.catalog().list(kind::WORKFLOW).await? {
            let Ok(wf) = serde_json::from_slice::<WorkflowDef>(&raw) else {
                tracing::error!(workflow = %name, "stored workflow is unreadable; its schedule is skipped");
                continue;
            };
            let wf = Arc::new(wf);
            remember(&self.workflows, &wf.name, Arc::clone(&wf));
            out.push(wf);
        }
        Ok(out)
    }

    /// Forgets the parsed copies that differ from the catalog's documents (written by
    /// another node sharing the store), so the next read takes the catalog's; a
    /// workflow changed, added or removed moves the generation (schedules rebuild).
    pub(crate) async fn resync(&self) -> Result<(), EngineError> {
        let connections = self.store.catalog().list(kind::CONNECTION).await?;
        stale(&self.connections, &connections);
        let workflows = self.store.catalog().list(kind::WORKFLOW).await?;
        if stale(&self.workflows, &workflows) {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Changes whenever a workflow is written or removed.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    async fn put<T: serde::Serialize>(
        &self,
        kind: &'static str,
        name: &str,
        def: &T,
    ) -> Result<(), EngineError> {
        let json = serde_json::to_vec(def).map_err(|e| corrupt(kind, name, &e))?;
        self.store.catalog().put(kind, name, &json).await?;
        Ok(())
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        kind: &'static str,
        name: &str,
    ) -> Result<Option<T>, EngineError> {
        let Some(raw) = self.store.catalog().get(kind, name).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| corrupt(kind, name, &e))
    }

    async fn all<T: serde::de::DeserializeOwned>(
        &self,
        kind: &'static str,
    ) -> Result<Vec<Arc<T>>, EngineError> {
        let mut out = Vec::new();
        for (name, raw) in self.store.catalog().list(kind).await? {
            let def = serde_json::from_slice::<T>(&raw).map_err(|e| corrupt(kind, &name, &e))?;
            out.push(Arc::new(def));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn workflow(connection: &str) -> WorkflowDef {
        serde_json::from_value(serde_json::json!({
            "name": "w", "connection": connection, "streams": [{"name": "users"}]
        }))
        .unwrap()
    }

    async fn with_connection(dir: &std::path::Path) -> (Store, DefinitionService) {
        let store = Store::open(dir).unwrap();
        let c = br#"{"name":"c","connector":"sample"}"#;
        store.catalog().put(kind::CONNECTION, "c", c).await.unwrap();
        (store.clone(), DefinitionService::new(store))
    }

    #[tokio::test]
    async fn a_definition_refused_on_write_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (store, defs) = with_connection(dir.path()).await;
        let e = defs.define_workflow(&workflow("nope")).await.unwrap_err();
        assert!(
            matches!(e, EngineError::UnknownConnection(ref c) if c == "nope"),
            "{e}"
        );
        let mut invalid = workflow("c");
        invalid.streams.clear();
        let e = defs.define_workflow(&invalid).await.unwrap_err();
        assert!(matches!(e, EngineError::Definition(_)), "{e}");
        assert_eq!(
            store.catalog().get(kind::WORKFLOW, "w").await.unwrap(),
            None
        );
        assert_eq!(defs.generation(), 0);
        assert!(matches!(
            defs.workflow("w").await,
            Err(EngineError::UnknownWorkflow(_))
        ));
    }

    #[tokio::test]
    async fn writes_go_through_the_catalog_and_reads_come_from_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (store, defs) = with_connection(dir.path()).await;
        defs.define_workflow(&workflow("c")).await.unwrap();
        assert!(
            store
                .catalog()
                .get(kind::WORKFLOW, "w")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(defs.generation(), 1);
        assert_eq!(defs.workflows().await.unwrap().len(), 1);
        // Read once from the catalog, then from the copy.
        assert_eq!(defs.connection("c").await.unwrap().connector, "sample");
        store.catalog().remove(kind::CONNECTION, "c").await.unwrap();
        assert_eq!(defs.connection("c").await.unwrap().connector, "sample");
        defs.remove_workflow("w").await.unwrap();
        assert_eq!(defs.generation(), 2);
        assert!(matches!(
            defs.workflow("w").await,
            Err(EngineError::UnknownWorkflow(_))
        ));
    }

    #[tokio::test]
    async fn an_unreadable_document_is_named_or_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (store, defs) = with_connection(dir.path()).await;
        defs.define_workflow(&workflow("c")).await.unwrap();
        store
            .catalog()
            .put(kind::WORKFLOW, "bad", b"{")
            .await
            .unwrap();
        let e = defs.workflow("bad").await.unwrap_err();
        assert!(
            matches!(e, EngineError::CorruptDefinition { kind: kind::WORKFLOW, ref name, .. } if name == "bad"),
            "{e}"
        );
        assert!(defs.workflows().await.is_err());
        let readable = defs.readable_workflows().await.unwrap();
        assert_eq!(
            readable.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
            ["w"]
        );
    }
}
