//! The catalog on sled ([`SledCatalog`]).
//!
//! Owns the `catalog` tree: one value per (kind, name). It stores bytes and knows
//! nothing of what a definition means: the engine parses and validates them. Every
//! write is flushed before it returns, so a definition acknowledged is durable.

use std::sync::Arc;

use crate::StoreError;
use crate::catalog::Catalog;
use crate::sled::durable::Durable;

/// Name of the catalog's tree.
use crate::sled::layout::CATALOG as TREE;

/// The catalog of a sled store. Cheap to clone.
#[derive(Clone)]
pub struct SledCatalog {
    tree: sled::Tree,
    durable: Arc<Durable>,
}

pub(crate) fn key(kind: &str, name: &str) -> Result<Vec<u8>, StoreError> {
    crate::catalog::check_name(kind, name)?;
    let mut k = Vec::with_capacity(kind.len() + name.len() + 1);
    k.extend_from_slice(kind.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    Ok(k)
}

impl SledCatalog {
    pub(crate) fn open(db: &sled::Db, durable: Arc<Durable>) -> Result<Self, StoreError> {
        Ok(SledCatalog {
            tree: db.open_tree(TREE).map_err(StoreError::storage)?,
            durable,
        })
    }
}

// Writes that must be durable flush the tree before they return; sled flushes every
// tree of the database, so an unflushed write is durable with the next log append.
#[async_trait::async_trait]
impl Catalog for SledCatalog {
    async fn put(&self, kind: &str, name: &str, document: &[u8]) -> Result<bool, StoreError> {
        let old = self
            .tree
            .insert(key(kind, name)?, document)
            .map_err(StoreError::storage)?;
        self.durable.flush().map_err(StoreError::storage)?;
        Ok(old.is_some())
    }

    async fn put_unflushed(
        &self,
        kind: &str,
        name: &str,
        document: &[u8],
    ) -> Result<(), StoreError> {
        self.tree
            .insert(key(kind, name)?, document)
            .map_err(StoreError::storage)?;
        Ok(())
    }

    async fn get(&self, kind: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree
            .get(key(kind, name)?)
            .map_err(StoreError::storage)?
            .map(|v| v.to_vec()))
    }

    async fn list(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut prefix = key(kind, "")?;
        prefix.truncate(kind.len() + 1);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, v) = item.map_err(StoreError::storage)?;
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((name, v.to_vec()));
        }
        Ok(out)
    }

    async fn kinds(&self) -> Result<Vec<String>, StoreError> {
        // Keys are `kind 0x00 name` and a kind holds no NUL: after a kind's first key,
        // the next kind starts at or after `kind 0x01`.
        let mut kinds = Vec::new();
        let mut from = Vec::new();
        while let Some(item) = self.tree.range(from.as_slice()..).next() {
            let (k, _) = item.map_err(StoreError::storage)?;
            let kind = k.split(|b| *b == 0).next().unwrap_or_default();
            kinds.push(String::from_utf8_lossy(kind).into_owned());
            from = kind.to_vec();
            from.push(1);
        }
        Ok(kinds)
    }

    async fn remove(&self, kind: &str, name: &str) -> Result<bool, StoreError> {
        let old = self
            .tree
            .remove(key(kind, name)?)
            .map_err(StoreError::storage)?;
        self.durable.flush().map_err(StoreError::storage)?;
        Ok(old.is_some())
    }
}
