//! The PostgreSQL backend: the same ledger (the same canonical envelopes and hash chain, the same journal, refusals,
//! consumers and read models) kept in one schema of a PostgreSQL database, for operators who must not lose the ledger
//! with one machine.
//!
//! Appending uses the head-row design: one transaction per staged batch moves the one-row `head` table
//! (`UPDATE head … WHERE position = <base> AND hash = <base hash>`), inserts the batch's events at the positions below
//! it, their history-index rows and their commands' journal rows, and commits with `synchronous_commit = on`. The row
//! lock serialises appends in position order, a rollback leaves no hole, and a head that moved under this writer
//! (another process appended) fails the update: nothing is written and this process stops writing. Positions are
//! never taken from a sequence or an identity column, which hand out numbers in start order, not commit order.
//!
//! COMMIT both writes and makes durable, so [`Store::stage`] does all the work and [`Store::settle`] only publishes:
//! readers see events up to the settled head, never a batch still being answered. One process writes to a ledger at
//! a time: it holds a session-level advisory lock on a connection of its own for as long as the store is open.

mod append;
mod documents;
mod lease;
mod pool;
mod replicated;
pub mod schema;
mod target;
pub mod throwaway;

pub use lease::{
    describe as describe_holder, hold as hold_lease, our_name as process_name, renewing, HeldLease,
    LeaseHolder, Renewing, Taken,
};
pub use replicated::ReplicaLag;
pub use target::{hostname, PgTarget};
pub(crate) use target::{message_of, pg_error};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use postgres::Client;

use super::journal::{self, Commands, Committed};
use super::sealed::{SealedBatch, StagedBatch};
use super::{
    CommandRecord, CommitEntry, ConsumerStore, Envelope, EventStore, Head, ReadModelStore,
    RefusalStore, Store, StoreCounters, StoreError, StoreOptions, StoredEvent,
};
use crate::domain::{CommandId, EntityRef, Position};
use pool::Pool;

/// An entity as the history and refusal tables key it.
pub(crate) fn entity_key(entity: &EntityRef) -> (i8, uuid::Uuid) {
    let prefix = super::entity_prefix(entity);
    let id = uuid::Uuid::from_slice(&prefix[2..]).unwrap_or_default();
    (i8::from_ne_bytes([prefix[1]]), id)
}

/// How many events one page of a read holds at most.
const PAGE: i64 = 2048;
/// How many the first page of a read holds.
const FIRST_PAGE: i64 = 128;

/// How long a writer's lease lasts unless renewed, unless set otherwise (`serve --lease-seconds`).
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(5);

/// The ledger in a PostgreSQL schema.
pub struct PgStore {
    target: PgTarget,
    pool: Pool,
    /// The connection appends go through. `None` after it was lost: the next append opens another.
    writer: Mutex<Option<target::Watched>>,
    /// The connection barriers go through (`replicated.rs`).
    barrier: Mutex<Option<target::Watched>>,
    /// The server is a hot standby (a streaming replica): this store only reads, and follows by polling.
    replica: bool,
    /// The lease's connection: its session is the one the lease row names as the holder's (`lease.rs`).
    lease: Mutex<Option<Client>>,
    /// The lease epoch this store writes under; 0 while it does not hold the lease (it only reads).
    epoch: AtomicU64,
    /// How long the lease lasts unless renewed.
    ttl: Mutex<std::time::Duration>,
    /// A batch whose COMMIT was sent but whose outcome could not be learnt (the database went away): its base and
    /// its head, each with the number of commands committed there. The next append first finds out which one the
    /// head row records.
    uncertain: Mutex<Option<(Head, u64, Head, u64)>>,

