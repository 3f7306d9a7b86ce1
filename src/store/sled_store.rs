//! The sled backend of the event log.
//!
//! Layout of a data folder: `ledger.json` (marks the folder as a ledger), `LOCK` (held by the process that has the
//! ledger open; holds its pid), and `sled/`, the database, with two trees:
//! - `events`: big-endian `u64` position → the canonical envelope bytes;
//! - `aux`: `head` → the head marker (position + hash); `c` ‖ command id → the command record;
//!   `x` ‖ kind ‖ entity id ‖ position → nothing (the history indexes).
//!
//! Every batch is one sled transaction over both trees (atomic after a crash), then `flush()`, then `fdatasync` of
//! `sled/db`, because sled's flush alone is not a power-loss barrier on Linux (STORAGE.md, spacejam/sled#1452).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::envelope::{check, entity_prefix, seal};
use super::{CommandRecord, CommitEntry, EventStore, Head, StoreCounters, StoreError, StoredEvent};
use crate::domain::{CommandId, EntityRef, Position};

const MARKER_FILE: &str = "ledger.json";
const LOCK_FILE: &str = "LOCK";
const SLED_DIR: &str = "sled";
const HEAD_KEY: &[u8] = b"head";
const HEAD_FILE: &str = "HEAD";
/// The HEAD file is overwritten in place with a record of this fixed length.
const HEAD_RECORD_LEN: usize = 96;

/// A fault to inject into the next batch, for tests of the failure paths (see `SledStore::inject_fault`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    /// The write transaction fails: nothing of the batch reaches sled.
    Write = 1,
    /// `fdatasync` fails after the batch was written and flushed: its fate on disk is unknown.
    Sync = 2,
}

/// How to open a ledger's store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Create the ledger if the folder is missing or empty.
    pub create: bool,
    /// sled's page cache in bytes (sled's own default is 1 GiB; see docs/ARCHITECTURE.md).
    pub cache_bytes: u64,
    /// How many of the newest events are re-verified at open.
    pub tail_check: u64,
    /// Check the head marker and the tail at open. Only `verify` turns this off, to report damage itself.
    pub check_on_open: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            create: true,
            cache_bytes: 128 * 1024 * 1024,
            tail_check: 1024,
            check_on_open: true,
        }
    }
}

