//! What the control API reads and tries besides runs: the defined connections and
//! workflows, and a connection's `check` and `discover` through its connector.
//!
//! Owns no state. It must never return a connection's secrets: callers get the
//! definition and strip them where they leave the node.

use std::sync::Arc;

use sluice_host::{Activity, Grant, StreamDescriptor};

use crate::attempt::{Failure, failure_of};
use crate::definition::{ConnectionDef, WorkflowDef};
use crate::engine::{CONNECTION, Engine, WORKFLOW};
use crate::error::EngineError;

/// Request log lines kept for a check or a discover.
const ACTIVITY_CAPACITY: usize = 64;

impl Engine {
    async fn all<T: serde::de::DeserializeOwned>(
        &self,
        kind: &'static str,
    ) -> Result<Vec<Arc<T>>, EngineError> {
        let mut out = Vec::new();
        for (name, raw) in self.inner.store.catalog().list(kind).await? {
            let def =
                serde_json::from_slice::<T>(&raw).map_err(|e| EngineError::CorruptDefinition {
                    kind,
                    name,
                    message: e.to_string(),
                })?;
            out.push(Arc::new(def));
        }
        Ok(out)
    }

    /// Every defined connection, by name.
    pub async fn connections(&self) -> Result<Vec<Arc<ConnectionDef>>, EngineError> {
        self.all(CONNECTION).await
    }

    /// Every defined workflow, by name.
    pub async fn workflows(&self) -> Result<Vec<Arc<WorkflowDef>>, EngineError> {
        self.all(WORKFLOW).await
    }

    /// The grant of an operator's check or discover: the connection's rate limits
    /// with the connector's declared rules, ahead of every run (one request, and
    /// someone is waiting on it).
    async fn grant(
        &self,
        connection: &ConnectionDef,
        connector: &sluice_host::Connector,
        config: &str,
    ) -> Result<Arc<Grant>, Failure> {
        let mut grant = Grant {
            allowed_hosts: connection.allowed_hosts.clone(),
            secrets: connection.secret_values(),
            limits: connection.limits.clone(),
            activity: Arc::new(Activity::with_capacity(ACTIVITY_CAPACITY)),
            rates: Arc::default(),
        };
        let declared = self
            .inner
            .connectors
            .declared_limits(connector, &grant, config)
            .await
            .map_err(|e| failure_of("rate-limit declaration", e))?;
        grant.rates = Arc::new(connection.rate_scope(&declared, i64::MAX));
        Ok(Arc::new(grant))
    }

    async fn connector_of(
        &self,
        connection: &ConnectionDef,
    ) -> Result<sluice_host::Connector, EngineError> {
        self.connectors()
            .await
            .load(&connection.connector)
            .map_err(|e| EngineError::Connector {
                reference: connection.connector.clone(),
                message: e.to_string(),
            })
    }

    /// Runs the connector's `check` on the connection: `None` when it passes, else
    /// the failure with its kind (config, auth, transient, ...).
    pub async fn check_connection(&self, name: &str) -> Result<Option<Failure>, EngineError> {
        let connection = self.connection(name).await?;
        let connector = self.connector_of(&connection).await?;
        let config = connection.effective_config().to_string();
        let grant = match self.grant(&connection, &connector, &config).await {
            Ok(grant) => grant,
            Err(failure) => return Ok(Some(failure)),
        };
        Ok(connector
            .check(&grant, &config)
            .await
            .err()
            .map(|e| failure_of("check", e)))
    }

    /// The streams the connector offers for the connection.
    pub async fn discover_connection(
        &self,
        name: &str,
    ) -> Result<Result<Vec<StreamDescriptor>, Failure>, EngineError> {
        let connection = self.connection(name).await?;
        let connector = self.connector_of(&connection).await?;
        let config = connection.effective_config().to_string();
        let grant = match self.grant(&connection, &connector, &config).await {
            Ok(grant) => grant,
            Err(failure) => return Ok(Err(failure)),
        };
        Ok(connector
            .discover(&grant, &config)
            .await
            .map_err(|e| failure_of("discover", e)))
    }
}
