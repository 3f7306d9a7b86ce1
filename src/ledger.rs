//! The writer: the one place that sequences commands. It decides, appends one batch, flushes once, then acknowledges.
//!
//! Group commit: the writer thread takes every command already queued (up to `max_batch`), decides each against the
//! write model including the earlier commands of the same batch, appends all their events in one store commit
//! (one transaction, one `flush()`, one `fdatasync`), and only then answers every command of the batch. Commands that
//! arrive during the flush queue up and form the next batch, so throughput grows with concurrency.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::audit::{RefusalLog, RefusalRecord};
use crate::domain::{self, CommandId, EventId, Position, Refusal, State, Submitted, Timestamp};
use crate::projection::{Projections, Touched};
use crate::store::{CommitEntry, EventStore, NewEvent, SledStore, StoreError, StoreOptions};

/// The answer to one command (WIRE.md "Outcomes").
#[derive(Clone, PartialEq, Debug)]
pub enum Outcome {
    /// Appended durably (or, with `duplicate`, appended earlier under the same `command_id`).
    Committed {
        command_id: CommandId,
        positions: Vec<Position>,
        duplicate: bool,
    },
    /// The rules said no; nothing was appended.
    Refused {
        command_id: CommandId,
        refusal: Refusal,
    },
    /// Storage failed while the command was in flight: it may or may not be in the log. Retry with the same
    /// `command_id` after the ledger is reopened; idempotency makes that safe.
    Unknown {
        command_id: CommandId,
        message: String,
    },
}

impl Outcome {
    /// The WIRE.md JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Outcome::Committed {
                command_id,
                positions,
                duplicate,
            } => {
                let mut v = json!({"command_id": command_id, "outcome": "committed", "positions": positions});
                if *duplicate {
                    v["duplicate"] = json!(true);
                }
                v
            }
            Outcome::Refused {
                command_id,
                refusal,
            } => {
                let mut v = json!({
                    "command_id": command_id,
                    "outcome": "refused",
                    "code": refusal.code,
                    "rule": refusal.rule,
                    "message": refusal.message,
                });
                if let Some(vc) = refusal.code.vendor_code() {
                    v["vendor_code"] = json!(vc);
                }
                v
            }
            Outcome::Unknown {
                command_id,
                message,
            } => json!({
                "command_id": command_id,
                "outcome": "unknown",
                "message": message,
            }),
        }
    }

    /// The command id the outcome is about.
    pub fn command_id(&self) -> CommandId {
        match self {
            Outcome::Committed { command_id, .. }
            | Outcome::Refused { command_id, .. }
            | Outcome::Unknown { command_id, .. } => *command_id,
        }
    }
}

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

struct Job {
    submitted: Submitted,
    reply: oneshot::Sender<Outcome>,
}

