//! The store's high-water mark: proof, kept outside sled, of how far the store had
//! come, so an open that finds it rolled back refuses instead of serving less.
//!
//! sled treats damage in its log like a crash's torn tail: it truncates at the first
//! message that does not check out and opens with what came before, logging only a
//! warning ("removing N blobs that have a higher lsn than our stable log"). A flipped
//! byte could so drop a day of runs without an error. Every flush of the store is
//! therefore numbered: the number is written to the store (tree [`DURABLE`]) just
//! before the flush, and once the flush returned, to the file [`MARK_FILE`] beside
//! the database. sled's log is sequential, so a store that holds number `n` holds
//! everything flushed before it; a store that opens with a number below the file's
//! lost writes it had made durable, and [`check`] refuses it.
//!
//! The file is written after flushes, at most every [`MARK_EVERY`] (a `fdatasync`
//! each), and on close; after a SIGKILL it may lag the store by that much, never lead
//! it. It holds two slots, each with a checksum, written in turn, so a write torn by a
//! crash leaves the other. A file that is missing (a store made before the mark
//! existed) or whose slots are both damaged is written afresh from the store, with a
//! warning: it can only vouch from then on. This module must never raise the mark
//! past a number a returned flush made durable.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sled::layout::{DURABLE, DURABLE_FLUSHES};

/// The file beside the database that holds the high-water mark.
pub const MARK_FILE: &str = "high-water";
/// Longest the mark file lags the store while flushes come.
const MARK_EVERY: Duration = Duration::from_millis(50);
/// Bytes of one slot: the number (u64 LE), its checksum (u32 LE), a version byte.
const SLOT: usize = 16;
const MARK_VERSION: u8 = 1;

/// An open store found with fewer writes than it had made durable.
#[derive(Debug, thiserror::Error)]
#[error(
    "the store's files are damaged: it had made {reached} flushes durable but opened holding \
     only {kept}, so the storage engine dropped what it could not read (runs, records or \
     definitions written from the damaged place on would be missing); restore the data \
     directory from a backup, or run `sluice store repair --accept-loss` to go on with what \
     is left"
)]
pub struct RolledBack {
    /// The flush number the store holds.
    pub kept: u64,
    /// The flush number the mark file vouches for.
    pub reached: u64,
}

/// The store's flushes, numbered. Shared by everything that flushes the database.
pub(crate) struct Durable {
    dir: std::path::PathBuf,
    db: sled::Db,
    tree: sled::Tree,
    /// The last number written to the store; held while writing the next.
    next: Mutex<u64>,
    mark: Mutex<Mark>,
}

/// The mark file and what it holds.
struct Mark {
    file: Option<File>,
    /// Highest number a returned flush made durable.
    reached: u64,
    /// The number the file holds.
    written: u64,
    /// The slot the next write goes to.
    slot: u64,
    last_write: Option<Instant>,
}

impl Durable {
    /// Checks the store in `dir` (its database `db` opened and recovered) against its
    /// mark file, and starts numbering flushes from where the store is.
    pub(crate) fn check(dir: &Path, db: &sled::Db) -> Result<Self, CheckError> {
        let tree = db.open_tree(DURABLE)?;
        let kept = match tree.get(DURABLE_FLUSHES)? {
            Some(v) => decode(&v).ok_or(CheckError::Unreadable)?,
            None => 0,
        };
        let path = dir.join(MARK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let (reached, slot) = match read_mark(&file)? {
            MarkRead::Found { reached, slot } => (reached, slot),
            MarkRead::Empty => (0, 0),
            MarkRead::Damaged => {
                tracing::warn!(
                    file = %path.display(),
                    "the store's high-water mark is damaged: writing it afresh from the store, \
                     which it can vouch for only from now on"
                );
                (0, 0)
            }
        };
        if kept < reached {
            return Err(CheckError::RolledBack(RolledBack { kept, reached }));
        }
        let durable = Durable {
            dir: dir.to_path_buf(),
            db: db.clone(),
            tree,
            next: Mutex::new(kept),
            mark: Mutex::new(Mark {
                file: Some(file),
                reached: kept,
                written: reached,
                slot: slot + 1,
                last_write: None,
            }),
        };
        durable.write_mark(true)?;
        Ok(durable)
    }

    /// Flushes the database, numbering the flush first; returns sled's flushed bytes.
    pub(crate) fn flush(&self) -> sled::Result<usize> {
        let n = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            self.tree.insert(DURABLE_FLUSHES, &next.to_be_bytes())?;
            *next
        };
        let flushed = self.db.flush()?;
        {
            let mut mark = self.mark.lock().unwrap_or_else(|p| p.into_inner());
            mark.reached = mark.reached.max(n);
        }
        if let Err(e) = self.write_mark(false) {
            tracing::warn!(error = %e, "could not write the store's high-water mark");
        }
        Ok(flushed)
    }

