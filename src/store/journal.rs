//! The command journal: which commands were committed, with their fingerprints and positions, for idempotency.
//!
//! Each durable batch writes its commands as one record (`j` ‖ sequence → a compact binary list) in the same sled
//! transaction as its events, so a committed command and its record are never apart after a crash. Committing costs
//! one sequential key per batch instead of one random key per command (see docs/performance.md).
//!
//! To answer "was this `command_id` committed?" without a sled read, memory holds an index from every command id to
//! the number of the journal record that holds it: 20 bytes a command, in a sorted array for the commands found at
//! open and a hash map for those committed since. Only a hit (a re-submission, which is rare) reads that record for
//! the fingerprint and positions.
//!
//! Record layout: the byte `1` (format), then per command 45 bytes: command id (16), a flag byte (1: a fingerprint
//! follows, 0: none, as for imported commands), the fingerprint (16), the first position (8, big-endian) and the
//! number of events (4, big-endian). A command's events are always contiguous.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{CommandRecord, Fingerprint, StoreError};
use crate::domain::{CommandId, Position};

/// The prefix of journal keys in the `aux` tree.
pub const PREFIX: u8 = b'j';
const FORMAT: u8 = 1;
const ENTRY_LEN: usize = 45;
/// The most commands one record holds, so a record stays far below sled's ~128 KiB blob threshold (STORAGE.md).
pub const MAX_PER_RECORD: usize = 1024;

/// The record of `id` among the commands of one journal record.
pub fn find(record: &[Committed], id: CommandId) -> Option<Committed> {
    record.iter().find(|c| c.command_id == id).copied()
}

/// One committed command, as the journal keeps it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Committed {
    pub command_id: CommandId,
    pub fingerprint: Option<Fingerprint>,
    /// The first position it appended (for a command without events: the head when it committed).
    pub first: Position,
    pub count: u32,
}

impl Committed {
    /// The store's view of it.
    pub fn record(&self) -> CommandRecord {
        CommandRecord {
            fingerprint: self.fingerprint,
            positions: (0..u64::from(self.count))
                .map(|i| Position(self.first.0 + i))
                .collect(),
        }
    }
}

/// The key of journal record `seq`.
pub fn key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = PREFIX;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The sequence number of a journal key.
pub fn seq_of(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    (key.first() == Some(&PREFIX) && key.len() == 9).then(|| u64::from_be_bytes(bytes))
}

/// Encodes commands as one record.
pub fn encode(commands: &[Committed]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + commands.len() * ENTRY_LEN);
    v.push(FORMAT);
    for c in commands {
        v.extend_from_slice(c.command_id.as_bytes());
        match c.fingerprint {
            Some(f) => {
                v.push(1);
                v.extend_from_slice(&f);
            }
            None => {
                v.push(0);
                v.extend_from_slice(&[0; 16]);
            }
        }
        v.extend_from_slice(&c.first.0.to_be_bytes());
        v.extend_from_slice(&c.count.to_be_bytes());
    }
    v
}

/// Decodes a record.
pub fn decode(bytes: &[u8]) -> Result<Vec<Committed>, StoreError> {
    let corrupt = |message: &str| StoreError::Corrupt {
        position: None,
        message: format!("a command journal record {message}"),
    };
    let (format, rest) = bytes.split_first().ok_or_else(|| corrupt("is empty"))?;
    if *format != FORMAT {
        return Err(corrupt(&format!("has unknown format {format}")));
    }
    if rest.len() % ENTRY_LEN != 0 {
        return Err(corrupt("is truncated"));
    }
    rest.chunks_exact(ENTRY_LEN)
        .map(|e| {
            let id: [u8; 16] = e[0..16].try_into().unwrap_or_default();
            let command_id = CommandId::new(uuid::Uuid::from_bytes(id))
                .map_err(|_| corrupt("holds a nil command id"))?;
            let fingerprint = match e[16] {
                0 => None,
                1 => Some(e[17..33].try_into().unwrap_or_default()),
                _ => return Err(corrupt("holds a bad flag")),
            };
            let first = u64::from_be_bytes(e[33..41].try_into().unwrap_or_default());
            let count = u32::from_be_bytes(e[41..45].try_into().unwrap_or_default());
            Ok(Committed {
                command_id,
                fingerprint,
                first: Position(first),
                count,
            })
        })
        .collect()
}

