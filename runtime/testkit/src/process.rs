//! Helpers for tests that run the `sluice` binary as a real process: its output as
//! text, and signals. (Only the test of the package that owns a binary knows where
//! cargo built it, `env!("CARGO_BIN_EXE_sluice")`, so the command itself is theirs.)

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// What the process wrote on stdout, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What the process wrote on stderr, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Sends `signal` (as `kill` takes it: `-TERM`, `-KILL`) to process `pid`; a process
/// already gone is no error.
pub fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `cmd` to its end (no stdin, stdout and stderr captured); a process still
/// running after `deadline` is killed and the test fails naming the command.
#[allow(
    clippy::panic,
    clippy::unwrap_used,
    reason = "a test helper fails the test"
)]
pub fn output_within(mut cmd: Command, deadline: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("`{cmd:?}` did not start: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            send_signal(pid, "-KILL");
            panic!("`{cmd:?}` did not end within {deadline:?}");
        }
    }
}
