//! Opening the sled database, waiting out a lock this process is still releasing.
//!
//! sled releases a database's file lock only when its last internal handle goes,
//! which may be a moment after the owner dropped it (its I/O threads finish their
//! work first). Reopening in the same process right away then fails with
//! `WouldBlock` ("could not acquire lock"). Opening retries that case for a bounded time; any other error, or a
//! lock still held after it (another process uses the store), is returned as is.
//!
//! A process killed while sled writes a snapshot leaves `snap.<lsn>.generating`
//! behind, possibly empty. sled 0.34 counts it among the snapshots, picks it as the
//! newest by name and refuses to open ("read corrupted data") forever after. A
//! snapshot is only complete once renamed, so opening removes such files first —
//! only when no other process holds the store, whose snapshot it could be.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::durable::Durable;

/// How long an open waits for a lock being released.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const RETRY_EVERY: Duration = Duration::from_millis(20);

fn is_lock_busy(e: &sled::Error) -> bool {
    // sled reports it as an I/O error of its own wording, the OS error inside.
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("could not acquire lock"))
}

/// Opens the store's database in `path` with a page cache of `cache_bytes`, flushed
/// only when asked (every durable write flushes, through the returned [`Durable`]),
/// completes the group of writes a crash left half applied, before anything reads
/// it, and refuses a store that lost flushes it had made durable.
pub(crate) fn open_store_db(
    path: &std::path::Path,
    cache_bytes: u64,
) -> Result<(sled::Db, Arc<Durable>), OpenError> {
    remove_unfinished_snapshots(path);
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
    let durable = Durable::check(path, &db)?;
    Ok((db, Arc::new(durable)))
}

/// Why a store did not open.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error(transparent)]
    Recover(#[from] super::staged::RecoverError),
    #[error(transparent)]
    Check(#[from] super::durable::CheckError),
}

impl From<sled::Error> for OpenError {
    fn from(e: sled::Error) -> Self {
        OpenError::Recover(e.into())
    }
}

/// Where sled writes a snapshot before renaming it complete.
const UNFINISHED_SNAPSHOT: &str = ".generating";

/// Removes the snapshots a killed process left half written in the store at `path`,
/// unless another process holds the store.
pub(crate) fn remove_unfinished_snapshots(path: &std::path::Path) {
    use fs2::FileExt;
    // sled's own lock: held, the store is in use and its snapshot may be in progress.
    let Ok(db_file) = std::fs::OpenOptions::new().read(true).open(path.join("db")) else {
        return;
    };
    if db_file.try_lock_exclusive().is_err() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(UNFINISHED_SNAPSHOT) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::warn!(
                    file = %name,
                    "removed a snapshot a killed process left half written"
                ),
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "could not remove a half-written snapshot")
                }
            }
        }
    }
    // Dropping the file releases the lock for sled to take.
    drop(db_file);
}

/// What went wrong opening or reading the store, said so an operator knows what to
/// do: another process, a full disk and damaged files each need something else.
pub(crate) fn describe(e: &sled::Error) -> String {
    match e {
        sled::Error::Io(io) if is_lock_busy(e) => format!(
            "another process holds the store (its lock is taken: is another sluice process \
             using this data directory?): {io}"
        ),
        sled::Error::Io(io) if super::space::is_no_space(e) => format!(
            "no space left on the device holding the store: free some and start again ({io})"
        ),
        sled::Error::Corruption { .. } => "the store's files are damaged (the storage engine \
             found data it cannot read): restore the data directory from a backup"
            .to_owned(),
        // A damaged `conf` file reads as one of an old version; a damaged log can make
        // sled fail (see `open_db`).
        sled::Error::Unsupported(why) | sled::Error::ReportableBug(why) => format!(
            "the store's files are damaged or were not written by this storage engine \
             ({why}): restore the data directory from a backup"
        ),
        other => format!("storage: {other}"),
    }
}

/// `config.open()`, retried while the lock is busy, up to [`LOCK_WAIT`].
pub(crate) fn open_db(config: &sled::Config) -> sled::Result<sled::Db> {
    let started = Instant::now();
    loop {
        // sled 0.34 panics on some damage to its log ("tried to serialize
        // Uninitialized"): that is a damaged store to report, not a crash.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .unwrap_or_else(|panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(sled::Error::ReportableBug(format!(
                    "it failed reading them: {why}"
                )))
            });
        match opened {
            Err(e) if is_lock_busy(&e) && started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(RETRY_EVERY);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_error_says_what_to_do() {
        let busy = sled::Error::Io(std::io::Error::other(
            "could not acquire lock on \"db\": Os { code: 11, kind: WouldBlock }",
        ));
        assert!(describe(&busy).contains("another process holds the store"));
        let full = sled::Error::Io(std::io::Error::from_raw_os_error(
            super::super::space::ENOSPC,
        ));
        assert!(
            describe(&full).contains("no space left"),
            "{}",
            describe(&full)
        );
        let damaged = sled::Error::Corruption { at: None, bt: () };
        assert!(describe(&damaged).contains("damaged"));
        let conf = sled::Error::Unsupported("created using a sled version earlier".into());
        assert!(describe(&conf).contains("damaged"));
    }

    #[test]
    #[allow(clippy::unwrap_used, reason = "a test")]
    fn a_snapshot_left_half_written_by_a_kill_does_not_brick_the_store() {
        let dir =
            std::env::temp_dir().join(format!("sluice-open-{}-{}", std::process::id(), line!()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let (db, durable) = open_store_db(&dir, 1 << 20).unwrap();
            db.insert(b"kept", b"value").unwrap();
            durable.flush().unwrap();
        }
        // What a SIGKILL during sled's snapshot leaves: the file created, nothing
        // written; its name sorts after every finished snapshot.
        let unfinished = dir.join(format!("snap.{:016X}{UNFINISHED_SNAPSHOT}", u64::MAX));
        std::fs::write(&unfinished, b"").unwrap();
        let (db, _durable) = open_store_db(&dir, 1 << 20).unwrap();
        assert_eq!(db.get(b"kept").unwrap().as_deref(), Some(&b"value"[..]));
        assert!(!unfinished.exists());
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
