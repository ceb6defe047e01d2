//! The engine's errors: what a caller asked that cannot be done (a definition that
//! does not hold together among them), or storage failing. Depends on no other module,
//! so every module can name them.

use sluice_store::{LogError, RunId, StoreError};

/// Errors of [`Engine`](crate::Engine) operations.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A definition does not hold together.
    #[error("invalid definition: {0}")]
    Definition(#[from] DefinitionError),
    /// No workflow of that name is defined.
    #[error("no workflow named `{0}` is defined")]
    UnknownWorkflow(String),
    /// No connection of that name is defined.
    #[error("no connection named `{0}` is defined")]
    UnknownConnection(String),
    /// No run with that id.
    #[error("no run {0}")]
    UnknownRun(RunId),
    /// The workflow already has a run in flight; runs of one workflow never overlap.
    #[error("workflow `{workflow}` already has run {run} in flight")]
    AlreadyRunning {
        /// The workflow.
        workflow: String,
        /// Its run in flight.
        run: RunId,
    },
    /// The run is not in a status that allows the request.
    #[error("run {run} is {status}: {why}")]
    WrongStatus {
        /// The run.
        run: RunId,
        /// Its status.
        status: &'static str,
        /// What was asked.
        why: &'static str,
    },
    /// The connector of a connection cannot be loaded.
    #[error("connector `{reference}`: {message}")]
    Connector {
        /// The reference in the connection.
        reference: String,
        /// Why it cannot be loaded.
        message: String,
    },
    /// No connector of that name.
    #[error("no connector named `{0}`")]
    UnknownConnector(String),
    /// A component cannot be registered as a connector under that name.
    #[error("connector `{name}`: {message}")]
    InvalidConnector {
        /// The name asked for.
        name: String,
        /// Why not.
        message: String,
    },
    /// First-party connectors cannot be replaced or removed.
    #[error("`{0}` is a first-party connector: it cannot be replaced or removed")]
    FirstPartyConnector(String),
    /// A connector connections use cannot be removed.
    #[error("connector `{name}` is used by connection(s) {}; remove or change them first", connections.join(", "))]
    ConnectorInUse {
        /// The connector.
        name: String,
        /// The connections using it.
        connections: Vec<String>,
    },
    /// A stored definition cannot be read.
    #[error("stored {kind} `{name}` is unreadable: {message}")]
    CorruptDefinition {
        /// `connection` or `workflow`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Why.
        message: String,
    },
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No node of that id or name shares the store.
    #[error("no node `{0}` shares this store (see `sluice nodes list`)")]
    UnknownNode(String),
    /// The node cannot take part in the cluster as asked.
    #[error("cluster: {0}")]
    Cluster(String),
}

impl From<LogError> for EngineError {
    fn from(e: LogError) -> Self {
        EngineError::Store(StoreError::Log(e))
    }
}

/// A definition that does not hold together, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DefinitionError {
    /// Path of the offending field, e.g. `workflows[0].streams[1].name`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl DefinitionError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        DefinitionError {
            field: field.into(),
            message: message.into(),
        }
    }
}
