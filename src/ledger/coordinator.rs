//! On PostgreSQL, where several processes share one ledger: the thread that keeps this process's part in it.
//!
//! - While this process writes, it renews the writer's lease five times per lease period. Once another process
//!   took the lease (this one was paused, cut off or slow past the lease's end), it **steps down**: it stops its
//!   pipeline (every command still queued is answered `unknown`: its appends find another epoch in the head row and
//!   write nothing), and follows the new writer. A process of the CLI (`LedgerConfig::sharing` unset) stops writing
//!   instead.
//! - While another process writes, it **follows** the log every 100 ms: the store learns the new head and the new
//!   commands' keys, the new events are folded into the live model, and streams are woken. Every 200 ms it looks at
//!   the lease; when no live process holds it, it takes it, catches up with the last events and starts writing.
//!
//! A shared process whose writes stopped after a storage failure (not damage) steps down and takes the lease again,
//! which rebuilds its writing state from the log: it recovers in place instead of waiting to be restarted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{spawn, Core};
use crate::domain::{Position, State};
use crate::store::postgres::{LeaseHolder, PgStore, Taken};
use crate::store::StoreError;

/// A process's part in writing a shared ledger.
#[derive(Clone, Debug, PartialEq)]
pub enum Role {
    /// This process holds the writer's lease and writes.
    Writer,
    /// Another process writes; this one follows the log. `writer`: the live holder of the lease, when there is one.
    Follower { writer: Option<LeaseHolder> },
}

/// How often a follower reads the head row.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);
/// How often a follower looks at the lease (in follow periods).
const LEASE_EVERY: u64 = 2;
/// How often a follower asks whether its server is still on the side it was (a standby, or not), and a process on a
/// replica reads the replica's lag (in follow periods).
const LAG_EVERY: u64 = 10;

pub(super) type Handle = (Arc<AtomicBool>, JoinHandle<()>);

/// Starts the coordinator of a ledger on PostgreSQL.
pub(super) fn start(core: Arc<Core>, ttl: Duration) -> Result<Handle, StoreError> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = spawn("ledger-lease", move || {
        Coordinator::new(core, ttl).run(&flag)
    })?;
    Ok((stop, thread))
}

struct Coordinator {
    core: Arc<Core>,
    ttl: Duration,
    /// A follower's write model and the position it reflects.
    following: Option<(State, Position)>,
    /// When a failure to follow or to look at the lease was last logged (at most one warning in ten seconds).
    warned: Option<Instant>,
    /// Why this process follows no more: the server it reads changed sides (a replica promoted, a primary demoted).
    stranded: Option<String>,
}

impl Coordinator {
    fn new(core: Arc<Core>, ttl: Duration) -> Coordinator {
        Coordinator {
            core,
            ttl,
            following: None,
            warned: None,
            stranded: None,
        }
    }

    fn store(&self) -> Option<&PgStore> {
        self.core.shared.store.shared()
    }

    fn writing(&self) -> bool {
        matches!(
            *self.core.role.lock().unwrap_or_else(|e| e.into_inner()),
            Role::Writer
        )
    }

    fn set_role(&self, role: Role) {
        *self.core.role.lock().unwrap_or_else(|e| e.into_inner()) = role;
    }