    /// The last settled event: what readers see.
    head: Mutex<Head>,
    /// The last event written (committed, perhaps not settled yet).
    written: Mutex<Head>,
    /// Commands committed (the head row's count) as of the written and the settled head.
    written_commands: AtomicU64,
    settled_commands: AtomicU64,
    /// Every settled command's idempotency key (20 bytes a command), so that the writer's "was this command_id
    /// committed?" costs a lookup, not a round trip; a hit reads the command's row.
    commands: Commands,
    failed: AtomicBool,
    documents: documents::Documents,
    batches: AtomicU64,
    commits: AtomicU64,
    appended: AtomicU64,
    commands_committed: AtomicU64,
}

impl PgStore {
    /// Opens the ledger in `target`'s schema: checks its version, takes the writer's lock, checks the head against the
    /// log and re-verifies the newest events. A missing schema is not created (that is `migrate-schema`'s job, as
    /// the schema's owner).
    pub fn open(target: &PgTarget, options: &StoreOptions) -> Result<PgStore, StoreError> {
        let mut writer = target.connect_watched()?;
        match schema::version_of(&mut writer.client, target)? {
            None => {
                return Err(StoreError::NoLedgerAt {
                    place: target.to_string(),
                    hint: "create it as the schema's owner with `partner-ledger migrate-schema --store URL --pg-schema NAME --runtime-role ROLE` (docs/postgres.md)".into(),
                })
            }
            Some(v) if v > schema::VERSION => return Err(schema::newer(target, v)),
            Some(v) if v < schema::VERSION => {
                return Err(StoreError::NotALedgerAt {
                    place: target.to_string(),
                    why: format!(
                        "its schema is version {v}; this build needs {}: run `partner-ledger migrate-schema` as the schema's owner",
                        schema::VERSION
                    ),
                })
            }
            Some(_) => {}
        }
        let replica = writer
            .client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .map_err(|e| pg_error(target, "cannot ask whether the server is a standby", &e))?
            .get::<_, bool>(0);
        let pool = Pool::new(target.clone());
        let store = PgStore {
            barrier: Mutex::new(None),
            replica,
            target: target.clone(),
            documents: documents::Documents::new(pool.clone()),
            pool,
            writer: Mutex::new(Some(writer)),
            lease: Mutex::new(None),
            epoch: AtomicU64::new(0),
            ttl: Mutex::new(DEFAULT_LEASE),
            uncertain: Mutex::new(None),

            head: Mutex::new(Head::genesis()),
            written: Mutex::new(Head::genesis()),
            written_commands: AtomicU64::new(0),
            settled_commands: AtomicU64::new(0),
            commands: Commands::default(),
            failed: AtomicBool::new(false),
            batches: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            appended: AtomicU64::new(0),
            commands_committed: AtomicU64::new(0),
        };
        // The head row and the last event from one snapshot: other processes may be appending meanwhile.
        let (head, commands, last) = store.head_row_and_last()?;
        for warning in store.settings_warnings()? {
            tracing::warn!(server = %target, "{warning}");
        }
        // What this process reads from now on must not be taken back by a failover (`replicated.rs`).
        store.barrier()?;
        *store.head.lock().unwrap_or_else(|e| e.into_inner()) = head.clone();
        *store.written.lock().unwrap_or_else(|e| e.into_inner()) = head.clone();
        store.written_commands.store(commands, Ordering::SeqCst);
        store.settled_commands.store(commands, Ordering::SeqCst);
        store.documents.load_refusal_count()?;
        store.load_command_keys(commands)?;
        if options.check_on_open {
            store.recover_head(&head, last, options.tail_check)?;
        }
        Ok(store)
    }

