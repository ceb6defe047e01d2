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

/// Opens the store's database in `path` with a page cache of `cache_bytes`, flushed
/// only when asked (every durable write flushes), and completes the group of writes
/// a crash left half applied, before anything reads it.
pub(crate) fn open_store_db(
    path: &std::path::Path,
    cache_bytes: u64,
) -> Result<sled::Db, super::staged::RecoverError> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .flush_every_ms(None);
    let db = open_db(&config)?;
    let completed = super::staged::recover(&db)?;
    if completed > 0 {
        tracing::info!(
            writes = completed,
            "completed a group of writes a crash interrupted"
        );
    }
    Ok(db)
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
