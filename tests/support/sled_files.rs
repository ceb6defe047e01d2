//! Opening a store's sled database directly, to inspect or damage it between opens
//! (shared by the store's own tests and the end-to-end tests).

use std::time::{Duration, Instant};

/// `sled::open(path)`, retried for a while when the lock is still held: sled lets
/// go of a database's file lock only once its I/O threads finish, a moment after
/// the log or hub that owned it was dropped.
pub fn open_sled(path: &std::path::Path) -> sled::Db {
    let started = Instant::now();
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                let busy = matches!(&e, sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock"));
                assert!(busy, "cannot open {}: {e}", path.display());
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{} is still locked: {e}", path.display()),
        }
    }
}
