//! Connection secrets as an operator meets them through the real `sluice` binary:
//! sealed in the store under the node's key (generated beside the embedded store,
//! or given), references to the environment and to files resolved at each attempt,
//! a node that refuses to start on a key that does not open the stored secrets,
//! `sluice secrets rotate` moving them to a new key, secrets stored in plaintext
//! before sealing loaded and sealed, and a canary secret found in no output — API
//! answers through the CLI, `/metrics`, the node's stdout and stderr — and in no
//! byte of the data directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_testkit::process::{output_within, send_signal, stderr, stdout};

/// How long anything a test waits on may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(120);
/// How often a test looks again at something it waits for.
const POLL: Duration = Duration::from_millis(25);

/// A canary of 19 characters, unique to this process and `tag`.
fn canary(tag: char) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let c = format!(
        "CNRY{tag}{:07}{:07}",
        std::process::id() % 10_000_000,
        nanos % 10_000_000
    );
    assert_eq!(c.len(), 19);
    c
}

fn cache_dir() -> PathBuf {
    std::env::temp_dir().join(format!("sluice-secrets-test-cache-{}", std::process::id()))
}

/// A third-party API on loopback: `/ok/items` answers one record to a bearer token
/// it accepts, and 401 otherwise; `/echo/items` answers 401 with the request's
/// `Authorization` header in its body (a hostile or careless API); `/cut/items` the
/// same after padding that puts the token across the connector's 200-byte error
/// snippet.
struct Api {
    addr: SocketAddr,
    /// The `Authorization` header of every request, in order.
    seen: Arc<Mutex<Vec<String>>>,
}

impl Api {
    fn start(accepted: Vec<String>) -> Api {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let accepted = accepted.clone();
                let log = Arc::clone(&log);
                std::thread::spawn(move || answer(stream, &accepted, &log));
            }
        });
        Api { addr, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(stream: TcpStream, accepted: &[String], log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let path = first.split(' ').nth(1).unwrap_or("/").to_owned();
    let mut auth = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            auth = value.trim().to_owned();
        }
    }
    log.lock().unwrap().push(auth.clone());
    let token = auth.strip_prefix("Bearer ").unwrap_or_default();
    let (status, body) = match path.as_str() {
        "/ok/items" if accepted.iter().any(|a| a == token) => {
            ("200 OK", json!({"data": [{"id": 1}]}).to_string())
        }
        "/cut/items" => {
            // The token's last character falls past the 200th byte.
            let pad = "x".repeat(200 - 18);
            (
                "401 Unauthorized",
                format!("{pad}{token} is not a valid token"),
            )
        }
        _ => (
            "401 Unauthorized",
            format!("token rejected: {auth} (we log every token we see)"),
        ),
    };
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A `rest` connection to `api`'s `path`, its bearer token from `token` (a literal or
/// a reference), and its workflow.
fn connection(name: &str, api: &Api, path: &str, token: Value) -> (Value, Value) {
    let c = json!({
        "name": name, "connector": "rest",
        "config": {
            "base_url": format!("http://{}", api.addr),
            "auth": {"type": "bearer"},
            "streams": [{"name": "items", "path": path, "records_path": "data",
                         "primary_key": ["id"]}]
        },
        "secrets": {"auth": {"token": token}},
        "allowed_hosts": [api.addr.to_string()]
    });
    let w = json!({"name": name, "connection": name, "streams": [{"name": "items"}],
                   "retry": {"max_attempts": 1}});
    (c, w)
}

fn definitions(pairs: Vec<(Value, Value)>) -> Value {
    let (connections, workflows): (Vec<Value>, Vec<Value>) = pairs.into_iter().unzip();
    json!({"connections": connections, "workflows": workflows})
}

/// A running `sluice serve`, killed when dropped.
struct Node {
    child: Option<Child>,
    server: String,
    metrics: String,
    /// Every stderr line so far.
    said: Arc<Mutex<Vec<String>>>,
}

