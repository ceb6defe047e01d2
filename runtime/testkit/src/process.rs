//! Helpers for tests that run the `sluice` binary as a real process: its output as
//! text, and signals. (Only the test of the package that owns a binary knows where
//! cargo built it, `env!("CARGO_BIN_EXE_sluice")`, so the command itself is theirs.)

use std::process::{Command, Output, Stdio};

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
