//! The data folder around sled: `ledger.json` (marks the folder as a ledger, with its format version), `LOCK` (the
//! advisory lock a process holds while it has the ledger open, with its pid) and `HEAD` (a copy of the head outside
//! sled, which catches a sled that silently lost the end of its log).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use super::{io, SledStore};
use crate::domain::Position;
use crate::store::{Head, StoreError};

pub(super) const MARKER_FILE: &str = "ledger.json";
/// `ledger.json` is written here first, then renamed over it.
const MARKER_TMP: &str = "ledger.json.tmp";
const LOCK_FILE: &str = "LOCK";
pub(super) const HEAD_FILE: &str = "HEAD";
/// The HEAD file is overwritten in place with a record of this fixed length.
const HEAD_RECORD_LEN: usize = 96;

pub(super) fn is_empty_dir(dir: &Path) -> Result<bool, StoreError> {
    let mut entries =
        std::fs::read_dir(dir).map_err(io(format!("cannot read {}", dir.display())))?;
    Ok(entries.next().is_none())
}

/// Whether the folder holds nothing but what creating a ledger writes before `ledger.json`: its `LOCK`, and perhaps
/// the marker's temporary file (a ledger being created, or whose creator died before it wrote `ledger.json`).
pub(super) fn holds_only_lock(dir: &Path) -> Result<bool, StoreError> {
    let mut lock_seen = false;
    for entry in std::fs::read_dir(dir).map_err(io(format!("cannot read {}", dir.display())))? {
        let entry = entry.map_err(io(format!("cannot read {}", dir.display())))?;
        let name = entry.file_name();
        if name == LOCK_FILE {
            lock_seen = true;
        } else if name != MARKER_TMP {
            return Ok(false);
        }
    }
    Ok(lock_seen)
}

/// Takes the folder's lock as [`lock`] does, but waits (up to five seconds) while the holder is this very process: a
/// handle of it that is closing, or a child this process is starting, which holds a copy of every open file (the lock
/// included) from its fork until its exec.
pub(super) fn lock_for_self(dir: &Path) -> Result<File, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match lock(dir) {
            Err(StoreError::Locked { pid: Some(pid), .. })
                if pid == std::process::id() && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Takes the folder's lock, or says which process holds it.
pub(super) fn lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(format!("cannot open {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(io("cannot write the lock file"))?;
            file.rewind().map_err(io("cannot write the lock file"))?;
            writeln!(file, "{}", std::process::id()).map_err(io("cannot write the lock file"))?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Err(StoreError::Locked {
                path: dir.to_path_buf(),
                pid: text.trim().parse().ok(),
            })
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(io(format!("cannot lock {}", path.display()))(e))
        }
    }
}

/// Writes `ledger.json` with a format version, atomically (a temporary file renamed over it, both synced).
pub(super) fn write_marker(dir: &Path, version: u64) -> Result<(), StoreError> {
    let marker = dir.join(MARKER_FILE);
    let tmp = dir.join(MARKER_TMP);
    let text = format!(
        "{{\"format\":\"partner-ledger\",\"version\":{version},\"created_by\":\"{}\"}}\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut f = File::create(&tmp).map_err(io(format!("cannot write {}", tmp.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(format!("cannot write {}", tmp.display())))?;
    std::fs::rename(&tmp, &marker).map_err(io(format!("cannot write {}", marker.display())))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("cannot sync {}", dir.display())))
}

/// The format version `ledger.json` records (1 when it does not say).
pub(super) fn read_marker_version(marker: &Path) -> Result<u64, StoreError> {
    let text =
        std::fs::read_to_string(marker).map_err(io(format!("cannot read {}", marker.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        position: None,
        message: format!("{} is not JSON: {e}", marker.display()),
    })?;
    Ok(v.get("version")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1))
}

impl SledStore {
    /// Reads the `HEAD` file: `None` when it is empty or unreadable (a torn write after power loss).
    pub(super) fn read_head_file(&self) -> Option<Head> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; HEAD_RECORD_LEN];
        let n = self.head_file.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        let mut parts = text.split_whitespace();
        let position = Position(parts.next()?.parse().ok()?);
        let hash = parts.next()?.to_string();
        (hash.len() == 64).then_some(Head { position, hash })
    }

    /// Overwrites the `HEAD` file in place. It is not synced: it survives a killed process (the page cache outlives it),
    /// and after a power loss it may lag behind sled, which [`Self::check_head_file`] tolerates.
    pub(super) fn write_head_file(&self, head: &Head) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let mut record = format!("{} {}", head.position, head.hash).into_bytes();
        record.resize(HEAD_RECORD_LEN - 1, b' ');
        record.push(b'\n');
        self.head_file
            .write_all_at(&record, 0)
            .map_err(io("cannot write the HEAD file"))
    }

    /// sled recovers its log only up to the first damaged record and presents that prefix as the whole database, head
    /// marker included (seen here with one flipped byte). The `HEAD` file outside sled still records the real head, so
    /// a log shorter than it has lost events: refuse it and name the first missing position.
    pub(super) fn check_head_file(&self, head: &Head) -> Result<(), StoreError> {
        let Some(recorded) = self.read_head_file() else {
            return Ok(());
        };
        if recorded.position > head.position {
            return Err(StoreError::Corrupt {
                position: Some(head.position.next()),
                message: format!(
                    "the ledger had recorded {} events but the database now holds {}: events {} to {} are lost (the sled files are damaged; restore from a backup)",
                    recorded.position,
                    head.position,
                    head.position.next(),
                    recorded.position
                ),
            });
        }
        if recorded.position == head.position && recorded.hash != head.hash {
            return Err(StoreError::Corrupt {
                position: Some(head.position),
                message: format!(
                    "the head hash {} differs from the one recorded in HEAD ({})",
                    head.hash, recorded.hash
                ),
            });
        }
        Ok(())
    }
}

