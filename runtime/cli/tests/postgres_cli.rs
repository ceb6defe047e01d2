//! The node on a PostgreSQL store as an operator meets it: `sluice run --store
//! postgres://…` syncs into it and a second run finds every record unchanged;
//! `sluice store migrate` migrates once; a schema newer than the node, or a database
//! that cannot be reached, stops the node with a clear error that never shows the
//! password.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use sluice_store::postgres::SCHEMA_VERSION;
use sluice_testkit::pg::{TestSchema, execute};
use sluice_testkit::process::{stderr, stdout};

fn sluice(args: &[&str], data: &Path) -> Output {
    let cache = std::env::temp_dir().join(format!("sluice-pg-test-cache-{}", std::process::id()));
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("SLUICE_CACHE_DIR", cache)
        .env("SLUICE_DATA_DIR", data)
        .env_remove("SLUICE_STORE")
        .output()
        .expect("run sluice")
}

fn definitions(dir: &Path, records: u64) -> String {
    let file = dir.join("sync.json");
    let defs = serde_json::json!({
        "connections": [{"name": "sample", "connector": "sample",
                         "config": {"records": records}}],
        "workflows": [{"name": "users", "connection": "sample",
                       "streams": [{"name": "users"}], "batch_size": 500}]
    });
    std::fs::write(&file, defs.to_string()).unwrap();
    file.to_string_lossy().into_owned()
}

fn outcome(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    let out = stdout(o);
    let line = out.lines().next().expect("one outcome line");
    serde_json::from_str(line).expect("a JSON outcome")
}

#[tokio::test]
async fn a_sync_on_postgres_lands_and_a_second_finds_everything_unchanged() {
    let schema = TestSchema::create().await;
    let dir = tempfile::tempdir().unwrap();
    let file = definitions(dir.path(), 3_000);
    let run = ["run", &file, "--store", schema.url(), "--json", "--quiet"];

    let first = outcome(&sluice(&run, dir.path()));
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(first["streams"]["users"]["created"], 3_000, "{first}");

    let second = outcome(&sluice(&run, dir.path()));
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(second["streams"]["users"]["unchanged"], 3_000, "{second}");
    assert_eq!(second["streams"]["users"]["created"], 0, "{second}");
    // Nothing of the store went to the data directory but the node's own files.
    assert!(!dir.path().join("db").exists());
}

#[tokio::test]
async fn migrate_applies_the_schema_once_and_a_newer_schema_is_refused() {
    let schema = TestSchema::create().await;
    let dir = tempfile::tempdir().unwrap();
    let migrate = ["store", "migrate", "--store", schema.url()];

    let first = sluice(&migrate, dir.path());
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains(&format!("from schema version 0 to {SCHEMA_VERSION}")),
        "{}",
        stdout(&first)
    );
    let again = sluice(&migrate, dir.path());
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("nothing to do"),
        "{}",
        stdout(&again)
    );

    execute(&format!(
        "INSERT INTO {}.sluice_schema (version, name) VALUES (99, 'from the future')",
        schema.name()
    ))
    .await;
    let file = definitions(dir.path(), 10);
    let refused = sluice(&["run", &file, "--store", schema.url()], dir.path());
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(
        err.contains("version 99") && err.contains(&format!("version {SCHEMA_VERSION} ")),
        "names both versions: {err}"
    );
}

#[tokio::test]
async fn an_unreachable_store_is_named_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = definitions(dir.path(), 10);
    // Nothing listens on port 1.
    let url = "postgres://sluice:hunter2@127.0.0.1:1/sluice";
    for args in [
        vec!["run", file.as_str(), "--store", url],
        vec!["store", "migrate", "--store", url],
    ] {
        let out = sluice(&args, dir.path());
        assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("postgres://sluice:***@127.0.0.1:1/sluice"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "the password leaked: {err}");
    }
}

/// TLS to the database: the server's certificate is checked, against the web's roots
/// by default or the file `sslrootcert` names. Uses the certificate the machine's
/// PostgreSQL serves (Debian's `ssl-cert-snakeoil`, issued to `localhost`).
#[tokio::test]
async fn tls_to_the_database_checks_the_servers_certificate() {
    let cert = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    if !Path::new(cert).exists() {
        eprintln!("skipped: the test database serves no certificate at {cert}");
        return;
    }
    let schema = TestSchema::create().await;
    let dir = tempfile::tempdir().unwrap();
    let base = schema.url().replace("127.0.0.1", "localhost");

    let unknown_issuer = format!("{base}&sslmode=require");
    let out = sluice(
        &["store", "migrate", "--store", &unknown_issuer],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));

    let trusted = format!("{base}&sslmode=verify-full&sslrootcert={cert}");
    let out = sluice(&["store", "migrate", "--store", &trusted], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("to {SCHEMA_VERSION}")),
        "{}",
        stdout(&out)
    );
}

/// A `sluice serve` node on `store`, its stderr read until it says where its API
/// listens; killed on drop.
struct Node {
    child: std::process::Child,
    api: String,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Node {
    fn start(file: &str, store: &str, data: &Path, name: &str) -> Node {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", file, "--store", store, "--no-initial-runs"])
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args([
                "--node-name",
                name,
                "--heartbeat-ms",
                "200",
                "--sweep-ms",
                "200",
            ])
            .env("SLUICE_DATA_DIR", data.join(name))
            .env_remove("SLUICE_STORE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start sluice serve");
        let (tx, stderr) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut node = Node {
            child,
            api: String::new(),
            stderr,
        };
        let line = node.wait_line("API listening on");
        node.api = format!("http://{}", line.rsplit(' ').next().unwrap_or_default());
        node
    }

    /// The first stderr line from now on that contains `text`.
    fn wait_line(&mut self, text: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with `{text}` from the node: {e}"),
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nodes(api: &str, dir: &Path) -> Vec<serde_json::Value> {
    let out = sluice(&["nodes", "list", "--json", "--server", api], dir);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("a JSON list of nodes")
}

#[tokio::test]
async fn nodes_of_a_cluster_are_listed_from_any_node_and_a_drained_one_leaves() {
    let schema = TestSchema::create().await;
    let dir = tempfile::tempdir().unwrap();
    let file = definitions(dir.path(), 10);
    let first = Node::start(&file, schema.url(), dir.path(), "first");
    let mut second = Node::start(&file, schema.url(), dir.path(), "second");

    let listed = nodes(&first.api, dir.path());
    let mut names: Vec<(&str, &str)> = listed
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    names.sort_unstable();
    assert_eq!(names, [("first", "live"), ("second", "live")], "{listed:?}");

    // Drained through the first node's API, the second starts nothing and leaves.
    let drain = sluice(
        &["nodes", "drain", "second", "--server", &first.api],
        dir.path(),
    );
    assert!(drain.status.success(), "{}", stderr(&drain));
    second.wait_line("left the cluster");
    let status = second.child.wait().expect("the drained node exits");
    assert!(status.success(), "{status:?}");
    let listed = nodes(&first.api, dir.path());
    let second_now = listed.iter().find(|n| n["name"] == "second").unwrap();
    assert_eq!(second_now["state"], "stopped", "{listed:?}");

    // The remaining node still answers for the cluster; an unknown node is named.
    let trigger = sluice(
        &[
            "workflows",
            "trigger",
            "users",
            "--json",
            "--server",
            &first.api,
        ],
        dir.path(),
    );
    assert!(trigger.status.success(), "{}", stderr(&trigger));
    let unknown = sluice(
        &["nodes", "drain", "nobody", "--server", &first.api],
        dir.path(),
    );
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("nobody"), "{}", stderr(&unknown));
}
