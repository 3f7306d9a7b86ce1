//! The ledger: one writer that sequences commands, with group commit, in a pipeline of four threads, so that
//! deciding, durability and read models overlap instead of taking turns:
//! - the **writer** (`writer.rs`) takes every command already queued (up to `max_batch`), decides each against the
//!   write model (which includes the earlier commands of the same batch, and of batches still being made durable),
//!   seals the batch's envelopes and hands it to the committer;
//! - the **committer** (`committer.rs`) stages every batch handed to it so far as one atomic write in the store;
//! - the **syncer** (`syncer.rs`) makes every staged batch durable with one settle (group commit), files their
//!   refusals, and only then answers every command of those batches;
//! - the **projector** (`projector.rs`) installs the write model each durable batch left (the writer's copy) as the [`Live`] model that "now" views read,
//!   rewrites the read-model documents of the entities that changed every `projection_interval`, and writes a
//!   write-model snapshot every `snapshot_every` events and at close.
//!
//! A failed write that left nothing behind is survived: that batch and every batch decided on top of it are answered
//! `unknown`, and the writer goes on from the durable state. Any other storage failure stops all writes (fail-stop).
//! `integrity.rs` verifies the whole chain in the background; `metrics.rs` counts; `outcome.rs` is the answer's
//! wire shape.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::domain::{CommandId, Position, Submitted, Timestamp};
use crate::projection::Projections;
use crate::store::{RefusalStore, Store, StoreError, StoreOptions};

mod committer;
mod coordinator;
#[cfg(test)]
mod fault_tests;
mod integrity;
mod live;
mod metrics;
#[cfg(test)]
mod model_tests;
mod outcome;
mod projector;
mod syncer;
mod writer;

pub use crate::replay::{load_state, replay, replay_onto, OpenError};
pub use coordinator::Role;
pub use integrity::{Integrity, IntegrityStatus};
pub use live::{Live, CATCH_UP_TIMEOUT};
pub use metrics::{Histograms, LatencyHistogram, Stats, BATCH_BUCKETS, LATENCY_BUCKETS};
pub use outcome::Outcome;

use committer::{Committer, Handoff};
use metrics::WriterCounters;
use projector::Projector;
use syncer::Syncer;
use writer::{Decided, Job, Writer};

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
    /// On PostgreSQL: this process shares the ledger with others (`serve`): it writes while it holds the writer's
    /// lease and follows the writer otherwise (`coordinator.rs`). `None`: it takes the lease at open or fails
    /// naming the holder (the CLI's commands that write).
    pub sharing: Option<Sharing>,
}

/// How a `serve` process shares a PostgreSQL ledger with others.
#[derive(Clone, Debug)]
pub struct Sharing {
    /// Where other processes forward commands to this one while it writes (advertised in the lease row).
    pub address: String,
    /// How long the writer's lease lasts unless renewed; it is renewed five times as often.
    pub lease: Duration,
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
            sharing: None,
        }
    }
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

