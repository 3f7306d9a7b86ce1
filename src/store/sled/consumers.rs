//! The durable consumers in sled: tree `api.consumers`, name → the consumer's JSON document. Every change is made
//! durable (`flush()` + `fdatasync`) before it returns, so an acknowledged checkpoint survives a crash.

use std::fs::File;

use super::reserve::Room;
use super::{io, SLED_DIR};
use crate::store::{ConsumerStore, StoreError};

/// The consumers' tree, with what it needs to sync and to keep the disk reserve.
pub(super) struct ConsumerTree {
    db: sled::Db,
    tree: sled::Tree,
    /// Our own handle on `sled/db`, for `fdatasync`.
    data_file: File,
    room: Room,
}

impl ConsumerTree {
    pub(super) fn open(db: &sled::Db, room: Room) -> Result<ConsumerTree, StoreError> {
        let path = room.dir.join(SLED_DIR).join("db");
        Ok(ConsumerTree {
            db: db.clone(),
            tree: db.open_tree("api.consumers")?,
            data_file: File::open(&path).map_err(io(format!("cannot open {}", path.display())))?,
            room,
        })
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file
            .sync_data()
            .map_err(io("fdatasync of the database file failed"))
    }
}

impl ConsumerStore for ConsumerTree {
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(name.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Near a full disk it writes nothing: sled must never run out of space (docs/recovery.md).
    fn put(&self, name: &str, document: &[u8]) -> Result<(), StoreError> {
        self.room
            .check(64 * 1024)
            .map_err(|message| StoreError::WriteFailed { message })?;
        self.tree.insert(name.as_bytes(), document)?;
        self.sync()
    }

    fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let existed = self.tree.remove(name.as_bytes())?.is_some();
        if existed {
            self.sync()?;
        }
        Ok(existed)
    }

    fn all(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            out.push(item?.1.to_vec());
        }
        Ok(out)
    }
}
