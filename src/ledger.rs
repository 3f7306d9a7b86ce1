//! The writer: the one place that sequences commands. It decides, appends one batch, flushes once, then acknowledges.
//!
//! Four threads share the work, so that deciding, durability and read models overlap instead of taking turns:
//! - the **writer** takes every command already queued (up to `max_batch`), decides each against the write model
//!   (which includes the earlier commands of the same batch, and of batches still being made durable), seals the
//!   batch's envelopes and hands it to the committer;
//! - the **committer** writes every batch handed to it so far in one sled transaction;
//! - the **syncer** makes every written batch durable with one `flush()` and one `fdatasync` (group commit), files
//!   their refusals, and only then answers every command of those batches;
//! - the **projector** applies each durable batch to its own copy of the write model, the [`Live`] state that "now"
//!   views read, rewrites the read-model documents of the entities that changed every `projection_interval`, and
//!   writes a write-model snapshot every `snapshot_every` events and at close.
//!
//! A failed write that left nothing behind is survived: that batch and every batch decided on top of it are answered
//! `unknown`, and the writer goes on from the durable state. Any other storage failure stops all writes (fail-stop).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::audit::{RefusalLog, RefusalRecord};
use crate::domain::{
    self, CommandId, EntityRef, Event, EventId, Position, Refusal, State, Submitted, Timestamp,
};
use crate::projection::{Projections, Touched};
use crate::store::{
    CommitEntry, EventStore, Fingerprint, Head, NewEvent, Prepared, SledStore, StoreError,
    StoreOptions,
};

mod live;
mod outcome;

pub use live::{Live, CATCH_UP_TIMEOUT};
pub use outcome::Outcome;

/// A source of the ledger clock; injected so tests can pin time.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| Timestamp::from_datetime(chrono::Utc::now()))
}

/// How to open a ledger.
#[derive(Clone)]
pub struct LedgerConfig {
    pub data_dir: PathBuf,
    pub store: StoreOptions,
    /// The most commands decided and committed together.
    pub max_batch: usize,
    /// How many submitted commands may wait for the writer before `submit` waits too (backpressure).
    pub queue: usize,
    pub clock: Clock,
    /// How often the projector writes the documents of the entities that changed to the read-model trees (they are
    /// also written at close; "now" views never wait for this, they read the live state).
    pub projection_interval: Duration,
    /// Write a write-model snapshot after this many events (and at close, when at least `snapshot_at_close` events
    /// came after the last one), so opening replays only what follows it.
    pub snapshot_every: u64,
    pub snapshot_at_close: u64,
}

impl LedgerConfig {
    /// Defaults for a data folder.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            store: StoreOptions::default(),
            max_batch: 4096,
            queue: 65536,
            clock: system_clock(),
            projection_interval: Duration::from_millis(1000),
            snapshot_every: 500_000,
            snapshot_at_close: 10_000,
        }
    }
}

/// Upper bounds of the commit-latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
];
/// Upper bounds of the batch-size histogram buckets, in commands.
pub const BATCH_BUCKETS: [u64; 9] = [1, 2, 4, 8, 16, 64, 256, 1024, 4096];

/// Writer-side counters, beside the store's.
#[derive(Default)]
struct WriterCounters {
    committed: AtomicU64,
    refused: AtomicU64,
    duplicates: AtomicU64,
    unknown: AtomicU64,
    largest_batch: AtomicU64,
    /// Commit latency (decide + write + flush + fdatasync) per durable batch, cumulative per bucket, plus +Inf.
    latency: [AtomicU64; 11],
    latency_micros_sum: AtomicU64,
    /// Commands per durable batch, cumulative per bucket, plus +Inf.
    batch_sizes: [AtomicU64; 10],
}

