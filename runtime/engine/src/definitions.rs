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
//! to rebuild. Connections' secrets are sealed on the way in and opened on the way
//! out by the node's [`SecretsPolicy`] (module `secrets` owns the formats): the
//! catalog never holds a secret in plaintext once the node has a key, and the copies
//! hold secrets opened but references unresolved ([`DefinitionService::resolve`]
//! resolves them per attempt). It never starts, queues or drives runs, and owns no
//! other kind of catalog document (it only names them all, in [`kind`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use sluice_store::Store;

use crate::connectors::Connectors;
use crate::definition::{ConnectionDef, WorkflowDef};
use crate::error::{DefinitionError, EngineError};
use crate::secrets::{self, LabelKey, SealState, SecretsError, SecretsPolicy};

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
    connections: Copies<ConnectionDef>,
    workflows: Copies<WorkflowDef>,
    generation: AtomicU64,
    secrets: RwLock<Arc<Secrets>>,
}

/// The node's secrets policy and the key of its credential labels.
struct Secrets {
    policy: SecretsPolicy,
    labels: LabelKey,
}

impl Secrets {
    fn new(policy: SecretsPolicy) -> Self {
        let labels = match &policy {
            SecretsPolicy::Sealed(keyring) => keyring.current().label_key(),
            SecretsPolicy::Unsealed | SecretsPolicy::KeyRequired => LabelKey::of_process(),
        };
        Secrets { policy, labels }
    }

    fn keyring(&self) -> Option<&secrets::Keyring> {
        match &self.policy {
            SecretsPolicy::Sealed(keyring) => Some(keyring),
            SecretsPolicy::Unsealed | SecretsPolicy::KeyRequired => None,
        }
    }
}

/// A parsed copy and the stored document it was parsed from (a sealed document is
/// not the copy's serialization, and is sealed anew with each write).
struct Held<T> {
    def: Arc<T>,
    stored: Vec<u8>,
}

type Copies<T> = RwLock<HashMap<String, Held<T>>>;

fn cached<T>(map: &Copies<T>, name: &str) -> Option<Arc<T>> {
    map.read()
        .ok()
        .and_then(|m| m.get(name).map(|h| Arc::clone(&h.def)))
}

fn remember<T>(map: &Copies<T>, name: &str, def: Arc<T>, stored: Vec<u8>) {
    if let Ok(mut m) = map.write() {
        m.insert(name.to_owned(), Held { def, stored });
    }
}

