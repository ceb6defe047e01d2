//! Connectors registered through the API: a name, a version and a component, kept
//! by content digest beside the store (`<store>/components/<sha256>.wasm`) and
//! described in the catalog, so they survive restarts.
//!
//! Owns registering, listing, describing and removing them, and making them resolvable
//! on first use. It must never replace or remove a first-party connector, never remove
//! one a connection uses, and never record a component that does not load as a
//! connector (it is compiled and checked first, and its file written before the
//! catalog names it).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::clock::now_unix_ms;
use crate::connectors::{Connectors, Registration};
use crate::definition::ConnectionDef;
use crate::definitions::kind::CONNECTOR;
use crate::engine::Engine;
use crate::error::EngineError;

const COMPONENTS_DIR: &str = "components";

/// A registered connector as the catalog holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registered {
    name: String,
    version: String,
    digest: String,
    file: PathBuf,
    registered_at_unix_ms: i64,
}

impl Registered {
    fn registration(&self) -> Registration {
        Registration {
            file: self.file.clone(),
            version: self.version.clone(),
            digest: self.digest.clone(),
        }
    }
}

/// What a node knows of a connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorInfo {
    /// The name connections refer to it by.
    pub name: String,
    /// The version given when it was registered (empty for first-party ones).
    pub version: String,
    /// SHA-256 of the component.
    pub digest: String,
    /// Built into Sluice (cannot be replaced or removed).
    pub first_party: bool,
    /// Connections that use it.
    pub used_by: Vec<String>,
}

/// The connections among `connections` that use the connector `name` (by its name,
/// `name@version`, or its component's `digest`).
fn users(connections: &[std::sync::Arc<ConnectionDef>], name: &str, digest: &str) -> Vec<String> {
    connections
        .iter()
        .filter(|c| {
            c.connector == name
                || (!digest.is_empty() && c.connector == digest)
                || c.connector
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('@'))
        })
        .map(|c| c.name.clone())
        .collect()
}

fn valid_name(name: &str) -> Result<(), EngineError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(EngineError::InvalidConnector {
            name: name.to_owned(),
            message: "a connector name is 1 to 128 letters, digits, `-`, `_` or `.`, \
                      not starting with `.`"
                .into(),
        })
    }
}

impl Engine {
    /// The connectors, once those registered in the catalog are resolvable: read on
    /// first use, so that building an engine does no I/O.
    pub(crate) async fn connectors(&self) -> &Connectors {
        self.inner
            .registered_loaded
            .get_or_init(|| async {
                if let Err(e) = self.load_registered().await {
                    tracing::error!(error = %e, "cannot read the registered connectors");
                }
            })
            .await;
        &self.inner.connectors
    }

    /// Makes the connectors registered in the catalog resolvable.
    async fn load_registered(&self) -> Result<(), EngineError> {
        for (name, raw) in self.inner.store.catalog().list(CONNECTOR).await? {
            match serde_json::from_slice::<Registered>(&raw) {
                Ok(r) => self
                    .inner
                    .connectors
                    .set_registered(&name, Some(r.registration())),
                Err(e) => {
                    tracing::error!(connector = %name, error = %e, "registered connector is unreadable; skipped");
                }
            }
        }
        Ok(())
    }

    async fn used_by(&self, name: &str, digest: &str) -> Result<Vec<String>, EngineError> {
        Ok(users(&self.connections().await?, name, digest))
    }

