//! The disk reserve: sled cannot recover files it failed to write for want of space (docs/recovery.md), so every
//! writer asks before writing, the background ones included, and nothing is written into the last
//! `min_free_bytes` of the disk.

use std::path::PathBuf;

/// The free space the ledger keeps on its disk (see [`StoreOptions::min_free_bytes`]): every writer asks it before
/// writing, the background ones included, because sled cannot recover files it failed to write for want of space.
#[derive(Clone, Debug)]
pub struct Room {
    pub(super) dir: PathBuf,
    pub(super) min_free_bytes: u64,
}

impl Room {
    /// `Err` (saying how much is free) when writing `bytes` would eat into the reserve. A disk whose free space cannot
    /// be read is assumed to have room.
    pub fn check(&self, bytes: u64) -> Result<(), String> {
        match fs4::available_space(&self.dir) {
            Ok(free) if free < self.min_free_bytes.saturating_add(bytes) => Err(format!(
                "the disk holding {} has {} MiB free, less than the {} MiB the ledger keeps in reserve plus this write; free some space, then retry",
                self.dir.display(),
                free / (1024 * 1024),
                self.min_free_bytes / (1024 * 1024)
            )),
            _ => Ok(()),
        }
    }
}