/// How to start a node.
struct Start<'a> {
    dir: &'a Path,
    defs: &'a Value,
    extra: &'a [&'a str],
    env: &'a [(&'a str, &'a str)],
}

impl Start<'_> {
    fn command(&self) -> Command {
        let file = self.dir.join("defs.json");
        std::fs::write(&file, self.defs.to_string()).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("serve")
            .arg(&file)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--json", "--log", "info"])
            .args(self.extra)
            .env("SLUICE_CACHE_DIR", cache_dir())
            .env("NO_COLOR", "1");
        for var in [
            "SLUICE_TOKENS",
            "SLUICE_READ_TOKENS",
            "SLUICE_STORE",
            "SLUICE_CONFIG",
            "SLUICE_SECRETS_KEY",
            "SLUICE_SECRETS_KEY_FILE",
            "SLUICE_SECRETS_PREVIOUS_KEY_FILES",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the node and waits until it serves.
    fn node(&self) -> Node {
        let stdout_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.stdout"))
            .unwrap();
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout_file))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = BufReader::new(child.stderr.take().unwrap());
        let said = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log = Arc::clone(&said);
        std::thread::spawn(move || {
            for line in pipe.lines().map_while(Result::ok) {
                log.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut node = Node {
            child: Some(child),
            server: String::new(),
            metrics: String::new(),
            said,
        };
        let deadline = Instant::now() + DEADLINE;
        // The API's address comes first, then the metrics'.
        while node.server.is_empty() || node.metrics.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|e| {
                panic!(
                    "the node never said where its API listens ({e}): {:#?}",
                    node.said()
                )
            });
            if let Some(a) = line.strip_prefix("metrics on http://") {
                node.metrics = a.split("/metrics").next().unwrap_or_default().to_owned();
            }
            if let Some(a) = line.strip_prefix("API listening on ") {
                node.server = format!("http://{}", a.trim());
            }
        }
        node
    }

    /// Starts the node, expecting it to refuse: its exit code and stderr.
    fn refused(&self) -> (Option<i32>, String) {
        let o = run_to_end(self.command());
        assert!(!o.status.success(), "the node started: {}", stderr(&o));
        (o.status.code(), stderr(&o))
    }
}

impl Node {
    fn said(&self) -> Vec<String> {
        self.said.lock().unwrap().clone()
    }

    fn sluice(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--server", &self.server]);
        sluice(&all)
    }

    /// `GET /metrics`.
    fn metrics(&self) -> String {
        let mut s = TcpStream::connect(&self.metrics).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            self.metrics
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text
    }

    /// Stops the node with SIGTERM and waits for it to exit.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        send_signal(child.id(), "-TERM");
        let deadline = Instant::now() + DEADLINE;
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the node did not stop: {:#?}",
                self.said()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Each workflow's newest run, once every one of `workflows` has one that ended.
    fn ended_runs(&self, workflows: &[&str]) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let runs = json_of(&self.sluice(&["runs", "list", "--json"]));
            let ended: Vec<Value> = workflows
                .iter()
                .filter_map(|w| {
                    runs.as_array().unwrap().iter().find(|r| {
                        r["workflow"] == *w
                            && ["completed", "dead_lettered", "cancelled"]
                                .contains(&r["status"].as_str().unwrap_or_default())
                    })
                })
                .cloned()
                .collect();
            if ended.len() == workflows.len() {
                return ended;
            }
            assert!(Instant::now() < deadline, "runs did not end: {runs}");
            std::thread::sleep(POLL);
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

/// Runs `cmd` to its end within the deadline.
fn run_to_end(cmd: Command) -> Output {
    output_within(cmd, DEADLINE)
}

/// Runs `sluice ARGS` (a client command or `sluice secrets …`).
fn sluice(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args)
        .env("SLUICE_CACHE_DIR", cache_dir())
        .env_remove("SLUICE_SERVER")
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_SECRETS_KEY")
        .env_remove("SLUICE_STORE");
    run_to_end(cmd)
}

fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    format!("{}{}", stdout(o), stderr(o))
}

