//! PostgreSQL for tests: each test gets a schema of its own in the database the
//! machine runs (`SLUICE_TEST_POSTGRES`, by default `postgres://root@127.0.0.1:5432/test`),
//! dropped when the test ends, so tests run in parallel without seeing each other.

use std::sync::atomic::{AtomicU32, Ordering};

/// The variable naming the database tests use.
pub const DATABASE_VAR: &str = "SLUICE_TEST_POSTGRES";

/// The database tests use.
pub fn database_url() -> String {
    std::env::var(DATABASE_VAR)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://root@127.0.0.1:5432/test".to_owned())
}

/// A schema of its own in the test database, dropped with it.
pub struct TestSchema {
    name: String,
    url: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestSchema {
    /// Creates a new, empty schema.
    pub async fn create() -> TestSchema {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "t_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        execute(&format!("CREATE SCHEMA {name}")).await;
        let base = database_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        TestSchema { name, url }
    }

    /// The URL of a store in this schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        // A test's runtime may be shutting down: drop it from a runtime of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(execute(&sql));
            }
        })
        .join();
    }
}

/// Runs `sql` on the test database, panicking with the reason if it cannot.
pub async fn execute(sql: &str) {
    let url = database_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach the test database {url}: {e}; is PostgreSQL running?")
        });
    let task = tokio::spawn(connection);
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("`{sql}` failed: {e:?}"));
    drop(client);
    let _ = task.await;
}