/// An open ledger: a handle to submit commands and read the log. Dropping it (or [`Ledger::close`]) stops the writer
/// after it has answered every queued command.
pub struct Ledger {
    head: watch::Receiver<Position>,
    store: Arc<SledStore>,
    projections: Arc<Projections>,
    refusals: Arc<RefusalLog>,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<WriterCounters>,
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

/// A pending answer.
pub struct Ticket(oneshot::Receiver<Outcome>);

impl Ticket {
    /// Waits for the outcome on this thread.
    pub fn wait(self) -> Outcome {
        self.0.blocking_recv().unwrap_or_else(|_| writer_gone())
    }
    /// The outcome if it is already there.
    pub fn try_now(&mut self) -> Option<Outcome> {
        self.0.try_recv().ok()
    }
    /// Waits for the outcome asynchronously.
    pub async fn outcome(self) -> Outcome {
        self.0.await.unwrap_or_else(|_| writer_gone())
    }
}

fn writer_gone() -> Outcome {
    Outcome::Unknown {
        command_id: CommandId::new(uuid::Uuid::new_v4()).unwrap_or_else(|_| unreachable_id()),
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
pub fn replay(
    store: &dyn EventStore,
    mut progress: impl FnMut(Position),
) -> Result<State, OpenError> {
    let mut state = State::new();
    for item in store.read(Position(0), None) {
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

impl Ledger {
    /// Opens the ledger, rebuilds the write model from the log and starts the writer.
    pub fn open(config: LedgerConfig) -> Result<Ledger, OpenError> {
        let store = Arc::new(SledStore::open(&config.data_dir, &config.store)?);
        let state = replay(store.as_ref(), |_| {})?;
        let projections = Arc::new(Projections::open(&store)?);
        projections.catch_up(store.as_ref(), &state)?;
        let refusals = Arc::new(RefusalLog::open(&store)?);
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let counters = Arc::new(WriterCounters::default());
        let (head_tx, head) = watch::channel(store.head().position);
        let writer = Writer {
            store: Arc::clone(&store),
            projections: Arc::clone(&projections),
            refusals: Arc::clone(&refusals),
            audit: Vec::new(),
            head: head_tx,
            state,
            clock: Arc::clone(&config.clock),
            max_batch: config.max_batch.max(1),
            counters: Arc::clone(&counters),
        };
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Io {
                context: "cannot start the writer thread".into(),
                source: e,
            })?;
        Ok(Ledger {
            head,
            store,
            projections,
            refusals,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            counters,
        })
    }

    fn sender(&self) -> Option<mpsc::Sender<Job>> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Queues a command from synchronous code (blocks while the queue is full). Must not be called from async code.
    pub fn submit(&self, submitted: Submitted) -> Ticket {
        let (reply, rx) = oneshot::channel();
        if let Some(tx) = self.sender() {
            let _ = tx.blocking_send(Job { submitted, reply });
        }
        Ticket(rx)
    }

    /// Queues a command from async code.
    pub async fn submit_async(&self, submitted: Submitted) -> Ticket {
        let (reply, rx) = oneshot::channel();
        if let Some(tx) = self.sender() {
            let _ = tx.send(Job { submitted, reply }).await;
        }
        Ticket(rx)
    }

    /// Submits and waits.
    pub fn execute(&self, submitted: Submitted) -> Outcome {
        self.submit(submitted).wait()
    }

    /// The event log, for reads.
    pub fn store(&self) -> &SledStore {
        &self.store
    }

    /// The read models, kept at the head after every batch.
    pub fn projections(&self) -> &Projections {
        &self.projections
    }

    /// Follows the log's head: it changes after every durable batch. Readers of the log wait on it; it never makes the
    /// writer wait.
    pub fn watch_head(&self) -> watch::Receiver<Position> {
        self.head.clone()
    }

    /// Commit latency and batch size histograms.
    pub fn histograms(&self) -> Histograms {
        let c = &self.counters;
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
        let s = self.store.counters();
        let c = &self.counters;
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

    /// Stops accepting commands, lets the writer answer every queued one, and waits for it.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.close();
    }
}

struct Writer {
    store: Arc<SledStore>,
    projections: Arc<Projections>,
    refusals: Arc<RefusalLog>,
    /// Refusals decided in the current batch, filed once the batch is answered.
    audit: Vec<(RefusalRecord, Vec<domain::EntityRef>)>,
    head: watch::Sender<Position>,
    state: State,
    clock: Clock,
    max_batch: usize,
    counters: Arc<WriterCounters>,
}

/// What the writer will answer once the batch is durable.
enum Draft {
    Done(Outcome),
    /// Committed in this batch as entry `n`.
    Entry(usize, CommandId),
    /// A re-submission of entry `n` of this same batch.
    DuplicateOfEntry(usize, CommandId),
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut failed = false;
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            if failed {
                for j in jobs {
                    let id = j.submitted.command_id.unwrap_or_else(new_command_id);
                    self.counters.unknown.fetch_add(1, Ordering::Relaxed);
                    let _ = j.reply.send(Outcome::Unknown {
                        command_id: id,
                        message: "writes are stopped after a storage failure; reopen the ledger and retry with the same command_id".into(),
                    });
                }
                continue;
            }
            failed = !self.process(jobs);
        }
    }

    /// Decides, commits and answers one batch. Returns false after a storage failure (fail-stop).
    fn process(&mut self, jobs: Vec<Job>) -> bool {
        let started = std::time::Instant::now();
        let now = (self.clock)();
        let mut entries: Vec<CommitEntry> = Vec::new();
        let mut in_batch: HashMap<CommandId, (String, usize)> = HashMap::new();
        let mut drafts: Vec<(oneshot::Sender<Outcome>, Draft)> = Vec::with_capacity(jobs.len());
        for job in jobs {
            let draft = self.decide_one(job.submitted, now, &mut entries, &mut in_batch);
            drafts.push((job.reply, draft));
        }
        let result = if entries.is_empty() {
            Ok(Vec::new())
        } else {
            self.store.commit(&entries)
        };
        let ok = result.is_ok();
        let c = &self.counters;
        match result {
            Ok(positions) => {
                c.largest_batch
                    .fetch_max(entries.len() as u64, Ordering::Relaxed);
                if !entries.is_empty() {
                    c.record_batch(started.elapsed(), entries.len());
                }
                // Filed before answering, so a client that was refused finds the refusal in the history right away.
                let audit = std::mem::take(&mut self.audit);
                if let Err(e) = self.refusals.append(&audit) {
                    tracing::warn!(error = %e, "refused commands could not be recorded in the audit trail");
                }
                for (reply, draft) in drafts {
                    let outcome = match draft {
                        Draft::Done(o) => o,
                        Draft::Entry(n, command_id) => {
                            c.committed.fetch_add(1, Ordering::Relaxed);
                            Outcome::Committed {
                                command_id,
                                positions: positions[n].clone(),
                                duplicate: false,
                            }
                        }
                        Draft::DuplicateOfEntry(n, command_id) => {
                            c.duplicates.fetch_add(1, Ordering::Relaxed);
                            Outcome::Committed {
                                command_id,
                                positions: positions[n].clone(),
                                duplicate: true,
                            }
                        }
                    };
                    let _ = reply.send(outcome);
                }
                self.head.send_replace(self.store.head().position);
                self.project(&entries);
            }
            Err(e) => {
                self.audit.clear();
                // The write model now holds events that may not be on disk: answer "unknown" for the whole batch,
                // refusals included (they were decided against that state), and stop writing.
                for (reply, draft) in drafts {
                    let command_id = match &draft {
                        Draft::Done(o) => o.command_id(),
                        Draft::Entry(_, id) | Draft::DuplicateOfEntry(_, id) => *id,
                    };
                    c.unknown.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Outcome::Unknown {
                        command_id,
                        message: format!(
                            "storage failed while this command was in flight ({e}); it may or may not be committed: reopen the ledger and retry with the same command_id"
                        ),
                    });
                }
            }
        }
        ok
    }

    /// Rewrites the read-model documents the batch touched. A failure here loses nothing: the checkpoint stays behind
    /// and the next open catches up.
    fn project(&self, entries: &[CommitEntry]) {
        if entries.is_empty() {
            return;
        }
        let mut touched = Touched::default();
        for e in entries.iter().flat_map(|e| &e.events) {
            touched.add(&self.state, &e.event);
        }
        if let Err(e) = self
            .projections
            .update(&self.state, &touched, self.store.head().position)
        {
            tracing::warn!(error = %e, "read models could not be updated; they catch up at the next open");
        }
    }

    fn file_refusal(
        &mut self,
        submitted: &Submitted,
        command_id: CommandId,
        at: Timestamp,
        now: Timestamp,
        refusal: &Refusal,
    ) {
        let entities = submitted.body.entities(&self.state);
        let record = RefusalRecord::new(
            now,
            at,
            command_id,
            submitted.actor.clone(),
            submitted.body.type_name(),
            &entities,
            refusal,
        );
        self.audit.push((record, entities));
    }

    fn decide_one(
        &mut self,
        submitted: Submitted,
        now: Timestamp,
        entries: &mut Vec<CommitEntry>,
        in_batch: &mut HashMap<CommandId, (String, usize)>,
    ) -> Draft {
        let command_id = submitted.command_id.unwrap_or_else(new_command_id);
        let fingerprint = hex::encode(submitted.fingerprint());
        let reused = |this: &mut Self, submitted: &Submitted| {
            let refusal = Refusal::plain(
                domain::Code::CommandIdReused,
                format!("command_id {command_id} was already used by a different command"),
            );
            this.file_refusal(
                submitted,
                command_id,
                submitted.at.unwrap_or(now),
                now,
                &refusal,
            );
            Draft::Done(Outcome::Refused {
                command_id,
                refusal,
            })
        };
        if let Some((fp, n)) = in_batch.get(&command_id) {
            return if *fp == fingerprint {
                Draft::DuplicateOfEntry(*n, command_id)
            } else {
                reused(self, &submitted)
            };
        }
        match self.store.command(command_id) {
            Ok(Some(record)) => {
                // An imported record has no fingerprint: the id alone identifies the command.
                return if record.fingerprint == fingerprint || record.fingerprint.is_empty() {
                    self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    Draft::Done(Outcome::Committed {
                        command_id,
                        positions: record.positions,
                        duplicate: true,
                    })
                } else {
                    reused(self, &submitted)
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
        match domain::decide(&self.state, &cmd) {
            Err(refusal) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                self.file_refusal(&submitted, command_id, cmd.at, now, &refusal);
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
                        event_id: EventId::new(uuid::Uuid::new_v4())
                            .unwrap_or_else(|_| unreachable!()),
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
                    command_id,
                    fingerprint: fingerprint.clone(),
                    events: new_events,
                });
                in_batch.insert(command_id, (fingerprint, n));
                Draft::Entry(n, command_id)
            }
        }
    }
}

fn new_command_id() -> CommandId {
    CommandId::new(uuid::Uuid::new_v4()).unwrap_or_else(|_| unreachable_id())
}