/// The sled event log. Reads may run from any thread while the single writer commits.
pub struct SledStore {
    db: sled::Db,
    events: sled::Tree,
    aux: sled::Tree,
    /// Our own handle on `sled/db`, for `fdatasync`.
    data_file: File,
    /// Held for the life of the store: the advisory lock that keeps a second process out.
    _lock: File,
    /// `HEAD`: a copy of the head marker outside sled (see [`SledStore::check_head_file`]).
    head_file: File,
    head: Mutex<Head>,
    write: Mutex<()>,
    failed: AtomicBool,
    /// A `Fault` to inject into the next batch (0: none).
    fault: std::sync::atomic::AtomicU8,
    batches: AtomicU64,
    flushes: AtomicU64,
    fdatasyncs: AtomicU64,
    appended: AtomicU64,
    commands: AtomicU64,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

fn is_empty_dir(dir: &Path) -> Result<bool, StoreError> {
    let mut entries =
        std::fs::read_dir(dir).map_err(io(format!("cannot read {}", dir.display())))?;
    Ok(entries.next().is_none())
}

/// Takes the folder's lock, or says which process holds it.
fn lock(dir: &Path) -> Result<File, StoreError> {
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

/// Reads the `hash` field of stored envelope bytes without a full decode.
fn stored_hash(raw: &[u8], position: Position) -> Result<String, StoreError> {
    #[derive(serde::Deserialize)]
    struct OnlyHash {
        hash: String,
    }
    serde_json::from_slice::<OnlyHash>(raw)
        .map(|h| h.hash)
        .map_err(|e| StoreError::Corrupt {
            position: Some(position),
            message: format!("the stored event does not decode: {e}"),
        })
}

fn cmd_key(id: CommandId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b'c';
    k[1..].copy_from_slice(id.as_bytes());
    k
}

impl SledStore {
    /// Opens (or creates) the ledger in `dir`, checks the head marker against the log and re-verifies the tail.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<SledStore, StoreError> {
        let marker = dir.join(MARKER_FILE);
        if !dir.exists() {
            if !options.create {
                return Err(StoreError::NoLedger(dir.to_path_buf()));
            }
            std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        }
        if !dir.is_dir() {
            return Err(StoreError::NotALedger(dir.to_path_buf()));
        }
        if !marker.exists() {
            if !is_empty_dir(dir)? {
                return Err(StoreError::NotALedger(dir.to_path_buf()));
            }
            if !options.create {
                return Err(StoreError::NoLedger(dir.to_path_buf()));
            }
        }
        let lock = lock(dir)?;
        if !marker.exists() {
            let text = format!(
                "{{\"format\":\"partner-ledger\",\"version\":1,\"created_by\":\"{}\"}}\n",
                env!("CARGO_PKG_VERSION")
            );
            std::fs::write(&marker, text)
                .map_err(io(format!("cannot write {}", marker.display())))?;
        }
        let db = sled::Config::new()
            .path(dir.join(SLED_DIR))
            .cache_capacity(options.cache_bytes)
            .open()?;
        let events = db.open_tree("events")?;
        let aux = db.open_tree("aux")?;
        let db_path = dir.join(SLED_DIR).join("db");
        let data_file =
            File::open(&db_path).map_err(io(format!("cannot open {}", db_path.display())))?;
        let head_path = dir.join(HEAD_FILE);
        let head_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&head_path)
            .map_err(io(format!("cannot open {}", head_path.display())))?;
        let store = SledStore {
            db,
            events,
            aux,
            data_file,
            _lock: lock,
            head_file,
            head: Mutex::new(Head::genesis()),
            write: Mutex::new(()),
            failed: AtomicBool::new(false),
            fault: std::sync::atomic::AtomicU8::new(0),
            batches: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            fdatasyncs: AtomicU64::new(0),
            appended: AtomicU64::new(0),
            commands: AtomicU64::new(0),
        };
        let head = if options.check_on_open {
            let head = store.recover_head(options.tail_check)?;
            store.check_head_file(&head)?;
            store.write_head_file(&head)?;
            head
        } else {
            store.marker()?.unwrap_or_else(Head::genesis)
        };
        *store.head.lock().unwrap_or_else(|e| e.into_inner()) = head;
        Ok(store)
    }