/// What the threads share.
struct Shared {
    store: Arc<dyn Store>,
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
    /// Tests: a copy of the writer's own write model after its last batch (`model_tests.rs`).
    #[cfg(test)]
    writer_model: Mutex<Option<crate::domain::State>>,
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

/// An open ledger: a handle to submit commands and read the log. Dropping it (or [`Ledger::close`]) stops the writer
/// after it has answered every queued command.
pub struct Ledger {
    head: watch::Receiver<Position>,
    shared: Arc<Shared>,
    live: Arc<Live>,
    core: Arc<Core>,
    /// The background verification, with its stop flag.
    verifier: Mutex<Option<(Arc<AtomicBool>, JoinHandle<()>)>>,
    /// On PostgreSQL: the thread that renews the writer's lease, or follows the writer and takes the lease when it is
    /// free (`coordinator.rs`), with its stop flag.
    coordinator: Mutex<Option<(Arc<AtomicBool>, JoinHandle<()>)>>,
}

/// What the coordinator needs to start and stop writing.
struct Core {
    shared: Arc<Shared>,
    live: Arc<Live>,
    head: Arc<watch::Sender<Position>>,
    config: LedgerConfig,
    /// Where commands go while this process writes.
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    /// The writer, committer, syncer and projector, in the order they stop.
    threads: Mutex<Vec<JoinHandle<()>>>,
    role: Mutex<Role>,
    /// Why following the writer last failed, while it keeps failing (PostgreSQL followers).
    follow_error: Mutex<Option<String>>,
    /// On a replica: how far it is behind what it received, read every second.
    replica_lag: Mutex<Option<crate::store::postgres::ReplicaLag>>,
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

impl Core {
    /// Starts writing from `state`, the write model as of the store's head (`snapshot_at`: where the last snapshot
    /// was taken): the writer, committer, syncer and projector threads.
    fn start_writing(
        self: &Arc<Self>,
        state: crate::domain::State,
        snapshot_at: Position,
    ) -> Result<(), StoreError> {
        let store = Arc::clone(&self.shared.store);
        let head = store.head();
        let config = &self.config;
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        // A few decided batches may wait for the committer: enough to keep it busy, few enough that a failure
        // answers little speculative work as unknown.
        let (commit_tx, commit_rx) = std::sync::mpsc::sync_channel::<Decided>(4);
        let (project_tx, project_rx) = std::sync::mpsc::channel::<writer::Settled>();
        let projector = Projector {
            store: Arc::clone(&store),
            live: Arc::clone(&self.live),
            interval: config.projection_interval,
            snapshot_every: config.snapshot_every,
            snapshot_at_close: config.snapshot_at_close,
            since_snapshot: head.position.0.saturating_sub(snapshot_at.0),
        };
        let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel::<Handoff>(4);
        let committer = Committer {
            shared: Arc::clone(&self.shared),
            sync: sync_tx,
        };
        let syncer = Syncer {
            shared: Arc::clone(&self.shared),
            head: Arc::clone(&self.head),
            project: project_tx,
            unfiled: std::sync::Mutex::new(Vec::new()),
        };
        let writer = Writer {
            shared: Arc::clone(&self.shared),
            live: Arc::clone(&self.live),
            epoch: self.shared.epoch.load(Ordering::SeqCst),
            state,
            touched: crate::projection::Touched::default(),
            head,
            clock: Arc::clone(&config.clock),
            max_batch: config.max_batch.max(1),
            seq: self.shared.durable.load(Ordering::SeqCst),
            in_flight: HashMap::new(),
            commit: commit_tx,
            pending: std::collections::VecDeque::new(),
        };
        let threads = vec![
            spawn("ledger-writer", move || writer.run(rx))?,
            spawn("ledger-commit", move || committer.run(commit_rx))?,
            spawn("ledger-sync", move || syncer.run(sync_rx))?,
            spawn("ledger-project", move || projector.run(project_rx))?,
        ];
        *self.threads.lock().unwrap_or_else(|e| e.into_inner()) = threads;
        *self.tx.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        Ok(())
    }

