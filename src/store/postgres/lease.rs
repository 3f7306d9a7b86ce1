//! The writer's lease: one process appends to a ledger schema at a time, and one that stops renewing its right to
//! (killed, paused, cut off) loses it after a bounded time, even though its database session may stay open.
//!
//! The `lease` row names the holder (its `application_name`, the address it takes forwarded commands on, its
//! database session) and when the lease expires, by the database's clock, so the machines' clocks never matter.
//! Taking it increments the **epoch**, in the same transaction as the head row's copy of it; every append moves the
//! head row only where it still records the epoch its writer took (`append.rs`). A deposed writer therefore cannot
//! append even before the new one wrote anything: its next transaction finds another epoch and writes nothing.
//!
//! The lease is free when it expired, or when its holder's database session has ended (a killed process: the server
//! notices the closed connection at once).

use std::sync::atomic::Ordering;
use std::time::Duration;

use postgres::Client;

use super::{pg_error, PgStore, PgTarget};
use crate::store::{EventStore, Store, StoreError};

/// Who holds a ledger's lease, as the lease row says.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseHolder {
    /// The holder's name: `partner-ledger pid N on HOST #INSTANCE`.
    pub name: String,
    /// Where it takes forwarded commands (`serve --advertise`); empty for a CLI command.
    pub address: String,
    /// The epoch it writes under.
    pub epoch: u64,
    /// Seconds until its lease expires unless renewed (0: expired).
    pub expires_in: f64,
}

impl LeaseHolder {
    /// Whether the holder is this very process.
    pub fn is_this_process(&self) -> bool {
        self.name == our_name()
    }
}

/// What an attempt to take the lease found.
pub enum Taken {
    /// This process writes now, under this epoch.
    Ours(u64),
    /// Another live process holds it.
    Held(LeaseHolder),
}

/// This process's name in the lease row: `partner-ledger pid N on HOST #INSTANCE`. The instance (random, drawn once
/// per process) tells apart two processes with the same pid and hostname, as containers sharing a host's name have.
pub fn our_name() -> String {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let instance =
        INSTANCE.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_string());
    format!(
        "partner-ledger pid {} on {} #{instance}",
        std::process::id(),
        super::target::hostname()
    )
}

const READ_LEASE: &str = "SELECT l.epoch, l.holder, l.address,
        greatest(0, extract(epoch FROM l.expires_at - clock_timestamp()))::float8,
        EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.backend_pid
                AND (a.backend_start IS NULL OR a.backend_start = l.backend_start))
    FROM lease l";

fn holder_of(row: &postgres::Row) -> (LeaseHolder, bool) {
    (
        LeaseHolder {
            epoch: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            name: row.get(1),
            address: row.get(2),
            expires_in: row.get(3),
        },
        row.get(4),
    )
}

/// Takes the lease on `client` (whose session becomes the holder's) if it is free, for `ttl`.
fn take_on(
    client: &mut Client,
    target: &PgTarget,
    address: &str,
    ttl: Duration,
) -> Result<Taken, StoreError> {
    let e = |context: &'static str| move |e: postgres::Error| pg_error(target, context, &e);
    let mut tx = client
        .transaction()
        .map_err(e("cannot take the writer's lease"))?;
    let row = tx
        .query_one(&format!("{READ_LEASE} FOR UPDATE OF l"), &[])
        .map_err(e("cannot read the writer's lease"))?;
    let (holder, session_alive) = holder_of(&row);
    let ours = holder.name == our_name();
    let free = holder.name.is_empty() || holder.expires_in <= 0.0 || !session_alive;
    if !free && !ours {
        return Ok(Taken::Held(holder));
    }
    let epoch: i64 = tx
        .query_one(
            "UPDATE lease SET epoch = epoch + 1, holder = $1, address = $2, backend_pid = pg_backend_pid(),
                 backend_start = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),
                 expires_at = clock_timestamp() + make_interval(secs => $3)
             RETURNING epoch",
            &[&our_name(), &address, &ttl.as_secs_f64()],
        )
        .map_err(e("cannot take the writer's lease"))?
        .get(0);
    tx.execute("UPDATE head SET epoch = $1", &[&epoch])
        .map_err(e("cannot take the writer's lease (head row)"))?;
    tx.commit().map_err(e("cannot take the writer's lease"))?;
    if !holder.name.is_empty() && !ours {
        tracing::warn!(previous = %holder.name, epoch, "took the writer's lease from a holder that is gone or stopped renewing it");
    }
    Ok(Taken::Ours(u64::try_from(epoch).unwrap_or(0)))
}

