//! The client commands (`sluice runs|workflows|connections …`) as an operator meets
//! them against a real node started with `sluice serve`: runs triggered, watched,
//! listed and inspected over the gRPC API; workflows paused; connections listed
//! without their secrets; API tokens enforced (read-only tokens cannot write); and
//! the exit codes scripts rely on (2 invalid, 6 not found, 7 not allowed,
//! 8 unreachable).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_testkit::process::{output_within, send_signal, stderr, stdout};

/// How long anything a test waits on may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(120);

const SECRET: &str = "s3cret-value";

fn definitions() -> Value {
    // A daily cron at a fixed time: a schedule to list fires of, which will not fire
    // by itself while a test runs and race with the runs the test starts. The sample
    // connector refuses config fields it does not know (secrets merge into the
    // config), so the connection with a secret is one no workflow runs.
    serde_json::json!({
        "connections": [{"name": "sample", "tenant": "demo", "connector": "sample",
                         "config": {"records": 20000}},
                        {"name": "vault", "tenant": "other", "connector": "sample",
                         "config": {"records": 1},
                         "secrets": {"api_key": SECRET}}],
        "workflows": [{"name": "sample-users", "connection": "sample",
                       "streams": [{"name": "users"}], "batch_size": 2000,
                       "schedule": {"trigger": {"kind": "cron", "expression": "30 4 * * *",
                                                "timezone": "UTC"}}}]
    })
}

fn cache_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sluice-api-test-cache-{}", std::process::id()))
}

/// A running `sluice serve`, killed when dropped so a failing test leaves no process
/// behind.
struct Node {
    child: Option<Child>,
    server: String,
    /// Everything the node printed on stderr so far, for failure messages.
    stderr: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(extra: &[&str]) -> Node {
        Node::start_with(&definitions(), extra)
    }

    fn start_with(definitions: &Value, extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("defs.json");
        std::fs::write(&file, definitions.to_string()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--json",
            ])
            .args(extra)
            .env("SLUICE_CACHE_DIR", cache_dir())
            .env_remove("SLUICE_TOKENS")
            .env_remove("SLUICE_READ_TOKENS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read stderr on a thread for the node's whole life, so that it never blocks
        // on a full pipe; lines come back over a channel.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = Node {
            child: Some(child),
            server: String::new(),
            stderr: rx,
            _dir: dir,
        };
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match node.stderr.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("API listening on ") {
                        node.server = format!("http://{}", addr.trim());
                        return node;
                    }
                    seen.push(line);
                }
                Err(e) => panic!("the node never said where its API listens ({e}): {seen:#?}"),
            }
        }
    }

    /// Runs `sluice ARGS --server <this node>`.
    fn sluice(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--server", &self.server]);
        sluice(&all)
    }

    /// Stops the node with SIGTERM and returns how it exited.
    fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        send_signal(child.id(), "-TERM");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let said: Vec<String> = self.stderr.try_iter().collect();
                panic!("the node did not stop within {DEADLINE:?} of SIGTERM: {said:#?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `sluice ARGS` to its end, failing the test if it takes longer than the
/// deadline (the process is then killed).
fn sluice(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args)
        .env("SLUICE_CACHE_DIR", cache_dir())
        .env_remove("SLUICE_SERVER")
        .env_remove("SLUICE_TOKEN");
    output_within(cmd, DEADLINE)
}

/// Asserts the command succeeded and parses its stdout as one JSON document.
fn json_of(o: &Output) -> Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    serde_json::from_str(stdout(o).trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", stdout(o)))
}

