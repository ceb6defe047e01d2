//! `sluice store …`: work on a store without running a node — bring a PostgreSQL
//! store's schema up to date.
//!
//! Owns the store commands' arguments and output; the work is the store crate's.

use anyhow::{Context, bail};
use clap::Subcommand;
use sluice_store::Location;
use sluice_store::postgres::PgStore;

/// Work on a store without running a node.
#[derive(Subcommand)]
pub enum StoreCommand {
    /// Bring a PostgreSQL store's schema up to date (a node also does at start).
    Migrate {
        /// The store: `postgres://user:password@host:port/database`.
        #[arg(long, env = "SLUICE_STORE", hide_env_values = true)]
        store: String,
    },
}

/// Runs the command.
pub async fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Migrate { store } => {
            let location = Location::parse(&store);
            let Location::Postgres(url) = &location else {
                bail!(
                    "--store {location}: migrations apply to a PostgreSQL store \
                     (postgres://…); the embedded store needs none"
                );
            };
            let migrated = PgStore::migrate(url)
                .await
                .with_context(|| format!("migrating the store at {location}"))?;
            if migrated.from == migrated.to {
                println!(
                    "the store at {location} is at schema version {}: nothing to do",
                    migrated.to
                );
            } else {
                println!(
                    "migrated the store at {location} from schema version {} to {}",
                    migrated.from, migrated.to
                );
            }
            Ok(())
        }
    }
}
