//! PostgreSQL for tests: each test gets a schema of its own in the database the
//! machine runs (`SLUICE_TEST_POSTGRES`, by default `postgres://root@127.0.0.1:5432/test`),
//! dropped when the test ends, so tests run in parallel without seeing each other.
//!
//! A node's directory can name its schema ([`node_url`]), so that a node restarted on
//! the same directory finds its store again. Schema names carry the id of the process
//! that made them: the first node schema a process makes first drops those of
//! processes that no longer run (killed before they could drop theirs), so schemas
//! never pile up in the database.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

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
        let url = schema_url(&name);
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

/// The URL of a store in schema `name` of the test database.
fn schema_url(name: &str) -> String {
    let base = database_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{name}")
}

/// The file in a node's directory that names the schema of its store.
pub const SCHEMA_FILE: &str = "postgres-schema";

/// The URL of the store of the node whose files are in `dir`: the schema named in
/// `dir` ([`SCHEMA_FILE`]), or, the first time, a new schema, named there so that
/// opening `dir` again (a restart of the node) opens the same store.
/// [`drop_node_schema`] drops it; one a process leaves behind is dropped by the
/// next process that makes one, once it has stopped.
pub async fn node_url(dir: &Path) -> String {
    let file = dir.join(SCHEMA_FILE);
    match std::fs::read_to_string(&file) {
        Ok(name) => {
            let name = name.trim();
            assert!(
                is_schema_name(name),
                "{} does not name a schema: {name:?}",
                file.display()
            );
            schema_url(name)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !REAPED.swap(true, Ordering::Relaxed) {
                drop_orphans().await;
            }
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let name = format!(
                "node_{}_{}_{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            execute(&format!("CREATE SCHEMA {name}")).await;
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&file, &name))
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
            schema_url(&name)
        }
        Err(e) => panic!("cannot read {}: {e}", file.display()),
    }
}

/// Drops the schema named in `dir` by [`node_url`], if any, waiting for it. Never
/// panics (it runs when a test's directory is dropped, perhaps while the test
/// unwinds): a schema that cannot be dropped now is left to the next process.
pub fn drop_node_schema(dir: &Path) {
    let Ok(name) = std::fs::read_to_string(dir.join(SCHEMA_FILE)) else {
        return;
    };
    let name = name.trim().to_owned();
    if !is_schema_name(&name) {
        return;
    }
    // The test's runtime may be shutting down, or blocked on this very drop: drop the
    // schema from a runtime of its own, and give up on it rather than wait long for
    // a lock an engine still running holds.
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            let _ = rt.block_on(try_execute(&format!(
                "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {name} CASCADE"
            )));
        }
    })
    .join();
}

/// Whether the first node schema of this process was made (and orphans dropped).
static REAPED: AtomicBool = AtomicBool::new(false);

/// Whether `name` is a schema name this kit makes (and safe to put in SQL).
fn is_schema_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The id of the process that made schema `name` (`node_<pid>_…` or `t_<pid>_…`).
fn maker(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("node_")
        .or_else(|| name.strip_prefix("t_"))?;
    rest.split('_').next()?.parse().ok()
}

/// Drops the schemas made here by processes that no longer run. Best effort: a
/// schema another process is dropping at the same time, or one still locked, is left.
/// Where processes cannot be seen (no `/proc`), drops nothing.
async fn drop_orphans() {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(names) = try_query_names(
        "SELECT nspname::text FROM pg_namespace WHERE nspname ~ '^(node|t)_[0-9]+_'",
    )
    .await
    else {
        return;
    };
    let orphans: Vec<String> = names
        .into_iter()
        .filter(|name| is_schema_name(name))
        .filter(|name| maker(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()))
        .collect();
    if orphans.is_empty() {
        return;
    }
    let mut sql = String::from("SET lock_timeout = '2s';");
    for name in &orphans {
        sql.push_str(&format!(" DROP SCHEMA IF EXISTS {name} CASCADE;"));
    }
    // One schema dropped by another process at once fails the batch: then one by one.
    if try_execute(&sql).await.is_err() {
        for name in &orphans {
            let _ = try_execute(&format!(
                "SET lock_timeout = '2s'; DROP SCHEMA IF EXISTS {name} CASCADE"
            ))
            .await;
        }
    }
}

/// A connection to the test database, its connection driven by a task of the
/// current runtime.
async fn client() -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), String> {
    let url = database_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            format!("cannot reach the test database {url}: {e}; is PostgreSQL running?")
        })?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, task))
}

/// Runs `sql` on the test database.
async fn try_execute(sql: &str) -> Result<(), String> {
    let (client, task) = client().await?;
    let done = client
        .batch_execute(sql)
        .await
        .map_err(|e| format!("`{sql}` failed: {e:?}"));
    drop(client);
    let _ = task.await;
    done
}

/// The first column, text, of the rows `sql` returns.
async fn try_query_names(sql: &str) -> Result<Vec<String>, String> {
    let (client, task) = client().await?;
    let rows = client
        .query(sql, &[])
        .await
        .map_err(|e| format!("`{sql}` failed: {e:?}"));
    drop(client);
    let _ = task.await;
    rows?
        .iter()
        .map(|row| row.try_get::<_, String>(0).map_err(|e| e.to_string()))
        .collect()
}

/// Runs `sql` on the test database, panicking with the reason if it cannot.
pub async fn execute(sql: &str) {
    try_execute(sql).await.unwrap_or_else(|e| panic!("{e}"));
}
