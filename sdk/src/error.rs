//! The error a connector returns, and the kind that tells the engine what to do.

use crate::__private::wit;

/// What kind of failure an [`Error`] is. The engine decides from the kind alone
/// whether to retry, wait or dead-letter the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration is invalid; retrying cannot help.
    Config,
    /// The credentials were rejected.
    Auth,
    /// The API asked to slow down; wait this many milliseconds if known.
    RateLimited(Option<u64>),
    /// May go away on retry: timeouts, 5xx, dropped connections.
    Transient,
    /// Will not go away on retry.
    Permanent,
    /// Data does not match the stream's schema.
    Schema,
}

/// An error reported by a connector: a kind and a message for a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// What went wrong and where.
    pub message: String,
}

/// The result type of connector operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    /// The configuration is invalid.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    /// The credentials were rejected.
    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Auth, message)
    }
    /// The API asked to slow down.
    pub fn rate_limited(retry_after_ms: Option<u64>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::RateLimited(retry_after_ms), message)
    }
    /// A failure that may go away on retry.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }
    /// A failure that will not go away on retry.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }
    /// Data does not match the stream's schema.
    pub fn schema(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Schema, message)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::schema(format!("JSON: {e}"))
    }
}

impl From<Error> for wit::ConnectorError {
    fn from(e: Error) -> Self {
        let kind = match e.kind {
            ErrorKind::Config => wit::ErrorKind::Config,
            ErrorKind::Auth => wit::ErrorKind::Auth,
            ErrorKind::RateLimited(ms) => wit::ErrorKind::RateLimited(ms),
            ErrorKind::Transient => wit::ErrorKind::Transient,
            ErrorKind::Permanent => wit::ErrorKind::Permanent,
            ErrorKind::Schema => wit::ErrorKind::Schema,
        };
        wit::ConnectorError {
            kind,
            message: e.message,
        }
    }
}

/// Parse a configuration, naming the field and position of what is wrong.
pub(crate) fn parse_config<C: serde::de::DeserializeOwned>(config: &str) -> Result<C> {
    serde_json::from_str(config).map_err(|e| Error::config(format!("invalid config: {e}")))
}
