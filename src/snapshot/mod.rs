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
//! name). It is written and read as a stream, never whole in memory.
//!
//! Its bytes (format 3): the 8 bytes `PLSNAP03`, the position (8, big-endian), the hash of the event at that position
//! (64 hex characters), then the state as frames ending with the SHA-256 of them all (`frames.rs`). Format 2 (`PLSNAP02`:
//! the same header, the SHA-256 of the payload (32), its length (8, big-endian), then the whole [`State`] in postcard's
//! encoding) is still read.

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::domain::{Position, State};
use crate::store::{EventStore, Store, StoreError};

mod frames;

/// The snapshot's file name in a sled data folder.
pub const FILE: &str = crate::store::SNAPSHOT_FILE;
const MAGIC: &[u8; 8] = b"PLSNAP03";
const MAGIC_V2: &[u8; 8] = b"PLSNAP02";
/// Format 2's header after the magic, position and hash: the payload's SHA-256 and length.
const V2_TAIL_LEN: usize = 32 + 8;

/// How many threads decode a snapshot, and build its tables.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
}

/// Writes the snapshot of `state`, which reflects the log up to `position` whose event has `hash`, to `out`.
pub fn encode_to(
    out: &mut dyn std::io::Write,
    state: &State,
    position: Position,
    hash: &str,
) -> std::io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&position.to_key())?;
    out.write_all(hash.as_bytes())?;
    frames::write(out, state)
}

/// Writes a snapshot of `state` where `store` keeps it, as a stream. Returns its size.
pub fn write(
    store: &dyn Store,
    state: &State,
    position: Position,
    hash: &str,
) -> Result<u64, StoreError> {
    store.write_snapshot_with(&mut |out| encode_to(out, state, position, hash))?;
    Ok(store.snapshot_size())
}

/// The position the snapshot kept by `store` reflects, read from its header only (none without a readable snapshot).
pub fn covered(store: &dyn Store) -> Option<Position> {
    let header = store.snapshot_header(16).ok()??;
    (header.get(..8)? == MAGIC || header.get(..8)? == MAGIC_V2)
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
    match store.snapshot_reader() {
        Ok(Some(mut input)) => decode_from(&mut *input, store),
        Ok(None) => Err(Unusable::Missing),
        Err(e) => Err(Unusable::Rejected(format!("cannot read it: {e}"))),
    }
}

/// The state in the snapshot `input` streams, if it belongs to `store`'s log.
pub fn decode_from(
    input: &mut dyn Read,
    store: &dyn EventStore,
) -> Result<(State, Position), Unusable> {
    let reject = |why: &str| Unusable::Rejected(why.to_string());
    let mut header = [0u8; 8 + 8 + 64];
    if input.read_exact(&mut header).is_err() {
        return Err(reject("it is not a snapshot of this format"));
    }
    let magic = &header[..8];
    if magic != MAGIC && magic != MAGIC_V2 {
        return Err(reject("it is not a snapshot of this format"));
    }
    let position = Position::from_key(&header[8..16]).unwrap_or_default();
    let hash = std::str::from_utf8(&header[16..80]).map_err(|_| reject("its hash is not text"))?;
    let mismatch = match store.get(position) {
        Ok(Some(event)) => match event.envelope() {
            Ok(env) if env.hash == hash => None,
            Ok(_) => Some(format!(
                "the log's event {position} has another hash: it was taken of a different log"
            )),
            Err(e) => Some(format!("event {position} does not decode: {e}")),
        },
        Ok(None) => Some(format!(
            "it reflects position {position}, beyond the log's head"
        )),
        Err(e) => Some(format!("event {position} cannot be read: {e}")),
    };
    if let Some(why) = mismatch {
        return Err(Unusable::Rejected(why));
    }
    if magic == MAGIC {
        let state = frames::read(input, threads()).map_err(Unusable::Rejected)?;
        return Ok((state, position));
    }
    let mut tail = [0u8; V2_TAIL_LEN];
    input
        .read_exact(&mut tail)
        .map_err(|_| reject("it is truncated"))?;
    let digest: [u8; 32] = tail[..32].try_into().unwrap_or_default();
    let len = u64::from_be_bytes(tail[32..].try_into().unwrap_or_default());
    let mut payload = Vec::new();
    input
        .take(len.saturating_add(1))
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
