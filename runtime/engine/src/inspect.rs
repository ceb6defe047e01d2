//! What the control API tries besides runs: a connection's `check` and `discover`
//! through its connector.
//!
//! Owns no state. It must never return a connection's secrets: callers get the
//! definition and strip them where they leave the node.

use std::sync::Arc;

use sluice_host::{Activity, Grant, StreamDescriptor};

use crate::attempt::{Failure, failure_of};
use crate::definition::ConnectionDef;
use crate::engine::Engine;
use crate::error::EngineError;

/// Request log lines kept for a check or a discover.
const ACTIVITY_CAPACITY: usize = 64;

impl Engine {
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
            allowed_networks: connection.networks(),
            pinned_names: Vec::new(),
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

    /// The connection `name` as its connector runs now (references resolved).
    async fn resolved(&self, name: &str) -> Result<Result<ConnectionDef, Failure>, EngineError> {
        let connection = self.connection(name).await?;
        Ok(self.inner.definitions.resolve(&connection).map_err(|e| {
            Failure::new(
                sluice_model::FailureKind::Config,
                format!("connection `{name}`: {e}"),
            )
        }))
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
        let connection = match self.resolved(name).await? {
            Ok(connection) => connection,
            Err(failure) => return Ok(Some(failure)),
        };
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
        let connection = match self.resolved(name).await? {
            Ok(connection) => connection,
            Err(failure) => return Ok(Err(failure)),
        };
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
