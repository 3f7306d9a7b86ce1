//! Nothing delivered can be taken back by a failover, and a store on a streaming replica only reads.
//!
//! **Barriers.** With synchronous replication, a COMMIT waits for the synchronous standbys before it answers, and
//! stays invisible to other sessions while it waits. But a wait that is cancelled (`pg_cancel_backend`, a client's
//! cancel request) or cut short (the session terminated, a fast shutdown) leaves the transaction committed *locally*
//! and visible on the primary, perhaps on no standby: a failover then loses it. So before this store delivers a
//! position it did not write itself and see acknowledged (the head it finds at open, each head it follows, a batch
//! whose COMMIT answer was lost or whose wait was cancelled), it commits a **barrier**: a transaction that writes one
//! logical-decoding message (`pg_logical_emit_message`, no table touched, no lock taken) and so waits for the
//! synchronous standbys like any other. Standbys confirm in the order of the log, so when the barrier's COMMIT
//! answers (and its own wait was not cancelled), everything that was visible before it began is on them too. Without
//! synchronous standbys the barrier costs one small local commit.
//!
//! **Replicas.** A store opened on a hot standby (`pg_is_in_recovery()`) never takes the lease and never writes: its
//! process follows the log by polling (a standby cannot LISTEN) and forwards commands to the writer the replicated
//! lease row names. What it delivers is what the standby replayed; see docs/operations.md for which standby to read.

use std::time::Duration;

use super::{pg_error, PgStore};
use crate::store::{Head, StoreError};

/// How long a barrier waits for the synchronous standbys before it gives up (and is tried again).
pub const BARRIER_WAIT: Duration = Duration::from_secs(10);

/// A thread that cancels the query on `token`'s connection unless the returned sender is dropped within
/// [`BARRIER_WAIT`]; it tells whether it cancelled.
fn watchdog(
    token: postgres::CancelToken,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<bool>) {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        if matches!(
            wait.recv_timeout(BARRIER_WAIT),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        ) {
            let _ = token.cancel_query(postgres::NoTls);
            return true;
        }
        false
    });
    (done, thread)
}

/// How far a replica is behind what it received from the primary.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaLag {
    /// WAL received from the primary but not replayed yet, in bytes.
    pub replay_bytes: u64,
    /// Seconds since the last transaction replayed was committed on the primary, while WAL received is still to be
    /// replayed; 0 when everything received is replayed.
    pub seconds: f64,
    /// Whether the standby's WAL receiver runs (`pg_stat_wal_receiver`, whose other columns only privileged roles
    /// see): it streams from a primary, or tries to.
    pub streaming: bool,
}

impl PgStore {
    /// Whether this store is on a hot standby, and so only reads.
    pub fn is_replica(&self) -> bool {
        self.replica
    }

    /// Fails on a replica, naming where writes go.
    pub fn writable(&self) -> Result<(), StoreError> {
        if self.replica {
            return Err(StoreError::ReadOnlyReplica {
                place: self.target.to_string(),
            });
        }
        Ok(())
    }

    /// Commits a barrier: on return, everything visible on the primary before the call is on its synchronous
    /// standbys too. Nothing to do on a replica (what it shows, it has).
    pub(super) fn barrier(&self) -> Result<(), StoreError> {
        self.barrier_reading_head().map(|_| ())
    }