impl PgStore {
    /// The lease's own connection, opened (again) if needed.
    fn lease_session<'a>(
        &self,
        slot: &'a mut Option<Client>,
    ) -> Result<&'a mut Client, StoreError> {
        if slot.as_ref().is_some_and(|c| c.is_closed()) {
            slot.take().into_iter().for_each(super::pool::close);
        }
        if slot.is_none() {
            *slot = Some(self.target.connect()?);
        }
        slot.as_mut().ok_or_else(|| StoreError::Unreachable {
            place: self.target.to_string(),
            message: "no connection".into(),
        })
    }

    /// Runs `f` on the lease's connection; a connection that failed is not used again.
    fn on_lease<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        let result = f(self.lease_session(&mut slot)?);
        if result.is_err() && slot.as_ref().is_some_and(|c| c.is_closed()) {
            slot.take().into_iter().for_each(super::pool::close);
        }
        result
    }

    /// Who holds the lease now, and whether that holder is alive (its lease unexpired and its session open).
    pub fn lease_holder(&self) -> Result<(LeaseHolder, bool), StoreError> {
        let row = self
            .pool
            .get()?
            .query_one(READ_LEASE, &[])
            .map_err(self.err("cannot read the writer's lease"))?;
        let (holder, session_alive) = holder_of(&row);
        let alive = !holder.name.is_empty() && holder.expires_in > 0.0 && session_alive;
        Ok((holder, alive))
    }

    /// Takes the writer's lease if no live process holds it, advertising `address` for forwarded commands. On
    /// success this store writes under the new epoch, from the head the database records now (the previous writer's
    /// last batches included).
    pub fn take_lease(&self, address: &str, ttl: Duration) -> Result<Taken, StoreError> {
        self.writable()?;
        let taken = self.on_lease(|c| take_on(c, &self.target, address, ttl))?;
        if let Taken::Ours(epoch) = taken {
            self.follow()?;
            *self.written.lock().unwrap_or_else(|e| e.into_inner()) = self.head();
            self.written_commands.store(
                self.settled_commands.load(Ordering::SeqCst),
                Ordering::SeqCst,
            );
            *self.uncertain.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.failed.store(false, Ordering::SeqCst);
            self.epoch.store(epoch, Ordering::SeqCst);
            *self.ttl.lock().unwrap_or_else(|e| e.into_inner()) = ttl;
        }
        Ok(taken)
    }

    /// Takes the lease for a command of the CLI: waits while a holder that stopped renewing has not expired yet (a
    /// process killed a moment ago), fails naming a live holder.
    pub fn take_lease_for_cli(&self, ttl: Duration) -> Result<(), StoreError> {
        self.writable()?;
        let mut seen: Option<(u64, f64)> = None;
        loop {
            match self.take_lease("", ttl)? {
                Taken::Ours(_) => return Ok(()),
                Taken::Held(h) => {
                    // Renewed since last looked at: a live holder.
                    let renewed = seen.is_some_and(|(epoch, left)| {
                        epoch == h.epoch && h.expires_in > left + 0.05
                    });
                    if renewed || seen.is_some_and(|(epoch, _)| epoch != h.epoch) {
                        return Err(StoreError::LockedAt {
                            place: self.target.to_string(),
                            holder: describe(&h),
                        });
                    }
                    seen = Some((h.epoch, h.expires_in));
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
    }

    /// Renews this store's lease (and names its current session as the holder's): `Deposed` once another process
    /// took it.
    pub fn renew_lease(&self) -> Result<(), StoreError> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if epoch == 0 {
            return Err(StoreError::Deposed {
                message: "this process does not hold the writer's lease".into(),
            });
        }
        let ttl = *self.ttl.lock().unwrap_or_else(|e| e.into_inner());
        let renewed = self.on_lease(|c| {
            c.query_opt(
                "UPDATE lease SET expires_at = clock_timestamp() + make_interval(secs => $2),
                     backend_pid = pg_backend_pid(),
                     backend_start = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())
                 WHERE epoch = $1 RETURNING holder",
                &[&i64::try_from(epoch).unwrap_or(i64::MAX), &ttl.as_secs_f64()],
            )
            .map_err(|e| pg_error(&self.target, "cannot renew the writer's lease", &e))
        })?;
        if renewed.is_some() {
            return Ok(());
        }
        self.epoch.store(0, Ordering::SeqCst);
        let holder = self
            .lease_holder()
            .map(|(h, _)| describe(&h))
            .unwrap_or_else(|_| "another process".into());
        Err(StoreError::Deposed {
            message: format!("the writer's lease was taken by {holder}"),
        })
    }

    /// Lets go of the lease (at close), so that another process takes it at once rather than after it expires.
    pub fn release_lease(&self) {
        let epoch = self.epoch.swap(0, Ordering::SeqCst);
        if epoch == 0 {
            return;
        }
        let _ = self.on_lease(|c| {
            c.execute(
                "UPDATE lease SET expires_at = 'epoch' WHERE epoch = $1",
                &[&i64::try_from(epoch).unwrap_or(i64::MAX)],
            )
            .map_err(|e| pg_error(&self.target, "cannot release the writer's lease", &e))
        });
    }

    /// The epoch this store writes under (0: it does not hold the lease).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Stops writing as the lease holder (another process took it): the store goes on as a reader.
    pub fn step_down(&self) {
        self.epoch.store(0, Ordering::SeqCst);
        *self.uncertain.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = self.head();
        self.written_commands.store(
            self.settled_commands.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        self.failed.store(false, Ordering::SeqCst);
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .into_iter()
            .for_each(|w| super::pool::close(w.client));
    }

    /// Steps down and lets go of the lease, so that another process takes it at once.
    pub fn step_down_and_release(&self) {
        self.release_lease();
        self.step_down();
    }

    /// Catches this store up with what the writer (another process) committed: the head row read again, the new
    /// commands' keys remembered, the head published. Returns the head before and after when it moved.
    pub fn follow(&self) -> Result<Option<(crate::store::Head, crate::store::Head)>, StoreError> {
        let (head, commands) = self.head_row()?;
        let before = self.head();
        went_back(&before, &head)?;
        let known = self.settled_commands.load(Ordering::SeqCst);
        // Commands that appended no events (a clock advance with nothing due) move only the count.
        if head.position <= before.position && commands <= known {
            // Refusals are filed without moving the head row; new ones are confirmed like events.
            let filed = self.documents.recorded_refusal_count()?;
            if filed > self.documents.refusal_count() {
                self.barrier()?;
            }
            self.documents.set_refusal_count(filed);
            return Ok(None);
        }
        // Committed by the writer, but perhaps only locally (a cancelled wait for the standbys): confirmed first,
        // and read again in the barrier's own transaction.
        let filed = self.documents.recorded_refusal_count()?;
        let (head, commands) = self.barrier_reading_head()?.unwrap_or((head, commands));
        went_back(&before, &head)?;
        self.documents.set_refusal_count(filed);
        let after = i64::try_from(known).unwrap_or(0);
        let upto = i64::try_from(commands).unwrap_or(0);
        let rows = self
            .pool
            .get()?
            .query(
                "SELECT key FROM commands WHERE seq > $1 AND seq <= $2",
                &[&after, &upto],
            )
            .map_err(self.err("cannot read the command journal"))?;
        self.commands
            .add_keys(rows.iter().map(|r| *r.get::<_, uuid::Uuid>(0).as_bytes()));
        self.settled_commands.store(commands, Ordering::SeqCst);
        *self.head.lock().unwrap_or_else(|e| e.into_inner()) = head.clone();
        Ok(Some((before, head)))
    }

    /// Confirms that this store still writes the ledger as it last wrote it (the head row records its head and its
    /// epoch): a batch of refusals only, which writes nothing, is answered only once this holds.
    pub(super) fn confirm(&self) -> Result<(), StoreError> {
        let written = self.staged_head();
        let epoch = i64::try_from(self.epoch.load(Ordering::SeqCst)).unwrap_or(i64::MAX);
        if epoch == 0 {
            return self.fail(StoreError::Deposed {
                message: "this process does not hold the writer's lease".into(),
            });
        }
        let found = self
            .pool
            .get()?
            .query_opt(
                "SELECT 1 FROM head WHERE position = $1 AND hash = $2 AND epoch = $3",
                &[&super::pos(written.position), &written.hash, &epoch],
            )
            .map_err(|e| StoreError::WriteFailed {
                message: format!(
                    "cannot confirm the writer's lease: {}",
                    super::message_of(&e)
                ),
            })?;
        if found.is_some() {
            return Ok(());
        }
        self.fail(StoreError::Deposed {
            message: "the head row no longer records this writer's epoch".into(),
        })
    }
}

/// Fails when the head row records less than this process delivered (or another event at its head): the database
/// lost events, by a failover to a standby that lacked them (an asynchronous one) or a restore. Nothing more is
/// delivered from it.
fn went_back(before: &crate::store::Head, head: &crate::store::Head) -> Result<(), StoreError> {
    if head.position < before.position
        || (head.position == before.position && head.hash != before.hash)
    {
        return Err(StoreError::Conflict {
            message: format!(
                "the head row went back from position {} to {} (or changed its hash): the database this process reads lost events it already delivered; restart the process once the database is sorted out (docs/operations.md)",
                before.position, head.position
            ),
        });
    }
    Ok(())
}

/// A holder as an error message names it.
pub fn describe(h: &LeaseHolder) -> String {
    let at = if h.address.is_empty() {
        String::new()
    } else {
        format!(", taking commands at {}", h.address)
    };
    format!(
        "{}{at} (epoch {}, lease expires in {:.1} s unless renewed)",
        h.name, h.epoch, h.expires_in
    )
}

/// Renews the lease this store holds in the background until dropped: for long work that holds the lease before
/// anything else renews it (rebuilding the write model at open or when taking over, an import, a rebuild).
pub struct Renewing {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts renewing `store`'s lease every fifth of `ttl` (nothing on sled).
pub fn renewing(store: &std::sync::Arc<dyn Store>, ttl: Duration) -> Result<Renewing, StoreError> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if store.shared().is_none() {
        return Ok(Renewing { stop, thread: None });
    }
    let (flag, store) = (std::sync::Arc::clone(&stop), std::sync::Arc::clone(store));
    let thread = std::thread::Builder::new()
        .name("ledger-lease".into())
        .spawn(move || {
            let mut renewed = std::time::Instant::now();
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                if renewed.elapsed() < ttl / 5 {
                    continue;
                }
                renewed = std::time::Instant::now();
                if let Some(Err(e)) = store.shared().map(PgStore::renew_lease) {
                    tracing::warn!(error = %e, "cannot renew the writer's lease");
                }
            }
        })
        .map_err(|e| StoreError::Io {
            context: "cannot start the lease thread".into(),
            source: e,
        })?;
    Ok(Renewing {
        stop,
        thread: Some(thread),
    })
}

impl Drop for Renewing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer's lease held by a command of the CLI that writes without a ledger pipeline (`import`, `rebuild`):
/// renewed in the background until dropped.
pub type HeldLease = Renewing;

/// Takes the writer's lease for a command of the CLI on a PostgreSQL ledger (nothing to do on sled, whose folder
/// lock the store already holds), or fails naming the live holder.
pub fn hold(store: &std::sync::Arc<dyn Store>) -> Result<Option<HeldLease>, StoreError> {
    let Some(pg) = store.shared() else {
        return Ok(None);
    };
    pg.take_lease_for_cli(super::DEFAULT_LEASE)?;
    renewing(store, super::DEFAULT_LEASE).map(Some)
}