fn json_of(o: &Output) -> Value {
    ok(o);
    serde_json::from_str(stdout(o).trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", stdout(o)))
}

/// Runs a client command that must succeed, keeping its output.
fn read(node: &Node, outputs: &mut Vec<(String, String)>, args: &[&str]) -> String {
    let text = ok(&node.sluice(args));
    outputs.push((format!("sluice {}", args.join(" ")), text.clone()));
    text
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().map_while(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Fails naming where any of `needles` appears in `outputs` (name, text) or in a
/// byte of a file under `dir`.
fn assert_nowhere(needles: &[&str], outputs: &[(String, String)], dir: &Path) {
    let mut found = Vec::new();
    for (name, text) in outputs {
        for n in needles {
            if text.contains(n) {
                found.push(format!("{name} holds `{n}`: {text}"));
            }
        }
    }
    let stored = files(dir);
    assert!(!stored.is_empty(), "no files under {}", dir.display());
    for path in stored {
        let bytes = std::fs::read(&path).unwrap();
        for n in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                found.push(format!("the file {} holds `{n}`", path.display()));
            }
        }
    }
    assert!(found.is_empty(), "secrets escaped:\n{}", found.join("\n"));
}

#[test]
fn a_canary_secret_is_in_no_output_and_no_stored_byte() {
    let literal = canary('L');
    let from_env = canary('E');
    let from_file = canary('F');
    let api = Api::start(vec![literal.clone(), from_env.clone(), from_file.clone()]);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{from_file}\n")).unwrap();
    let defs = definitions(vec![
        connection("echo", &api, "/echo/items", json!(literal)),
        connection("literal", &api, "/ok/items", json!(literal)),
        connection("envref", &api, "/ok/items", json!({"$env": "CANARY_TOKEN"})),
        connection(
            "fileref",
            &api,
            "/ok/items",
            json!({"$file": token_file.to_str().unwrap()}),
        ),
        connection(
            "missing",
            &api,
            "/ok/items",
            json!({"$env": "CANARY_UNSET_VAR"}),
        ),
    ]);
    let start = Start {
        dir: dir.path(),
        defs: &defs,
        extra: &[],
        env: &[("CANARY_TOKEN", from_env.as_str())],
    };
    let node = start.node();
    let workflows = ["echo", "literal", "envref", "fileref", "missing"];
    let runs = node.ended_runs(&workflows);
    let status = |w: &str| -> &str {
        runs.iter().find(|r| r["workflow"] == w).unwrap()["status"]
            .as_str()
            .unwrap()
    };
    // References resolve on the node: the API saw the token each names.
    for w in ["literal", "envref", "fileref"] {
        assert_eq!(status(w), "completed", "{w}: {runs:?}");
    }
    let seen = api.seen();
    for token in [&literal, &from_env, &from_file] {
        assert!(
            seen.contains(&format!("Bearer {token}")),
            "the API never saw {token}: {seen:?}"
        );
    }
    assert_eq!(status("echo"), "dead_lettered", "{runs:?}");
    assert_eq!(status("missing"), "dead_lettered", "{runs:?}");

    // Every read method, through the CLI.
    let mut outputs: Vec<(String, String)> = Vec::new();
    for json in [&[][..], &["--json"][..]] {
        read(
            &node,
            &mut outputs,
            &[&["connections", "list"], json].concat(),
        );
        read(
            &node,
            &mut outputs,
            &[&["workflows", "list"], json].concat(),
        );
        read(&node, &mut outputs, &[&["runs", "list"], json].concat());
        read(&node, &mut outputs, &[&["rate-limits"], json].concat());
        read(
            &node,
            &mut outputs,
            &[&["connectors", "list"], json].concat(),
        );
        for run in &runs {
            let id = run["run_id"].as_str().unwrap();
            read(&node, &mut outputs, &[&["runs", "get", id], json].concat());
            read(&node, &mut outputs, &[&["runs", "logs", id], json].concat());
        }
    }
    let missing_run = runs.iter().find(|r| r["workflow"] == "missing").unwrap();
    let missing = read(
        &node,
        &mut outputs,
        &[
            "runs",
            "get",
            missing_run["run_id"].as_str().unwrap(),
            "--json",
        ],
    );
    assert!(
        missing.contains(
            "secrets.auth.token: `$env: CANARY_UNSET_VAR`: the variable is not set on this node"
        ),
        "the failure names the reference: {missing}"
    );
    // The hostile answer came back in the failure, its token redacted.
    let echo_run = runs.iter().find(|r| r["workflow"] == "echo").unwrap();
    let echo = read(
        &node,
        &mut outputs,
        &[
            "runs",
            "get",
            echo_run["run_id"].as_str().unwrap(),
            "--json",
        ],
    );
    assert!(echo.contains("token rejected: Bearer "), "{echo}");
    for c in workflows {
        let o = node.sluice(&["connections", "check", c]);
        outputs.push((
            format!("sluice connections check {c}"),
            format!("{}{}", stdout(&o), stderr(&o)),
        ));
    }
    // Credential labels are keyed hashes: shown, but they tell nothing.
    let labels = read(&node, &mut outputs, &["rate-limits", "--json"]);
    assert!(
        labels.contains("secrets:"),
        "keyed labels of secrets: {labels}"
    );
    let metrics = node.metrics();
    assert!(metrics.contains("credential=\"secrets:"), "{metrics}");
    outputs.push(("/metrics".into(), metrics));
    let said = node.said();
    node.stop();
    outputs.push(("the node's stderr".into(), said.join("\n")));
    outputs.push((
        "the node's stdout".into(),
        std::fs::read_to_string(dir.path().join("node.stdout")).unwrap(),
    ));

    // Sealed, every one with the key generated beside the store.
    let generated = said
        .iter()
        .find_map(|l| l.split("(key ").nth(1))
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("the node did not say it generated a key: {said:#?}"))
        .to_owned();
    let data = dir.path().join("data");
    let status = ok(&sluice(&[
        "secrets",
        "status",
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    for c in workflows {
        assert!(
            status.contains(&format!("{c}\tsealed with {generated}")),
            "{c}: {status}"
        );
    }
    outputs.push(("sluice secrets status".into(), status));

    assert_nowhere(&[&literal, &from_env, &from_file], &outputs, &data);
}

/// The id `sluice secrets generate-key FILE` printed.
fn generate_key(path: &Path) -> String {
    let out = ok(&sluice(&[
        "secrets",
        "generate-key",
        path.to_str().unwrap(),
    ]));
    out.split_whitespace()
        .find(|w| w.starts_with("k-"))
        .unwrap_or_else(|| panic!("no key id: {out}"))
        .to_owned()
}

/// `sluice secrets status` of the embedded store in `data`.
fn status_of(data: &Path) -> String {
    ok(&sluice(&[
        "secrets",
        "status",
        "--data-dir",
        data.to_str().unwrap(),
    ]))
}

#[test]
fn a_node_refuses_a_key_that_does_not_open_its_secrets_and_rotation_moves_them() {
    let token = canary('R');
    let api = Api::start(vec![token.clone()]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let defs = definitions(vec![connection("c", &api, "/ok/items", json!(token))]);
    let start = |extra: &[&str], env: &[(&str, &str)]| -> Start<'static> {
        let extra: Vec<&'static str> = extra
            .iter()
            .map(|s| &*Box::leak(s.to_string().into_boxed_str()))
            .collect();
        let env: Vec<(&'static str, &'static str)> = env
            .iter()
            .map(|(k, v)| {
                (
                    &*Box::leak(k.to_string().into_boxed_str()),
                    &*Box::leak(v.to_string().into_boxed_str()),
                )
            })
            .collect();
        Start {
            dir: Box::leak(dir.path().to_owned().into_boxed_path()),
            defs: Box::leak(Box::new(defs.clone())),
            extra: Box::leak(
                [&["--no-initial-runs"][..], &extra]
                    .concat()
                    .into_boxed_slice(),
            ),
            env: Box::leak(env.into_boxed_slice()),
        }
    };

    // First start: a key generated beside the store seals the secret.
    let node = start(&[], &[]).node();
    ok(&node.sluice(&["connections", "check", "c"]));
    node.stop();
    let first = status_of(&data);
    let first = first
        .trim()
        .strip_prefix("c\tsealed with ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();

    // A node given another key refuses to start, naming both keys.
    let other_file = dir.path().join("other.key");
    let other = generate_key(&other_file);
    assert_ne!(other, first);
    let other_path = other_file.to_str().unwrap();
    let (code, said) = start(&["--secrets-key-file", other_path], &[]).refused();
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "the stored secrets of connection `c` were sealed with key {first}; this node has \
             {other} (sealing): give the node that key"
        )),
        "{said}"
    );

    // Rotated to the other key (the old one is found beside the store)…
    let out = ok(&sluice(&[
        "secrets",
        "rotate",
        "--data-dir",
        data.to_str().unwrap(),
        "--new-key-file",
        other_path,
    ]));
    assert!(
        out.contains(&format!("c: sealed with {first} -> sealed with {other}")),
        "{out}"
    );
    assert_eq!(status_of(&data).trim(), format!("c\tsealed with {other}"));
    // …the generated key no longer opens the secret…
    let (_, said) = start(&[], &[]).refused();
    assert!(
        said.contains(&format!("sealed with key {other}; this node has {first}")),
        "{said}"
    );
    // …the new one does: the API sees the token.
    let before = api.seen().len();
    let node = start(&["--secrets-key-file", other_path], &[]).node();
    ok(&node.sluice(&["connections", "check", "c"]));
    node.stop();
    assert_eq!(api.seen()[before..], [format!("Bearer {token}")]);

    // A node given a new key and the previous one opens both, and seals what the
    // previous one sealed with the new key.
    let third_file = dir.path().join("third.key");
    let third = generate_key(&third_file);
    let third_path = third_file.to_str().unwrap();
    let node = start(
        &[
            "--secrets-key-file",
            third_path,
            "--secrets-previous-key-file",
            other_path,
        ],
        &[],
    )
    .node();
    ok(&node.sluice(&["connections", "check", "c"]));
    let said = node.said().join("\n");
    node.stop();
    assert!(
        said.contains(&format!(
            "sealed the secrets of 1 connection(s) with key {third}"
        )),
        "{said}"
    );
    assert_eq!(status_of(&data).trim(), format!("c\tsealed with {third}"));

    // The key may come from the environment instead of a file.
    let hex = std::fs::read_to_string(&third_file).unwrap();
    let node = start(&[], &[("SLUICE_SECRETS_KEY", hex.trim())]).node();
    ok(&node.sluice(&["connections", "check", "c"]));
    node.stop();
}

#[test]
fn secrets_stored_in_plaintext_before_sealing_still_load_and_are_sealed() {
    let token = canary('P');
    let api = Api::start(vec![token.clone()]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (legacy, _) = connection("legacy", &api, "/ok/items", json!(token));
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = sluice_store::Store::open(&data).unwrap();
        let doc = serde_json::to_vec(&legacy).unwrap();
        rt.block_on(store.catalog().put("connection", "legacy", &doc))
            .unwrap();
    }
    assert_eq!(status_of(&data).trim(), "legacy\tplaintext");
    let empty = json!({});
    let node = Start {
        dir: dir.path(),
        defs: &empty,
        extra: &["--no-initial-runs"],
        env: &[],
    }
    .node();
    ok(&node.sluice(&["connections", "check", "legacy"]));
    let said = node.said().join("\n");
    node.stop();
    assert!(
        said.contains("sealed the secrets of 1 connection(s) with key k-"),
        "{said}"
    );
    assert!(
        status_of(&data)
            .trim()
            .starts_with("legacy\tsealed with k-"),
        "{}",
        status_of(&data)
    );
    assert!(api.seen().contains(&format!("Bearer {token}")));
}

#[tokio::test]
async fn nodes_sharing_a_store_need_one_key_and_label_a_credential_alike() {
    let schema = sluice_testkit::pg::TestSchema::create().await;
    let token = canary('C');
    let api = Api::start(vec![token.clone()]);
    let dir = tempfile::tempdir().unwrap();
    let defs = definitions(vec![connection("c", &api, "/ok/items", json!(token))]);
    let key_file = dir.path().join("cluster.key");
    generate_key(&key_file);
    let key = std::fs::read_to_string(&key_file).unwrap();
    let url = schema.url().to_owned();
    let node_dir = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let n0 = node_dir("n0");
    let extra = ["--no-initial-runs", "--store", url.as_str()];

    // No key: a connection with secrets is refused, naming what to do.
    let (_, said) = Start {
        dir: &n0,
        defs: &defs,
        extra: &extra,
        env: &[],
    }
    .refused();
    assert!(
        said.contains("connection `c` has secrets, but this node has no secrets key"),
        "{said}"
    );
    assert!(said.contains("SLUICE_SECRETS_KEY"), "{said}");

    // Two nodes with the key: each opens the secret, and both label the credential
    // alike, so they share its budget.
    let env = [("SLUICE_SECRETS_KEY", key.trim())];
    let (d1, d2) = (node_dir("n1"), node_dir("n2"));
    let mut labels = Vec::new();
    for (d, name) in [(&d1, "n1"), (&d2, "n2")] {
        let extra = [&extra[..], &["--node-name", name]].concat();
        let node = Start {
            dir: d,
            defs: &defs,
            extra: &extra,
            env: &env,
        }
        .node();
        ok(&node.sluice(&["connections", "check", "c"]));
        // One JSON object per key and per breaker.
        let keys = ok(&node.sluice(&["rate-limits", "--json"]));
        let credential = keys
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|k| k["credential"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no rate-limit key: {keys}"));
        labels.push(credential);
        node.stop();
    }
    assert!(labels[0].starts_with("secrets:"), "{labels:?}");
    assert_eq!(labels[0], labels[1]);
    let status = ok(&sluice(&["secrets", "status", "--store", &url]));
    assert!(status.trim().starts_with("c\tsealed with k-"), "{status}");
    assert!(!status.contains(&token));

    // A node with another key refuses to start.
    let other = dir.path().join("other.key");
    generate_key(&other);
    let extra = [&extra[..], &["--secrets-key-file", other.to_str().unwrap()]].concat();
    let (_, said) = Start {
        dir: &n0,
        defs: &defs,
        extra: &extra,
        env: &[],
    }
    .refused();
    assert!(
        said.contains("the stored secrets of connection `c` were sealed with key k-"),
        "{said}"
    );
}

#[test]
fn a_secret_cut_by_the_error_snippet_is_hidden_too() {
    let token = canary('X');
    let api = Api::start(vec![]);
    let dir = tempfile::tempdir().unwrap();
    let defs = definitions(vec![connection("cut", &api, "/cut/items", json!(token))]);
    let start = Start {
        dir: dir.path(),
        defs: &defs,
        extra: &[],
        env: &[],
    };
    let node = start.node();
    let runs = node.ended_runs(&["cut"]);
    let mut outputs = Vec::new();
    let id = runs[0]["run_id"].as_str().unwrap();
    let got = read(&node, &mut outputs, &["runs", "get", id, "--json"]);
    // The answer's body reached the failure, cut within the token.
    assert!(got.contains("xxxxxxxx"), "{got}");
    read(&node, &mut outputs, &["runs", "logs", id, "--json"]);
    let o = node.sluice(&["connections", "check", "cut"]);
    outputs.push(("check".into(), format!("{}{}", stdout(&o), stderr(&o))));
    let said = node.said();
    node.stop();
    outputs.push(("the node's stderr".into(), said.join("\n")));
    // The first 18 of its 19 characters are as secret as all 19.
    assert_nowhere(&[&token[..18]], &outputs, &dir.path().join("data"));
}