    fn err(&self, context: &str) -> impl FnOnce(postgres::Error) -> StoreError + '_ {
        let context = context.to_string();
        move |e| pg_error(&self.target, &context, &e)
    }

    /// The head row: the head and the number of committed commands.
    fn head_row(&self) -> Result<(Head, u64), StoreError> {
        let row = self
            .pool
            .get()?
            .query_one(HEAD_ROW, &[])
            .map_err(self.err("cannot read the head row"))?;
        Ok(head_of(&row))
    }

    /// Reads the key of every command committed up to the `upto`th into memory, a page at a time.
    fn load_command_keys(&self, upto: u64) -> Result<(), StoreError> {
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        let mut found = Vec::new();
        let mut after = 0i64;
        loop {
            let rows = self
                .pool
                .get()?
                .query(
                    "SELECT key, seq FROM commands WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT 100000",
                    &[&after, &upto],
                )
                .map_err(self.err("cannot read the command journal"))?;
            let Some(last) = rows.last() else { break };
            after = last.get(1);
            found.extend(
                rows.iter()
                    .map(|r| journal::entry(r.get::<_, uuid::Uuid>(0).as_bytes(), 0)),
            );
        }
        self.commands.load(found);
        Ok(())
    }

    /// The head row (the head and the number of committed commands) and the last event, read in one snapshot.
    #[allow(clippy::type_complexity)]
    fn head_row_and_last(&self) -> Result<(Head, u64, Option<(u64, String)>), StoreError> {
        let mut client = self.pool.get()?;
        let mut tx = client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(self.err("cannot read the head row"))?;
        let (head, commands) = head_of(
            &tx.query_one(HEAD_ROW, &[])
                .map_err(self.err("cannot read the head row"))?,
        );
        let last = tx
            .query_opt(
                "SELECT position, envelope FROM events ORDER BY position DESC LIMIT 1",
                &[],
            )
            .map_err(self.err("cannot read the last event"))?
            .map(|r| (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), r.get(1)));
        tx.commit().map_err(self.err("cannot read the head row"))?;
        Ok((head, commands, last))
    }

    /// The head row checked against the last event (read with it); the newest `tail` events re-verified.
    fn recover_head(
        &self,
        head: &Head,
        last: Option<(u64, String)>,
        tail: u64,
    ) -> Result<(), StoreError> {
        let last_pos = last.as_ref().map_or(0, |(p, _)| *p);
        super::verify::ends_at_head(Position(last_pos), head.position, "the head row")?;
        let Some((_, raw)) = last else { return Ok(()) };
        let hash = super::verify::stored_hash(raw.as_bytes(), head.position)?;
        if hash != head.hash {
            return Err(StoreError::Corrupt {
                position: Some(head.position),
                message: format!(
                    "the last event's hash {hash} differs from the head row's {}",
                    head.hash
                ),
            });
        }
        let start = Position(last_pos.saturating_sub(tail.saturating_sub(1)).max(1));
        self.verify_range(start, head.position, &mut |_| {})
    }

    fn fail<T>(&self, e: StoreError) -> Result<T, StoreError> {
        self.failed.store(true, Ordering::SeqCst);
        tracing::error!(error = %e, "storage failure: writes are stopped until the ledger is reopened");
        Err(e)
    }

    /// One page of events after `after`, up to `to`.
    fn page(
        &self,
        after: Position,
        to: Position,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = self
            .pool
            .get()?
            .query(
                "SELECT position, envelope FROM events WHERE position > $1 AND position <= $2
                 ORDER BY position LIMIT $3",
                &[&pos(after), &pos(to), &limit],
            )
            .map_err(self.err("cannot read the log"))?;
        Ok(rows
            .into_iter()
            .map(|r| StoredEvent {
                position: Position(u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)),
                raw: r.get::<_, String>(1).into_bytes(),
            })
            .collect())
    }

    /// Events after `after` up to `to`, page by page (constant memory).
    fn pages(
        &self,
        after: Position,
        to: Position,
    ) -> impl Iterator<Item = Result<StoredEvent, StoreError>> + '_ {
        let mut next = after;
        let mut buffer = std::collections::VecDeque::new();
        let mut done = after >= to;
        // Pages start small and double up to [`PAGE`]: a reader that stops early (a stream's piece, a few hundred
        // events) reads little more than it uses, and a long one soon reads in large pages.
        let mut limit = FIRST_PAGE;
        std::iter::from_fn(move || {
            if buffer.is_empty() && !done {
                match self.page(next, to, limit) {
                    Err(e) => {
                        done = true;
                        return Some(Err(e));
                    }
                    Ok(page) => {
                        done = page.len() < usize::try_from(limit).unwrap_or(0);
                        limit = (limit * 2).min(PAGE);
                        if let Some(last) = page.last() {
                            next = last.position;
                        }
                        buffer.extend(page);
                    }
                }
            }
            buffer.pop_front().map(Ok)
        })
    }
}

