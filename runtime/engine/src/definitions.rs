//! In-memory copies of the catalog's connections and workflows, parsed once.
//!
//! Hot paths (queueing a run, driving it, a schedule pass) look definitions up per
//! run; parsing the catalog's JSON each time was a large share of a short run's cost.
//! Owns nothing durable: a definition is written to the catalog first and only then
//! replaces its copy here, so this never serves a definition the catalog does not
//! hold. A miss reads the catalog. `generation` changes with every workflow written,
//! so the schedule table knows when to rebuild.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::definition::{ConnectionDef, WorkflowDef};

/// Parsed definitions by name.
#[derive(Default)]
pub(crate) struct DefinitionCache {
    connections: RwLock<HashMap<String, Arc<ConnectionDef>>>,
    workflows: RwLock<HashMap<String, Arc<WorkflowDef>>>,
    generation: AtomicU64,
}

fn get<T>(map: &RwLock<HashMap<String, Arc<T>>>, name: &str) -> Option<Arc<T>> {
    map.read().ok().and_then(|m| m.get(name).cloned())
}

fn put<T>(map: &RwLock<HashMap<String, Arc<T>>>, name: &str, def: Arc<T>) {
    if let Ok(mut m) = map.write() {
        m.insert(name.to_owned(), def);
    }
}

impl DefinitionCache {
    pub(crate) fn connection(&self, name: &str) -> Option<Arc<ConnectionDef>> {
        get(&self.connections, name)
    }

    pub(crate) fn workflow(&self, name: &str) -> Option<Arc<WorkflowDef>> {
        get(&self.workflows, name)
    }

    /// Remembers a connection read from or just written to the catalog.
    pub(crate) fn put_connection(&self, def: Arc<ConnectionDef>) {
        put(&self.connections, &def.name.clone(), def);
    }

    /// Remembers a workflow read from the catalog.
    pub(crate) fn put_workflow(&self, def: Arc<WorkflowDef>) {
        put(&self.workflows, &def.name.clone(), def);
    }

    /// Remembers a workflow just written to the catalog (a change: schedules rebuild).
    pub(crate) fn workflow_changed(&self, def: Arc<WorkflowDef>) {
        self.put_workflow(def);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Forgets a workflow just removed from the catalog (schedules rebuild).
    pub(crate) fn workflow_removed(&self, name: &str) {
        if let Ok(mut m) = self.workflows.write() {
            m.remove(name);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes whenever a workflow is written.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
