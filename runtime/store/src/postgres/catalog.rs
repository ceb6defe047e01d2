//! The catalog on PostgreSQL ([`PgCatalog`]): the `catalog` table, one row per
//! (kind, name). It stores bytes and never reads them.

use async_trait::async_trait;

use super::pool::{Reader, read};
use crate::StoreError;
use crate::catalog::{Catalog, check_name};

/// The catalog of a PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgCatalog {
    reader: Reader,
}

impl PgCatalog {
    pub(crate) fn new(reader: Reader) -> Self {
        PgCatalog { reader }
    }
}

// `xmax` is set only on a row version that replaced another: how an upsert tells a
// replacement from an insert without a second statement.
const PUT: &str = "INSERT INTO catalog (kind, name, document) VALUES ($1, $2, $3) \
     ON CONFLICT (kind, name) DO UPDATE SET document = excluded.document \
     RETURNING xmax::text <> '0'";

#[async_trait]
impl Catalog for PgCatalog {
    async fn put(&self, kind: &str, name: &str, document: &[u8]) -> Result<bool, StoreError> {
        check_name(kind, name)?;
        let row = read!(self.reader, c, async {
            let put = c.prepare_cached(PUT).await?;
            c.query_one(&put, &[&kind, &name, &document]).await
        })
        .map_err(StoreError::Storage)?;
        row.try_get(0).map_err(StoreError::storage)
    }

    async fn put_unflushed(
        &self,
        kind: &str,
        name: &str,
        document: &[u8],
    ) -> Result<(), StoreError> {
        // Every commit on PostgreSQL is durable; the cost of a lost document is
        // nothing here, and neither is the saving.
        self.put(kind, name, document).await.map(|_| ())
    }

    async fn get(&self, kind: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = read!(self.reader, c, async {
            c.query_opt(
                "SELECT document FROM catalog WHERE kind = $1 AND name = $2",
                &[&kind, &name],
            )
            .await
        })
        .map_err(StoreError::Storage)?;
        row.map(|r| r.try_get(0).map_err(StoreError::storage))
            .transpose()
    }

    async fn list(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = read!(self.reader, c, async {
            c.query(
                "SELECT name, document FROM catalog WHERE kind = $1 ORDER BY name COLLATE \"C\"",
                &[&kind],
            )
            .await
        })
        .map_err(StoreError::Storage)?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(StoreError::storage)
    }

    async fn kinds(&self) -> Result<Vec<String>, StoreError> {
        let rows = read!(self.reader, c, async {
            c.query(
                "SELECT DISTINCT kind COLLATE \"C\" FROM catalog ORDER BY 1",
                &[],
            )
            .await
        })
        .map_err(StoreError::Storage)?;
        rows.iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(StoreError::storage)
    }

    async fn remove(&self, kind: &str, name: &str) -> Result<bool, StoreError> {
        let removed = read!(self.reader, c, async {
            c.execute(
                "DELETE FROM catalog WHERE kind = $1 AND name = $2",
                &[&kind, &name],
            )
            .await
        })
        .map_err(StoreError::Storage)?;
        Ok(removed > 0)
    }
}
