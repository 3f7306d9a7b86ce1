//! The command journal: which commands were committed, with their fingerprints and positions, for idempotency.
//!
//! Each durable batch writes its commands as one record (`j` ‖ sequence → a compact binary list) in the same sled
//! transaction as its events, so a committed command and its record are never apart after a crash. Committing costs
//! one sequential key per batch instead of one random key per command (see docs/performance.md).
//!
//! To answer "was this `command_id` committed?" without a sled read, memory holds an index from every command id to
//! the number of the journal record that holds it. For the commands found at open it keeps only the first 8 bytes of
//! each id, sorted, beside its record number: 12 bytes a command (120 MB at ten million). Two ids that share their
//! first 8 bytes (among ten million random ids, a chance of about one in three hundred thousand) both point at their
//! records, and a lookup reads each candidate record; the commands committed since open are in a hash map by their
//! whole id. Only a hit (a re-submission, which is rare) reads a record for the fingerprint and positions.
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

/// The first 8 bytes of a command id, which the index of the commands found at open keeps.
pub fn prefix(id: &[u8; 16]) -> u64 {
    u64::from_be_bytes([id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7]])
}

/// Which journal record holds each committed command.
#[derive(Default)]
pub struct Commands {
    inner: Mutex<Located>,
}

#[derive(Default)]
struct Located {
    /// Found at open: the first 8 bytes of each id, sorted.
    prefixes: Vec<u64>,
    /// The journal record of each of `prefixes`.
    records: Vec<u32>,
    /// Committed since.
    recent: HashMap<CommandId, u32>,
}

impl Commands {
    /// Builds the index of the commands found at open: ([`prefix`] of the command id, journal record number) in any
    /// order.
    pub fn load(&self, mut found: Vec<(u64, u32)>) {
        found.sort_unstable();
        found.dedup();
        let prefixes = found.iter().map(|(p, _)| *p).collect();
        let records = found.iter().map(|(_, r)| *r).collect();
        drop(found);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.prefixes = prefixes;
        inner.records = records;
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

    /// The numbers of the journal records that may hold `id`: none when it was never committed; otherwise its own
    /// record, and, rarely, the records of other commands whose ids begin with the same 8 bytes. A command committed
    /// since open is known by its whole id, and its record comes first.
    pub fn records_of(&self, id: CommandId) -> Vec<u32> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = prefix(id.as_bytes());
        let start = inner.prefixes.partition_point(|p| *p < key);
        let end = start + inner.prefixes[start..].partition_point(|p| *p == key);
        inner
            .recent
            .get(&id)
            .copied()
            .into_iter()
            .chain(inner.records[start..end].iter().copied())
            .collect()
    }

    /// How many commands are remembered.
    pub fn len(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.prefixes.len() + inner.recent.len()
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
            (prefix(id(9).as_bytes()), 3),
            (prefix(id(2).as_bytes()), 1),
            (prefix(id(5).as_bytes()), 2),
        ]);
        let committed = |n: u8| Committed {
            command_id: id(n),
            fingerprint: None,
            first: Position(1),
            count: 0,
        };
        m.add(4, &[committed(7)]);
        assert_eq!(m.records_of(id(2)), [1]);
        assert_eq!(m.records_of(id(9)), [3]);
        assert_eq!(m.records_of(id(7)), [4]);
        assert_eq!(m.records_of(id(8)), Vec::<u32>::new());
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn ids_that_share_their_first_8_bytes_point_at_every_record_that_may_hold_them() {
        let with_tail = |tail: u8| {
            let mut bytes = [7u8; 16];
            bytes[15] = tail;
            CommandId::new(uuid::Uuid::from_bytes(bytes)).unwrap()
        };
        let (a, b) = (with_tail(1), with_tail(2));
        let m = Commands::default();
        m.load(vec![
            (prefix(b.as_bytes()), 9),
            (prefix(a.as_bytes()), 4),
            (prefix(a.as_bytes()), 4),
        ]);
        assert_eq!(m.len(), 2, "the same entry twice is kept once");
        // Either id may be in either record: the store reads both, the earlier first, and finds the one that holds it.
        assert_eq!(m.records_of(a), [4, 9]);
        assert_eq!(m.records_of(b), [4, 9]);
        assert_eq!(m.records_of(with_tail(3)), [4, 9]);
        let mut other = [7u8; 16];
        other[7] = 8;
        assert!(m
            .records_of(CommandId::new(uuid::Uuid::from_bytes(other)).unwrap())
            .is_empty());
    }
}