    /// Stops writing: no command is taken any more, every queued one is answered, the read models are written.
    fn stop_writing(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// A field of this process's `/proc/self/status` in KiB (`VmRSS:`, resident now; `VmHWM:`, its peak).
pub fn resident_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Ledger {
    /// Opens the ledger, rebuilds the write model (from its snapshot and the events after it) and starts the writer.
    /// On PostgreSQL it first takes the writer's lease (`LedgerConfig::sharing` says what happens when another
    /// process holds it).
    pub fn open(config: LedgerConfig) -> Result<Ledger, OpenError> {
        let started = std::time::Instant::now();
        let store = crate::store::open(&config.data_dir, &config.store)?;
        let phase = |what: &str| {
            tracing::info!(
                elapsed_s = started.elapsed().as_secs_f64(),
                resident_mb = resident_kib("VmRSS:").unwrap_or(0) / 1024,
                peak_mb = resident_kib("VmHWM:").unwrap_or(0) / 1024,
                "open: {what}"
            );
        };
        phase("the store is open");
        if let (Some(pg), None) = (store.shared(), &config.sharing) {
            // A command of the CLI writes: on a standby it stops before replaying anything.
            pg.writable()?;
        }
        let ttl = config
            .sharing
            .as_ref()
            .map_or(crate::store::postgres::DEFAULT_LEASE, |s| s.lease);
        // The write model first (it may take seconds), then the lease, then the events written meanwhile: the lease
        // is never held for long without being renewed.
        let (state, snapshot_at) = load_state(store.as_ref(), |_| {})?;
        let loaded_at = store.head().position;
        phase(&format!(
            "the write model is loaded (snapshot at {snapshot_at}, head {loaded_at})"
        ));
        let writing = match (store.shared(), &config.sharing) {
            (None, _) => true,
            (Some(pg), None) => {
                pg.take_lease_for_cli(ttl)?;
                true
            }
            // A replica only reads: its process follows and forwards commands to the writer.
            (Some(pg), Some(_)) if pg.is_replica() => false,
            (Some(pg), Some(sharing)) => matches!(
                pg.take_lease(&sharing.address, ttl)?,
                crate::store::postgres::Taken::Ours(_)
            ),
        };
        let state = crate::replay::replay_onto(store.as_ref(), state, loaded_at, |_| {})?;
        let head = store.head();
        if writing {
            let _renewing = crate::store::postgres::renewing(&store, ttl)?;
            Projections::open(&*store).catch_up(&state)?;
            phase("the read models are current");
        }
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
            #[cfg(test)]
            writer_model: Mutex::new(None),
        });
        let (head_tx, head_rx) = watch::channel(head.position);
        let core = Arc::new(Core {
            shared: Arc::clone(&shared),
            live: Arc::clone(&live),
            head: Arc::new(head_tx),
            config: config.clone(),
            tx: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
            follow_error: Mutex::new(None),
            replica_lag: Mutex::new(None),
            role: Mutex::new(if writing {
                Role::Writer
            } else {
                Role::Follower { writer: None }
            }),
        });
        if writing {
            core.start_writing(state, snapshot_at)?;
            phase("the writer is started");
        }
        let coordinator = match store.shared() {
            Some(_) => Some(coordinator::start(Arc::clone(&core), ttl)?),
            None => None,
        };
        Ok(Ledger {
            head: head_rx,
            shared,
            live,
            core,
            verifier: Mutex::new(None),
            coordinator: Mutex::new(coordinator),
        })
    }

    /// How long the writer's lease lasts, when this process shares a PostgreSQL ledger with others (`serve`).
    pub fn lease_period(&self) -> Option<Duration> {
        self.shared.store.shared()?;
        self.core.config.sharing.as_ref().map(|s| s.lease)
    }

    /// Why this process cannot follow the writer, while that lasts (a follower of a shared PostgreSQL ledger whose
    /// reads of the log fail: the database is away, or an event does not replay).
    pub fn following_error(&self) -> Option<String> {
        self.core
            .follow_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// On a replica (a hot standby): how far it is behind what it received, as last read (every second).
    pub fn replica_lag(&self) -> Option<crate::store::postgres::ReplicaLag> {
        self.core
            .replica_lag
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether this process reads a replica (a hot standby): it never writes.
    pub fn on_replica(&self) -> bool {
        self.shared
            .store
            .shared()
            .is_some_and(crate::store::postgres::PgStore::is_replica)
    }

    /// Whether this process writes the ledger now, or follows the one that does (PostgreSQL, `serve`).
    pub fn role(&self) -> Role {
        self.core
            .role
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn sender(&self) -> Option<mpsc::Sender<Job>> {
        self.core
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
    pub fn store(&self) -> &dyn Store {
        &*self.shared.store
    }

    /// The read models' stored documents (written every `projection_interval` and at close).
    pub fn projections(&self) -> Projections<'_> {
        Projections::open(&*self.shared.store)
    }

    /// The write model as of the last durable batch, for "now" views.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Waits (up to [`CATCH_UP_TIMEOUT`]) until the live model reflects every event that was durable when it was
    /// called, so a read reflects every command answered before it began (read-your-writes); returns the position
    /// the live model reflects. The head moves before the projector installs a batch's model, so without this wait a read
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
        let (commit_latency_buckets, commit_latency_seconds_sum) = c.latency.read();
        Histograms {
            commit_latency_buckets,
            commit_latency_seconds_sum,
            batch_size_buckets: c
                .batch_sizes
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// The refusal audit trail.
    pub fn refusals(&self) -> &dyn RefusalStore {
        self.shared.store.refusals()
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
        if let Some((stop, thread)) = self
            .coordinator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
        self.core.stop_writing();
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.close();
    }
}
