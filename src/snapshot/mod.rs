//! Write-model snapshots: the folded state at a position, so that opening a large ledger replays only the events after
//! it instead of the whole log.
//!
//! A snapshot is a cache, never a source of truth. It is used only when it proves it belongs to this log: the file
//! names the position it reflects and the hash of the event there, and carries a SHA-256 of its own payload. At open
//! both are checked against the log (the event at that position must have exactly that hash, which by the chain pins
//! every event before it); anything else — a missing, damaged, foreign or older-format file — is ignored with a warning
//! and the log is replayed from the start.
//!
//! Where it is kept is the store's business (sled: the file `snapshot` in the data folder, written to
//! `snapshot.tmp`, synced and renamed over the old one, so a crash never leaves a half-written snapshot under the real
//! name). Its bytes: the 8 bytes `PLSNAP02` (format 2), the position (8, big-endian), the hash of the
//! event at that position (64 hex characters), the SHA-256 of the payload (32), the payload's length (8, big-endian),
//! then the payload: the [`State`] in postcard's binary encoding.

use sha2::{Digest, Sha256};

use crate::domain::{Position, State};
use crate::store::{EventStore, Store, StoreError};

/// The snapshot's file name in a sled data folder.
pub const FILE: &str = crate::store::SNAPSHOT_FILE;
const MAGIC: &[u8; 8] = b"PLSNAP02";
const HEADER_LEN: usize = 8 + 8 + 64 + 32 + 8;

/// The snapshot of `state`, which reflects the log up to `position` whose event has `hash`, as bytes.
pub fn encode(state: &State, position: Position, hash: &str) -> Result<Vec<u8>, StoreError> {
    let payload = postcard::to_allocvec(state).map_err(|e| StoreError::Codec {
        position,
        message: format!("the write model does not serialize: {e}"),
    })?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&position.to_key());
    bytes.extend_from_slice(hash.as_bytes());
    bytes.extend_from_slice(&Sha256::digest(&payload));
    bytes.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// Writes a snapshot of `state` where `store` keeps it. Returns its size.
pub fn write(
    store: &dyn Store,
    state: &State,
    position: Position,
    hash: &str,
) -> Result<u64, StoreError> {
    let bytes = encode(state, position, hash)?;
    store.write_snapshot(&bytes)?;
    Ok(bytes.len() as u64)
}

/// The position the snapshot kept by `store` reflects, read from its header only (none without a readable snapshot).
pub fn covered(store: &dyn Store) -> Option<Position> {
    let header = store.snapshot_header(16).ok()??;
    (header.get(..8)? == MAGIC)
        .then(|| Position::from_key(header.get(8..16)?))
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
pub fn load(store: &dyn Store) -> Result<(State, Position), Unusable> {
    let bytes = match store.read_snapshot() {
        Ok(Some(b)) => b,
        Ok(None) => return Err(Unusable::Missing),
        Err(e) => return Err(Unusable::Rejected(format!("cannot read it: {e}"))),
    };
    decode(&bytes, store)
}

/// The state in snapshot bytes, if they belong to `store`'s log.
pub fn decode(bytes: &[u8], store: &dyn EventStore) -> Result<(State, Position), Unusable> {
    let reject = |why: &str| Unusable::Rejected(why.to_string());
    let Some((header, payload)) = bytes.split_at_checked(HEADER_LEN) else {
        return Err(reject("it is not a snapshot of this format"));
    };
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
    if payload.len() as u64 != len {
        return Err(reject("it is truncated"));
    }
    if Sha256::digest(payload).as_slice() != digest {
        return Err(reject("its content does not match its checksum"));
    }
    let state: State = postcard::from_bytes(payload)
        .map_err(|e| Unusable::Rejected(format!("it does not decode: {e}")))?;
    Ok((state, position))
}
