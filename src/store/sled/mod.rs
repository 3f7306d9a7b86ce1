//! The sled backend: the embedded default, one process per data folder.
//!
//! Layout of a data folder: `ledger.json` (marks the folder as a ledger, with its format version), `LOCK` (held by the
//! process that has the ledger open; holds its pid), `HEAD` (a copy of the head outside sled) and `sled/`, the
//! database, with these trees:
//! - `log`: the events, a few consecutive canonical envelopes per key (`segment.rs`): big-endian `u64` position of
//!   the first → the envelopes, newline-separated;
//! - `aux`: `head` → the head marker (position + hash); `j` ‖ sequence → a command journal record (`journal.rs`);
//! - `index`: the history index, derived and flushed in the background (`index.rs`);
//! - `proj.customers`, `proj.partners`, `proj.expiring`: the read models' documents (`read_models.rs`);
//! - `audit.refusals`: the refusal audit trail (`refusals.rs`); `api.consumers`: the durable consumers
//!   (`consumers.rs`).
//!
//! Every batch is one sled transaction over `log` and `aux` (atomic after a crash), then `flush()`, then
//! `fdatasync` of `sled/db`, because sled's flush alone is not a power-loss barrier on Linux (STORAGE.md,
//! spacejam/sled#1452). A batch writes only sequential keys: its segments, one journal record and the head marker
//! (`pipeline.rs`).

#[cfg(feature = "bench")]
pub mod baseline;
mod consumers;
mod fault;
mod flusher;
mod folder;
pub(crate) mod index;
mod pipeline;
mod read_models;
mod recover;
mod refusals;
mod reserve;
pub mod segment;
pub use folder::snapshot_file::FILE as SNAPSHOT_FILE;
mod upgrade;
mod verify;
mod walk;

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[cfg(test)]
pub use fault::{Fault, FaultPlan};

use consumers::ConsumerTree;
use fault::Faults;
use flusher::Flusher;
use folder::{
    holds_only_lock, is_empty_dir, lock_for_self, read_marker_version, write_marker, HEAD_FILE,
    MARKER_FILE,
};
use index::Index;
use read_models::ReadModelTrees;
use refusals::RefusalLog;
use reserve::Room;
use segment::Log;

use super::journal::{self, Commands, Committed};
use super::sealed::{SealedBatch, StagedBatch};
use super::{
    CommandRecord, CommitEntry, ConsumerStore, Envelope, EventStore, Head, ReadModelStore,
    RefusalStore, Store, StoreCounters, StoreError, StoreOptions, StoredEvent,
};
use crate::domain::{CommandId, EntityRef, Position};

const SLED_DIR: &str = "sled";
const HEAD_KEY: &[u8] = b"head";
/// The data-folder format this build writes. 3 packs envelopes into segments (tree `log`); 2 kept one key per event
/// (tree `events`) and 1 also a record and index keys per command in `aux`. Older folders are upgraded at open.
const FORMAT_VERSION: u64 = 3;

/// The sled event log. Reads may run from any thread while the single writer commits.
pub struct SledStore {
    /// The data folder.
    dir: std::path::PathBuf,
    db: sled::Db,
    log: Log,
    aux: sled::Tree,
    /// Our own handle on `sled/db`, for `fdatasync`.
    data_file: File,
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
    /// The last journal record the command index file in the folder covers (0: none that is known to be current).
    index_file_covers: AtomicU64,
    /// The last journal record whose commands the in-memory index holds: found at open or settled since. A record
    /// staged but never settled (its batch failed) is in sled but not in the index.
    settled_journal: AtomicU64,
    flusher: Option<Flusher>,
    failed: AtomicBool,
    /// Faults armed by the crate's own tests (never in other builds).
    faults: Faults,
    read_models: ReadModelTrees,
    refusals: RefusalLog,
    consumers: ConsumerTree,
    batches: AtomicU64,
    flushes: AtomicU64,
    fdatasyncs: AtomicU64,
    appended: AtomicU64,
    commands_committed: AtomicU64,
    index_flush_positions: usize,
    /// Held for the life of the store: the advisory lock that keeps a second process out. The last field, so it is
    /// released only after every sled handle above is dropped.
    _lock: File,
}

