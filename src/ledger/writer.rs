//! The writer thread: the one place that sequences commands. It takes every command already queued (up to
//! `max_batch`), checks idempotency (this batch, batches still in flight, then the store's journal), decides each
//! command against its write model (which includes the batches decided before, durable or not yet), seals the batch's
//! envelopes and hands it to the committer.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{Clock, Live, Outcome, Shared};
use crate::domain::{
    self, CommandId, EntityRef, EventId, Position, Refusal, RefusalRecord, State, Submitted,
    Timestamp,
};
use crate::projection::Touched;
use crate::store::{CommitEntry, Fingerprint, Head, NewEvent, SealedBatch, StoreError};

/// A command as the writer receives it.
pub(super) struct Queued {
    pub(super) submitted: Submitted,
    /// What the submitter may see: entities outside it are decided as if they did not exist.
    pub(super) scope: crate::access::Scope,
    /// Computed by the submitting thread, so the writer does not spend its time on it.
    pub(super) fingerprint: Fingerprint,
}

pub(super) struct Job {
    pub(super) command: Queued,
    pub(super) reply: oneshot::Sender<Outcome>,
}

impl Job {
    /// A queued command; one without a `command_id` gets its id here, so every answer, `unknown` ones included, names
    /// the id to retry with.
    pub(super) fn new(
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

    pub(super) fn command_id(&self) -> CommandId {
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

fn unreachable_id() -> CommandId {
    // A v4 UUID is never nil; this exists only to avoid a panic path.
    "00000000-0000-4000-8000-000000000001"
        .parse()
        .unwrap_or_else(|_| unreachable!())
}

/// A batch decided by the writer, on its way to the committer.
pub(super) struct Decided {
    /// The writer's batch number.
    pub(super) seq: u64,
    /// The writer's epoch when it decided the batch: a survived write failure starts a new one, and batches of an
    /// older epoch (decided on top of the failed one) are never written.
    pub(super) epoch: u64,
    /// The events to persist (none when every command was refused or a duplicate).
    pub(super) prepared: Option<SealedBatch>,
    /// Each command's reply and what to answer once the batch is durable.
    pub(super) drafts: Vec<(oneshot::Sender<Outcome>, Draft)>,
    pub(super) refusals: Vec<(RefusalRecord, Vec<EntityRef>)>,
    /// For a batch that appends: the writer's write model right after it (a copy that shares everything with the
    /// writer's own, `domain/table.rs`), for the readers once the batch is durable, with the documents it touched
    /// and how many events it appended.
    pub(super) settled: Option<Settled>,
    /// Each entry's positions (taken from `prepared` when it is written).
    pub(super) positions: Vec<Vec<Position>>,
    pub(super) started: Instant,
}

/// The write model as a batch left it, on its way to the readers (`Live::install`) once the batch is durable.
pub(super) struct Settled {
    pub(super) state: State,
    /// The position the state reflects: the batch's last event.
    pub(super) position: Position,
    pub(super) touched: Touched,
    pub(super) appended: u64,
}

/// What the writer will answer once the batch is durable.
pub(super) enum Draft {
    Done(Outcome),
    /// Committed in this batch as entry `n`.
    Entry(usize, CommandId),
    /// A re-submission of entry `n` of this same batch.
    DuplicateOfEntry(usize, CommandId),
    /// A re-submission of a command committed in this batch or one still in flight, with its positions.
    Duplicate(Vec<Position>, CommandId),
}

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    /// The durable write model, to go back to after a survived write failure.
    pub(super) live: Arc<Live>,
    /// The epoch of the batches this writer decides (see [`Decided::epoch`]).
    pub(super) epoch: u64,
    /// The write model including every decided batch, durable or not yet.
    pub(super) state: State,
    /// The read-model documents the batch being decided changes.
    pub(super) touched: Touched,
    /// The head after the last decided batch.
    pub(super) head: Head,
    pub(super) clock: Clock,
    pub(super) max_batch: usize,
    pub(super) seq: u64,
    /// Commands of batches not yet durable, for duplicate detection: fingerprint, positions and batch number.
    pub(super) in_flight: HashMap<CommandId, (Fingerprint, Vec<Position>, u64)>,
    pub(super) commit: std::sync::mpsc::SyncSender<Decided>,
    /// Commands taken from the queue but not decided yet, decided before anything newer: the next step of a clock
    /// catch-up first, then the commands that were queued behind the step before it.
    pub(super) pending: VecDeque<Job>,
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        loop {
            let take = self.pending.len().min(self.max_batch);
            let mut jobs: Vec<Job> = self.pending.drain(..take).collect();
            if jobs.is_empty() {
                match rx.blocking_recv() {
                    Some(first) => jobs.push(first),
                    None => return,
                }
            }
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
            if head == store.staged_head() && self.live.position() >= head.position {
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
        let mut jobs = jobs.into_iter();
        while let Some(job) = jobs.next() {
            let clock = clock_advance_of(&job.command.submitted);
            let before = entries.len();
            let draft =
                self.decide_one(job.command, now, &mut entries, &mut in_batch, &mut refusals);
            drafts.push((job.reply, draft));
            let stepped = entries.len() > before
                && entries
                    .last()
                    .is_some_and(|e| e.events.len() >= domain::CLOCK_STEP_EVENTS);
            if let (true, Some(next)) = (stepped, clock) {
                // More transitions may be due: the next step comes before every other command, these included.
                tracing::info!(to = %next.to, "the clock advance reached its step limit; the catch-up continues with another step");
                let mut front: VecDeque<Job> = VecDeque::from([next.job()]);
                front.extend(jobs.by_ref());
                front.extend(self.pending.drain(..));
                self.pending = front;
                break;
            }
        }
        #[cfg(test)]
        {
            *self
                .shared
                .writer_model
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(self.state.clone());
        }
        let mut appended = 0u64;
        let prepared = if entries.is_empty() {
            None
        } else {
            let prepared = SealedBatch::seal(&entries, &self.head);
            self.head = prepared.head().clone();
            for (entry, positions) in entries.into_iter().zip(prepared.positions()) {
                self.in_flight.insert(
                    entry.command_id,
                    (entry.fingerprint, positions.clone(), self.seq),
                );
                appended += entry.events.len() as u64;
            }
            Some(prepared)
        };
        Decided {
            seq: self.seq,
            epoch: self.epoch,
            prepared,
            drafts,
            refusals,
            settled: (appended > 0).then(|| Settled {
                state: self.state.clone(),
                position: self.head.position,
                touched: std::mem::take(&mut self.touched),
                appended,
            }),
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
        fn aside<K: Ord + Copy, V, R>(
            this: &mut Writer,
            map: fn(&mut State) -> &mut crate::domain::table::Table<K, V>,
            id: K,
            f: impl FnOnce(&mut Writer) -> R,
        ) -> R {
            let kept = map(&mut this.state).remove(&id);
            let r = f(this);
            if let Some(k) = kept {
                map(&mut this.state).restore(id, k);
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
                    self.touched.before(&self.state, &event);
                    self.state.apply(cmd.at, &event);
                    self.touched.add(&self.state, &event);
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

/// An `AdvanceClock`, with what its next step would be.
struct ClockStep {
    actor: domain::Actor,
    correlation_id: Option<domain::CorrelationId>,
    to: Timestamp,
}

impl ClockStep {
    /// The next step: an `AdvanceClock` to the same instant by the same actor, with an id of its own. Nobody waits
    /// for its answer; it is recorded like any command.
    fn job(self) -> Job {
        let (reply, _) = oneshot::channel();
        let submitted = Submitted {
            command_id: None,
            at: None,
            actor: self.actor,
            correlation_id: self.correlation_id,
            body: domain::Body::AdvanceClock(domain::command::body::AdvanceClock { to: self.to }),
        };
        Job::new(submitted, crate::access::Scope::All, reply)
    }
}

/// The clock advance a command is, if it is one.
fn clock_advance_of(submitted: &Submitted) -> Option<ClockStep> {
    match &submitted.body {
        domain::Body::AdvanceClock(b) => Some(ClockStep {
            actor: submitted.actor.clone(),
            correlation_id: submitted.correlation_id,
            to: b.to,
        }),
        _ => None,
    }
}

fn new_command_id() -> CommandId {
    CommandId::new(random_uuid()).unwrap_or_else(|_| unreachable_id())
}