impl WriterCounters {
    fn record_batch(&self, elapsed: std::time::Duration, commands: usize) {
        let secs = elapsed.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency[LATENCY_BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_micros_sum.fetch_add(micros, Ordering::Relaxed);
        let n = commands as u64;
        for (i, bound) in BATCH_BUCKETS.iter().enumerate() {
            if n <= *bound {
                self.batch_sizes[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.batch_sizes[BATCH_BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Histograms for metrics: cumulative bucket counts (the last is +Inf) and sums.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Histograms {
    pub commit_latency_buckets: Vec<u64>,
    pub commit_latency_seconds_sum: f64,
    pub batch_size_buckets: Vec<u64>,
}

/// A snapshot of the counters that show group commit and durability at work.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct Stats {
    /// Store batches (each: one transaction, one flush, one fdatasync).
    pub batches: u64,
    pub flushes: u64,
    pub fdatasyncs: u64,
    pub events: u64,
    /// Commands acknowledged as committed (new, not duplicates).
    pub committed: u64,
    pub refused: u64,
    pub duplicates: u64,
    pub unknown: u64,
    /// The most commands committed in one batch.
    pub largest_batch: u64,
}

/// A command as the writer receives it.
struct Queued {
    submitted: Submitted,
    /// What the submitter may see: entities outside it are decided as if they did not exist.
    scope: crate::access::Scope,
    /// Computed by the submitting thread, so the writer does not spend its time on it.
    fingerprint: Fingerprint,
}

struct Job {
    command: Queued,
    reply: oneshot::Sender<Outcome>,
}

impl Job {
    /// A queued command; one without a `command_id` gets its id here, so every answer, `unknown` ones included, names
    /// the id to retry with.
    fn new(
        mut submitted: Submitted,
        scope: crate::access::Scope,
        reply: oneshot::Sender<Outcome>,
    ) -> Job {
        submitted.command_id.get_or_insert_with(new_command_id);
        let full = submitted.fingerprint();
        let mut fingerprint = [0u8; 16];
        fingerprint.copy_from_slice(&full[..16]);
        Job {
            command: Queued {
                submitted,
                scope,
                fingerprint,
            },
            reply,
        }
    }

    fn command_id(&self) -> CommandId {
        self.command
            .submitted
            .command_id
            .unwrap_or_else(unreachable_id)
    }
}

/// A random (version 4) UUID from the thread's CSPRNG, without a system call per id.
fn random_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// Failures to open a ledger.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event does not replay: the log is damaged or was written by an incompatible version.
    #[error("event {position} does not replay: {message}")]
    Replay { position: Position, message: String },
}

/// A pending answer to a command, which already has its `command_id`.
pub struct Ticket {
    rx: oneshot::Receiver<Outcome>,
    command_id: CommandId,
}

impl Ticket {
    /// Waits for the outcome on this thread.
    pub fn wait(self) -> Outcome {
        let id = self.command_id;
        self.rx.blocking_recv().unwrap_or_else(|_| writer_gone(id))
    }
    /// The outcome if it is already there.
    pub fn try_now(&mut self) -> Option<Outcome> {
        self.rx.try_recv().ok()
    }
    /// Waits for the outcome asynchronously.
    pub async fn outcome(self) -> Outcome {
        let id = self.command_id;
        self.rx.await.unwrap_or_else(|_| writer_gone(id))
    }
    /// The command's id (given by the client, or assigned when it was submitted).
    pub fn command_id(&self) -> CommandId {
        self.command_id
    }
}

fn writer_gone(command_id: CommandId) -> Outcome {
    Outcome::Unknown {
        command_id,
        message: "the ledger writer stopped before answering; retry with the same command_id"
            .into(),
    }
}

fn unreachable_id() -> CommandId {
    // A v4 UUID is never nil; this exists only to avoid a panic path.
    "00000000-0000-4000-8000-000000000001"
        .parse()
        .unwrap_or_else(|_| unreachable!())
}

/// Folds the whole log into the write model.
pub fn replay(store: &dyn EventStore, progress: impl FnMut(Position)) -> Result<State, OpenError> {
    replay_onto(store, State::new(), Position(0), progress)
}

/// Folds the log after `after` into `state`.
pub fn replay_onto(
    store: &dyn EventStore,
    mut state: State,
    after: Position,
    mut progress: impl FnMut(Position),
) -> Result<State, OpenError> {
    for item in store.read(after, None) {
        let stored = item?;
        let (at, event) = stored.decode().map_err(|e| OpenError::Replay {
            position: stored.position,
            message: e.to_string(),
        })?;
        state.apply(at, &event);
        progress(stored.position);
    }
    Ok(state)
}

/// The write model at the head: from the snapshot when it belongs to this log, plus the events after it; otherwise
/// replayed from the start. Returns the state and the position the snapshot covered (0 without one).
pub fn load_state(
    dir: &std::path::Path,
    store: &dyn EventStore,
    progress: impl FnMut(Position),
) -> Result<(State, Position), OpenError> {
    let (state, from) = match crate::snapshot::load(dir, store) {
        Ok((state, position)) => (state, position),
        Err(crate::snapshot::Unusable::Missing) => (State::new(), Position(0)),
        Err(crate::snapshot::Unusable::Rejected(why)) => {
            tracing::warn!(reason = %why, "the write-model snapshot is not used; replaying the whole log");
            (State::new(), Position(0))
        }
    };
    Ok((replay_onto(store, state, from, progress)?, from))
}

/// A batch decided by the writer, on its way to the committer.
struct Decided {
    /// The writer's batch number.
    seq: u64,
    /// The writer's epoch when it decided the batch: a survived write failure starts a new one, and batches of an
    /// older epoch (decided on top of the failed one) are never written.
    epoch: u64,
    /// The events to persist (none when every command was refused or a duplicate).
    prepared: Option<Prepared>,
    /// Each command's reply and what to answer once the batch is durable.
    drafts: Vec<(oneshot::Sender<Outcome>, Draft)>,
    refusals: Vec<(RefusalRecord, Vec<EntityRef>)>,
    /// The events, in position order, for the projector.
    events: Vec<(Position, Timestamp, Event)>,
    /// Each entry's positions (taken from `prepared` when it is written).
    positions: Vec<Vec<Position>>,
    started: Instant,
}

/// What the writer will answer once the batch is durable.
enum Draft {
    Done(Outcome),
    /// Committed in this batch as entry `n`.
    Entry(usize, CommandId),
    /// A re-submission of entry `n` of this same batch.
    DuplicateOfEntry(usize, CommandId),
    /// A re-submission of a command committed in this batch or one still in flight, with its positions.
    Duplicate(Vec<Position>, CommandId),
}

/// What the threads share.
struct Shared {
    store: Arc<SledStore>,
    counters: WriterCounters,
    /// Set by the committer after a storage failure: nothing is written any more (fail-stop).
    failed: AtomicBool,
    /// The last writer batch made durable.
    durable: AtomicU64,
    /// Bumped by the committer when a write fails without leaving a trace: the writer then goes back to the durable
    /// state and goes on (a failed write before any sync is survived).
    epoch: AtomicU64,
    /// Damage found by the background verification: the first bad position and what is wrong. Writes are refused.
    damage: Mutex<Option<(Option<Position>, String)>>,
    /// The background verification: how far it has checked the chain, and whether it finished.
    verified: AtomicU64,
    verify_done: AtomicBool,
}

impl Shared {
    /// Why writes are stopped, for the `unknown` answers.
    fn stopped_message(&self) -> String {
        match &*self.damage.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((position, message)) => format!(
                "writes are refused: the ledger is damaged{} ({message}); see docs/recovery.md",
                position.map(|p| format!(" at position {p}")).unwrap_or_default()
            ),
            None => "writes are stopped after a storage failure; reopen the ledger and retry with the same command_id".into(),
        }
    }
}

/// The background verification's state (see [`Ledger::verify_in_background`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Integrity {
    /// `verifying`, `verified` or `damaged`.
    pub status: &'static str,
    /// The chain is verified from position 1 up to here.
    pub verified_upto: Position,
    /// With `damaged`: the first bad position (when known) and what is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_position: Option<Position>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<String>,
}

/// An open ledger: a handle to submit commands and read the log. Dropping it (or [`Ledger::close`]) stops the writer
/// after it has answered every queued command.
pub struct Ledger {
    head: watch::Receiver<Position>,
    shared: Arc<Shared>,
    live: Arc<Live>,
    projections: Arc<Projections>,
    refusals: Arc<RefusalLog>,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    /// The writer, committer, syncer and projector, in the order they stop.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The background verification, with its stop flag.
    verifier: Mutex<Option<(Arc<AtomicBool>, JoinHandle<()>)>>,
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| StoreError::Io {
            context: format!("cannot start the {name} thread"),
            source: e,
        })
}

impl Ledger {
    /// Opens the ledger, rebuilds the write model (from its snapshot and the events after it) and starts the writer.
    pub fn open(config: LedgerConfig) -> Result<Ledger, OpenError> {
        let store = Arc::new(SledStore::open(&config.data_dir, &config.store)?);
        let (state, snapshot_at) = load_state(&config.data_dir, store.as_ref(), |_| {})?;
        let head = store.head();
        let projections = Arc::new(Projections::open(&store)?);
        projections.catch_up(store.as_ref(), &state)?;
        let refusals = Arc::new(RefusalLog::open(&store)?);
        let live = Arc::new(Live::new(state.clone(), head.position));
        let shared = Arc::new(Shared {
            store: Arc::clone(&store),
            counters: WriterCounters::default(),
            failed: AtomicBool::new(false),
            durable: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            damage: Mutex::new(None),
            verified: AtomicU64::new(0),
            verify_done: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let (head_tx, head_rx) = watch::channel(head.position);
        // A few decided batches may wait for the committer: enough to keep it busy, few enough that a failure
        // answers little speculative work as unknown.
        let (commit_tx, commit_rx) = std::sync::mpsc::sync_channel::<Decided>(4);
        let (project_tx, project_rx) =
            std::sync::mpsc::channel::<Vec<(Position, Timestamp, Event)>>();
        let projector = Projector {
            store: Arc::clone(&store),
            live: Arc::clone(&live),
            projections: Arc::clone(&projections),
            dir: config.data_dir.clone(),
            interval: config.projection_interval,
            snapshot_every: config.snapshot_every,
            snapshot_at_close: config.snapshot_at_close,
            since_snapshot: head.position.0.saturating_sub(snapshot_at.0),
        };
        let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel::<Written>(4);
        let committer = Committer {
            shared: Arc::clone(&shared),
            sync: sync_tx,
        };
        let syncer = Syncer {
            shared: Arc::clone(&shared),
            refusals: Arc::clone(&refusals),
            head: head_tx,
            project: project_tx,
        };
        let writer = Writer {
            shared: Arc::clone(&shared),
            live: Arc::clone(&live),
            epoch: 0,
            state,
            head,
            clock: Arc::clone(&config.clock),
            max_batch: config.max_batch.max(1),
            seq: 0,
            in_flight: HashMap::new(),
            commit: commit_tx,
        };
        let threads = vec![
            spawn("ledger-writer", move || writer.run(rx))?,
            spawn("ledger-commit", move || committer.run(commit_rx))?,
            spawn("ledger-sync", move || syncer.run(sync_rx))?,
            spawn("ledger-project", move || projector.run(project_rx))?,
        ];
        Ok(Ledger {
            head: head_rx,
            shared,
            live,
            projections,
            refusals,
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
            verifier: Mutex::new(None),
        })
    }

    fn sender(&self) -> Option<mpsc::Sender<Job>> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Queues a command from synchronous code (blocks while the queue is full). Must not be called from async code.
    pub fn submit(&self, submitted: Submitted) -> Ticket {
        self.submit_as(submitted, crate::access::Scope::All)
    }

    /// Queues a command from synchronous code on behalf of a principal confined to `scope`: a request, admin
    /// relationship or subscription it names but may not see is decided as if it did not exist (docs/security.md).
    pub fn submit_as(&self, submitted: Submitted, scope: crate::access::Scope) -> Ticket {
        let (reply, rx) = oneshot::channel();
        let job = Job::new(submitted, scope, reply);
        let command_id = job.command_id();
        if let Some(tx) = self.sender() {
            let _ = tx.blocking_send(job);
        }
        Ticket { rx, command_id }
    }

    /// Queues a command from async code.
    pub async fn submit_async(&self, submitted: Submitted) -> Ticket {
        self.submit_async_as(submitted, crate::access::Scope::All)
            .await
    }

    /// Queues a command from async code on behalf of a principal confined to `scope` (see [`Ledger::submit_as`]).
    pub async fn submit_async_as(
        &self,
        submitted: Submitted,
        scope: crate::access::Scope,
    ) -> Ticket {
        let (reply, rx) = oneshot::channel();
        let job = Job::new(submitted, scope, reply);
        let command_id = job.command_id();
        if let Some(tx) = self.sender() {
            let _ = tx.send(job).await;
        }
        Ticket { rx, command_id }
    }

    /// Submits and waits.
    pub fn execute(&self, submitted: Submitted) -> Outcome {
        self.submit(submitted).wait()
    }

    /// The event log, for reads.
    pub fn store(&self) -> &SledStore {
        &self.shared.store
    }

    /// The read models' stored documents (written every `projection_interval` and at close).
    pub fn projections(&self) -> &Projections {
        &self.projections
    }

    /// The write model as of the last durable batch, for "now" views.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Waits (up to [`CATCH_UP_TIMEOUT`]) until the live model reflects every event that was durable when it was
    /// called, so a read reflects every command answered before it began (read-your-writes); returns the position
    /// the live model reflects. The head moves before the projector applies a batch, so without this wait a read
    /// right after an answer could judge against the state before that answer's events.
    pub fn live_caught_up(&self) -> Position {
        let head = self.store().head().position;
        self.live.wait_for(head, CATCH_UP_TIMEOUT)
    }

    /// Holds the projector back while the guard lives, so the live model lags the head: a test hook that forces the
    /// races a reader must survive (a stream or a view right after a commit). Nothing but tests calls it.
    pub fn pause_projector(&self) -> std::sync::MutexGuard<'_, ()> {
        self.live.paused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the log's head: it changes after every durable batch. Readers of the log wait on it; it never makes the
    /// writer wait.
    pub fn watch_head(&self) -> watch::Receiver<Position> {
        self.head.clone()
    }

    /// Commit latency and batch size histograms.
    pub fn histograms(&self) -> Histograms {
        let c = &self.shared.counters;
        Histograms {
            commit_latency_buckets: c
                .latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            commit_latency_seconds_sum: c.latency_micros_sum.load(Ordering::Relaxed) as f64 / 1e6,
            batch_size_buckets: c
                .batch_sizes
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// The refusal audit trail.
    pub fn refusals(&self) -> &RefusalLog {
        &self.refusals
    }

    /// Counters for tests and metrics.
    pub fn stats(&self) -> Stats {
        let s = self.store().counters();
        let c = &self.shared.counters;
        Stats {
            batches: s.batches,
            flushes: s.flushes,
            fdatasyncs: s.fdatasyncs,
            events: s.events,
            committed: c.committed.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            unknown: c.unknown.load(Ordering::Relaxed),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
        }
    }

    /// Verifies the whole chain up to the current head on a background thread (the tail and the head marker were
    /// checked at open; what is appended from now on is written by this process). On damage it refuses every later
    /// write, naming the first bad position ([`Ledger::integrity`], `/healthz`); docs/recovery.md says what to do.
    pub fn verify_in_background(&self) -> Result<(), StoreError> {
        const CHUNK: u64 = 65_536;
        let shared = Arc::clone(&self.shared);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let to = self.store().head().position;
        let thread = spawn("ledger-verify", move || {
            let mut from = 1;
            while from <= to.0 && !stopping.load(Ordering::SeqCst) {
                let upto = (from + CHUNK - 1).min(to.0);
                match shared
                    .store
                    .verify_range(Position(from), Position(upto), |_| {})
                {
                    Ok(()) => shared.verified.store(upto, Ordering::SeqCst),
                    Err(e) => {
                        let (position, message) = match e {
                            StoreError::Corrupt { position, message } => (position, message),
                            other => (None, other.to_string()),
                        };
                        tracing::error!(position = ?position, %message, "the background verification found damage: writes are refused (docs/recovery.md)");
                        *shared.damage.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((position, message));
                        shared.failed.store(true, Ordering::SeqCst);
                        return;
                    }
                }
                from = upto + 1;
            }
            if from > to.0 {
                tracing::info!(events = to.0, "background verification: the chain verifies");
                shared.verify_done.store(true, Ordering::SeqCst);
            }
        })?;
        *self.verifier.lock().unwrap_or_else(|e| e.into_inner()) = Some((stop, thread));
        Ok(())
    }

    /// What the background verification found so far.
    pub fn integrity(&self) -> Integrity {
        let s = &self.shared;
        let damage = s.damage.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let verified_upto = Position(s.verified.load(Ordering::SeqCst));
        match damage {
            Some((position, message)) => Integrity {
                status: "damaged",
                verified_upto,
                first_bad_position: position,
                damage: Some(message),
            },
            None => Integrity {
                status: if s.verify_done.load(Ordering::SeqCst) {
                    "verified"
                } else {
                    "verifying"
                },
                verified_upto,
                first_bad_position: None,
                damage: None,
            },
        }
    }

    /// Stops accepting commands, lets the writer answer every queued one, writes the read models and (when due) a
    /// snapshot, and waits for all of it.
    pub fn close(&self) {
        if let Some((stop, thread)) = self
            .verifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.close();
    }
}

struct Writer {
    shared: Arc<Shared>,
    /// The durable write model, to go back to after a survived write failure.
    live: Arc<Live>,
    /// The epoch of the batches this writer decides (see [`Decided::epoch`]).
    epoch: u64,
    /// The write model including every decided batch, durable or not yet.
    state: State,
    /// The head after the last decided batch.
    head: Head,
    clock: Clock,
    max_batch: usize,
    seq: u64,
    /// Commands of batches not yet durable, for duplicate detection: fingerprint, positions and batch number.
    in_flight: HashMap<CommandId, (Fingerprint, Vec<Position>, u64)>,
    commit: std::sync::mpsc::SyncSender<Decided>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let epoch = self.shared.epoch.load(Ordering::SeqCst);
            if epoch != self.epoch && !self.shared.failed.load(Ordering::SeqCst) {
                self.rewind();
                self.epoch = epoch;
            }
            if self.shared.failed.load(Ordering::SeqCst) {
                for j in jobs {
                    let id = j.command_id();
                    self.shared.counters.unknown.fetch_add(1, Ordering::Relaxed);
                    let _ = j.reply.send(Outcome::Unknown {
                        command_id: id,
                        message: self.shared.stopped_message(),
                    });
                }
                continue;
            }
            let decided = self.decide_batch(jobs);
            if self.commit.send(decided).is_err() {
                return;
            }
        }
    }

    /// After a survived write failure: waits until every batch written before it is durable and in the live model,
    /// then continues from there, dropping the speculative state of the batches that were never written.
    fn rewind(&mut self) {
        let store = &self.shared.store;
        loop {
            if self.shared.failed.load(Ordering::SeqCst) {
                return;
            }
            let head = store.head();
            if head == store.written_head() && self.live.position() >= head.position {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.state = self.live.read(|s, _| s.clone());
        self.head = store.head();
        self.in_flight.clear();
        tracing::warn!(head = %self.head.position, "a write failed and left nothing behind; writing goes on from the durable head");
    }

    fn decide_batch(&mut self, jobs: Vec<Job>) -> Decided {
        let started = Instant::now();
        self.seq += 1;
        let durable = self.shared.durable.load(Ordering::SeqCst);
        self.in_flight.retain(|_, (_, _, seq)| *seq > durable);
        let now = (self.clock)();
        let mut entries: Vec<CommitEntry> = Vec::new();
        let mut in_batch: HashMap<CommandId, (Fingerprint, usize)> = HashMap::new();
        let mut drafts = Vec::with_capacity(jobs.len());
        let mut refusals = Vec::new();
        for job in jobs {
            let draft =
                self.decide_one(job.command, now, &mut entries, &mut in_batch, &mut refusals);
            drafts.push((job.reply, draft));
        }
        let mut events = Vec::new();
        let prepared = if entries.is_empty() {
            None
        } else {
            let prepared = self.shared.store.prepare(&entries, &self.head);
            self.head = prepared.head().clone();
            for (entry, positions) in entries.into_iter().zip(prepared.positions()) {
                self.in_flight.insert(
                    entry.command_id,
                    (entry.fingerprint, positions.clone(), self.seq),
                );
                for (ev, p) in entry.events.into_iter().zip(positions) {
                    events.push((*p, ev.at, ev.event));
                }
            }
            Some(prepared)
        };
        Decided {
            seq: self.seq,
            epoch: self.epoch,
            prepared,
            drafts,
            refusals,
            events,
            positions: Vec::new(),
            started,
        }
    }

    /// The journal's record of a command: under its idempotency key, or (for a partner's or customer's command) under
    /// its plain id when the journal was written before keys were per tenant (an older ledger, or an upgraded one) and
    /// that record's events were the same tenant's. Another tenant's record is never answered from.
    fn recorded(
        &self,
        key: CommandId,
        command_id: CommandId,
        actor: &domain::Actor,
    ) -> Result<Option<crate::store::CommandRecord>, StoreError> {
        let store = &self.shared.store;
        if let Some(r) = store.command(key)? {
            return Ok(Some(r));
        }
        if key == command_id {
            return Ok(None);
        }
        let Some(r) = store.command(command_id)? else {
            return Ok(None);
        };
        let Some(first) = r.positions.first() else {
            return Ok(None);
        };
        let same_tenant = match store.get(*first)? {
            Some(e) => e.envelope()?.actor.tenant == actor.tenant,
            None => false,
        };
        Ok(same_tenant.then_some(r))
    }

    /// Runs `f` with a hidden entity taken out of the write model, then puts it back. Only refusing paths run
    /// inside: a command on an entity that does not exist is always refused, so nothing is applied meanwhile.
    fn without<R>(&mut self, hidden: crate::access::Hidden, f: impl FnOnce(&mut Self) -> R) -> R {
        use crate::access::Hidden;
        /// Takes `id` out of one map of the write model, runs `f`, and puts it back.
        fn aside<K: std::hash::Hash + Eq + Copy, V, R>(
            this: &mut Writer,
            map: fn(&mut State) -> &mut HashMap<K, V>,
            id: K,
            f: impl FnOnce(&mut Writer) -> R,
        ) -> R {
            let kept = map(&mut this.state).remove(&id);
            let r = f(this);
            if let Some(k) = kept {
                map(&mut this.state).insert(id, k);
            }
            r
        }
        match hidden {
            Hidden::Request(id) => aside(self, |s| &mut s.requests, id, f),
            Hidden::AdminRelationship(id) => aside(self, |s| &mut s.admin, id, f),
            Hidden::Subscription(id) => aside(self, |s| &mut s.subscriptions, id, f),
        }
    }

    /// Files a refusal under the entities the command names. With `hidden`, an entity its submitter may not see, they
    /// are read with that entity out of the state, as for a random id (docs/security.md).
    fn file_refusal(
        &mut self,
        refusals: &mut Vec<(RefusalRecord, Vec<EntityRef>)>,
        submitted: &Submitted,
        (command_id, hidden): (CommandId, Option<crate::access::Hidden>),
        at: Timestamp,
        now: Timestamp,
        refusal: &Refusal,
    ) {
        let entities = match hidden {
            Some(h) => self.without(h, |this| submitted.body.entities(&this.state)),
            None => submitted.body.entities(&self.state),
        };
        let record = RefusalRecord::new(
            now,
            at,
            command_id,
            submitted.actor.clone(),
            submitted.body.type_name(),
            &entities,
            refusal,
        );
        refusals.push((record, entities));
    }

    fn decide_one(
        &mut self,
        queued: Queued,
        now: Timestamp,
        entries: &mut Vec<CommitEntry>,
        in_batch: &mut HashMap<CommandId, (Fingerprint, usize)>,
        refusals: &mut Vec<(RefusalRecord, Vec<EntityRef>)>,
    ) -> Draft {
        let Queued {
            submitted,
            scope,
            fingerprint,
        } = queued;
        let command_id = submitted.command_id.unwrap_or_else(new_command_id);
        // Idempotency is per tenant for partners and customers (`store::idempotency_key`); answers name the id sent.
        let key = crate::store::idempotency_key(&submitted.actor, command_id);
        let hidden = scope.hidden(&self.state, &submitted.body);
        let reused = |this: &mut Self, refusals: &mut Vec<_>, submitted: &Submitted| {
            let refusal = Refusal::plain(
                domain::Code::CommandIdReused,
                format!("command_id {command_id} was already used by a different command"),
            );
            this.file_refusal(
                refusals,
                submitted,
                (command_id, hidden),
                submitted.at.unwrap_or(now),
                now,
                &refusal,
            );
            Draft::Done(Outcome::Refused {
                command_id,
                refusal,
            })
        };
        if let Some((fp, n)) = in_batch.get(&key) {
            return if *fp == fingerprint {
                Draft::DuplicateOfEntry(*n, command_id)
            } else {
                reused(self, refusals, &submitted)
            };
        }
        if let Some((fp, positions, _)) = self.in_flight.get(&key) {
            return if *fp == fingerprint {
                Draft::Duplicate(positions.clone(), command_id)
            } else {
                reused(self, refusals, &submitted)
            };
        }
        match self.recorded(key, command_id, &submitted.actor) {
            Ok(Some(record)) => {
                // An imported record has no fingerprint: the id alone identifies the command.
                return if record.fingerprint.is_none_or(|f| f == fingerprint) {
                    Draft::Duplicate(record.positions, command_id)
                } else {
                    reused(self, refusals, &submitted)
                };
            }
            Ok(None) => {}
            Err(e) => {
                return Draft::Done(Outcome::Unknown {
                    command_id,
                    message: format!("the idempotency record could not be read: {e}"),
                })
            }
        }
        let default_at = self.state.clock.map_or(now, |c| c.max(now));
        let cmd = submitted.clone().into_command(command_id, default_at, now);
        if let Some(hidden) = hidden {
            // Decided, and its refusal filed, with the entity out of the state: exactly a random id's answer.
            let refusal = self.without(hidden, |this| {
                let refusal = domain::decide(&this.state, &cmd).err().unwrap_or_else(|| {
                    Refusal::plain(
                        domain::Code::InvalidState,
                        "the command names nothing it may act on",
                    )
                });
                this.file_refusal(
                    refusals,
                    &submitted,
                    (command_id, None),
                    cmd.at,
                    now,
                    &refusal,
                );
                refusal
            });
            return Draft::Done(Outcome::Refused {
                command_id,
                refusal,
            });
        }
        match domain::decide(&self.state, &cmd) {
            Err(refusal) => {
                self.file_refusal(
                    refusals,
                    &submitted,
                    (command_id, None),
                    cmd.at,
                    now,
                    &refusal,
                );
                Draft::Done(Outcome::Refused {
                    command_id,
                    refusal,
                })
            }
            Ok(events) => {
                let mut new_events = Vec::with_capacity(events.len());
                for event in events {
                    self.state.apply(cmd.at, &event);
                    new_events.push(NewEvent {
                        event_id: EventId::new(random_uuid()).unwrap_or_else(|_| unreachable!()),
                        event,
                        at: cmd.at,
                        recorded_at: now,
                        command_id,
                        correlation_id: cmd.correlation_id,
                        actor: cmd.actor.clone(),
                    });
                }
                let n = entries.len();
                entries.push(CommitEntry {
                    command_id: key,
                    fingerprint,
                    events: new_events,
                });
                in_batch.insert(key, (fingerprint, n));
                Draft::Entry(n, command_id)
            }
        }
    }
}

/// Batches written by the committer, on their way to the syncer.
struct Written {
    batches: Vec<Decided>,
    /// The store's record of the write; `None` when the batches appended nothing or the write failed.
    written: Option<crate::store::Written>,
    /// Why the write failed.
    error: Option<String>,
    /// Whether the failure stopped writes (else it was survived: the batches are answered unknown, writing goes on).
    fatal: bool,
}

/// Waits for the next item, then takes every other one already queued behind it (group commit). `None` once the
/// sender is gone and the queue is empty.
fn take_queued<T>(rx: &std::sync::mpsc::Receiver<T>) -> Option<Vec<T>> {
    let first = rx.recv().ok()?;
    let mut all = vec![first];
    all.extend(rx.try_iter());
    Some(all)
}

/// Writes decided batches into sled (one transaction for all that are queued) while the syncer makes the previous
/// ones durable.
struct Committer {
    shared: Arc<Shared>,
    sync: std::sync::mpsc::SyncSender<Written>,
}

impl Committer {
    fn run(self, rx: std::sync::mpsc::Receiver<Decided>) {
        while let Some(mut batches) = take_queued(&rx) {
            // Batches decided on top of a write that failed are never written (they come first: the writer starts
            // the new epoch only after it rewound).
            let epoch = self.shared.epoch.load(Ordering::SeqCst);
            let fresh = batches
                .iter()
                .position(|b| b.epoch == epoch)
                .unwrap_or(batches.len());
            let rest = batches.split_off(fresh);
            if !batches.is_empty() {
                let void = Written {
                    batches,
                    written: None,
                    error: Some("an earlier write in its group commit failed".into()),
                    fatal: false,
                };
                if self.sync.send(void).is_err() {
                    return;
                }
            }
            if rest.is_empty() {
                continue;
            }
            let written = self.write(rest);
            if self.sync.send(written).is_err() {
                return;
            }
        }
    }

    fn write(&self, mut batches: Vec<Decided>) -> Written {
        if self.shared.failed.load(Ordering::SeqCst) {
            return Written {
                batches,
                written: None,
                error: Some(self.shared.stopped_message()),
                fatal: true,
            };
        }
        let mut merged: Option<Prepared> = None;
        for b in &mut batches {
            let Some(p) = b.prepared.take() else { continue };
            b.positions = p.positions().to_vec();
            match merged.as_mut() {
                None => merged = Some(p),
                Some(m) => {
                    if m.append(p).is_err() {
                        // The writer chains every batch on the previous one; anything else is a bug.
                        self.shared.failed.store(true, Ordering::SeqCst);
                        return Written {
                            batches,
                            written: None,
                            error: Some("internal error: batches out of order".into()),
                            fatal: true,
                        };
                    }
                }
            }
        }
        let Some(merged) = merged else {
            return Written {
                batches,
                written: None,
                error: None,
                fatal: false,
            };
        };
        match self.shared.store.write(merged) {
            Ok(w) => Written {
                batches,
                written: Some(w),
                error: None,
                fatal: false,
            },
            Err(e @ StoreError::WriteFailed { .. }) => {
                self.shared.epoch.fetch_add(1, Ordering::SeqCst);
                Written {
                    batches,
                    written: None,
                    error: Some(format!("{e}")),
                    fatal: false,
                }
            }
            Err(e) => {
                self.shared.failed.store(true, Ordering::SeqCst);
                Written {
                    batches,
                    written: None,
                    error: Some(format!(
                        "storage failed while this command was in flight ({e})"
                    )),
                    fatal: true,
                }
            }
        }
    }
}

/// How an `unknown` answer ends when the batch may have reached the disk.
const RETRY: &str =
    "it may or may not be committed: reopen the ledger and retry with the same command_id";

/// Makes written batches durable with one `flush()` + `fdatasync` for all that are queued, files their refusals,
/// answers their commands in order, and hands their events to the projector.
struct Syncer {
    shared: Arc<Shared>,
    refusals: Arc<RefusalLog>,
    head: watch::Sender<Position>,
    project: std::sync::mpsc::Sender<Vec<(Position, Timestamp, Event)>>,
}

impl Syncer {
    fn run(self, rx: std::sync::mpsc::Receiver<Written>) {
        while let Some(groups) = take_queued(&rx) {
            self.sync(groups);
        }
    }

    /// Syncs and answers the groups in order: runs of written groups share one sync; a failed group is answered
    /// `unknown` after the groups before it are durable.
    fn sync(&self, groups: Vec<Written>) {
        const RETRY_NOW: &str = "nothing of it was written; retry with the same command_id";
        let mut run = Vec::new();
        for g in groups {
            match g.error.clone() {
                None => run.push(g),
                Some(error) => {
                    self.sync_run(std::mem::take(&mut run));
                    if g.fatal || self.shared.failed.load(Ordering::SeqCst) {
                        self.shared.failed.store(true, Ordering::SeqCst);
                        self.answer_unknown(g.batches, &format!("{error}; {RETRY}"));
                    } else {
                        self.answer_unknown(g.batches, &format!("{error}; {RETRY_NOW}"));
                    }
                }
            }
        }
        self.sync_run(run);
    }

    fn sync_run(&self, groups: Vec<Written>) {
        if groups.is_empty() {
            return;
        }
        if self.shared.failed.load(Ordering::SeqCst) {
            let batches = groups.into_iter().flat_map(|g| g.batches).collect();
            return self.answer_unknown(batches, &self.shared.stopped_message());
        }
        let mut batches = Vec::new();
        let mut written = Vec::new();
        for g in groups {
            batches.extend(g.batches);
            written.extend(g.written);
        }
        let appended = !written.is_empty();
        if appended {
            if let Err(e) = self.shared.store.sync_written(written) {
                self.shared.failed.store(true, Ordering::SeqCst);
                return self.answer_unknown(
                    batches,
                    &format!("storage failed while this command was in flight ({e}); {RETRY}"),
                );
            }
        }
        let c = &self.shared.counters;
        // Filed before answering, so a client that was refused finds the refusal in the history right away.
        let refusals: Vec<_> = batches
            .iter_mut()
            .flat_map(|b| std::mem::take(&mut b.refusals))
            .collect();
        if let Err(e) = self.refusals.append(&refusals) {
            tracing::warn!(error = %e, "refused commands could not be recorded in the audit trail");
        }
        let oldest = batches.iter().map(|b| b.started).min();
        let entries: usize = batches.iter().map(|b| b.positions.len()).sum();
        let mut events = Vec::new();
        let mut last_seq = 0;
        for b in batches {
            last_seq = b.seq;
            events.extend(b.events);
            let positions = b.positions;
            for (reply, draft) in b.drafts {
                let outcome = match draft {
                    Draft::Done(o) => o,
                    Draft::Entry(n, command_id) => Outcome::Committed {
                        command_id,
                        positions: positions[n].clone(),
                        duplicate: false,
                    },
                    Draft::DuplicateOfEntry(n, command_id) => Outcome::Committed {
                        command_id,
                        positions: positions[n].clone(),
                        duplicate: true,
                    },
                    Draft::Duplicate(positions, command_id) => Outcome::Committed {
                        command_id,
                        positions,
                        duplicate: true,
                    },
                };
                let counter = match &outcome {
                    Outcome::Committed {
                        duplicate: false, ..
                    } => &c.committed,
                    Outcome::Committed {
                        duplicate: true, ..
                    } => &c.duplicates,
                    Outcome::Refused { .. } => &c.refused,
                    Outcome::Unknown { .. } => &c.unknown,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(outcome);
            }
        }
        self.shared.durable.store(last_seq, Ordering::SeqCst);
        if appended {
            c.largest_batch.fetch_max(entries as u64, Ordering::Relaxed);
            if let Some(t) = oldest {
                c.record_batch(t.elapsed(), entries);
            }
            self.head.send_replace(self.shared.store.head().position);
            let _ = self.project.send(events);
        }
    }

    fn answer_unknown(&self, batches: Vec<Decided>, message: &str) {
        for b in batches {
            for (reply, draft) in b.drafts {
                let command_id = match &draft {
                    Draft::Done(o) => o.command_id(),
                    Draft::Entry(_, id)
                    | Draft::DuplicateOfEntry(_, id)
                    | Draft::Duplicate(_, id) => *id,
                };
                self.shared.counters.unknown.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Outcome::Unknown {
                    command_id,
                    message: message.to_string(),
                });
            }
        }
    }
}

struct Projector {
    store: Arc<SledStore>,
    live: Arc<Live>,
    projections: Arc<Projections>,
    dir: PathBuf,
    interval: Duration,
    snapshot_every: u64,
    snapshot_at_close: u64,
    /// Events applied since the last snapshot.
    since_snapshot: u64,
}

impl Projector {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Vec<(Position, Timestamp, Event)>>) {
        let mut touched = Touched::default();
        let mut last_write = Instant::now();
        loop {
            let wait = self.interval.saturating_sub(last_write.elapsed());
            match rx.recv_timeout(wait) {
                Ok(events) => {
                    self.since_snapshot += events.len() as u64;
                    self.live.apply(&events, &mut touched);
                    while let Ok(more) = rx.try_recv() {
                        self.since_snapshot += more.len() as u64;
                        self.live.apply(&more, &mut touched);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if last_write.elapsed() >= self.interval {
                self.write_documents(&mut touched);
                last_write = Instant::now();
            }
            if self.since_snapshot >= self.snapshot_every {
                self.snapshot();
            }
        }
        self.write_documents(&mut touched);
        if self.since_snapshot >= self.snapshot_at_close {
            self.snapshot();
        }
    }

    /// Rewrites the documents of everything that changed since the last write. A failure loses nothing: the
    /// checkpoints stay behind and the next open catches up.
    fn write_documents(&self, touched: &mut Touched) {
        if touched.is_empty() {
            return;
        }
        // Documents are small; a few MiB covers a second's worth, twice over for sled's log.
        if let Err(why) = self.store.room().check(8 * 1024 * 1024) {
            tracing::warn!(%why, "read models are not updated; they catch up once there is room, or at the next open");
            return;
        }
        let result = self
            .live
            .read(|state, position| self.projections.update(state, touched, position));
        if let Err(e) = result {
            tracing::warn!(error = %e, "read models could not be updated; they catch up at the next open");
        }
        *touched = Touched::default();
    }

    fn snapshot(&mut self) {
        // The new snapshot is written beside the old one before it replaces it.
        let previous =
            std::fs::metadata(self.dir.join(crate::snapshot::FILE)).map_or(0, |m| m.len());
        if let Err(why) = self.store.room().check(2 * previous.max(16 * 1024 * 1024)) {
            tracing::warn!(%why, "the write-model snapshot is not written; the next open replays more");
            return;
        }
        let result = self.live.read(|state, position| {
            let hash = match self.store.get(position) {
                Ok(Some(e)) => e.envelope().map(|env| env.hash),
                Ok(None) => return Ok(0),
                Err(e) => Err(e),
            }?;
            crate::snapshot::write(&self.dir, state, position, &hash)
        });
        match result {
            Ok(_) => self.since_snapshot = 0,
            Err(e) => {
                tracing::warn!(error = %e, "the write-model snapshot could not be written; the next open replays more")
            }
        }
    }
}

fn new_command_id() -> CommandId {
    CommandId::new(random_uuid()).unwrap_or_else(|_| unreachable_id())
}