fn now_unix_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[test]
fn client_commands_drive_a_running_node() {
    let node = Node::start(&["--no-initial-runs"]);

    // Nothing ran at start.
    let runs = json_of(&node.sluice(&["runs", "list", "--json"]));
    assert_eq!(runs, serde_json::json!([]), "--no-initial-runs: {runs}");

    // The workflow is there, as a table and as JSON.
    let o = node.sluice(&["workflows", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("sample-users"), "{}", stdout(&o));
    let workflows = json_of(&node.sluice(&["workflows", "list", "--json"]));
    let names: Vec<&str> = workflows
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sample-users"], "{workflows}");
    assert_eq!(workflows[0]["paused"], false, "{workflows}");

    // Trigger a run and follow it to its end.
    let triggered = json_of(&node.sluice(&["workflows", "trigger", "sample-users", "--json"]));
    let run = triggered[0]["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run id: {triggered}"))
        .to_owned();
    assert_eq!(triggered[0]["workflow"], "sample-users", "{triggered}");

    let o = node.sluice(&["runs", "watch", &run, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let updates: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line per update"))
        .collect();
    let last = updates.last().expect("at least one update");
    assert_eq!(last["finished"], true, "{updates:?}");
    assert_eq!(last["status"], "completed", "{updates:?}");
    assert_eq!(last["records"], 20_000, "{updates:?}");
    assert!(
        updates[..updates.len() - 1]
            .iter()
            .all(|u| u["finished"] == false),
        "only the last update is finished: {updates:?}"
    );

    // The run is listed as completed…
    let runs = json_of(&node.sluice(&["runs", "list", "--json", "--workflow", "sample-users"]));
    let listed = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_id"] == run.as_str())
        .unwrap_or_else(|| panic!("run {run} not listed: {runs}"));
    assert_eq!(listed["status"], "completed", "{listed}");
    assert_eq!(listed["workflow"], "sample-users", "{listed}");
    assert_eq!(listed["tenant"], "demo", "{listed}");

    // A second run: the list shows the newest first, a limit keeping the newest.
    let again = json_of(&node.sluice(&["workflows", "trigger", "sample-users", "--json"]));
    let second = again[0]["run_id"].as_str().unwrap().to_owned();
    let o = node.sluice(&["runs", "watch", &second]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let ids = |args: &[&str]| -> Vec<String> {
        let runs = json_of(&node.sluice(&[&["runs", "list", "--json"], args].concat()));
        runs.as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&[]), vec![second.clone(), run.clone()]);
    assert_eq!(ids(&["--limit", "1"]), vec![second.clone()]);
    assert_eq!(ids(&["--oldest-first", "--limit", "1"]), vec![run.clone()]);
    // The next page back: runs created before the newest one.
    let runs = json_of(&node.sluice(&["runs", "list", "--json", "--limit", "1"]));
    let newest_at = runs[0]["created_at_unix_ms"].as_i64().unwrap().to_string();
    assert_eq!(ids(&["--before", &newest_at]), vec![run.clone()]);
    assert_eq!(ids(&["--since", &newest_at]), vec![second.clone()]);
    let o = node.sluice(&["runs", "list", "--before", "yesterday"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`yesterday` is neither RFC 3339"),
        "{}",
        stderr(&o)
    );

    // …and shows its stream with every record.
    let got = json_of(&node.sluice(&["runs", "get", &run, "--json"]));
    assert_eq!(got["summary"]["run_id"], run.as_str(), "{got}");
    assert_eq!(got["summary"]["status"], "completed", "{got}");
    let streams = got["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 1, "{got}");
    assert_eq!(streams[0]["stream"], "users", "{got}");
    assert_eq!(streams[0]["records"], 20_000, "{got}");
    assert_eq!(streams[0]["batches"], 10, "{got}");
    assert_eq!(streams[0]["complete"], true, "{got}");

    // The schedule's next fires: three, in order, a day apart, in the future.
    let fires = json_of(&node.sluice(&[
        "workflows",
        "upcoming",
        "sample-users",
        "--count",
        "3",
        "--json",
    ]));
    let fires: Vec<i64> = fires
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {fires}"))
        .iter()
        .map(|f| f.as_i64().unwrap())
        .collect();
    assert_eq!(fires.len(), 3, "{fires:?}");
    assert!(fires[0] > now_unix_ms() - 60_000, "{fires:?}");
    for pair in fires.windows(2) {
        assert!(pair[0] < pair[1], "{fires:?}");
        assert_eq!(pair[1] - pair[0], 86_400_000, "{fires:?}");
    }
    assert_eq!(fires[0] % 86_400_000, (4 * 60 + 30) * 60_000, "{fires:?}");

    // Pausing shows in the listing.
    let o = node.sluice(&["workflows", "pause", "sample-users"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let workflows = json_of(&node.sluice(&["workflows", "list", "--json"]));
    assert_eq!(workflows[0]["name"], "sample-users", "{workflows}");
    assert_eq!(workflows[0]["paused"], true, "{workflows}");

    // Connections leave the node without their secrets' values, in either form.
    let o = node.sluice(&["connections", "list", "--json"]);
    assert!(!stdout(&o).contains(SECRET), "{}", stdout(&o));
    assert!(!stderr(&o).contains(SECRET), "{}", stderr(&o));
    let connections = json_of(&o);
    let mut names: Vec<&str> = connections
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["sample", "vault"], "{connections}");
    let o = node.sluice(&["connections", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("vault"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("api_key"),
        "the secret's name: {}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains(SECRET), "{}", stdout(&o));
    let connections = json_of(&node.sluice(&["connections", "list", "--tenant", "demo", "--json"]));
    let names: Vec<&str> = connections
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sample"], "--tenant demo: {connections}");

    // A run id that is not one is an invalid request; an unknown one is not found.
    let o = node.sluice(&["runs", "get", "not-a-run-id"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    let o = node.sluice(&["runs", "get", "00000000-0000-7000-8000-000000000000"]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    assert!(stderr(&o).contains("(NotFound)"), "{}", stderr(&o));
    let o = node.sluice(&["runs", "watch", "00000000-0000-7000-8000-000000000000"]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));

    // The node still answers.
    let runs = json_of(&node.sluice(&["runs", "list", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs}");

    let status = node.stop();
    assert_eq!(status.code(), Some(0), "a stopped node exits cleanly");
}

#[test]
fn tokens_are_required_and_read_only_tokens_cannot_write() {
    let node = Node::start(&[
        "--token",
        "w-token",
        "--read-token",
        "r-token",
        "--no-initial-runs",
    ]);

    let o = node.sluice(&["runs", "list"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    let o = node.sluice(&["runs", "list", "--token", "wrong"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let runs = json_of(&node.sluice(&["runs", "list", "--json", "--token", "r-token"]));
    assert_eq!(runs, serde_json::json!([]), "{runs}");

    let o = node.sluice(&["workflows", "trigger", "sample-users", "--token", "r-token"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(stderr(&o).contains("read-only"), "{}", stderr(&o));
    let o = node.sluice(&["workflows", "pause", "sample-users", "--token", "r-token"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    // The refused calls changed nothing.
    let runs = json_of(&node.sluice(&["runs", "list", "--json", "--token", "r-token"]));
    assert_eq!(runs, serde_json::json!([]), "{runs}");
    let workflows = json_of(&node.sluice(&["workflows", "list", "--json", "--token", "r-token"]));
    assert_eq!(workflows[0]["paused"], false, "{workflows}");

    let triggered = json_of(&node.sluice(&[
        "workflows",
        "trigger",
        "sample-users",
        "--json",
        "--token",
        "w-token",
    ]));
    let run = triggered[0]["run_id"].as_str().unwrap().to_owned();
    // A read-only token may follow the run it could not start.
    let o = node.sluice(&["runs", "watch", &run, "--json", "--token", "r-token"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));

    let status = node.stop();
    assert_eq!(status.code(), Some(0), "a stopped node exits cleanly");
}

#[test]
fn an_unreachable_server_exits_8() {
    // Port 1 on loopback: nothing listens there.
    let o = sluice(&["runs", "list", "--server", "http://127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
}

#[test]
fn connectors_are_registered_listed_and_removed_through_the_cli() {
    let node = Node::start(&["--no-initial-runs"]);
    let wasm = sluice_artifacts::TICKETS_SOURCE;
    let o = node.sluice(&[
        "connectors",
        "register",
        "tickets",
        wasm,
        "--version",
        "2.0.1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let registered = json_of(&o);
    assert_eq!(registered[0]["version"], "2.0.1");
    assert!(
        registered[0]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    let o = node.sluice(&["connectors", "list", "--json"]);
    let list = json_of(&o);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"tickets") && names.contains(&"sample"),
        "{names:?}"
    );

    let o = node.sluice(&["connectors", "get", "tickets", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(json_of(&o).is_object());

    // First-party connectors stay; a registered one goes, then is not found.
    let o = node.sluice(&["connectors", "remove", "sample"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("first-party"), "{}", stderr(&o));
    let o = node.sluice(&["connectors", "remove", "tickets"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = node.sluice(&["connectors", "get", "tickets"]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    let o = node.sluice(&["connectors", "register", "bad", "Cargo.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(node.stop().code(), Some(0));
}

#[test]
fn a_config_file_sets_the_node_and_flags_win_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.json");
    std::fs::write(
        &config,
        serde_json::json!({"tokens": ["file-token"], "read_tokens": ["file-reader"], "slots": 4})
            .to_string(),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    // The file's tokens apply.
    let node = Node::start(&["--no-initial-runs", "--config", config]);
    let o = node.sluice(&["runs", "list"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let o = node.sluice(&["runs", "list", "--token", "file-token"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = node.sluice(&[
        "workflows",
        "pause",
        "sample-users",
        "--token",
        "file-reader",
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert_eq!(node.stop().code(), Some(0));

    // A flag wins over the file for its setting; the file still sets the others.
    let node = Node::start(&[
        "--no-initial-runs",
        "--config",
        config,
        "--token",
        "flag-token",
    ]);
    let o = node.sluice(&["runs", "list", "--token", "file-token"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let o = node.sluice(&["runs", "list", "--token", "flag-token"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = node.sluice(&["runs", "list", "--token", "file-reader"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(node.stop().code(), Some(0));

    // A key the node does not know is an error naming the file, not ignored.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"listen": "127.0.0.1:0", "tokenz": ["x"]}"#).unwrap();
    let defs = dir.path().join("defs.json");
    std::fs::write(&defs, definitions().to_string()).unwrap();
    let o = sluice(&[
        "serve",
        defs.to_str().unwrap(),
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("bad.json") && stderr(&o).contains("tokenz"),
        "{}",
        stderr(&o)
    );
}

/// The `grpcurl` to use: `SLUICE_GRPCURL`, else one on the `PATH`. `.ci/run`
/// installs it and sets `SLUICE_REQUIRE_GRPCURL`, so there its absence fails.
fn grpcurl() -> Option<String> {
    if let Ok(path) = std::env::var("SLUICE_GRPCURL") {
        return Some(path);
    }
    let on_path = Command::new("grpcurl")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    on_path.then(|| "grpcurl".to_owned())
}

#[test]
fn grpcurl_lists_the_services_health_answers_serving_and_calls_work() {
    let Some(grpcurl) = grpcurl() else {
        assert!(
            std::env::var_os("SLUICE_REQUIRE_GRPCURL").is_none(),
            "grpcurl is required here but neither SLUICE_GRPCURL nor the PATH has it"
        );
        eprintln!("skipped: no grpcurl (`.ci/run` installs one)");
        return;
    };
    let node = Node::start(&["--no-initial-runs"]);
    let addr = node.server.trim_start_matches("http://").to_owned();
    let call = |args: &[&str]| {
        let o = Command::new(&grpcurl)
            .arg("-plaintext")
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "grpcurl {args:?}: {}", stderr(&o));
        stdout(&o)
    };
    let services = call(&[&addr, "list"]);
    for s in [
        "sluice.v1.Connectors",
        "sluice.v1.Connections",
        "sluice.v1.Workflows",
        "sluice.v1.Runs",
        "sluice.v1.Records",
        "grpc.health.v1.Health",
    ] {
        assert!(services.lines().any(|l| l.trim() == s), "{s} in {services}");
    }
    let health = call(&[
        "-d",
        r#"{"service": ""}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(health.contains("SERVING"), "{health}");
    let workflows = call(&["-d", "{}", &addr, "sluice.v1.Workflows/ListWorkflows"]);
    assert!(workflows.contains("sample-users"), "{workflows}");
    let described = call(&[&addr, "describe", "sluice.v1.Runs.WatchRun"]);
    assert!(described.contains("stream"), "{described}");
    assert_eq!(node.stop().code(), Some(0));
}

#[test]
fn rate_limits_show_the_budget_each_run_drew_on() {
    // A limited API in this process, and a node syncing from it with the `rest`
    // connector declaring the API's limit.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (app, api) = sluice_testkit::servers::limited_api::router(
        sluice_testkit::servers::limited_api::LimitConfig {
            records: 50,
            page_size: 10,
            limit: 100,
            window: Duration::from_secs(1),
            ..Default::default()
        },
    );
    let addr = runtime.block_on(sluice_testkit::serve(app));
    let defs = serde_json::json!({
        "connections": [{"name": "api", "tenant": "acme", "connector": "rest",
                         "config": {"base_url": format!("http://{addr}"),
                                    "rate_limit": {"requests": 50, "per_ms": 1000},
                                    "streams": [{"name": "items", "path": "/items/page-1.json",
                                                 "records_path": "data", "primary_key": ["id"],
                                                 "pagination": {"style": "next_link", "path": "next"}}]},
                         "secrets": {"auth": {"type": "bearer", "token": SECRET}},
                         "allowed_hosts": [addr.to_string()]}],
        "workflows": [{"name": "items", "connection": "api", "streams": [{"name": "items"}]}]
    });
    let node = Node::start_with(&defs, &[]);
    // The node runs the workflow at start; wait for its pages.
    let deadline = Instant::now() + DEADLINE;
    let keys = loop {
        let o = node.sluice(&["rate-limits", "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let keys: Vec<Value> = stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &Value| v.get("endpoint").is_some())
            .collect();
        if keys.first().is_some_and(|k| k["requests"] == 5) {
            break keys;
        }
        assert!(
            Instant::now() < deadline,
            "the run's requests never showed: {keys:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    assert_eq!(key["connector"], "rest");
    assert_eq!(key["endpoint"], addr.to_string());
    assert_eq!(
        key["window_limit"], 50,
        "the connector's declaration: {key}"
    );
    assert!(
        key["credential"].as_str().unwrap().starts_with("secrets:"),
        "{key}"
    );
    assert_eq!(api.violations(), 0);

    let o = node.sluice(&["rate-limits"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(
        table.contains(&addr.to_string()) && table.contains("closed"),
        "{table}"
    );
    assert!(!table.contains(SECRET), "{table}");
    let o = node.sluice(&["rate-limits", "--connector", "sample", "--json"]);
    assert!(o.status.success());
    assert!(!stdout(&o).contains("\"endpoint\""), "{}", stdout(&o));
    assert!(node.stop().success());
}

#[test]
fn a_tokens_file_limits_a_token_to_its_tenants_and_lists_page() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.json");
    // The operator of tenant `other` is stored as its SHA-256 only.
    std::fs::write(
        &tokens,
        serde_json::json!([
            {"token": "root", "role": "admin"},
            {"token_sha256": sluice_api::token_sha256("other-op"), "role": "operator",
             "tenants": ["other"]}
        ])
        .to_string(),
    )
    .unwrap();
    let node = Node::start(&["--tokens-file", tokens.to_str().unwrap()]);
    // The admin sees both connections, a page at a time with a hint to the next.
    let o = node.sluice(&["connections", "list", "--limit", "1", "--token", "root"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let page = stdout(&o);
    assert!(page.contains("sample") && !page.contains("vault"), "{page}");
    let hint = page
        .lines()
        .find_map(|l| l.strip_prefix("next page: --page-token "))
        .unwrap_or_else(|| panic!("no next-page hint: {page}"));
    let token = hint.split_whitespace().next().unwrap();
    let o = node.sluice(&[
        "connections",
        "list",
        "--limit",
        "1",
        "--page-token",
        token,
        "--token",
        "root",
    ]);
    assert!(
        stdout(&o).contains("vault") && !stdout(&o).contains("next page"),
        "{}",
        stdout(&o)
    );
    let all = json_of(&node.sluice(&[
        "connections",
        "list",
        "--limit",
        "1",
        "--all",
        "--json",
        "--token",
        "root",
    ]));
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");

    // Tenant `other`'s operator sees only `vault`, and demo's workflow is not found.
    let mine = json_of(&node.sluice(&["connections", "list", "--json", "--token", "other-op"]));
    let names: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vault"]);
    let o = node.sluice(&[
        "workflows",
        "trigger",
        "sample-users",
        "--token",
        "other-op",
    ]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(stderr(&o).contains("no workflow named"), "{}", stderr(&o));
    let runs = json_of(&node.sluice(&["runs", "list", "--json", "--token", "other-op"]));
    assert_eq!(runs.as_array().unwrap().len(), 0, "{runs}");
    let o = node.sluice(&["nodes", "list", "--token", "other-op"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert_eq!(node.stop().code(), Some(0));
}
