//! The sled backend of the event log.
//!
//! Layout of a data folder: `ledger.json` (marks the folder as a ledger, with its format version), `LOCK` (held by the
//! process that has the ledger open; holds its pid), `HEAD` (a copy of the head outside sled) and `sled/`, the
//! database, with these trees:
//! - `log`: the events, a few consecutive canonical envelopes per key (`segment.rs`): big-endian `u64` position of
//!   the first → the envelopes, newline-separated;
//! - `aux`: `head` → the head marker (position + hash); `j` ‖ sequence → a command journal record (`journal.rs`);
//! - `index`: the history index, derived and flushed in the background (`index.rs`).
//!
//! Every batch is one sled transaction over `events` and `aux` (atomic after a crash), then `flush()`, then
//! `fdatasync` of `sled/db`, because sled's flush alone is not a power-loss barrier on Linux (STORAGE.md,
//! spacejam/sled#1452). A batch writes only sequential keys: its segments, one journal record and the head marker.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::envelope::{check, seal};
use super::index::Index;
use super::journal::{self, Commands, Committed};
use super::segment::{self, Log};
use super::{CommandRecord, CommitEntry, EventStore, Head, StoreCounters, StoreError, StoredEvent};
use crate::domain::{CommandId, EntityRef, Position};

const MARKER_FILE: &str = "ledger.json";
const LOCK_FILE: &str = "LOCK";
const SLED_DIR: &str = "sled";
const HEAD_KEY: &[u8] = b"head";
const HEAD_FILE: &str = "HEAD";
/// The HEAD file is overwritten in place with a record of this fixed length.
const HEAD_RECORD_LEN: usize = 96;
/// The data-folder format this build writes. 3 packs envelopes into segments (tree `log`); 2 kept one key per event
/// (tree `events`) and 1 also a record and index keys per command in `aux`. Older folders are upgraded at open.
const FORMAT_VERSION: u64 = 3;

/// A fault to inject, for tests of the failure paths (see `SledStore::inject`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    /// The write transaction fails: nothing of the batch reaches sled. Survived: the ledger answers the batch (and any
    /// decided on top of it) `unknown` and goes on from the durable head.
    Write = 1,
    /// `fdatasync` fails after the batch was written and flushed: its fate on disk is unknown (fail-stop).
    Sync = 2,
    /// sled's `flush()` fails: the batch may be partly in sled's log (fail-stop).
    Flush = 3,
}

/// When an injected fault strikes: after `after` operations of its kind have succeeded, then once (`persistent:
/// false`: the store recovers) or on every later operation of that kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FaultPlan {
    pub fault: Fault,
    pub after: u64,
    pub persistent: bool,
}

/// The free space the ledger keeps on its disk (see [`StoreOptions::min_free_bytes`]): every writer asks it before
/// writing, the background ones included, because sled cannot recover files it failed to write for want of space.
#[derive(Clone, Debug)]
pub struct Room {
    dir: PathBuf,
    min_free_bytes: u64,
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
    /// Flush the history index once this many positions wait in memory (it is also flushed every
    /// `index_interval` and at close).
    pub index_flush_positions: usize,
    pub index_interval: Duration,
    /// Free space the ledger keeps on its disk: a batch that would leave less is not written (its commands are
    /// answered `unknown`, writing goes on once space is freed). sled cannot recover files it failed to write for
    /// want of space (docs/recovery.md), so it must never see a full disk.
    pub min_free_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            create: true,
            cache_bytes: 64 * 1024 * 1024,
            tail_check: 1024,
            check_on_open: true,
            index_flush_positions: 600_000,
            index_interval: Duration::from_secs(10),
            min_free_bytes: 32 * 1024 * 1024,
        }
    }
}