    /// Registers (or replaces) the connector `name` with the component `wasm`, after
    /// compiling it and checking it exports a source or a destination.
    pub async fn register_connector(
        &self,
        name: &str,
        version: &str,
        wasm: &[u8],
    ) -> Result<ConnectorInfo, EngineError> {
        valid_name(name)?;
        let connectors = self.connectors().await;
        if connectors.is_first_party(name) {
            return Err(EngineError::FirstPartyConnector(name.to_owned()));
        }
        let invalid = |message: String| EngineError::InvalidConnector {
            name: name.to_owned(),
            message,
        };
        // Compiling a component takes from milliseconds to seconds: off the runtime.
        let host = connectors.host().clone();
        let bytes = wasm.to_vec();
        let loaded = tokio::task::spawn_blocking(move || host.load(&bytes))
            .await
            .map_err(|e| invalid(format!("compiling stopped: {e}")))?
            .map_err(|e| invalid(e.to_string()))?;
        let digest = loaded.digest().to_owned();
        let dir = self.inner.store.dir().join(COMPONENTS_DIR);
        let hex = digest.trim_start_matches("sha256:");
        let file = dir.join(format!("{hex}.wasm"));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!(".{hex}.tmp"));
            std::fs::write(&tmp, wasm)?;
            std::fs::rename(&tmp, &file)
        };
        write().map_err(|e| invalid(format!("cannot store the component: {e}")))?;
        let record = Registered {
            name: name.to_owned(),
            version: version.to_owned(),
            digest: digest.clone(),
            file: file.clone(),
            registered_at_unix_ms: now_unix_ms(),
        };
        let json = serde_json::to_vec(&record).map_err(|e| invalid(e.to_string()))?;
        self.inner
            .store
            .catalog()
            .put(CONNECTOR, name, &json)
            .await?;
        connectors.set_registered(name, Some(record.registration()));
        Ok(ConnectorInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            first_party: false,
            used_by: self.used_by(name, &digest).await?,
            digest,
        })
    }

    /// Every connector of the node: first-party ones, then registered ones, by name.
    pub async fn connector_infos(&self) -> Result<Vec<ConnectorInfo>, EngineError> {
        let connections = self.connections().await?;
        let connectors = self.connectors().await;
        let mut out = Vec::new();
        for (name, _) in connectors.first_party() {
            let digest = connectors
                .load(&name)
                .map(|c| c.digest().to_owned())
                .unwrap_or_default();
            out.push(ConnectorInfo {
                used_by: users(&connections, &name, &digest),
                name,
                version: String::new(),
                digest,
                first_party: true,
            });
        }
        for (name, raw) in self.inner.store.catalog().list(CONNECTOR).await? {
            let Ok(r) = serde_json::from_slice::<Registered>(&raw) else {
                continue;
            };
            out.push(ConnectorInfo {
                used_by: users(&connections, &name, &r.digest),
                name,
                version: r.version,
                digest: r.digest,
                first_party: false,
            });
        }
        Ok(out)
    }

    /// One connector of the node, with its spec (the JSON Schema of its config).
    pub async fn connector_info(
        &self,
        name: &str,
    ) -> Result<(ConnectorInfo, serde_json::Value), EngineError> {
        let info = self
            .connector_infos()
            .await?
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| EngineError::UnknownConnector(name.to_owned()))?;
        let connector = self
            .connectors()
            .await
            .load(name)
            .map_err(|e| EngineError::Connector {
                reference: name.to_owned(),
                message: e.to_string(),
            })?;
        let spec = connector.spec().await.map_err(|e| EngineError::Connector {
            reference: name.to_owned(),
            message: e.to_string(),
        })?;
        Ok((info, spec))
    }

    /// Removes a registered connector no connection uses.
    pub async fn remove_connector(&self, name: &str) -> Result<(), EngineError> {
        if self.connectors().await.is_first_party(name) {
            return Err(EngineError::FirstPartyConnector(name.to_owned()));
        }
        let Some(raw) = self.inner.store.catalog().get(CONNECTOR, name).await? else {
            return Err(EngineError::UnknownConnector(name.to_owned()));
        };
        let digest = serde_json::from_slice::<Registered>(&raw)
            .map(|r| r.digest)
            .unwrap_or_default();
        let used_by = self.used_by(name, &digest).await?;
        if !used_by.is_empty() {
            return Err(EngineError::ConnectorInUse {
                name: name.to_owned(),
                connections: used_by,
            });
        }
        self.inner.store.catalog().remove(CONNECTOR, name).await?;
        self.inner.connectors.set_registered(name, None);
        // The file goes once no other registration shares its digest.
        if let Ok(r) = serde_json::from_slice::<Registered>(&raw) {
            let shared = self
                .inner
                .store
                .catalog()
                .list(CONNECTOR)
                .await?
                .iter()
                .filter_map(|(_, raw)| serde_json::from_slice::<Registered>(raw).ok())
                .any(|o| o.digest == r.digest);
            if !shared && let Err(e) = std::fs::remove_file(&r.file) {
                tracing::warn!(file = %r.file.display(), error = %e, "cannot delete a removed connector's component");
            }
        }
        Ok(())
    }
}