    /// The store's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The error sled stopped at, if it did: after a failed write sled fails every
    /// write, which a write of the latest flush number (already stored) shows.
    pub(crate) fn failed(&self) -> Option<sled::Error> {
        let next = *self.next.lock().unwrap_or_else(|p| p.into_inner());
        self.tree.insert(DURABLE_FLUSHES, &next.to_be_bytes()).err()
    }

    /// Writes the mark file if it is behind, and `now` or [`MARK_EVERY`] after the
    /// last write.
    fn write_mark(&self, now: bool) -> std::io::Result<()> {
        let mut mark = self.mark.lock().unwrap_or_else(|p| p.into_inner());
        if mark.written == mark.reached && !now {
            return Ok(());
        }
        if !now && mark.last_write.is_some_and(|t| t.elapsed() < MARK_EVERY) {
            return Ok(());
        }
        let (reached, slot) = (mark.reached, mark.slot);
        let Some(file) = mark.file.as_ref() else {
            return Ok(());
        };
        file.write_all_at(&encode_slot(reached, slot), (slot % 2) * SLOT as u64)?;
        file.sync_data()?;
        mark.written = reached;
        mark.slot += 1;
        mark.last_write = Some(Instant::now());
        Ok(())
    }
}

impl Durable {
    /// Writes the last flush's number to the mark file now, not at the next write:
    /// the store is closing.
    pub(crate) fn write_mark_now(&self) {
        if let Err(e) = self.write_mark(true) {
            tracing::warn!(error = %e, "could not write the store's high-water mark");
        }
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        self.write_mark_now();
    }
}

/// Accepts what a damaged store in `dir` still holds: its mark file is set to the
/// store's own flush number, so the store opens again. Returns the flushes lost
/// (`None` if the store had lost none). The store must not be open elsewhere.
pub fn accept_loss(dir: &Path) -> Result<Option<RolledBack>, crate::StoreError> {
    let storage = |e: &dyn std::fmt::Display| crate::StoreError::Storage(e.to_string());
    super::open::remove_unfinished_snapshots(dir);
    let config = sled::Config::new().path(dir).flush_every_ms(None);
    let db = super::open::open_db(&config).map_err(|e| storage(&super::open::describe(&e)))?;
    match Durable::check(dir, &db) {
        Ok(_) => Ok(None),
        Err(CheckError::RolledBack(lost)) => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(dir.join(MARK_FILE))
                .map_err(|e| storage(&e))?;
            file.sync_all().map_err(|e| storage(&e))?;
            drop(file);
            Durable::check(dir, &db).map_err(|e| storage(&e))?;
            tracing::warn!(
                kept = lost.kept,
                reached = lost.reached,
                "accepted a store that lost flushes: its high-water mark now vouches for what it holds"
            );
            Ok(Some(lost))
        }
        Err(e) => Err(storage(&e)),
    }
}

/// Why checking the store against its mark failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    #[error(transparent)]
    RolledBack(RolledBack),
    #[error("{}", super::open::describe(.0))]
    Storage(#[from] sled::Error),
    #[error("the store's high-water mark file cannot be used: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store's flush number is damaged: the store's files are damaged")]
    Unreadable,
}

enum MarkRead {
    Found { reached: u64, slot: u64 },
    Empty,
    Damaged,
}

