//! The catalog's contract: named definitions (connections, workflows, connectors,
//! schedule progress, ...) stored as documents.
//!
//! Owns the [`Catalog`] trait. A backend stores bytes and knows nothing of what a
//! definition means: the engine parses and validates them. Every backend makes a
//! write durable before [`Catalog::put`] or [`Catalog::remove`] returns.

use async_trait::async_trait;

use crate::StoreError;

/// The catalog of definitions. Implemented by every storage backend.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// Stores `document` as the definition `name` of `kind`, replacing any previous
    /// one; returns whether it replaced one. `kind` must be non-empty; neither may
    /// contain NUL.
    async fn put(&self, kind: &str, name: &str, document: &[u8]) -> Result<bool, StoreError>;

    /// Like [`Catalog::put`], without waiting for the disk: durable with the store's
    /// next durable write, for documents whose loss in a crash is harmless.
    async fn put_unflushed(
        &self,
        kind: &str,
        name: &str,
        document: &[u8],
    ) -> Result<(), StoreError>;

    /// The definition `name` of `kind`.
    async fn get(&self, kind: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every definition of `kind`, by name.
    async fn list(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Every kind that holds at least one definition, sorted (bytewise).
    async fn kinds(&self) -> Result<Vec<String>, StoreError>;

    /// Removes the definition; returns whether it existed.
    async fn remove(&self, kind: &str, name: &str) -> Result<bool, StoreError>;
}

/// Refuses a kind or name no backend may store: an empty kind, or a NUL anywhere.
pub(crate) fn check_name(kind: &str, name: &str) -> Result<(), StoreError> {
    if kind.is_empty() || kind.contains('\0') || name.contains('\0') {
        return Err(StoreError::Invalid(format!(
            "catalog kind `{kind}` and name `{name}` must be non-empty and contain no NUL"
        )));
    }
    Ok(())
}
