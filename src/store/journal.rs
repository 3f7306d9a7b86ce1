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

/// One entry of the index of the commands found at open: the first 8 bytes of a command id, then the number of its
/// journal record (both big-endian), so that entries sort by id prefix.
pub type Entry = [u8; 12];

/// The index entry of command `id` in journal record `record`.
pub fn entry(id: &[u8; 16], record: u32) -> Entry {
    let mut e = [0u8; 12];
    e[..8].copy_from_slice(&id[..8]);
    e[8..].copy_from_slice(&record.to_be_bytes());
    e
}

fn record_in(e: &Entry) -> u32 {
    u32::from_be_bytes([e[8], e[9], e[10], e[11]])
}

/// The index file: the index of every committed command, written when a store closes so that the next open reads
/// it instead of every journal record (at ten million commands: 125 MB read in a fraction of a second, against a scan
/// of half a gigabyte of records that took a second and left sled caching most of it). Its bytes: `PLCIDX01`, the
/// number of the last journal record it covers (8, big-endian), the SHA-256 of that record's bytes (32), the number
/// of entries (8, big-endian), the entries (12 bytes each, sorted), then the SHA-256 of the entries (32). It is used
/// only if the journal's last record is that very record, so a file left by an earlier run, or by another ledger, is
/// never used for a journal that has moved on.
pub mod index_file {
    use std::io::{Read, Write};

    use sha2::{Digest, Sha256};

    use super::Entry;

    const MAGIC: &[u8; 8] = b"PLCIDX01";

    /// Writes the index of `entries`, which covers the journal up to record `last`, whose bytes are `last_record`.
    pub fn write(
        out: &mut dyn Write,
        last: u64,
        last_record: &[u8],
        entries: &[Entry],
    ) -> std::io::Result<()> {
        out.write_all(MAGIC)?;
        out.write_all(&last.to_be_bytes())?;
        out.write_all(&Sha256::digest(last_record))?;
        out.write_all(&(entries.len() as u64).to_be_bytes())?;
        let mut digest = Sha256::new();
        for chunk in entries.chunks(8192) {
            let bytes = chunk.as_flattened();
            digest.update(bytes);
            out.write_all(bytes)?;
        }
        out.write_all(&digest.finalize())
    }

    /// The entries of an index file if it covers exactly the journal whose last record is number `last` with bytes
    /// `last_record`; otherwise why not.
    pub fn read(input: &mut dyn Read, last: u64, last_record: &[u8]) -> Result<Vec<Entry>, String> {
        let mut header = [0u8; 8 + 8 + 32 + 8];
        input
            .read_exact(&mut header)
            .map_err(|e| format!("its header cannot be read: {e}"))?;
        if &header[..8] != MAGIC {
            return Err("it is not an index file of this format".into());
        }
        let covers = u64::from_be_bytes(header[8..16].try_into().unwrap_or_default());
        if covers != last || header[16..48] != Sha256::digest(last_record)[..] {
            return Err(format!(
                "it covers the journal up to record {covers}, and the journal now ends at record {last}"
            ));
        }
        let count = u64::from_be_bytes(header[48..56].try_into().unwrap_or_default());
        let count = usize::try_from(count)
            .ok()
            .filter(|n| *n <= 1 << 34)
            .ok_or("its entry count is damaged")?;
        // Read in chunks, so that a damaged count fails at the end of the file instead of allocating it up front.
        let mut entries: Vec<Entry> = Vec::new();
        while entries.len() < count {
            let take = (count - entries.len()).min(1 << 20);
            let at = entries.len();
            entries.resize(at + take, [0u8; 12]);
            input
                .read_exact(entries[at..].as_flattened_mut())
                .map_err(|e| format!("its entries cannot be read: {e}"))?;
        }
        let mut digest = [0u8; 32];
        input
            .read_exact(&mut digest)
            .map_err(|e| format!("its checksum cannot be read: {e}"))?;
        if Sha256::digest(entries.as_flattened())[..] != digest {
            return Err("its entries do not match their checksum".into());
        }
        if !entries.is_sorted() {
            return Err("its entries are not sorted".into());
        }
        Ok(entries)
    }
}

/// Which journal record holds each committed command.
#[derive(Default)]
pub struct Commands {
    inner: Mutex<Located>,
}

#[derive(Default)]
struct Located {
    /// Found at open, sorted.
    sorted: Vec<Entry>,
    /// Committed since.
    recent: HashMap<CommandId, u32>,
}

impl Commands {
    /// Builds the index of the commands found at open from their entries, in any order.
    pub fn load(&self, mut found: Vec<Entry>) {
        if !found.is_sorted() {
            found.sort_unstable();
        }
        found.dedup();
        found.shrink_to_fit();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.sorted = found;
        inner.recent.clear();
    }

    /// Every entry, the commands committed since open included, sorted: what the index file keeps.
    pub fn entries(&self) -> Vec<Entry> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = Vec::with_capacity(inner.sorted.len() + inner.recent.len());
        all.extend_from_slice(&inner.sorted);
        all.extend(
            inner
                .recent
                .iter()
                .map(|(id, seq)| entry(id.as_bytes(), *seq)),
        );
        drop(inner);
        all.sort_unstable();
        all.dedup();
        all
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
        let key = &id.as_bytes()[..8];
        let start = inner.sorted.partition_point(|e| &e[..8] < key);
        let end = start + inner.sorted[start..].partition_point(|e| &e[..8] == key);
        inner
            .recent
            .get(&id)
            .copied()
            .into_iter()
            .chain(inner.sorted[start..end].iter().map(record_in))
            .collect()
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
            entry(id(9).as_bytes(), 3),
            entry(id(2).as_bytes(), 1),
            entry(id(5).as_bytes(), 2),
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
    fn the_index_file_is_read_back_only_for_the_journal_it_covers() {
        let entries: Vec<Entry> = (0..20_000u32)
            .map(|n| entry(&[(n % 251) as u8; 16], n))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut bytes = Vec::new();
        index_file::write(&mut bytes, 77, b"record 77", &entries).unwrap();
        assert_eq!(
            index_file::read(&mut &bytes[..], 77, b"record 77").unwrap(),
            entries
        );
        // Another last record, or the same number with other bytes: the journal moved on since it was written.
        assert!(index_file::read(&mut &bytes[..], 78, b"record 77").is_err());
        assert!(index_file::read(&mut &bytes[..], 77, b"record 77 again").is_err());
        // A damaged entry, or a truncated file.
        let mut damaged = bytes.clone();
        damaged[100] ^= 1;
        assert!(index_file::read(&mut &damaged[..], 77, b"record 77")
            .unwrap_err()
            .contains("checksum"));
        assert!(index_file::read(&mut &bytes[..bytes.len() - 1], 77, b"record 77").is_err());
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
            entry(b.as_bytes(), 9),
            entry(a.as_bytes(), 4),
            entry(a.as_bytes(), 4),
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