/// Journal entries without fingerprints for events restored from an export that carried no journal: each run of
/// consecutive events with one command id is one command.
pub fn group(events: impl Iterator<Item = (Position, CommandId)>) -> Vec<Committed> {
    let mut out: Vec<Committed> = Vec::new();
    for (position, command_id) in events {
        match out.last_mut() {
            Some(c) if c.command_id == command_id => c.count += 1,
            _ => out.push(Committed {
                command_id,
                fingerprint: None,
                first: position,
                count: 1,
            }),
        }
    }
    out
}

/// Which journal record holds each committed command.
#[derive(Default)]
pub struct Commands {
    inner: Mutex<Located>,
}

#[derive(Default)]
struct Located {
    /// Found at open, sorted by id.
    sorted: Vec<([u8; 16], u32)>,
    /// Committed since.
    recent: HashMap<CommandId, u32>,
}

impl Commands {
    /// Builds the index of the commands found at open: (command id, journal record number) in any order.
    pub fn load(&self, mut found: Vec<([u8; 16], u32)>) {
        found.sort_unstable();
        // A command appears once; should a damaged or imported journal repeat one, its first record wins.
        found.dedup_by_key(|(id, _)| *id);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.sorted = found;
        inner.recent.clear();
    }

    /// Remembers commands just committed in journal record `seq`.
    pub fn add(&self, seq: u32, commands: &[Committed]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.recent.reserve(commands.len());
        for c in commands {
            inner.recent.entry(c.command_id).or_insert(seq);
        }
    }

    /// Remembers commands another process committed (PostgreSQL followers), by their raw ids.
    pub fn add_keys(&self, ids: impl Iterator<Item = [u8; 16]>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            if let Ok(id) = CommandId::new(uuid::Uuid::from_bytes(id)) {
                inner.recent.entry(id).or_insert(0);
            }
        }
    }

    /// The number of the journal record holding `id`, if it was committed.
    pub fn record_of(&self, id: CommandId) -> Option<u32> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seq) = inner.recent.get(&id) {
            return Some(*seq);
        }
        inner
            .sorted
            .binary_search_by(|(k, _)| k.cmp(id.as_bytes()))
            .ok()
            .map(|i| inner.sorted[i].1)
    }

    /// How many commands are remembered.
    pub fn len(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.sorted.len() + inner.recent.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_named() {
        let c = |n: u8, fp: Option<Fingerprint>, first: u64, count: u32| Committed {
            command_id: CommandId::new(uuid::Uuid::from_bytes([n; 16])).unwrap(),
            fingerprint: fp,
            first: Position(first),
            count,
        };
        let commands = vec![
            c(1, Some([7; 16]), 1, 2),
            c(2, None, 3, 0),
            c(3, Some([9; 16]), 3, 1),
        ];
        let bytes = encode(&commands);
        assert_eq!(bytes.len(), 1 + 3 * ENTRY_LEN);
        assert_eq!(decode(&bytes).unwrap(), commands);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&[]).is_err());
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(decode(&other).is_err());
        assert_eq!(seq_of(&key(42)), Some(42));
        assert_eq!(seq_of(b"head"), None);
    }

    #[test]
    fn the_index_finds_commands_loaded_at_open_and_committed_since() {
        let id = |n: u8| CommandId::new(uuid::Uuid::from_bytes([n; 16])).unwrap();
        let m = Commands::default();
        m.load(vec![
            (*id(9).as_bytes(), 3),
            (*id(2).as_bytes(), 1),
            (*id(5).as_bytes(), 2),
        ]);
        let committed = |n: u8| Committed {
            command_id: id(n),
            fingerprint: None,
            first: Position(1),
            count: 0,
        };
        m.add(4, &[committed(7)]);
        assert_eq!(m.record_of(id(2)), Some(1));
        assert_eq!(m.record_of(id(9)), Some(3));
        assert_eq!(m.record_of(id(7)), Some(4));
        assert_eq!(m.record_of(id(8)), None);
        assert_eq!(m.len(), 4);
    }
}