    fn warn(&mut self, what: &str, e: &dyn std::fmt::Display) {
        if self
            .warned
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            tracing::warn!(error = %e, "{what}");
            self.warned = Some(Instant::now());
        }
    }

    fn run(mut self, stop: &AtomicBool) {
        let renew_every = self.ttl / 5;
        let mut renewed = Instant::now();
        let mut ticks = 0u64;
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(FOLLOW_EVERY);
            let store = Arc::clone(&self.core.shared.store);
            let Some(pg) = store.shared() else { return };
            if self.writing() {
                if renewed.elapsed() >= renew_every {
                    renewed = Instant::now();
                    match pg.renew_lease() {
                        Ok(()) => {}
                        Err(StoreError::Deposed { message }) => {
                            self.step_down(&message);
                            if self.core.config.sharing.is_none() {
                                // A command of the CLI does not follow: its writes stay stopped.
                                return;
                            }
                            continue;
                        }
                        Err(e) => self.warn("cannot renew the writer's lease; retrying", &e),
                    }
                }
                // A shared process whose writes stopped steps down: after a storage failure it takes the lease
                // again at once; after finding damage it lets another process (which verifies for itself) write.
                if self.core.shared.failed.load(Ordering::SeqCst)
                    && self.core.config.sharing.is_some()
                {
                    if self.damaged() {
                        self.step_down("the background verification found the log damaged");
                        pg.release_lease();
                    } else {
                        self.step_down("writes stopped after a storage failure");
                    }
                }
                continue;
            }
            if let Some(why) = &self.stranded {
                // The server changed sides under this process: it delivers nothing more from it.
                *self
                    .core
                    .follow_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
                continue;
            }
            let followed = self.follow();
            *self
                .core
                .follow_error
                .lock()
                .unwrap_or_else(|e| e.into_inner()) =
                followed.as_ref().err().map(ToString::to_string);
            if let Err(e) = followed {
                self.warn("cannot follow the writer; retrying", &e);
            }
            ticks += 1;
            if ticks.is_multiple_of(LEASE_EVERY) {
                self.consider_taking();
            }
            if ticks.is_multiple_of(LAG_EVERY) {
                match pg.changed_sides() {
                    Ok(true) => {
                        let why = if pg.is_replica() {
                            "the replica this process reads was promoted to a primary: restart the process, which then follows (or writes) the ledger as a process of the primary does"
                        } else {
                            "the server this process reads became a standby (a failover demoted it): restart the process, pointed at the new primary (or at every node, with target_session_attrs=read-write)"
                        };
                        tracing::error!(reason = why, "this process stops following the ledger");
                        self.stranded = Some(why.to_string());
                    }
                    Ok(false) => {}
                    Err(e) => self.warn("cannot ask whether the server is a standby; retrying", &e),
                }
            }
            if pg.is_replica() && ticks.is_multiple_of(LAG_EVERY) {
                match pg.replica_lag() {
                    Ok(lag) => {
                        *self
                            .core
                            .replica_lag
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = lag
                    }
                    Err(e) => self.warn("cannot read the replica's lag; retrying", &e),
                }
            }
        }
    }

    /// Stops writing: the lease is gone (or writes stopped). A process of the CLI stops for good; `serve` follows.
    fn step_down(&mut self, why: &str) {
        let Some(pg) = self.store() else { return };
        if self.core.config.sharing.is_none() {
            tracing::error!(
                reason = why,
                "this process is no longer the ledger's writer; writes are stopped"
            );
            self.core.shared.failed.store(true, Ordering::SeqCst);
            return;
        }
        tracing::warn!(reason = why, "this process is no longer the ledger's writer; it follows the log and forwards commands to the writer");
        self.set_role(Role::Follower { writer: None });
        self.core.stop_writing();
        *self
            .core
            .follow_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        pg.step_down();
        if !self.damaged() {
            self.core.shared.failed.store(false, Ordering::SeqCst);
        }
        self.following = None;
    }

    /// Reads what the writer committed since last time into the live model.
    fn follow(&mut self) -> Result<(), crate::ledger::OpenError> {
        let Some(pg) = self.core.shared.store.shared() else {
            return Ok(());
        };
        let moved = pg.follow()?;
        let (state, at) = match self.following.take() {
            Some(f) => f,
            None => self.core.live.read(|s, p| (s.clone(), p)),
        };
        let head = self.core.shared.store.head().position;
        if moved.is_none() && at >= head {
            self.following = Some((state, at));
            return Ok(());
        }
        let state = crate::replay::replay_onto(&*self.core.shared.store, state, at, |_| {})?;
        self.core.live.install(state.clone(), head);
        self.core.head.send_replace(head);
        self.following = Some((state, head));
        Ok(())
    }

    /// Takes the lease when no live process holds it, and starts writing.
    fn damaged(&self) -> bool {
        self.core
            .shared
            .damage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn consider_taking(&mut self) {
        // A process that found the log damaged never takes the lease (docs/recovery.md).
        if self.damaged() {
            return;
        }
        let store = Arc::clone(&self.core.shared.store);
        let Some(pg) = store.shared() else {
            return;
        };
        let Some(sharing) = self.core.config.sharing.clone() else {
            return;
        };
        if pg.is_replica() {
            // A replica never writes: it only learns where the writer is, to forward commands there.
            match pg.lease_holder() {
                // Its own sessions are not the primary's, so the holder's session cannot be looked up here: the
                // holder the replicated row names is where commands go (a dead one is answered `no_writer`).
                Ok((holder, _)) => self.set_role(Role::Follower {
                    writer: (!holder.address.is_empty()).then_some(holder),
                }),
                Err(e) => self.warn("cannot read the writer's lease; retrying", &e),
            }
            return;
        }
        match pg.lease_holder() {
            Ok((holder, true)) if !holder.is_this_process() => {
                self.set_role(Role::Follower {
                    writer: Some(holder),
                });
                return;
            }
            Ok(_) => {}
            Err(e) => return self.warn("cannot read the writer's lease; retrying", &e),
        }
        match pg.take_lease(&sharing.address, sharing.lease) {
            Ok(Taken::Ours(epoch)) => {
                if let Err(e) = self.promote() {
                    tracing::error!(error = %e, "took the writer's lease but cannot start writing; letting it go");
                    pg.step_down_and_release();
                    self.following = None;
                } else {
                    tracing::info!(epoch, "this process took the writer's lease and writes now");
                }
            }
            Ok(Taken::Held(holder)) => self.set_role(Role::Follower {
                writer: Some(holder),
            }),
            Err(e) => self.warn("cannot take the writer's lease; retrying", &e),
        }
    }

    /// Catches up with the events written before the lease changed hands, then starts writing from there.
    fn promote(&mut self) -> Result<(), crate::ledger::OpenError> {
        self.follow()?;
        let (state, at) = match self.following.take() {
            Some(f) => f,
            None => self.core.live.read(|s, p| (s.clone(), p)),
        };
        {
            let _renewing = crate::store::postgres::renewing(&self.core.shared.store, self.ttl)?;
            crate::projection::Projections::open(&*self.core.shared.store).catch_up(&state)?;
        }
        self.core.shared.failed.store(false, Ordering::SeqCst);
        self.core.start_writing(state, at)?;
        self.set_role(Role::Writer);
        Ok(())
    }
}