/// Drops the copies in `map` that `documents` (the catalog's, by name) no longer
/// match; returns whether any document is new, changed or gone.
fn stale<T>(map: &Copies<T>, documents: &[(String, Vec<u8>)]) -> bool {
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
        let same = m.get(name).is_some_and(|held| held.stored == *raw);
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
            secrets: RwLock::new(Arc::new(Secrets::new(SecretsPolicy::Unsealed))),
        }
    }

    /// Keeps secrets by `policy` from now on; the copies are forgotten, so every
    /// connection is opened again with it.
    pub(crate) fn set_secrets_policy(&self, policy: SecretsPolicy) {
        if let Ok(mut s) = self.secrets.write() {
            *s = Arc::new(Secrets::new(policy));
        }
        if let Ok(mut m) = self.connections.write() {
            m.clear();
        }
    }

    fn secrets(&self) -> Arc<Secrets> {
        self.secrets
            .read()
            .map(|s| Arc::clone(&s))
            .unwrap_or_else(|e| Arc::clone(&e.into_inner()))
    }

    /// `def` as its connector runs now: references resolved, credential labelled.
    pub(crate) fn resolve(&self, def: &ConnectionDef) -> Result<ConnectionDef, SecretsError> {
        def.resolved(&self.secrets().labels)
    }

    /// The document the catalog stores for `def`: its secrets sealed by the policy.
    fn stored_connection(&self, def: &ConnectionDef) -> Result<Vec<u8>, EngineError> {
        let mut doc =
            serde_json::to_value(def).map_err(|e| corrupt(kind::CONNECTION, &def.name, &e))?;
        if !def.secrets.as_object().is_some_and(|o| o.is_empty()) {
            let secrets = self.secrets();
            match &secrets.policy {
                SecretsPolicy::Unsealed => {}
                SecretsPolicy::Sealed(keyring) => {
                    let sealed = secrets::seal(keyring.current(), &def.name, &def.secrets)
                        .map_err(|e| DefinitionError::new("secrets", e.to_string()))?;
                    doc["secrets"] = serde_json::Value::String(sealed);
                }
                SecretsPolicy::KeyRequired => {
                    let e = SecretsError::NoKey {
                        connection: def.name.clone(),
                    };
                    return Err(DefinitionError::new("secrets", e.to_string()).into());
                }
            }
        }
        serde_json::to_vec(&doc).map_err(|e| corrupt(kind::CONNECTION, &def.name, &e))
    }

    /// The connection a stored document holds, its secrets opened.
    fn parse_connection(&self, name: &str, raw: &[u8]) -> Result<ConnectionDef, EngineError> {
        let mut def: ConnectionDef =
            serde_json::from_slice(raw).map_err(|e| corrupt(kind::CONNECTION, name, &e))?;
        if let serde_json::Value::String(sealed) = &def.secrets {
            let secrets = self.secrets();
            def.secrets = secrets::open(secrets.keyring(), &def.name, sealed).map_err(|e| {
                EngineError::CorruptDefinition {
                    kind: kind::CONNECTION,
                    name: name.to_owned(),
                    message: e.to_string(),
                }
            })?;
        }
        Ok(def)
    }

    /// How each stored connection holds its secrets, after opening every sealed one
    /// with the policy's keys: the first that does not open is the error (a node
    /// refuses to start on it).
    pub(crate) async fn check_stored_secrets(
        &self,
    ) -> Result<Vec<(String, SealState)>, SecretsError> {
        let secrets = self.secrets();
        let mut out = Vec::new();
        for (name, raw) in self.catalog_connections().await? {
            let (state, sealed) = state_of(&name, &raw)?;
            if let Some(sealed) = sealed {
                secrets::open(secrets.keyring(), &name, &sealed)?;
            }
            out.push((name, state));
        }
        Ok(out)
    }

    async fn catalog_connections(&self) -> Result<Vec<(String, Vec<u8>)>, SecretsError> {
        stored_connections(&self.store).await
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
        let stored = self.stored_connection(def)?;
        self.store
            .catalog()
            .put(kind::CONNECTION, &def.name, &stored)
            .await?;
        remember(&self.connections, &def.name, Arc::new(def.clone()), stored);
        Ok(())
    }

    /// Stores (or replaces) a workflow, after checking it and that its connection
    /// exists.
    pub(crate) async fn define_workflow(&self, def: &WorkflowDef) -> Result<(), EngineError> {
        def.validate("")?;
        self.connection(&def.connection).await?;
        let stored = self.put(kind::WORKFLOW, &def.name, def).await?;
        remember(&self.workflows, &def.name, Arc::new(def.clone()), stored);
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
        let raw = self
            .store
            .catalog()
            .get(kind::CONNECTION, name)
            .await?
            .ok_or_else(|| EngineError::UnknownConnection(name.to_owned()))?;
        let def = Arc::new(self.parse_connection(name, &raw)?);
        remember(&self.connections, &def.name, Arc::clone(&def), raw);
        Ok(def)
    }

    /// The workflow named `name`.
    pub(crate) async fn workflow(&self, name: &str) -> Result<Arc<WorkflowDef>, EngineError> {
        if let Some(def) = cached(&self.workflows, name) {
            return Ok(def);
        }
        let Some(raw) = self.store.catalog().get(kind::WORKFLOW, name).await? else {
            return Err(EngineError::UnknownWorkflow(name.to_owned()));
        };
        let def: Arc<WorkflowDef> =
            Arc::new(serde_json::from_slice(&raw).map_err(|e| corrupt(kind::WORKFLOW, name, &e))?);
        remember(&self.workflows, &def.name, Arc::clone(&def), raw);
        Ok(def)
    }

    /// Every connection, by name; an unreadable one fails the whole listing.
    pub(crate) async fn connections(&self) -> Result<Vec<Arc<ConnectionDef>>, EngineError> {
        let mut out = Vec::new();
        for (name, raw) in self.store.catalog().list(kind::CONNECTION).await? {
            out.push(Arc::new(self.parse_connection(&name, &raw)?));
        }
        Ok(out)
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
            remember(&self.workflows, &wf.name, Arc::clone(&wf), raw);
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
    ) -> Result<Vec<u8>, EngineError> {
        let json = serde_json::to_vec(def).map_err(|e| corrupt(kind, name, &e))?;
        self.store.catalog().put(kind, name, &json).await?;
        Ok(json)
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

/// Every stored connection document, by name.
async fn stored_connections(store: &Store) -> Result<Vec<(String, Vec<u8>)>, SecretsError> {
    store
        .catalog()
        .list(kind::CONNECTION)
        .await
        .map_err(|e| SecretsError::Store(format!("reading the stored connections: {e}")))
}

/// How a stored document holds its secrets, and its sealed value if sealed.
fn state_of(name: &str, raw: &[u8]) -> Result<(SealState, Option<String>), SecretsError> {
    let doc: serde_json::Value = serde_json::from_slice(raw).map_err(|e| SecretsError::Format {
        connection: name.to_owned(),
        message: e.to_string(),
    })?;
    let state = secrets::seal_state(&doc);
    let sealed = match (&state, doc.get("secrets")) {
        (SealState::Sealed(_), Some(serde_json::Value::String(s))) => Some(s.clone()),
        _ => None,
    };
    Ok((state, sealed))
}

/// How each stored connection holds its secrets, without opening any.
pub(crate) async fn seal_states(store: &Store) -> Result<Vec<(String, SealState)>, SecretsError> {
    let mut out = Vec::new();
    for (name, raw) in stored_connections(store).await? {
        let (state, _) = state_of(&name, &raw)?;
        out.push((name, state));
    }
    Ok(out)
}

/// Seals again, with `keyring`'s current key, the secrets of every connection of
/// `store` not sealed with it (plaintext ones too), opening them with any of its
/// keys; the rest of each document is written back as it is. Returns every
/// connection's state before, and the names resealed. Safe to run again after a
/// failure: what is done is skipped. Connections changed meanwhile by a node are
/// left for the next run rather than overwritten with an older definition.
pub(crate) async fn reseal_stored(
    store: &Store,
    keyring: &secrets::Keyring,
) -> Result<(Vec<(String, SealState)>, Vec<String>), SecretsError> {
    let current = keyring.current().id().to_owned();
    let mut states = Vec::new();
    let mut resealed = Vec::new();
    for (name, raw) in stored_connections(store).await? {
        let (state, sealed) = state_of(&name, &raw)?;
        let plain = match (&state, sealed) {
            (SealState::Empty, _) => None,
            (SealState::Sealed(id), _) if *id == current => None,
            (_, Some(sealed)) => Some(secrets::open(Some(keyring), &name, &sealed)?),
            (_, None) => serde_json::from_slice::<serde_json::Value>(&raw)
                .ok()
                .and_then(|doc| doc.get("secrets").cloned()),
        };
        if let Some(plain) = plain {
            let mut doc: serde_json::Value =
                serde_json::from_slice(&raw).map_err(|e| SecretsError::Format {
                    connection: name.clone(),
                    message: e.to_string(),
                })?;
            doc["secrets"] =
                serde_json::Value::String(secrets::seal(keyring.current(), &name, &plain)?);
            let write_failed = |e: sluice_store::StoreError| {
                SecretsError::Store(format!("writing connection `{name}` back: {e}"))
            };
            let now = store
                .catalog()
                .get(kind::CONNECTION, &name)
                .await
                .map_err(write_failed)?;
            if now.as_deref() == Some(raw.as_slice()) {
                let json = serde_json::to_vec(&doc).map_err(|e| SecretsError::Format {
                    connection: name.clone(),
                    message: e.to_string(),
                })?;
                store
                    .catalog()
                    .put(kind::CONNECTION, &name, &json)
                    .await
                    .map_err(write_failed)?;
                resealed.push(name.clone());
            }
        }
        states.push((name, state));
    }
    Ok((states, resealed))
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