/// The sled event log. Reads may run from any thread while the single writer commits.
pub struct SledStore {
    db: sled::Db,
    log: Log,
    aux: sled::Tree,
    /// Our own handle on `sled/db`, for `fdatasync`.
    data_file: File,
    /// Held for the life of the store: the advisory lock that keeps a second process out.
    _lock: File,
    /// The free space kept on the data folder's disk.
    room: Room,
    /// `HEAD`: a copy of the head marker outside sled (see [`SledStore::check_head_file`]).
    head_file: File,
    /// The last durable event: what readers see.
    head: Mutex<Head>,
    /// The last event written, durable or not yet (the base the next batch must extend).
    written: Mutex<Head>,
    write: Mutex<()>,
    /// The history index, shared with the thread that flushes it.
    index: Arc<Index>,
    /// Every committed command, from the journal.
    commands: Commands,
    /// The sequence number of the next journal record.
    journal_seq: AtomicU64,
    flusher: Option<Flusher>,
    failed: AtomicBool,
    /// The injected fault, with how many more operations of its kind succeed first.
    fault: Mutex<Option<(FaultPlan, u64)>>,
    /// Faults injected so far.
    faults_struck: AtomicU64,
    batches: AtomicU64,
    flushes: AtomicU64,
    fdatasyncs: AtomicU64,
    appended: AtomicU64,
    commands_committed: AtomicU64,
    index_flush_positions: usize,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// The background thread that flushes the history index, and how to wake or stop it.
struct Flusher {
    signal: Arc<(Mutex<FlusherState>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct FlusherState {
    wake: bool,
    stop: bool,
}

impl Flusher {
    fn start(index: Arc<Index>, interval: Duration, room: Room) -> Result<Flusher, StoreError> {
        let signal = Arc::new((Mutex::new(FlusherState::default()), Condvar::new()));
        let theirs = Arc::clone(&signal);
        let thread = std::thread::Builder::new()
            .name("ledger-index".into())
            .spawn(move || {
                let (lock, cv) = &*theirs;
                loop {
                    let stop = {
                        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                        if !st.wake && !st.stop {
                            st = cv
                                .wait_timeout(st, interval)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                        st.wake = false;
                        st.stop
                    };
                    // About 8 bytes per position in the tail, twice over for sled's log.
                    let bytes = 16 * index.tail_len() as u64;
                    if let Err(why) = room.check(bytes) {
                        tracing::warn!(%why, "the history index is not flushed; it stays in memory and is retried");
                    } else if let Err(e) = index.flush() {
                        tracing::warn!(error = %e, "the history index could not be flushed; it stays in memory and is retried");
                    }
                    if stop {
                        return;
                    }
                }
            })
            .map_err(io("cannot start the index thread"))?;
        Ok(Flusher {
            signal,
            thread: Some(thread),
        })
    }

    fn wake(&self) {
        let (lock, cv) = &*self.signal;
        lock.lock().unwrap_or_else(|e| e.into_inner()).wake = true;
        cv.notify_one();
    }

    /// Flushes one last time and waits for the thread.
    fn stop(&mut self) {
        let (lock, cv) = &*self.signal;
        lock.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        cv.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Some(mut f) = self.flusher.take() {
            f.stop();
        }
    }
}

/// A batch written by [`SledStore::write`] and waiting for [`SledStore::sync_written`].
pub struct Written {
    events: usize,
    /// The number of its first journal record.
    first_seq: u64,
    journal: Vec<Committed>,
    index: Vec<(Position, Vec<EntityRef>)>,
    new_head: Head,
    positions: Vec<Vec<Position>>,
}

impl Written {
    /// Each entry's positions.
    pub fn positions(&self) -> &[Vec<Position>] {
        &self.positions
    }
}

/// A batch sealed and ready to persist: everything `commit` computes before it touches the disk. Preparing is pure CPU
/// work, so a writer can seal the next batch while the previous one is being made durable.
pub struct Prepared {
    /// The head the batch extends.
    base: Head,
    rows: Vec<Row>,
    journal: Vec<Committed>,
    /// Each event's entities, for the history index.
    index: Vec<(Position, Vec<EntityRef>)>,
    new_head: Head,
    positions: Vec<Vec<Position>>,
}

impl Prepared {
    /// Appends a batch prepared after this one, so both are persisted in one transaction and one `fdatasync`.
    /// Refuses (returning `next` unchanged) a batch that does not extend this one.
    pub fn append(&mut self, next: Prepared) -> Result<(), Box<Prepared>> {
        if next.base != self.new_head {
            return Err(Box::new(next));
        }
        self.rows.extend(next.rows);
        self.journal.extend(next.journal);
        self.index.extend(next.index);
        self.positions.extend(next.positions);
        self.new_head = next.new_head;
        Ok(())
    }
    /// The head after this batch.
    pub fn head(&self) -> &Head {
        &self.new_head
    }
    /// Each entry's positions.
    pub fn positions(&self) -> &[Vec<Position>] {
        &self.positions
    }
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

/// A journal record number as the in-memory command index keeps it (four billion records, at least one command each,
/// before it would not fit).
fn journal_number(seq: u64) -> Result<u32, StoreError> {
    u32::try_from(seq).map_err(|_| StoreError::Corrupt {
        position: None,
        message: format!("journal record {seq} is beyond what the command index holds"),
    })
}

/// Writes `ledger.json` with a format version, atomically (a temporary file renamed over it, both synced).
fn write_marker(dir: &Path, version: u64) -> Result<(), StoreError> {
    let marker = dir.join(MARKER_FILE);
    let tmp = dir.join("ledger.json.tmp");
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
fn read_marker_version(marker: &Path) -> Result<u64, StoreError> {
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
            write_marker(dir, FORMAT_VERSION)?;
        }
        let version = read_marker_version(&marker)?;
        if version > FORMAT_VERSION {
            return Err(StoreError::Corrupt {
                position: None,
                message: format!(
                    "{} says format version {version}; this build reads up to {FORMAT_VERSION}: use a newer partner-ledger",
                    marker.display()
                ),
            });
        }
        let db = match sled::Config::new()
            .path(dir.join(SLED_DIR))
            .cache_capacity(options.cache_bytes)
            .open()
        {
            Ok(db) => db,
            Err(sled::Error::Corruption { .. }) => {
                let recorded = std::fs::read_to_string(dir.join(HEAD_FILE))
                    .ok()
                    .and_then(|t| t.split_whitespace().next().map(str::to_string))
                    .map(|p| format!("; the HEAD file records {p} events"))
                    .unwrap_or_default();
                return Err(StoreError::Corrupt {
                    position: None,
                    message: format!(
                        "sled cannot read its own files (they are damaged){recorded}: restore from a backup (docs/audit.md)"
                    ),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let log = Log {
            tree: db.open_tree("log")?,
        };
        let aux = db.open_tree("aux")?;
        let index = Arc::new(Index::open(db.open_tree("index")?)?);
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
        let mut store = SledStore {
            db,
            log,
            aux,
            data_file,
            _lock: lock,
            room: Room {
                dir: dir.to_path_buf(),
                min_free_bytes: options.min_free_bytes,
            },
            head_file,
            head: Mutex::new(Head::genesis()),
            written: Mutex::new(Head::genesis()),
            write: Mutex::new(()),
            index,
            commands: Commands::default(),
            journal_seq: AtomicU64::new(1),
            flusher: None,
            failed: AtomicBool::new(false),
            fault: Mutex::new(None),
            faults_struck: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            fdatasyncs: AtomicU64::new(0),
            appended: AtomicU64::new(0),
            commands_committed: AtomicU64::new(0),
            index_flush_positions: options.index_flush_positions,
        };
        if version < 2 {
            store.upgrade_from_v1()?;
            write_marker(dir, 2)?;
        }
        if version < 3 {
            store.upgrade_from_v2()?;
            write_marker(dir, 3)?;
            store.db.drop_tree("events")?;
        }
        let head = if options.check_on_open {
            let head = store.recover_head(options.tail_check)?;
            store.check_head_file(&head)?;
            store.write_head_file(&head)?;
            head
        } else {
            store.marker()?.unwrap_or_else(Head::genesis)
        };
        *store.head.lock().unwrap_or_else(|e| e.into_inner()) = head.clone();
        *store.written.lock().unwrap_or_else(|e| e.into_inner()) = head;
        if options.check_on_open {
            store.load_journal()?;
            store.catch_up_index()?;
            store.flusher = Some(Flusher::start(
                Arc::clone(&store.index),
                options.index_interval,
                store.room.clone(),
            )?);
        }
        Ok(store)
    }

    /// Reads every journal record into the in-memory command map.
    fn load_journal(&self) -> Result<(), StoreError> {
        let mut next = 1;
        let mut found = Vec::new();
        for item in self.aux.scan_prefix([journal::PREFIX]) {
            let (k, v) = item?;
            if let Some(seq) = journal::seq_of(&k) {
                let record = journal_number(seq)?;
                found.extend(
                    journal::decode(&v)?
                        .into_iter()
                        .map(|c| (*c.command_id.as_bytes(), record)),
                );
                next = seq + 1;
            }
        }
        self.commands.load(found);
        self.journal_seq.store(next, Ordering::SeqCst);
        Ok(())
    }

    /// Brings the history index up to the head: the events after its checkpoint go to its in-memory tail.
    fn catch_up_index(&self) -> Result<(), StoreError> {
        let head = self.head();
        if self.index.checkpoint() > head.position {
            // The index describes a longer log than this one (it was restored or truncated): start over.
            self.index.clear()?;
        }
        let from = self.index.upto();
        let mut pending = Vec::new();
        for item in self.read(from, Some(head.position)) {
            let stored = item?;
            let (_, event) = stored.decode()?;
            pending.push((stored.position, event.entities()));
            if pending.len() >= 65_536 {
                self.index.add(&pending);
                pending.clear();
                if self.index.tail_len() >= self.index_flush_positions {
                    self.index.flush()?;
                }
            }
        }
        self.index.add(&pending);
        Ok(())
    }

    /// Upgrades a format-2 folder, one key per event in tree `events`, by packing its events into segments in tree
    /// `log` (cleared first, so an interrupted upgrade simply runs again), then making them durable. The caller marks
    /// the folder as format 3 and only then drops the old tree.
    fn upgrade_from_v2(&self) -> Result<(), StoreError> {
        let old = self.db.open_tree("events")?;
        self.log.tree.clear()?;
        let mut rows: Vec<Row> = Vec::with_capacity(1024);
        let mut moved = 0u64;
        let write = |rows: &mut Vec<Row>| -> Result<(), StoreError> {
            let mut batch = sled::Batch::default();
            for (k, v) in segment::pack(rows) {
                batch.insert(&k[..], v);
            }
            self.log.tree.apply_batch(batch)?;
            rows.clear();
            Ok(())
        };
        for item in old.iter() {
            let (k, v) = item?;
            let position = Position::from_key(&k).ok_or_else(|| StoreError::Corrupt {
                position: None,
                message: "a key of the format-2 log is not a position".into(),
            })?;
            if rows.last().is_some_and(|(p, _)| p.next() != position) {
                write(&mut rows)?;
            }
            rows.push((position, v.to_vec()));
            moved += 1;
            if rows.len() >= 4096 {
                write(&mut rows)?;
            }
        }
        write(&mut rows)?;
        tracing::info!(
            events = moved,
            "upgraded the data folder from format 2 to 3"
        );
        self.sync()
    }

    /// Upgrades a format-1 folder: its per-command records (`c` keys) become journal records, and its per-event index
    /// keys (`x`) are dropped (the background index is rebuilt from the log right after). One sled batch, made
    /// durable before `ledger.json` says 2, so an interrupted upgrade simply runs again.
    fn upgrade_from_v1(&self) -> Result<(), StoreError> {
        #[derive(serde::Deserialize)]
        struct V1Record {
            fingerprint: String,
            positions: Vec<Position>,
        }
        let mut batch = sled::Batch::default();
        let mut committed = Vec::new();
        for item in self.aux.scan_prefix(b"c") {
            let (k, v) = item?;
            let id: [u8; 16] = k
                .get(1..17)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| StoreError::Corrupt {
                    position: None,
                    message: "a format-1 command key is malformed".into(),
                })?;
            let record: V1Record = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                position: None,
                message: format!("a format-1 command record does not decode: {e}"),
            })?;
            let command_id =
                CommandId::new(uuid::Uuid::from_bytes(id)).map_err(|_| StoreError::Corrupt {
                    position: None,
                    message: "a format-1 command record has a nil id".into(),
                })?;
            let fingerprint = hex::decode(&record.fingerprint)
                .ok()
                .and_then(|b| b.get(..16).and_then(|f| f.try_into().ok()));
            let first = record.positions.first().copied().unwrap_or_default();
            committed.push(Committed {
                command_id,
                fingerprint,
                first,
                count: u32::try_from(record.positions.len()).unwrap_or(u32::MAX),
            });
            batch.remove(k);
        }
        for item in self.aux.scan_prefix(b"x") {
            batch.remove(item?.0);
        }
        for (seq, chunk) in (1..).zip(committed.chunks(journal::MAX_PER_RECORD)) {
            batch.insert(&journal::key(seq)[..], journal::encode(chunk));
        }
        tracing::info!(
            commands = committed.len(),
            "upgrading the data folder from format 1 to 2"
        );
        self.aux.apply_batch(batch)?;
        self.sync()
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
        let last = self.log.last()?;
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
            (Some(_), Some(last)) => last,
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
    pub fn verify_range(
        &self,
        from: Position,
        to: Position,
        mut progress: impl FnMut(Position),
    ) -> Result<(), StoreError> {
        let mut prev = if from.0 <= 1 {
            super::GENESIS_HASH.to_string()
        } else {
            let before = Position(from.0 - 1);
            let raw = self.log.get(before)?.ok_or_else(|| StoreError::Corrupt {
                position: Some(before),
                message: format!("event {before} is missing"),
            })?;
            stored_hash(&raw, before)?
        };
        let mut expected = from;
        for item in self.log.events(Position(from.0 - 1), Some(to)) {
            let (pos, v) = item?;
            if pos != expected {
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
        let last = self.log.last()?.map(|(p, _)| p).unwrap_or_default();
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

type Row = (Position, Vec<u8>);

impl SledStore {
    /// Makes everything written so far durable, in any tree of this database: `flush()` then `fdatasync` of
    /// `sled/db` (sled's flush alone is not a power-loss barrier). For state outside the log that must survive a
    /// crash once acknowledged, such as a consumer's checkpoint.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file
            .sync_data()
            .map_err(io("fdatasync of the database file failed"))
    }

    /// Makes the next operation of `fault`'s kind fail, once. For tests of the failure paths; a real ledger never
    /// calls it.
    pub fn inject_fault(&self, fault: Fault) {
        self.inject(FaultPlan {
            fault,
            after: 0,
            persistent: false,
        });
    }

    /// Arms a [`FaultPlan`] (replacing any armed one). For tests of the failure paths.
    pub fn inject(&self, plan: FaultPlan) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = Some((plan, plan.after));
    }

    /// How many injected faults have struck.
    pub fn faults_struck(&self) -> u64 {
        self.faults_struck.load(Ordering::SeqCst)
    }

    fn injected(&self, fault: Fault) -> bool {
        let mut armed = self.fault.lock().unwrap_or_else(|e| e.into_inner());
        let Some((plan, left)) = armed.as_mut() else {
            return false;
        };
        if plan.fault != fault {
            return false;
        }
        if *left > 0 {
            *left -= 1;
            return false;
        }
        if !plan.persistent {
            *armed = None;
        }
        self.faults_struck.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// The free space the ledger keeps, for the writers outside the commit path (documents, snapshots).
    pub fn room(&self) -> &Room {
        &self.room
    }

    /// Whether an earlier storage failure stopped writes.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Flushes the history index now (it is also flushed in the background and at close).
    pub fn flush_index(&self) -> Result<usize, StoreError> {
        self.index.flush()
    }

    /// How many committed commands the journal remembers.
    pub fn commands_remembered(&self) -> usize {
        self.commands.len()
    }

    /// Seals `entries` after `base` without touching the disk: positions, envelopes and their hash chain, the journal
    /// record and the index entries. [`SledStore::persist`] writes the result, provided the head is still `base`.
    pub fn prepare(&self, entries: &[CommitEntry], base: &Head) -> Prepared {
        let mut position = base.position;
        let mut prev = base.hash.clone();
        let mut rows: Vec<Row> = Vec::with_capacity(entries.len());
        let mut index = Vec::with_capacity(entries.len());
        let mut journal = Vec::with_capacity(entries.len());
        let mut positions_out = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut positions = Vec::with_capacity(entry.events.len());
            for ev in &entry.events {
                position = position.next();
                let (raw, hash) = seal(ev, position, &prev);
                prev = hash;
                rows.push((position, raw));
                index.push((position, ev.event.entities()));
                positions.push(position);
            }
            journal.push(Committed {
                command_id: entry.command_id,
                fingerprint: Some(entry.fingerprint),
                first: positions.first().copied().unwrap_or(position),
                count: u32::try_from(positions.len()).unwrap_or(u32::MAX),
            });
            positions_out.push(positions);
        }
        Prepared {
            base: base.clone(),
            rows,
            journal,
            index,
            new_head: Head {
                position,
                hash: prev,
            },
            positions: positions_out,
        }
    }

    /// Writes a prepared batch and makes it durable: [`SledStore::write`] then [`SledStore::sync`].
    pub fn persist(&self, prepared: Prepared) -> Result<Vec<Vec<Position>>, StoreError> {
        let written = self.write(prepared)?;
        let positions = written.positions.clone();
        self.sync_written(vec![written])?;
        Ok(positions)
    }

    /// Writes a prepared batch in one transaction: its events, its journal records and the head marker. It is not
    /// durable yet and nobody sees it — the head, the command map and the index move only in
    /// [`SledStore::sync_written`] — so a caller may write the next batch while this one is being synced. Any failure
    /// stops further writes (fail-stop).
    pub fn write(&self, prepared: Prepared) -> Result<Written, StoreError> {
        let _writer = self.write.lock().unwrap_or_else(|e| e.into_inner());
        if self.failed.load(Ordering::SeqCst) {
            return Err(StoreError::FailStopped);
        }
        let written_head = self.written_head();
        if written_head != prepared.base {
            return Err(StoreError::Corrupt {
                position: Some(prepared.base.position.next()),
                message: format!(
                    "a batch prepared after position {} was offered at position {}",
                    prepared.base.position, written_head.position
                ),
            });
        }
        let Prepared {
            rows,
            journal,
            index,
            new_head,
            positions,
            ..
        } = prepared;
        let head_bytes = serde_json::to_vec(&new_head).unwrap_or_default();
        let first_seq = self.journal_seq.load(Ordering::SeqCst);
        let records: Vec<([u8; 9], Vec<u8>)> = journal
            .chunks(journal::MAX_PER_RECORD)
            .zip(first_seq..)
            .map(|(chunk, seq)| (journal::key(seq), journal::encode(chunk)))
            .collect();
        if self.injected(Fault::Write) {
            return Err(StoreError::WriteFailed {
                message: "the write transaction failed (injected fault)".into(),
            });
        }
        let bytes: usize = rows.iter().map(|(_, r)| r.len()).sum();
        if let Err(message) = self.room.check(2 * bytes as u64) {
            return Err(StoreError::WriteFailed { message });
        }
        let segments = segment::pack(&rows);
        let result: Result<(), TransactionError<()>> =
            (&self.log.tree, &self.aux).transaction(|(e, a)| {
                for (k, v) in &segments {
                    e.insert(&k[..], v.as_slice())?;
                }
                for (k, v) in &records {
                    a.insert(&k[..], v.as_slice())?;
                }
                a.insert(HEAD_KEY, head_bytes.as_slice())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        if let Err(e) = result {
            let e = match e {
                TransactionError::Storage(s) => StoreError::Sled(s),
                TransactionError::Abort(()) => StoreError::Corrupt {
                    position: None,
                    message: "the write transaction aborted".into(),
                },
            };
            // sled applies a transaction all or nothing. If nothing of this one is visible, the failure is survived:
            // the caller goes on from the written head. Anything else stops writes.
            return match self.untouched_since(&written_head, first_seq) {
                Ok(true) => Err(StoreError::WriteFailed {
                    message: e.to_string(),
                }),
                _ => self.fail(e),
            };
        }
        self.journal_seq
            .store(first_seq + records.len() as u64, Ordering::SeqCst);
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = new_head.clone();
        Ok(Written {
            events: rows.len(),
            first_seq,
            journal,
            index,
            new_head,
            positions,
        })
    }

    /// Whether nothing was written after `head` (no log segment after it, the same head marker, no journal record from
    /// `journal_seq` on): a failed write transaction left no trace.
    fn untouched_since(&self, head: &Head, journal_seq: u64) -> Result<bool, StoreError> {
        let marker = self.aux.get(HEAD_KEY)?;
        let same_marker = match marker {
            None => head.position.0 == 0,
            Some(m) => serde_json::from_slice::<Head>(&m).is_ok_and(|h| h == *head),
        };
        let no_segment = self
            .log
            .tree
            .range(head.position.next().to_key()..)
            .next()
            .is_none();
        let no_record = self
            .aux
            .range(journal::key(journal_seq)..journal::key(u64::MAX))
            .next()
            .is_none();
        Ok(same_marker && no_segment && no_record)
    }

    /// Makes written batches durable — `flush()`, `fdatasync` of `sled/db`, then the `HEAD` file — and only then
    /// moves the head and shows them to the command map and the index. One sync covers every batch written so far.
    /// Any failure stops further writes (fail-stop).
    pub fn sync_written(&self, batches: Vec<Written>) -> Result<(), StoreError> {
        let Some(last) = batches.last() else {
            return Ok(());
        };
        let new_head = last.new_head.clone();
        if self.failed.load(Ordering::SeqCst) {
            return Err(StoreError::FailStopped);
        }
        if self.injected(Fault::Flush) {
            return self.fail(StoreError::Io {
                context: "flush of sled's log failed".into(),
                source: std::io::Error::other("injected fault"),
            });
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
        for b in &batches {
            self.appended.fetch_add(b.events as u64, Ordering::Relaxed);
            self.commands_committed
                .fetch_add(b.journal.len() as u64, Ordering::Relaxed);
            for (chunk, seq) in b.journal.chunks(journal::MAX_PER_RECORD).zip(b.first_seq..) {
                self.commands.add(journal_number(seq)?, chunk);
            }
            self.index.add(&b.index);
        }
        if self.index.tail_len() >= self.index_flush_positions {
            if let Some(f) = &self.flusher {
                f.wake();
            }
        }
        *self.head.lock().unwrap_or_else(|e| e.into_inner()) = new_head;
        Ok(())
    }

    /// The head after the last batch written (durable or not yet).
    pub fn written_head(&self) -> Head {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every committed command in commit order, as the command journal keeps it (for backups).
    pub fn journal(&self) -> impl Iterator<Item = Result<Committed, StoreError>> + '_ {
        self.aux
            .scan_prefix([journal::PREFIX])
            .filter_map(|item| match item {
                Err(e) => Some(vec![Err(StoreError::Sled(e))]),
                Ok((k, v)) => journal::seq_of(&k).map(|_| match journal::decode(&v) {
                    Ok(commands) => commands.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                }),
            })
            .flatten()
    }

    /// Appends already sealed envelopes (a restore of an export without journal): each must be the next position and
    /// link to the head, and is stored in canonical form; each run of events with one `command_id` gets a journal
    /// entry without a fingerprint. Durable on return, like `commit`.
    pub fn import(&self, envelopes: &[super::Envelope]) -> Result<(), StoreError> {
        let journal = journal::group(
            envelopes
                .iter()
                .map(|e| (e.position, super::idempotency_key(&e.actor, e.command_id))),
        );
        self.import_with(envelopes, journal)
    }

    /// Appends already sealed envelopes with their commands' journal entries as a backup recorded them
    /// (fingerprints, and commands that appended nothing), so a restored ledger answers re-submissions as the
    /// original did. Durable on return, like `commit`.
    pub fn import_with(
        &self,
        envelopes: &[super::Envelope],
        journal: Vec<Committed>,
    ) -> Result<(), StoreError> {
        let head = self.head();
        let mut prev = head.hash.clone();
        let mut expected = head.position;
        let mut rows: Vec<Row> = Vec::with_capacity(envelopes.len());
        let mut index = Vec::with_capacity(envelopes.len());
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
            index.push((expected, event.entities()));
            rows.push((expected, raw));
        }
        let covered: u64 = journal.iter().map(|c| u64::from(c.count)).sum();
        if covered != envelopes.len() as u64 {
            return Err(StoreError::Corrupt {
                position: Some(head.position.next()),
                message: format!(
                    "the restored journal entries cover {covered} events, but {} were given",
                    envelopes.len()
                ),
            });
        }
        let positions = journal.iter().map(|c| c.record().positions).collect();
        self.persist(Prepared {
            base: head,
            rows,
            journal,
            index,
            new_head: Head {
                position: expected,
                hash: prev,
            },
            positions,
        })
        .map(|_| ())
    }
}

impl EventStore for SledStore {
    fn head(&self) -> Head {
        self.head.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn commit(&self, entries: &[CommitEntry]) -> Result<Vec<Vec<Position>>, StoreError> {
        let prepared = self.prepare(entries, &self.head());
        self.persist(prepared)
    }

    fn command(&self, id: CommandId) -> Result<Option<CommandRecord>, StoreError> {
        let Some(seq) = self.commands.record_of(id) else {
            return Ok(None);
        };
        let Some(v) = self.aux.get(journal::key(u64::from(seq)))? else {
            return Err(StoreError::Corrupt {
                position: None,
                message: format!(
                    "command {id} is indexed in journal record {seq}, which is missing"
                ),
            });
        };
        Ok(journal::find(&journal::decode(&v)?, id).map(|c| c.record()))
    }

    fn get(&self, position: Position) -> Result<Option<StoredEvent>, StoreError> {
        Ok(self
            .log
            .get(position)?
            .map(|raw| StoredEvent { position, raw }))
    }

    fn read(
        &self,
        after: Position,
        to: Option<Position>,
    ) -> Box<dyn Iterator<Item = Result<StoredEvent, StoreError>> + '_> {
        Box::new(
            self.log
                .events(after, to)
                .map(|r| r.map(|(position, raw)| StoredEvent { position, raw })),
        )
    }

    fn history(&self, entity: &EntityRef, after: Position) -> Result<Vec<Position>, StoreError> {
        self.index.history(entity, after)
    }

    fn counters(&self) -> StoreCounters {
        StoreCounters {
            batches: self.batches.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            fdatasyncs: self.fdatasyncs.load(Ordering::Relaxed),
            events: self.appended.load(Ordering::Relaxed),
            commands: self.commands_committed.load(Ordering::Relaxed),
        }
    }
}