    /// Opens another tree of the same database (read models keep theirs here; they are not part of the log).
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    fn marker(&self) -> Result<Option<Head>, StoreError> {
        match self.aux.get(HEAD_KEY)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    position: None,
                    message: format!("the head marker does not decode: {e}"),
                }),
        }
    }

    /// Reads the `HEAD` file: `None` when it is empty or unreadable (a torn write after power loss).
    fn read_head_file(&self) -> Option<Head> {
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
    fn write_head_file(&self, head: &Head) -> Result<(), StoreError> {
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
    fn check_head_file(&self, head: &Head) -> Result<(), StoreError> {
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

    /// The head from the last key, checked against the head marker; the newest `tail` events are re-verified.
    fn recover_head(&self, tail: u64) -> Result<Head, StoreError> {
        let marker = self.marker()?;
        let last = self.events.last()?;
        let (last_pos, last_raw) = match (&marker, last) {
            (None, None) => return Ok(Head::genesis()),
            (Some(m), None) if m.position.0 == 0 => return Ok(Head::genesis()),
            (Some(m), None) => {
                return Err(StoreError::Corrupt {
                    position: Some(Position(1)),
                    message: format!(
                        "the head marker records {} events but the log is empty",
                        m.position
                    ),
                })
            }
            (None, Some(_)) => {
                return Err(StoreError::Corrupt {
                    position: None,
                    message: "the log holds events but no head marker".into(),
                })
            }
            (Some(_), Some((k, v))) => {
                let pos = Position::from_key(&k).ok_or_else(|| StoreError::Corrupt {
                    position: None,
                    message: "the last key of the log is not a position".into(),
                })?;
                (pos, v)
            }
        };
        let m = marker.unwrap_or_else(Head::genesis);
        if last_pos != m.position {
            let first_bad = Position(last_pos.0.min(m.position.0) + 1);
            return Err(StoreError::Corrupt {
                position: Some(first_bad),
                message: format!(
                    "the log ends at position {last_pos} but the head marker records {}: events were removed or lost",
                    m.position
                ),
            });
        }
        let last_hash = stored_hash(&last_raw, last_pos)?;
        if last_hash != m.hash {
            return Err(StoreError::Corrupt {
                position: Some(last_pos),
                message: format!(
                    "the last event's hash {last_hash} differs from the head marker's {}",
                    m.hash
                ),
            });
        }
        let start = Position(last_pos.0.saturating_sub(tail.saturating_sub(1)).max(1));
        self.verify_range(start, last_pos, |_| {})?;
        Ok(m)
    }

    /// Verifies events `from..=to`: contiguous positions, each linked to the previous hash, each hash matching.
    fn verify_range(
        &self,
        from: Position,
        to: Position,
        mut progress: impl FnMut(Position),
    ) -> Result<(), StoreError> {
        let mut prev = if from.0 <= 1 {
            super::GENESIS_HASH.to_string()
        } else {
            let before = Position(from.0 - 1);
            let raw = self
                .events
                .get(before.to_key())?
                .ok_or_else(|| StoreError::Corrupt {
                    position: Some(before),
                    message: format!("event {before} is missing"),
                })?;
            stored_hash(&raw, before)?
        };
        let mut expected = from;
        for item in self.events.range(from.to_key()..=to.to_key()) {
            let (k, v) = item?;
            let pos = Position::from_key(&k);
            if pos != Some(expected) {
                return Err(StoreError::Corrupt {
                    position: Some(expected),
                    message: format!("event {expected} is missing"),
                });
            }
            let env = check(&v, expected, &prev).map_err(|b| StoreError::Corrupt {
                position: Some(b.position),
                message: b.reason,
            })?;
            prev = env.hash;
            progress(expected);
            expected = expected.next();
        }
        if expected != to.next() {
            return Err(StoreError::Corrupt {
                position: Some(expected),
                message: format!("event {expected} is missing"),
            });
        }
        Ok(())
    }

    /// Walks the whole chain and checks it against the head marker. Calls `progress` after each event.
    pub fn verify_all(&self, progress: impl FnMut(Position)) -> Result<Head, StoreError> {
        let head = self.marker()?.unwrap_or_else(Head::genesis);
        self.check_head_file(&head)?;
        let last = match self.events.last()? {
            Some((k, _)) => Position::from_key(&k).unwrap_or_default(),
            None => Position(0),
        };
        if last.0 > 0 {
            self.verify_range(Position(1), last, progress)?;
        }
        if last != head.position {
            return Err(StoreError::Corrupt {
                position: Some(Position(last.0.min(head.position.0) + 1)),
                message: format!(
                    "the log ends at position {last} but the head marker records {}: events were removed or lost",
                    head.position
                ),
            });
        }
        Ok(head)
    }

    fn fail<T>(&self, e: StoreError) -> Result<T, StoreError> {
        self.failed.store(true, Ordering::SeqCst);
        tracing::error!(error = %e, "storage failure: writes are stopped until the ledger is reopened");
        Err(e)
    }
}

type Row = ([u8; 8], Vec<u8>);
type Record = ([u8; 17], Vec<u8>);

impl SledStore {
    /// Writes rows, index entries, command records and the head marker in one transaction, then makes them durable:
    /// `flush()`, `fdatasync` of `sled/db`, and the `HEAD` file. Any failure stops further writes (fail-stop).
    /// Makes everything written so far durable, in any tree of this database: `flush()` then `fdatasync` of
    /// `sled/db` (sled's flush alone is not a power-loss barrier). For state outside the log that must survive a
    /// crash once acknowledged, such as a consumer's checkpoint.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file
            .sync_data()
            .map_err(io("fdatasync of the database file failed"))
    }

    /// Makes the next batch fail as `fault` says. For tests of the failure paths; a real ledger never calls it.
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }

    fn injected(&self, fault: Fault) -> bool {
        self.fault
            .compare_exchange(fault as u8, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    fn persist(
        &self,
        rows: &[Row],
        index: &[Vec<u8>],
        records: &[Record],
        new_head: Head,
        commands: usize,
    ) -> Result<(), StoreError> {
        let head_bytes = serde_json::to_vec(&new_head).unwrap_or_default();
        if self.injected(Fault::Write) {
            return self.fail(StoreError::Io {
                context: "the write transaction failed (injected)".into(),
                source: std::io::Error::other("injected fault"),
            });
        }
        let written: Result<(), TransactionError<()>> =
            (&self.events, &self.aux).transaction(|(e, a)| {
                for (k, v) in rows {
                    e.insert(&k[..], v.as_slice())?;
                }
                for k in index {
                    a.insert(k.as_slice(), &[][..])?;
                }
                for (k, v) in records {
                    a.insert(&k[..], v.as_slice())?;
                }
                a.insert(HEAD_KEY, head_bytes.as_slice())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        if let Err(e) = written {
            let e = match e {
                TransactionError::Storage(s) => StoreError::Sled(s),
                TransactionError::Abort(()) => StoreError::Corrupt {
                    position: None,
                    message: "the write transaction aborted".into(),
                },
            };
            return self.fail(e);
        }
        if let Err(e) = self.db.flush() {
            return self.fail(StoreError::Sled(e));
        }
        self.flushes.fetch_add(1, Ordering::Relaxed);
        let synced = if self.injected(Fault::Sync) {
            Err(std::io::Error::other("injected fault"))
        } else {
            self.data_file.sync_data()
        };
        if let Err(e) = synced {
            return self.fail(StoreError::Io {
                context: "fdatasync of the database file failed".into(),
                source: e,
            });
        }
        self.fdatasyncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.write_head_file(&new_head) {
            return self.fail(e);
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.appended
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.commands.fetch_add(commands as u64, Ordering::Relaxed);
        *self.head.lock().unwrap_or_else(|e| e.into_inner()) = new_head;
        Ok(())
    }

    /// Appends already sealed envelopes (a restore): each must be the next position and link to the head, and is
    /// stored in canonical form with its index entries; each command gets a record without a fingerprint.
    /// Durable on return, like `commit`.
    pub fn import(&self, envelopes: &[super::Envelope]) -> Result<(), StoreError> {
        let _writer = self.write.lock().unwrap_or_else(|e| e.into_inner());
        if self.failed.load(Ordering::SeqCst) {
            return Err(StoreError::FailStopped);
        }
        let head = self.head();
        let mut prev = head.hash;
        let mut expected = head.position;
        let mut rows: Vec<Row> = Vec::with_capacity(envelopes.len());
        let mut index = Vec::new();
        let mut by_command: Vec<(CommandId, Vec<Position>)> = Vec::new();
        for env in envelopes {
            expected = expected.next();
            let value = serde_json::to_value(env).map_err(|e| StoreError::Codec {
                position: env.position,
                message: e.to_string(),
            })?;
            let raw = super::canonical(&value);
            let checked = check(&raw, expected, &prev).map_err(|b| StoreError::Corrupt {
                position: Some(b.position),
                message: b.reason,
            })?;
            prev = checked.hash;
            let event = env.event().map_err(|e| StoreError::Codec {
                position: env.position,
                message: e.to_string(),
            })?;
            for entity in event.entities() {
                let mut k = entity_prefix(&entity).to_vec();
                k.extend_from_slice(&expected.to_key());
                index.push(k);
            }
            rows.push((expected.to_key(), raw));
            match by_command.last_mut() {
                Some((id, ps)) if *id == env.command_id => ps.push(expected),
                _ => by_command.push((env.command_id, vec![expected])),
            }
        }
        let mut records: Vec<Record> = Vec::with_capacity(by_command.len());
        for (id, mut positions) in by_command {
            if let Some(existing) = self.command(id)? {
                let mut all = existing.positions;
                all.append(&mut positions);
                positions = all;
            }
            let record = CommandRecord {
                fingerprint: String::new(),
                positions,
            };
            records.push((cmd_key(id), serde_json::to_vec(&record).unwrap_or_default()));
        }
        let commands = records.len();
        self.persist(
            &rows,
            &index,
            &records,
            Head {
                position: expected,
                hash: prev,
            },
            commands,
        )
    }
}

impl EventStore for SledStore {
    fn head(&self) -> Head {
        self.head.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn commit(&self, entries: &[CommitEntry]) -> Result<Vec<Vec<Position>>, StoreError> {
        let _writer = self.write.lock().unwrap_or_else(|e| e.into_inner());
        if self.failed.load(Ordering::SeqCst) {
            return Err(StoreError::FailStopped);
        }
        let head = self.head();
        let mut position = head.position;
        let mut prev = head.hash;
        let mut rows: Vec<([u8; 8], Vec<u8>)> = Vec::new();
        let mut index: Vec<Vec<u8>> = Vec::new();
        let mut records: Vec<([u8; 17], Vec<u8>)> = Vec::with_capacity(entries.len());
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut positions = Vec::with_capacity(entry.events.len());
            for ev in &entry.events {
                position = position.next();
                let (raw, hash) = seal(ev, position, &prev);
                prev = hash;
                rows.push((position.to_key(), raw));
                for entity in ev.event.entities() {
                    let mut k = entity_prefix(&entity).to_vec();
                    k.extend_from_slice(&position.to_key());
                    index.push(k);
                }
                positions.push(position);
            }
            let record = CommandRecord {
                fingerprint: entry.fingerprint.clone(),
                positions: positions.clone(),
            };
            records.push((
                cmd_key(entry.command_id),
                serde_json::to_vec(&record).unwrap_or_default(),
            ));
            out.push(positions);
        }
        let new_head = Head {
            position,
            hash: prev,
        };
        self.persist(&rows, &index, &records, new_head, entries.len())?;
        Ok(out)
    }

    fn command(&self, id: CommandId) -> Result<Option<CommandRecord>, StoreError> {
        match self.aux.get(cmd_key(id))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    position: None,
                    message: format!("the record of command {id} does not decode: {e}"),
                }),
        }
    }

    fn get(&self, position: Position) -> Result<Option<StoredEvent>, StoreError> {
        Ok(self.events.get(position.to_key())?.map(|v| StoredEvent {
            position,
            raw: v.to_vec(),
        }))
    }

    fn read(
        &self,
        after: Position,
        to: Option<Position>,
    ) -> Box<dyn Iterator<Item = Result<StoredEvent, StoreError>> + '_> {
        let start = after.next().to_key();
        let end = to.unwrap_or(Position(u64::MAX)).to_key();
        if start > end {
            return Box::new(std::iter::empty());
        }
        Box::new(self.events.range(start..=end).map(|item| {
            let (k, v) = item?;
            let position = Position::from_key(&k).ok_or_else(|| StoreError::Corrupt {
                position: None,
                message: "a key of the log is not a position".into(),
            })?;
            Ok(StoredEvent {
                position,
                raw: v.to_vec(),
            })
        }))
    }

    fn history(&self, entity: &EntityRef, after: Position) -> Result<Vec<Position>, StoreError> {
        let prefix = entity_prefix(entity);
        let mut start = prefix.to_vec();
        start.extend_from_slice(&after.next().to_key());
        let mut end = prefix.to_vec();
        end.extend_from_slice(&u64::MAX.to_be_bytes());
        let mut out = Vec::new();
        for item in self.aux.range(start..=end) {
            let (k, _) = item?;
            if let Some(p) = Position::from_key(&k[prefix.len()..]) {
                out.push(p);
            }
        }
        Ok(out)
    }

    fn counters(&self) -> StoreCounters {
        StoreCounters {
            batches: self.batches.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            fdatasyncs: self.fdatasyncs.load(Ordering::Relaxed),
            events: self.appended.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
        }
    }
}