/// The command index file (`crate::store::journal::index_file`): `commands.idx` in the data folder, written to
/// `commands.idx.tmp` and renamed. It is a cache: it is not synced, since a torn or stale file fails its checks and the
/// journal is read instead.
pub(super) mod commands_file {
    use std::path::Path;

    use super::io;
    use crate::store::journal::{index_file, Entry};
    use crate::store::StoreError;

    const FILE: &str = "commands.idx";
    const TMP: &str = "commands.idx.tmp";

    /// The entries, if the file exists and covers the journal ending at record `last` with bytes `last_record`;
    /// `Err` says why a file that exists is not used.
    pub(in crate::store::sled) fn read(
        dir: &Path,
        last: u64,
        last_record: &[u8],
    ) -> Result<Option<Vec<Entry>>, String> {
        let f = match std::fs::File::open(dir.join(FILE)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("it cannot be opened: {e}")),
        };
        index_file::read(
            &mut std::io::BufReader::with_capacity(1 << 20, f),
            last,
            last_record,
        )
        .map(Some)
    }

    pub(in crate::store::sled) fn write(
        dir: &Path,
        last: u64,
        last_record: &[u8],
        entries: &[Entry],
    ) -> Result<(), StoreError> {
        let tmp = dir.join(TMP);
        let f =
            std::fs::File::create(&tmp).map_err(io(format!("cannot write {}", tmp.display())))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
        index_file::write(&mut out, last, last_record, entries)
            .and_then(|_| std::io::Write::flush(&mut out))
            .map_err(io(format!("cannot write {}", tmp.display())))?;
        std::fs::rename(&tmp, dir.join(FILE))
            .map_err(io(format!("cannot write {}", dir.join(FILE).display())))
    }
}

/// The write-model snapshot: the file `snapshot` in the data folder, replaced by writing `snapshot.tmp`, syncing it,
/// renaming it over the old one and syncing the folder, so a crash leaves the old snapshot or the new one.
pub(super) mod snapshot_file {
    use std::io::{Read, Write};
    use std::path::Path;

    use super::io;
    use crate::store::StoreError;

    /// The snapshot's file name in the data folder.
    pub const FILE: &str = "snapshot";

    const TMP: &str = "snapshot.tmp";

    fn read_up_to(dir: &Path, limit: Option<usize>) -> Result<Option<Vec<u8>>, StoreError> {
        let path = dir.join(FILE);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format!("cannot read {}", path.display()))(e)),
        };
        let mut bytes = Vec::new();
        let read = match limit {
            Some(n) => file.take(n as u64).read_to_end(&mut bytes),
            None => {
                let len = file.metadata().map_or(0, |m| m.len());
                bytes.reserve(usize::try_from(len).unwrap_or(0).min(1 << 30));
                { file }.read_to_end(&mut bytes)
            }
        };
        read.map_err(io(format!("cannot read {}", path.display())))?;
        Ok(Some(bytes))
    }

    pub(in crate::store::sled) fn read(dir: &Path) -> Result<Option<Vec<u8>>, StoreError> {
        read_up_to(dir, None)
    }

    pub(in crate::store::sled) fn header(
        dir: &Path,
        len: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        read_up_to(dir, Some(len))
    }

    pub(in crate::store::sled) fn size(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(FILE)).map_or(0, |m| m.len())
    }

    /// The snapshot as a buffered stream.
    pub(in crate::store::sled) fn reader(
        dir: &Path,
    ) -> Result<Option<Box<dyn Read + Send + 'static>>, StoreError> {
        let path = dir.join(FILE);
        match std::fs::File::open(&path) {
            Ok(f) => Ok(Some(Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                f,
            )))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("cannot read {}", path.display()))(e)),
        }
    }

    /// Writes what `fill` writes to `snapshot.tmp` through a buffer, syncs it and renames it over the snapshot.
    pub(in crate::store::sled) fn write(
        dir: &Path,
        fill: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let tmp = dir.join(TMP);
        let path = dir.join(FILE);
        let f =
            std::fs::File::create(&tmp).map_err(io(format!("cannot write {}", tmp.display())))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
        fill(&mut out)
            .and_then(|_| out.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_all())
            .map_err(io(format!("cannot write {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("cannot write {}", path.display())))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("cannot sync {}", dir.display())))
    }
}
