//! The PostgreSQL schema's versions and their migrations.
//!
//! Owns the SQL that creates and changes the store's tables. Migrations run in one
//! transaction under an advisory lock of the schema, so nodes starting at once
//! migrate once; a store at a version newer than this node knows is refused, naming
//! both. A migration, once released, never changes: a new version adds one.

use deadpool_postgres::Pool;

use super::errors::describe;
use crate::StoreError;

/// The newest schema version this node knows.
pub const SCHEMA_VERSION: i64 = 3;

/// Each version's name and SQL, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("migrations/0001_initial.sql")),
    (2, "cluster", include_str!("migrations/0002_cluster.sql")),
    (
        3,
        "rate budgets",
        include_str!("migrations/0003_rate_budgets.sql"),
    ),
];

/// What [`migrate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// The schema version before (0: an empty schema).
    pub from: i64,
    /// The schema version after.
    pub to: i64,
}

/// Brings the store's schema to [`SCHEMA_VERSION`].
pub(crate) async fn migrate(pool: &Pool, url: &str) -> Result<Migrated, StoreError> {
    let failed = |e: tokio_postgres::Error| {
        StoreError::Storage(format!("migrating the store at {url}: {}", describe(&e)))
    };
    let mut client = pool.get().await.map_err(|e| StoreError::Unreachable {
        url: url.to_owned(),
        reason: super::errors::describe_pool(&e),
    })?;
    let tx = client.transaction().await.map_err(failed)?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(hashtext('sluice schema ' || current_schema()));
         CREATE TABLE IF NOT EXISTS sluice_schema (
             version    int8 PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await
    .map_err(failed)?;
    let row = tx
        .query_one("SELECT coalesce(max(version), 0) FROM sluice_schema", &[])
        .await
        .map_err(failed)?;
    let from: i64 = row.try_get(0).map_err(failed)?;
    if from > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: from,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > from) {
        tx.batch_execute(sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO sluice_schema (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(failed)?;
    }
    tx.commit().await.map_err(failed)?;
    Ok(Migrated {
        from,
        to: SCHEMA_VERSION,
    })
}