    /// Commits a barrier that also reads the head row, in the same transaction on the same connection (so on the same
    /// server, whatever a multi-host URL connects to): the head and the number of committed commands it records,
    /// which the barrier confirms. `None` on a replica.
    ///
    /// A barrier waits for the synchronous standbys at most [`BARRIER_WAIT`]: then it cancels its own wait and fails,
    /// to be tried again, rather than hang a process that opens the ledger or follows it while no standby answers.
    pub(super) fn barrier_reading_head(&self) -> Result<Option<(Head, u64)>, StoreError> {
        if self.replica {
            return Ok(None);
        }
        let mut slot = self.barrier.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|c| c.client.is_closed()) {
            slot.take()
                .into_iter()
                .for_each(|w| super::pool::close(w.client));
        }
        if slot.is_none() {
            *slot = Some(self.target.connect_watched()?);
        }
        let Some(watched) = slot.as_mut() else {
            return Ok(None);
        };
        watched.wait_cancelled();
        let (done, watchdog) = watchdog(watched.client.cancel_token());
        let result = (|| {
            let mut tx = watched.client.transaction()?;
            let row = tx.query_one(super::HEAD_ROW, &[])?;
            tx.query_one(
                "SELECT pg_logical_emit_message(true, 'partner-ledger', 'barrier')",
                &[],
            )?;
            tx.commit()?;
            Ok::<_, postgres::Error>(super::head_of(&row))
        })();
        drop(done);
        let timed_out = watchdog.join().unwrap_or(false);
        let cancelled = watched.wait_cancelled();
        match result {
            Ok(head) if !cancelled => Ok(Some(head)),
            Ok(_) if timed_out => Err(StoreError::WriteFailed {
                message: format!(
                    "no synchronous standby confirmed the log within {} s (is synchronous_standby_names naming a standby that is down?): what the primary shows is not delivered until one does",
                    BARRIER_WAIT.as_secs()
                ),
            }),
            Ok(_) => Err(StoreError::WriteFailed {
                message: "a barrier's wait for the synchronous standbys was cancelled: what the primary shows may be on no standby yet".into(),
            }),
            Err(e) => {
                slot.take()
                    .into_iter()
                    .for_each(|w| super::pool::close(w.client));
                Err(pg_error(
                    &self.target,
                    "cannot confirm that the log reached the synchronous standbys",
                    &e,
                ))
            }
        }
    }

    /// The head position the head row records now (on a replica: as replayed so far).
    pub fn recorded_head(&self) -> Result<crate::domain::Position, StoreError> {
        self.head_row().map(|(h, _)| h.position)
    }

    /// Whether the server this store reads changed sides since it was opened: a replica promoted, or a primary
    /// demoted to a standby. Such a store must not go on (it would skip barriers, or never pass one).
    pub fn changed_sides(&self) -> Result<bool, StoreError> {
        let standby: bool = self
            .pool
            .get()?
            .query_one("SELECT pg_is_in_recovery()", &[])
            .map_err(self.err("cannot ask whether the server is a standby"))?
            .get(0);
        Ok(standby != self.replica)
    }

    /// What the server's settings make of "acknowledged", checked at open: each setting that weakens it, as a
    /// warning to log (docs/operations.md lists them).
    pub(super) fn settings_warnings(&self) -> Result<Vec<String>, StoreError> {
        let row = self
            .pool
            .get()?
            .query_one(
                "SELECT current_setting('fsync'), current_setting('full_page_writes'),
                        current_setting('lc_messages'), current_setting('synchronous_standby_names'),
                        (SELECT count(*) FROM pg_stat_replication), current_setting('hot_standby_feedback')",
                &[],
            )
            .map_err(self.err("cannot read the server's settings"))?;
        let (fsync, fpw, messages, names): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let (standbys, feedback): (i64, String) = (row.get(4), row.get(5));
        let mut warnings = Vec::new();
        if fsync != "on" {
            warnings.push("fsync is off on this PostgreSQL server: an acknowledged command can be lost in a crash of its machine".to_string());
        }
        if fpw != "on" {
            warnings.push("full_page_writes is off on this PostgreSQL server: a crash of its machine can leave torn pages behind".to_string());
        }
        if !english_messages(&messages) {
            warnings.push(format!("lc_messages is {messages}: the ledger recognises PostgreSQL's warning that a COMMIT stopped waiting for the synchronous standbys by its English text; with messages in another language such a commit could be delivered before a standby has it. Set lc_messages = 'C' for the ledger's database or role"));
        }
        if !self.replica && standbys > 0 && names.trim().is_empty() {
            warnings.push(format!("{standbys} standby(s) stream from this server but none is synchronous (synchronous_standby_names is empty): an acknowledged command is on this server's disk only, and a failover to a standby can lose it"));
        }
        if self.replica && feedback != "on" {
            warnings.push("hot_standby_feedback is off on this replica: long reads (a stream from position 0, a backup) can be cancelled by the replay of the primary's cleanup; turn it on".to_string());
        }
        Ok(warnings)
    }

    /// How far this replica is behind what it received (`None` on a primary).
    pub fn replica_lag(&self) -> Result<Option<ReplicaLag>, StoreError> {
        if !self.replica {
            return Ok(None);
        }
        let row = self
            .pool
            .get()?
            .query_one(
                "SELECT greatest(0, coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0))::bigint,
                        CASE WHEN pg_last_wal_receive_lsn() IS NULL
                                  OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
                             ELSE greatest(0, extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()))
                        END::float8,
                        EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE pid IS NOT NULL)",
                &[],
            )
            .map_err(self.err("cannot read the replica's lag"))?;
        Ok(Some(ReplicaLag {
            replay_bytes: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            seconds: row.get(1),
            streaming: row.get(2),
        }))
    }
}

/// Whether PostgreSQL's messages under this `lc_messages` are its untranslated English ones: empty (the server's
/// environment), `C` and its variants (`C.UTF-8`), `POSIX`, or an English locale.
fn english_messages(lc_messages: &str) -> bool {
    lc_messages.is_empty()
        || lc_messages == "C"
        || lc_messages.starts_with("C.")
        || lc_messages == "POSIX"
        || lc_messages.starts_with("en")
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_are_english_under_c_posix_and_english_locales_only() {
        for english in [
            "",
            "C",
            "C.UTF-8",
            "C.utf8",
            "POSIX",
            "en_US.UTF-8",
            "en_GB",
        ] {
            assert!(super::english_messages(english), "{english}");
        }
        for other in ["de_DE.UTF-8", "fr_FR", "Catalan", "nl_NL.utf8"] {
            assert!(!super::english_messages(other), "{other}");
        }
    }
}