fn read_mark(file: &File) -> std::io::Result<MarkRead> {
    let mut buf = [0u8; 2 * SLOT];
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(MarkRead::Empty);
    }
    let n = usize::try_from(len).unwrap_or(buf.len()).min(buf.len());
    let Some(head) = buf.get_mut(..n) else {
        return Ok(MarkRead::Damaged);
    };
    file.read_exact_at(head, 0)?;
    let best = buf
        .chunks_exact(SLOT)
        .enumerate()
        .filter_map(|(i, s)| decode_slot(s, i as u64))
        .max_by_key(|(reached, _)| *reached);
    Ok(match best {
        Some((reached, slot)) => MarkRead::Found { reached, slot },
        None => MarkRead::Damaged,
    })
}

/// A slot: the number, a write counter whose parity is the slot's place, the version
/// and a checksum of all that.
fn encode_slot(reached: u64, slot: u64) -> [u8; SLOT] {
    let mut s = [0u8; SLOT];
    s[..8].copy_from_slice(&reached.to_le_bytes());
    // Low 3 bytes of the write counter; only its parity and order within a pair matter.
    s[8..11].copy_from_slice(&slot.to_le_bytes()[..3]);
    s[11] = MARK_VERSION;
    let sum = crc32fast::hash(&s[..12]);
    s[12..].copy_from_slice(&sum.to_le_bytes());
    s
}

fn decode_slot(s: &[u8], place: u64) -> Option<(u64, u64)> {
    let body = s.get(..12)?;
    let sum = u32::from_le_bytes(s.get(12..16)?.try_into().ok()?);
    if crc32fast::hash(body) != sum || body.get(11) != Some(&MARK_VERSION) {
        return None;
    }
    let reached = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let mut counter = [0u8; 8];
    counter[..3].copy_from_slice(body.get(8..11)?);
    let slot = u64::from_le_bytes(counter);
    (slot % 2 == place).then_some((reached, slot))
}

fn decode(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test")]
mod tests {
    use super::*;

    fn temp(line: u32) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-mark-{}-{line}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn open(dir: &Path) -> sled::Db {
        sled::Config::new().path(dir).open().unwrap()
    }

    #[test]
    fn a_store_that_lost_flushes_is_refused_and_one_that_kept_them_opens() {
        let dir = temp(line!());
        let db = open(&dir);
        let durable = Durable::check(&dir, &db).unwrap();
        for _ in 0..5 {
            durable.flush().unwrap();
        }
        drop(durable);
        // What a rollback looks like to the check: the store holds an earlier number.
        db.open_tree(DURABLE)
            .unwrap()
            .insert(DURABLE_FLUSHES, &3u64.to_be_bytes())
            .unwrap();
        let err = Durable::check(&dir, &db).err().unwrap();
        assert!(
            matches!(
                err,
                CheckError::RolledBack(RolledBack {
                    kept: 3,
                    reached: 5
                })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("damaged"), "{err}");
        drop(db);
        let lost = accept_loss(&dir).unwrap().unwrap();
        assert_eq!((lost.kept, lost.reached), (3, 5));
        assert!(accept_loss(&dir).unwrap().is_none());
        let db = open(&dir);
        db.open_tree(DURABLE)
            .unwrap()
            .insert(DURABLE_FLUSHES, &5u64.to_be_bytes())
            .unwrap();
        let durable = Durable::check(&dir, &db).unwrap();
        durable.flush().unwrap();
        drop(durable);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_slot_leaves_the_other_and_a_wholly_damaged_file_is_written_afresh() {
        let dir = temp(line!());
        let db = open(&dir);
        let durable = Durable::check(&dir, &db).unwrap();
        durable.flush().unwrap();
        durable.flush().unwrap();
        drop(durable);
        let path = dir.join(MARK_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let MarkRead::Found { reached, slot } = read_mark(&File::open(&path).unwrap()).unwrap()
        else {
            panic!("no mark")
        };
        assert_eq!(reached, 2);
        // Tear the newest slot: the other, one behind, still reads.
        let at = usize::try_from(slot % 2).unwrap() * SLOT;
        bytes[at] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let MarkRead::Found { reached, .. } = read_mark(&File::open(&path).unwrap()).unwrap()
        else {
            panic!("no mark")
        };
        assert!(reached < 2);
        std::fs::write(&path, [0xa5u8; 2 * SLOT]).unwrap();
        assert!(matches!(
            read_mark(&File::open(&path).unwrap()).unwrap(),
            MarkRead::Damaged
        ));
        Durable::check(&dir, &db).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
