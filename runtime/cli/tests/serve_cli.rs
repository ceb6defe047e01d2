//! `sluice serve FILE` as an operator meets it: a node that runs each workflow at
//! start, then on its schedule, reports each run as it ends, and stops cleanly on
//! SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn a_node_runs_workflows_on_their_schedule_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("defs.json");
    let defs = serde_json::json!({
        "connections": [{"name": "sample", "connector": "sample", "config": {"records": 100}}],
        "workflows": [{"name": "users", "connection": "sample", "streams": [{"name": "users"}],
                       "schedule": {"trigger": {"kind": "interval", "every_secs": 1}}}]
    });
    std::fs::write(&file, defs.to_string()).unwrap();
    let cache =
        std::env::temp_dir().join(format!("sluice-serve-test-cache-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--json")
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .env("SLUICE_CACHE_DIR", cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut runs = Vec::new();
    for line in stdout.lines() {
        let outcome: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        assert_eq!(outcome["status"], "completed", "{outcome}");
        assert_eq!(outcome["records"], 100);
        runs.push(outcome["run"].as_str().unwrap().to_owned());
        if runs.len() == 3 {
            break;
        }
    }
    // The run at start, then two on the schedule: three different runs.
    runs.sort();
    runs.dedup();
    assert_eq!(runs.len(), 3);
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "a stopped node exits cleanly: {status:?}");
}

#[test]
fn a_second_process_on_the_same_data_dir_is_told_another_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("defs.json");
    let defs = serde_json::json!({
        "connections": [{"name": "sample", "connector": "sample", "config": {"records": 10}}],
        "workflows": [{"name": "users", "connection": "sample", "streams": [{"name": "users"}]}]
    });
    std::fs::write(&file, defs.to_string()).unwrap();
    let data = dir.path().join("data");
    let mut node = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .arg("--json")
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first outcome: the node holds its store.
    let mut stdout = BufReader::new(node.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("completed"), "{line}");
    let second = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        said.contains("another process holds the store"),
        "the second process says why it cannot open the store: {said}"
    );
    let pid = node.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(node.wait().unwrap().success());
}

/// A tmpfs of `mb` MiB mounted on a new directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mb: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs { dir }
    }

    /// Grows the file system: what freeing space looks like to the store.
    fn grow(&self, mb: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={mb}m")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// `sluice serve` on `data`, its API address and its stderr lines as they come.
struct Node {
    child: std::process::Child,
    server: String,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Node {
    fn start(defs: &std::path::Path, data: &std::path::Path, reserve_mb: &str) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg(defs)
            .arg("--data-dir")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .env("SLUICE_STORE_RESERVE_MB", reserve_mb)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut node = Node {
            child,
            server: String::new(),
            lines,
        };
        let line = node.wait_for_line("API listening on ");
        let addr = line.rsplit(' ').next().unwrap();
        node.server = format!("http://{addr}");
        node
    }

    fn wait_for_line(&mut self, text: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("the node never said {text:?}: {e}"),
            }
        }
    }

    /// The node's one run, as `sluice runs get --json` shows it.
    fn the_run(&self) -> serde_json::Value {
        let sluice = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(args)
                .args(["--server", &self.server, "--json"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        };
        let runs = sluice(&["runs", "list"]);
        let id = runs[0]["run_id"].as_str().unwrap().to_owned();
        sluice(&["runs", "get", &id])
    }

    /// Polls the run until `done` holds of it.
    fn run_until(
        &self,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            let run = self.the_run();
            if done(&run) {
                return run;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the run never {what}: {run}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id();
        sluice_testkit::process::send_signal(pid, "-TERM");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the node did not stop on SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const FULL_DISK_RECORDS: u64 = 200_000;

/// A sample sync bigger than the small disk its node's store is on.
fn full_disk_sync(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("defs.json");
    let defs = serde_json::json!({
        "connections": [{"name": "sample", "connector": "sample",
                         "config": {"records": FULL_DISK_RECORDS, "record_bytes": 400}}],
        "workflows": [{"name": "users", "connection": "sample",
                       "streams": [{"name": "users"}], "batch_size": 2000}]
    });
    std::fs::write(&file, defs.to_string()).unwrap();
    file
}

fn out_of_space(run: &serde_json::Value) -> bool {
    run["summary"]["status"] == "running"
        && run["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no space left"))
}

fn completed_exactly(run: &serde_json::Value) {
    assert_eq!(run["summary"]["status"], "completed", "{run}");
    let stream = &run["streams"][0];
    assert_eq!(stream["records"], FULL_DISK_RECORDS, "{run}");
    assert_eq!(stream["created"], FULL_DISK_RECORDS, "{run}");
    assert_eq!(stream["updated"], 0, "{run}");
}

/// The disk fills mid-sync (the store keeps its reserve): the run shows why it
/// waits, the node stops cleanly on SIGTERM, and once space is freed the run
/// completes with every record counted once.
#[test]
fn a_full_disk_is_an_error_the_run_shows_and_the_run_completes_once_space_is_freed() {
    let disk = Tmpfs::mount(120);
    let file = full_disk_sync(disk.dir.path());
    let data = disk.dir.path().join("data");
    let node = Node::start(&file, &data, "16");
    let waiting = node.run_until("said the disk is full", out_of_space);
    assert!(
        waiting["streams"][0]["records"].as_u64().unwrap() < FULL_DISK_RECORDS,
        "{waiting}"
    );
    // Still answering, still waiting.
    assert!(out_of_space(&node.the_run()));
    let status = node.stop();
    assert!(
        status.success(),
        "a node on a full disk stops cleanly: {status:?}"
    );
    disk.grow(2048);
    let node = Node::start(&file, &data, "16");
    let done = node.run_until("completed", |r| r["summary"]["status"] == "completed");
    completed_exactly(&done);
    assert!(node.stop().success());
}

/// The disk fills under the store itself (no reserve): sled stops writing, the run
/// shows it, and once space is freed the node restarts in place by itself and
/// the run completes exactly.
#[test]
fn a_store_stopped_by_a_full_disk_is_opened_again_by_its_node_once_space_is_freed() {
    let disk = Tmpfs::mount(120);
    let file = full_disk_sync(disk.dir.path());
    let mut node = Node::start(&file, &disk.dir.path().join("data"), "0");
    let pid = node.child.id();
    node.run_until("said the disk is full", out_of_space);
    disk.grow(2048);
    node.wait_for_line("the node restarts to open it");
    // Same process, new API address.
    let line = node.wait_for_line("API listening on ");
    node.server = format!("http://{}", line.rsplit(' ').next().unwrap());
    assert_eq!(node.child.id(), pid);
    let done = node.run_until("completed", |r| r["summary"]["status"] == "completed");
    completed_exactly(&done);
    assert!(node.stop().success());
}