impl Drop for PgStore {
    /// Lets go of the writer's lease, so that another process takes it at once rather than after it expires, and
    /// closes the connections off any asynchronous runtime (`pool::close`).
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                let _ = std::thread::Builder::new()
                    .name("pg-close".into())
                    .spawn_scoped(s, || self.release_lease());
            });
        } else {
            self.release_lease();
        }
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(|w| w.client);
        let barrier = self
            .barrier
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(|w| w.client);
        let lease = self
            .lease
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        writer
            .into_iter()
            .chain(barrier)
            .chain(lease)
            .for_each(pool::close);
    }
}

/// The head row's query: the head and the number of committed commands.
const HEAD_ROW: &str = "SELECT position, hash, commands FROM head";

/// The head and the number of committed commands, from a row of [`HEAD_ROW`].
fn head_of(row: &postgres::Row) -> (Head, u64) {
    (
        Head {
            position: Position(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)),
            hash: row.get(1),
        },
        u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
    )
}

/// A position as PostgreSQL's `bigint`.
fn pos(p: Position) -> i64 {
    i64::try_from(p.0).unwrap_or(i64::MAX)
}

impl EventStore for PgStore {
    fn head(&self) -> Head {
        self.head.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn commit(&self, entries: &[CommitEntry]) -> Result<Vec<Vec<Position>>, StoreError> {
        let staged = self.stage(SealedBatch::seal(entries, &self.staged_head()))?;
        let positions = staged.positions.clone();
        self.settle(vec![staged])?;
        Ok(positions)
    }

    fn command(&self, id: CommandId) -> Result<Option<CommandRecord>, StoreError> {
        if self.commands.records_of(id).is_empty() {
            return Ok(None);
        }
        let settled = i64::try_from(self.settled_commands.load(Ordering::SeqCst)).unwrap_or(0);
        let row = self
            .pool
            .get()?
            .query_opt(
                "SELECT fingerprint, first_position, event_count FROM commands WHERE key = $1 AND seq <= $2",
                &[&id.uuid(), &settled],
            )
            .map_err(self.err("cannot read the command journal"))?;
        Ok(row.map(|r| {
            let fingerprint: Option<Vec<u8>> = r.get(0);
            Committed {
                command_id: id,
                fingerprint: fingerprint.and_then(|f| f.try_into().ok()),
                first: Position(u64::try_from(r.get::<_, i64>(1)).unwrap_or(0)),
                count: u32::try_from(r.get::<_, i32>(2)).unwrap_or(0),
            }
            .record()
        }))
    }

    fn get(&self, position: Position) -> Result<Option<StoredEvent>, StoreError> {
        if position.0 == 0 || position > EventStore::head(self).position {
            return Ok(None);
        }
        let row = self
            .pool
            .get()?
            .query_opt(
                "SELECT envelope FROM events WHERE position = $1",
                &[&pos(position)],
            )
            .map_err(self.err("cannot read the log"))?;
        Ok(row.map(|r| StoredEvent {
            position,
            raw: r.get::<_, String>(0).into_bytes(),
        }))
    }

    fn read(
        &self,
        after: Position,
        to: Option<Position>,
    ) -> Box<dyn Iterator<Item = Result<StoredEvent, StoreError>> + '_> {
        let head = EventStore::head(self).position;
        let to = to.map_or(head, |t| t.min(head));
        Box::new(self.pages(after, to))
    }

