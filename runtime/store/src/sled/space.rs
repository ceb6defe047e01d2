//! The free space the store keeps in reserve on its disk.
//!
//! sled stops for good at its first failed write: every later write and flush fails
//! (or a flush never returns), and only opening the store again recovers it. So the
//! committer asks, before it writes a group, whether the disk still has the reserve
//! free; if not, the group is refused with [`LogError::NoSpace`] and sled never
//! meets a full disk of the store's own making or of a slowly filling neighbour. The
//! same append succeeds once space is freed. The reserve is a tenth of the disk at
//! most, so a small disk can still be used.
//!
//! It must never refuse on a disk it cannot measure: then sled's own error decides.

use std::path::{Path, PathBuf};

use crate::log::LogError;

/// The free space the store's writes leave on its disk.
#[derive(Clone, Debug)]
pub(crate) struct FreeSpace {
    dir: PathBuf,
    reserve: u64,
    /// Free space below which opening the store again would fail as it did.
    reopen: u64,
}

/// Free space a stopped store waits for before it is opened again, even with no
/// reserve (a tenth of the disk at most): opening writes.
const REOPEN_ROOM: u64 = 32 * 1024 * 1024;

impl FreeSpace {
    /// The reserve on the disk holding `dir`: `reserve` bytes, or a tenth of the disk
    /// if that is less.
    pub(crate) fn new(dir: &Path, reserve: u64) -> Self {
        let tenth = fs2::total_space(dir).map_or(u64::MAX, |total| total / 10);
        let reserve = reserve.min(tenth);
        FreeSpace {
            dir: dir.to_path_buf(),
            reserve,
            reopen: reserve.max(REOPEN_ROOM.min(tenth)),
        }
    }

    /// Whether a store that stopped for want of space has room to be opened again.
    pub(crate) fn room_to_reopen(&self) -> bool {
        fs2::available_space(&self.dir).is_ok_and(|available| available >= self.reopen)
    }

    /// Refuses when less than the reserve is free.
    pub(crate) fn check(&self) -> Result<(), LogError> {
        match fs2::available_space(&self.dir) {
            Ok(available) if available < self.reserve => Err(LogError::NoSpace {
                path: self.dir.display().to_string(),
                available,
                reserve: self.reserve,
            }),
            _ => Ok(()),
        }
    }
}

/// Whether a storage error is the disk being full.
pub(crate) fn is_no_space(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.raw_os_error() == Some(ENOSPC)
        || io.kind() == std::io::ErrorKind::StorageFull
        || io.to_string().contains("No space left"))
}

/// The OS error of a full disk (Linux and macOS).
pub(crate) const ENOSPC: i32 = 28;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_a_tenth_of_a_small_disk_at_most_and_refuses_past_it() {
        let dir = std::env::temp_dir();
        let total = fs2::total_space(&dir).unwrap_or(0);
        let space = FreeSpace::new(&dir, u64::MAX);
        assert_eq!(space.reserve, total / 10);
        let all = FreeSpace {
            dir: dir.clone(),
            reserve: u64::MAX,
            reopen: u64::MAX,
        };
        assert!(!all.room_to_reopen());
        assert!(matches!(all.check(), Err(LogError::NoSpace { .. })));
        assert!(FreeSpace::new(&dir, 0).check().is_ok());
        let full = sled::Error::Io(std::io::Error::from_raw_os_error(ENOSPC));
        assert!(is_no_space(&full));
    }
}
