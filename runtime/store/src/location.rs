//! [`Location`]: where a node's store is, as an operator names it — a directory for
//! the embedded sled store, or a `postgres://` URL — and opening it.
//!
//! Owns the choice of backend from a name. It never shows a URL's password: use
//! [`Location`]'s `Display`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::postgres::{PgStore, is_postgres_url, redact_url};
use crate::{Store, StoreError};

/// Where a store is.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// The embedded sled store in this directory.
    Dir(PathBuf),
    /// A PostgreSQL database (`postgres://user:password@host:port/database`).
    Postgres(String),
}

impl Location {
    /// A `postgres://` (or `postgresql://`) URL names a PostgreSQL store; anything
    /// else is a directory.
    pub fn parse(location: &str) -> Location {
        if is_postgres_url(location) {
            Location::Postgres(location.to_owned())
        } else {
            Location::Dir(PathBuf::from(location))
        }
    }

    /// Opens the store. `data_dir` holds the node's files that live beside the store
    /// (registered connector components): the store's own directory for sled.
    pub async fn open(&self, data_dir: &Path) -> Result<Store, StoreError> {
        match self {
            Location::Dir(dir) => Store::open_with(dir, embedded_config()?),
            Location::Postgres(url) => {
                let backend = PgStore::connect(url).await?;
                std::fs::create_dir_all(data_dir).map_err(|e| {
                    StoreError::Storage(format!("creating {}: {e}", data_dir.display()))
                })?;
                Ok(Store::with_backend(Arc::new(backend), data_dir))
            }
        }
    }
}

/// The environment variable naming the free space, in MiB, the embedded store keeps
/// on its disk (see [`crate::sled::LogConfig::reserve_bytes`]); 0 turns the reserve
/// off, leaving a full disk to stop the store until it is opened again.
pub const RESERVE_ENV: &str = "SLUICE_STORE_RESERVE_MB";

/// The embedded store's configuration, with the operator's reserve if set.
fn embedded_config() -> Result<crate::sled::LogConfig, StoreError> {
    let mut config = crate::sled::LogConfig::default();
    if let Ok(mb) = std::env::var(RESERVE_ENV) {
        let mb: u64 = mb.trim().parse().map_err(|_| {
            StoreError::Invalid(format!(
                "{RESERVE_ENV}={mb}: expected a whole number of MiB (0 turns the reserve off)"
            ))
        })?;
        config.reserve_bytes = mb.saturating_mul(1024 * 1024);
    }
    Ok(config)
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Dir(dir) => write!(f, "{}", dir.display()),
            Location::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Location({self})")
    }
}

impl std::str::FromStr for Location {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Location::parse(s))
    }
}