    fn history(&self, entity: &EntityRef, after: Position) -> Result<Vec<Position>, StoreError> {
        let (kind, id) = entity_key(entity);
        let head = pos(EventStore::head(self).position);
        let rows = self
            .pool
            .get()?
            .query(
                "SELECT position FROM history WHERE kind = $1 AND id = $2 AND position > $3 AND position <= $4
                 ORDER BY position",
                &[&kind, &id, &pos(after), &head],
            )
            .map_err(self.err("cannot read the history index"))?;
        Ok(rows
            .into_iter()
            .map(|r| Position(u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
            .collect())
    }

    fn counters(&self) -> StoreCounters {
        StoreCounters {
            batches: self.batches.load(Ordering::Relaxed),
            // One COMMIT per staged batch: it is the flush and the sync.
            flushes: self.commits.load(Ordering::Relaxed),
            fdatasyncs: self.commits.load(Ordering::Relaxed),
            events: self.appended.load(Ordering::Relaxed),
            commands: self.commands_committed.load(Ordering::Relaxed),
        }
    }
}

impl Store for PgStore {
    fn stage(&self, batch: SealedBatch) -> Result<StagedBatch, StoreError> {
        self.stage_batch(batch)
    }

    fn settle(&self, batches: Vec<StagedBatch>) -> Result<(), StoreError> {
        let Some(last) = batches.last() else {
            return Ok(());
        };
        if self.failed.load(Ordering::SeqCst) {
            return Err(StoreError::FailStopped);
        }
        let new_head = last.new_head.clone();
        let commands = last.journal_seq + last.journal.len() as u64 - 1;
        self.batches.fetch_add(1, Ordering::Relaxed);
        for b in &batches {
            self.appended.fetch_add(b.events as u64, Ordering::Relaxed);
            self.commands_committed
                .fetch_add(b.journal.len() as u64, Ordering::Relaxed);
            self.commands.add(0, &b.journal);
        }
        self.settled_commands.store(commands, Ordering::SeqCst);
        *self.head.lock().unwrap_or_else(|e| e.into_inner()) = new_head;
        Ok(())
    }

    fn staged_head(&self) -> Head {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn journal(&self) -> Box<dyn Iterator<Item = Result<Committed, StoreError>> + '_> {
        let settled = i64::try_from(self.settled_commands.load(Ordering::SeqCst)).unwrap_or(0);
        pool::paged(usize::try_from(PAGE).unwrap_or(0), move |after| {
            let rows = self
                .pool
                .get()?
                .query(
                    "SELECT key, seq, fingerprint, first_position, event_count FROM commands
                     WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                    &[&after, &settled, &PAGE],
                )
                .map_err(self.err("cannot read the command journal"))?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    let fingerprint: Option<Vec<u8>> = r.get(2);
                    let command = CommandId::new(r.get::<_, uuid::Uuid>(0))
                        .map(|id| Committed {
                            command_id: id,
                            fingerprint: fingerprint.and_then(|f| f.try_into().ok()),
                            first: Position(u64::try_from(r.get::<_, i64>(3)).unwrap_or(0)),
                            count: u32::try_from(r.get::<_, i32>(4)).unwrap_or(0),
                        })
                        .map_err(|_| StoreError::Corrupt {
                            position: None,
                            message: "the command journal holds a nil command id".into(),
                        });
                    (r.get(1), command)
                })
                .collect())
        })
    }

    fn import_with(
        &self,
        envelopes: &[Envelope],
        journal: Vec<Committed>,
    ) -> Result<(), StoreError> {
        let batch = SealedBatch::of_envelopes(self.staged_head(), envelopes, journal)?;
        let staged = self.stage(batch)?;
        self.settle(vec![staged])
    }

    fn verify_range(
        &self,
        from: Position,
        to: Position,
        progress: &mut dyn FnMut(Position),
    ) -> Result<(), StoreError> {
        let prev = super::verify::link_before(from, |p| Ok(self.get(p)?.map(|e| e.raw)))?;
        let events = self
            .pages(Position(from.0.saturating_sub(1)), to)
            .map(|r| r.map(|e| (e.position, e.raw)));
        super::verify::check_chain(prev, events, from, to, progress)
    }

    fn verify_all(&self, progress: &mut dyn FnMut(Position)) -> Result<Head, StoreError> {
        // The head it ends at becomes a checkpoint someone keeps: one a failover cannot take back.
        let (head, _) = match self.barrier_reading_head()? {
            Some(h) => h,
            None => self.head_row()?,
        };
        let last = self
            .pool
            .get()?
            .query_one("SELECT coalesce(max(position), 0) FROM events", &[])
            .map_err(self.err("cannot read the log"))?
            .get::<_, i64>(0);
        let last = Position(u64::try_from(last).unwrap_or(0));
        if last.0 > 0 {
            self.verify_range(Position(1), last, progress)?;
        }
        super::verify::ends_at_head(last, head.position, "the head row")?;
        if last.0 > 0 {
            let raw = self
                .get(last)?
                .ok_or_else(|| super::verify::missing(last))?;
            let hash = super::verify::stored_hash(&raw.raw, last)?;
            if hash != head.hash {
                return Err(StoreError::Corrupt {
                    position: Some(last),
                    message: format!(
                        "the last event's hash {hash} differs from the head row's {}",
                        head.hash
                    ),
                });
            }
        }
        Ok(head)
    }

    /// Every write outside the log is its own committed transaction already.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The database manages its own disk; a full one fails the transaction, which leaves nothing behind.
    fn room_for(&self, _bytes: u64) -> Result<(), String> {
        Ok(())
    }

    fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// One round trip on a pooled connection.
    fn reachable(&self) -> Result<(), String> {
        let mut client = self.pool.get().map_err(|e| e.to_string())?;
        client.simple_query("SELECT 1").map(|_| ()).map_err(|e| {
            self.pool.clear();
            pg_error(&self.target, "the database does not answer", &e).to_string()
        })
    }

    /// The history index is written with the events.
    fn flush_index(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn commands_remembered(&self) -> usize {
        usize::try_from(self.settled_commands.load(Ordering::SeqCst)).unwrap_or(usize::MAX)
    }

    fn read_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.documents.read_snapshot()
    }

    fn snapshot_header(&self, len: usize) -> Result<Option<Vec<u8>>, StoreError> {
        self.documents.snapshot_header(len)
    }

    fn write_snapshot(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.documents.write_snapshot(bytes)
    }

    fn snapshot_size(&self) -> u64 {
        self.documents.snapshot_size()
    }

    fn shared(&self) -> Option<&PgStore> {
        Some(self)
    }

    fn confirm(&self) -> Result<(), StoreError> {
        PgStore::confirm(self)
    }

    fn read_models(&self) -> &dyn ReadModelStore {
        &self.documents
    }

    fn refusals(&self) -> &dyn RefusalStore {
        &self.documents
    }

    fn consumers(&self) -> &dyn ConsumerStore {
        &self.documents
    }

    #[cfg(test)]
    fn inject(&self, _plan: super::FaultPlan) {}

    #[cfg(test)]
    fn faults_struck(&self) -> u64 {
        0
    }
}

/// Creates the ledger schema in `target` or migrates it to this build's version, connected as the schema's owner, and
/// grants `runtime_role` (when given) what the ledger may do. Returns the versions before and after.
pub fn migrate_schema(
    target: &PgTarget,
    runtime_role: Option<&str>,
) -> Result<(i64, i64), StoreError> {
    if let Some(role) = runtime_role {
        if !schema::valid_role(role) {
            return Err(StoreError::NotALedgerAt {
                place: target.to_string(),
                why: format!(
                    "the runtime role name {role:?} is not accepted: an existing role's name in lowercase letters, digits and _, and not public, none, current_user, session_user or a pg_ role"
                ),
            });
        }
    }
    let mut client = target.connect()?;
    schema::migrate(&mut client, target, runtime_role)
}
