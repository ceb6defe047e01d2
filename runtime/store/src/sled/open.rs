//! Opening the sled database, waiting out a lock this process is still releasing.
//!
//! sled releases a database's file lock only when its last internal handle goes,
//! which may be a moment after the owner dropped it (its I/O threads finish their
//! work first). Reopening in the same process right away then fails with
//! `WouldBlock` ("could not acquire lock"). Opening retries that case for a bounded time; any other error, or a
//! lock still held after it (another process uses the store), is returned as is.

use std::time::{Duration, Instant};

/// How long an open waits for a lock being released.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const RETRY_EVERY: Duration = Duration::from_millis(20);

fn is_lock_busy(e: &sled::Error) -> bool {
    // sled reports it as an I/O error of its own wording, the OS error inside.
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("could not acquire lock"))
}

/// `config.open()`, retried while the lock is busy, up to [`LOCK_WAIT`].
pub(crate) fn open_db(config: &sled::Config) -> sled::Result<sled::Db> {
    let started = Instant::now();
    loop {
        match config.open() {
            Err(e) if is_lock_busy(&e) && started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(RETRY_EVERY);
            }
            other => return other,
        }
    }
}
