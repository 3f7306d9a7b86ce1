//! Write-model snapshots: the folded state at a position, so that opening a large ledger replays only the events after
//! it instead of the whole log.
//!
//! A snapshot is a cache, never a source of truth. It is used only when it proves it belongs to this log: the file
//! names the position it reflects and the hash of the event there, and carries a SHA-256 of its own payload. At open
//! both are checked against the log (the event at that position must have exactly that hash, which by the chain pins
//! every event before it); anything else — a missing, damaged, foreign or older-format file — is ignored with a warning
//! and the log is replayed from the start.
//!
//! File `snapshot` in the data folder: the 8 bytes `PLSNAP01` (format 1), the position (8, big-endian), the hash of the
//! event at that position (64 hex characters), the SHA-256 of the payload (32), the payload's length (8, big-endian),
//! then the payload: the [`State`] in postcard's binary encoding. It is written to `snapshot.tmp`, synced and renamed
//! over the old one, so a crash never leaves a half-written snapshot under the real name.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::domain::{Position, State};
use crate::store::{EventStore, StoreError};

/// The snapshot's file name in the data folder.
pub const FILE: &str = "snapshot";
const MAGIC: &[u8; 8] = b"PLSNAP02";
const HEADER_LEN: usize = 8 + 8 + 64 + 32 + 8;

fn io(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { context, source }
}

/// Writes a snapshot of `state`, which reflects the log up to `position` whose event has `hash`. Returns its size.
pub fn write(dir: &Path, state: &State, position: Position, hash: &str) -> Result<u64, StoreError> {
    let payload = postcard::to_allocvec(state).map_err(|e| StoreError::Codec {
        position,
        message: format!("the write model does not serialize: {e}"),
    })?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&position.to_key());
    header.extend_from_slice(hash.as_bytes());
    header.extend_from_slice(&Sha256::digest(&payload));
    header.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    let tmp = dir.join("snapshot.tmp");
    let path = dir.join(FILE);
    let mut f = File::create(&tmp).map_err(io(format!("cannot write {}", tmp.display())))?;
    f.write_all(&header)
        .and_then(|_| f.write_all(&payload))
        .and_then(|_| f.sync_all())
        .map_err(io(format!("cannot write {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(io(format!("cannot write {}", path.display())))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("cannot sync {}", dir.display())))?;
    Ok((header.len() + payload.len()) as u64)
}

/// The position the snapshot in `dir` reflects, read from its header only (none without a readable snapshot).
pub fn covered(dir: &Path) -> Option<Position> {
    use std::io::Read;
    let mut header = [0u8; 16];
    File::open(dir.join(FILE))
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    (&header[..8] == MAGIC)
        .then(|| Position::from_key(&header[8..16]))
        .flatten()
}

/// Why a snapshot was not used.
#[derive(Debug)]
pub enum Unusable {
    /// There is none.
    Missing,
    /// It exists but cannot be trusted or read; the reason says why.
    Rejected(String),
}

/// Loads the snapshot if it belongs to `store`'s log: returns the state and the position it reflects.
pub fn load(dir: &Path, store: &dyn EventStore) -> Result<(State, Position), Unusable> {
    use std::io::Read;
    let path = dir.join(FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) => return Err(Unusable::Rejected(format!("cannot read it: {e}"))),
    };
    let reject = |why: &str| Unusable::Rejected(why.to_string());
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; HEADER_LEN];
    reader
        .read_exact(&mut header)
        .map_err(|_| reject("it is not a snapshot of this format"))?;
    if &header[..8] != MAGIC {
        return Err(reject("it is not a snapshot of this format"));
    }
    let position = Position::from_key(&header[8..16]).unwrap_or_default();
    let hash = std::str::from_utf8(&header[16..80]).map_err(|_| reject("its hash is not text"))?;
    let digest: [u8; 32] = header[80..112].try_into().unwrap_or_default();
    let len = u64::from_be_bytes(header[112..120].try_into().unwrap_or_default());
    match store.get(position) {
        Ok(Some(event)) => match event.envelope() {
            Ok(env) if env.hash == hash => {}
            Ok(_) => {
                return Err(Unusable::Rejected(format!(
                    "the log's event {position} has another hash: it was taken of a different log"
                )))
            }
            Err(e) => {
                return Err(Unusable::Rejected(format!(
                    "event {position} does not decode: {e}"
                )))
            }
        },
        Ok(None) => {
            return Err(Unusable::Rejected(format!(
                "it reflects position {position}, beyond the log's head"
            )))
        }
        Err(e) => {
            return Err(Unusable::Rejected(format!(
                "event {position} cannot be read: {e}"
            )))
        }
    }
    // Read whole: decoding from memory is several times faster than through a reader (measured on a 1M-event
    // ledger's 82 MB snapshot), and the bytes are dropped before the state is cloned for the live model.
    let mut payload = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(1 << 30));
    reader
        .take(len)
        .read_to_end(&mut payload)
        .map_err(|e| Unusable::Rejected(format!("cannot read it: {e}")))?;
    if payload.len() as u64 != len {
        return Err(reject("it is truncated"));
    }
    if Sha256::digest(&payload).as_slice() != digest {
        return Err(reject("its content does not match its checksum"));
    }
    let state: State = postcard::from_bytes(&payload)
        .map_err(|e| Unusable::Rejected(format!("it does not decode: {e}")))?;
    Ok((state, position))
}
