//! A connection's secrets at rest and in use: the node's secrets key (`key`), the
//! sealed form the catalog stores (`seal`), references to secrets kept outside
//! Sluice, resolved at each attempt (`reference`), and credential labels (`key`).
//!
//! Owns the cryptography and the formats, nothing else: it never touches storage
//! (the definitions service does) and never puts a secret's value, or a key's bytes,
//! in an error, a log line or a `Debug` output.

mod key;
mod reference;
mod seal;

pub use key::{KEY_FILE_NAME, Keyring, SecretsKey};
pub(crate) use key::{LabelKey, credential_label};
pub(crate) use reference::{resolve, validate_references};
pub(crate) use seal::{open, seal, sealed_key_id};

/// Why secrets cannot be sealed, opened or resolved. Messages name the connection,
/// the key id or the reference, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// A key given to the node is not 32 bytes in a known form.
    #[error(
        "the secrets key from {source_name} is not valid: give 32 random bytes as 64 hex \
         characters or as base64 (`sluice secrets generate-key FILE` writes one)"
    )]
    KeyFormat {
        /// Where the key came from (a file, an environment variable).
        source_name: String,
    },
    /// A key file cannot be read or written.
    #[error("the secrets key file {path}: {message}")]
    KeyFile {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Stored secrets were sealed with a key the node does not have.
    #[error(
        "the stored secrets of connection `{connection}` were sealed with key {sealed_with}; \
         this node has {have}: give the node that key (`--secrets-key-file`, or \
         `--secrets-previous-key-file` while rotating)"
    )]
    UnknownKey {
        /// The connection.
        connection: String,
        /// The key id its secrets name.
        sealed_with: String,
        /// The ids of the node's keys, or `no secrets key`.
        have: String,
    },
    /// Stored secrets do not open with the key they name.
    #[error(
        "the stored secrets of connection `{connection}` do not open with key {key}: they \
         were altered, or belong to another connection"
    )]
    Tampered {
        /// The connection.
        connection: String,
        /// The key id.
        key: String,
    },
    /// Stored secrets in a form this node does not read.
    #[error(
        "the stored secrets of connection `{connection}` are not in a form this node reads: {message}"
    )]
    Format {
        /// The connection.
        connection: String,
        /// What is wrong.
        message: String,
    },
    /// The node has no key and may not store secrets without one.
    #[error(
        "connection `{connection}` has secrets, but this node has no secrets key: nodes \
         sharing a store must seal secrets with one key they all have (pass \
         `--secrets-key-file FILE` or set `SLUICE_SECRETS_KEY` on every node)"
    )]
    NoKey {
        /// The connection.
        connection: String,
    },
    /// The store failed while connections were read or written back.
    #[error("the store: {0}")]
    Store(String),
    /// A secret reference cannot be resolved or is malformed.
    #[error("secrets.{at}: {message}")]
    Reference {
        /// The path of the secret in `secrets`, e.g. `auth.token`.
        at: String,
        /// What is wrong, naming the reference (an environment variable's name or a
        /// file's path), never a value.
        message: String,
    },
}

/// How a node keeps connections' secrets in its store.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretsPolicy {
    /// Stored as given: for an engine embedded in a program that protects its store
    /// by other means (the default of [`Engine::new`](crate::Engine::new)).
    Unsealed,
    /// Sealed with the keyring's current key; values sealed with any of its keys open.
    Sealed(Keyring),
    /// The node has no key: a connection with secrets is refused and sealed secrets
    /// do not open (a node sharing its store with others, which must share a key).
    KeyRequired,
}

/// How a stored connection holds its secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealState {
    /// It has none.
    Empty,
    /// In plaintext, as stored before sealing (or by an unsealed engine).
    Plain,
    /// Sealed with the key of this id.
    Sealed(String),
}

impl std::fmt::Display for SealState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealState::Empty => f.write_str("no secrets"),
            SealState::Plain => f.write_str("plaintext"),
            SealState::Sealed(id) => write!(f, "sealed with {id}"),
        }
    }
}

/// How the secrets of a stored connection document (JSON) are held.
pub(crate) fn seal_state(doc: &serde_json::Value) -> SealState {
    match doc.get("secrets") {
        Some(serde_json::Value::String(s)) => {
            SealState::Sealed(sealed_key_id(s).unwrap_or("(unreadable)").to_owned())
        }
        Some(serde_json::Value::Object(o)) if !o.is_empty() => SealState::Plain,
        _ => SealState::Empty,
    }
}