/// Opens the sled database. This process holds the folder's `LOCK`, so sled's own lock on `sled/db` can only be
/// held by this same process: a handle still shutting down (sled's background flusher lets go of the database a
/// moment after its last handle is dropped), or a child being started, which holds a copy of every open file from its
/// fork until its exec. That is waited out, for up to five seconds.
fn open_sled(dir: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::Config::new()
            .path(dir.join(SLED_DIR))
            .cache_capacity(cache_bytes)
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Some(mut f) = self.flusher.take() {
            f.stop();
            // Only a store that loaded the journal (the flusher runs then) knows every committed command.
            if let Err(why) = self.write_commands_file() {
                tracing::warn!(%why, "the command index file is not written; the next open reads the whole journal");
            }
        }
    }
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
            let only_lock = holds_only_lock(dir)?;
            if !only_lock && !is_empty_dir(dir)? {
                return Err(StoreError::NotALedger(dir.to_path_buf()));
            }
            if only_lock {
                // Another process is creating a ledger here (it locks before it writes ledger.json): say so. A
                // lock left by a creator that died first is free and is taken below.
                drop(lock_for_self(dir)?);
            }
            if !options.create {
                return Err(StoreError::NoLedger(dir.to_path_buf()));
            }
        }
        let lock = lock_for_self(dir)?;
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
        let started = std::time::Instant::now();
        let db = match open_sled(dir, options.cache_bytes) {
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
        let room = Room {
            dir: dir.to_path_buf(),
            min_free_bytes: options.min_free_bytes,
        };
        let read_models = ReadModelTrees::open(&db)?;
        let refusals = RefusalLog::open(&db)?;
        let consumers = ConsumerTree::open(&db, room.clone())?;
        let mut store = SledStore {
            dir: dir.to_path_buf(),
            db,
            log,
            aux,
            data_file,
            _lock: lock,
            room,
            head_file,
            head: Mutex::new(Head::genesis()),
            written: Mutex::new(Head::genesis()),
            write: Mutex::new(()),
            index,
            commands: Commands::default(),
            journal_seq: AtomicU64::new(1),
            index_file_covers: AtomicU64::new(0),
            settled_journal: AtomicU64::new(0),
            flusher: None,
            failed: AtomicBool::new(false),
            faults: Faults::default(),
            read_models,
            refusals,
            consumers,
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
        tracing::info!(
            elapsed_s = started.elapsed().as_secs_f64(),
            "opened sled and checked the head"
        );
        if options.check_on_open {
            store.load_journal()?;
            tracing::info!(
                elapsed_s = started.elapsed().as_secs_f64(),
                "loaded the command journal's index"
            );
            store.catch_up_index()?;
            store.flusher = Some(Flusher::start(
                Arc::clone(&store.index),
                options.index_interval,
                store.room.clone(),
            )?);
        }
        Ok(store)
    }

    /// Writes the command index file for the next open, unless the one in the folder is current already, writes
    /// stopped after a failure, or a journal record was staged whose batch never settled: sled may still write that
    /// record, and a file claiming to cover it without its commands would let a retry of one of them commit twice.
    fn write_commands_file(&self) -> Result<(), String> {
        let last = self.journal_seq.load(Ordering::SeqCst).saturating_sub(1);
        if last == 0
            || self.failed.load(Ordering::SeqCst)
            || self.settled_journal.load(Ordering::SeqCst) != last
            || self.index_file_covers.load(Ordering::SeqCst) == last
        {
            return Ok(());
        }
        let Some(record) = self
            .aux
            .get(journal::key(last))
            .map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        let entries = self.commands.entries();
        // Twice its size: the old file stays until the new one replaces it.
        self.room.check(2 * (entries.len() as u64 * 12 + 1024))?;
        folder::commands_file::write(&self.dir, last, &record, &entries).map_err(|e| e.to_string())
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

    fn fail<T>(&self, e: StoreError) -> Result<T, StoreError> {
        self.failed.store(true, Ordering::SeqCst);
        tracing::error!(error = %e, "storage failure: writes are stopped until the ledger is reopened");
        Err(e)
    }
}

impl EventStore for SledStore {
    fn head(&self) -> Head {
        self.head.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn commit(&self, entries: &[CommitEntry]) -> Result<Vec<Vec<Position>>, StoreError> {
        self.persist(SealedBatch::seal(entries, &self.head()))
    }

    fn command(&self, id: CommandId) -> Result<Option<CommandRecord>, StoreError> {
        for seq in self.commands.records_of(id) {
            let Some(v) = self.aux.get(journal::key(u64::from(seq)))? else {
                return Err(StoreError::Corrupt {
                    position: None,
                    message: format!(
                        "command {id} may be in journal record {seq}, which is missing"
                    ),
                });
            };
            if let Some(found) = journal::find(&journal::decode(&v)?, id) {
                return Ok(Some(found.record()));
            }
        }
        Ok(None)
    }

    /// Only settled events: a staged batch is in the log tree already, but nobody sees it before it is durable.
    fn get(&self, position: Position) -> Result<Option<StoredEvent>, StoreError> {
        if position > EventStore::head(self).position {
            return Ok(None);
        }
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
        // Up to the durable head at most: a staged batch is not visible before it is settled.
        let head = EventStore::head(self).position;
        let to = Some(to.map_or(head, |t| t.min(head)));
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

impl Store for SledStore {
    fn stage(&self, batch: SealedBatch) -> Result<StagedBatch, StoreError> {
        self.stage_batch(batch)
    }

    fn settle(&self, batches: Vec<StagedBatch>) -> Result<(), StoreError> {
        self.settle_batches(batches)
    }

    fn staged_head(&self) -> Head {
        self.staged()
    }

    fn journal(&self) -> Box<dyn Iterator<Item = Result<Committed, StoreError>> + '_> {
        Box::new(self.journal_records())
    }

    fn import_with(
        &self,
        envelopes: &[Envelope],
        journal: Vec<Committed>,
    ) -> Result<(), StoreError> {
        self.import_batch(envelopes, journal)
    }

    fn verify_range(
        &self,
        from: Position,
        to: Position,
        progress: &mut dyn FnMut(Position),
    ) -> Result<(), StoreError> {
        SledStore::verify_range(self, from, to, progress)
    }

    fn verify_all(&self, progress: &mut dyn FnMut(Position)) -> Result<Head, StoreError> {
        SledStore::verify_all(self, progress)
    }

    fn sync(&self) -> Result<(), StoreError> {
        SledStore::sync(self)
    }

    fn room_for(&self, bytes: u64) -> Result<(), String> {
        self.room.check(bytes)
    }

    fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    fn flush_index(&self) -> Result<usize, StoreError> {
        self.index.flush()
    }

    fn commands_remembered(&self) -> usize {
        self.commands.len()
    }

    fn read_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        folder::snapshot_file::read(&self.dir)
    }

    fn snapshot_header(&self, len: usize) -> Result<Option<Vec<u8>>, StoreError> {
        folder::snapshot_file::header(&self.dir, len)
    }

    fn write_snapshot(&self, bytes: &[u8]) -> Result<(), StoreError> {
        folder::snapshot_file::write(&self.dir, &mut |out| out.write_all(bytes))
    }

    fn snapshot_reader(&self) -> Result<Option<Box<dyn std::io::Read + Send + '_>>, StoreError> {
        folder::snapshot_file::reader(&self.dir)
    }

    fn write_snapshot_with(
        &self,
        fill: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        folder::snapshot_file::write(&self.dir, fill)
    }

    fn snapshot_size(&self) -> u64 {
        folder::snapshot_file::size(&self.dir)
    }

    fn read_models(&self) -> &dyn ReadModelStore {
        &self.read_models
    }

    fn refusals(&self) -> &dyn RefusalStore {
        &self.refusals
    }

    fn consumers(&self) -> &dyn ConsumerStore {
        &self.consumers
    }

    #[cfg(test)]
    fn inject(&self, plan: FaultPlan) {
        self.faults.arm(plan);
    }

    #[cfg(test)]
    fn faults_struck(&self) -> u64 {
        self.faults.struck()
    }
}
