//! Appending on PostgreSQL, and what happens when the database goes away in the middle of it.
//!
//! A staged batch is one transaction: move the head row from the batch's base to its head (only if it still records
//! the base, which fences off any other writer), insert the events, their history rows and their commands' journal
//! rows, COMMIT. What a failure means depends on when it struck:
//! - before COMMIT was sent (the connection could not be opened, or broke mid-transaction, or a statement failed),
//!   the server rolled the transaction back: nothing was written. The batch's commands are answered `unknown`
//!   (`WriteFailed`), the writer rewinds to the durable state, and the next batch opens a new connection;
//! - during COMMIT, the outcome is unknown. The head row tells: it records either the base (not written) or the
//!   batch's head (written, durably). This module reconnects for a few seconds to read it and answers truthfully. If
//!   the database is still away, the commands are answered `unknown`, and the next append first reads the head row:
//!   at the base, writing goes on; at the batch's head (the batch was written though its commands were answered
//!   `unknown` and the writer rewound), writes stop until the ledger is reopened, which rebuilds everything from the
//!   log. Clients retry `unknown` commands with the same `command_id` and get each committed exactly once.
//! - a head row at anything else means another process appended: writes stop (`Conflict`).

use std::sync::atomic::Ordering;

use super::target::Watched;
use super::{message_of, pg_error, pos, PgStore};
use crate::store::sealed::{SealedBatch, StagedBatch};
use crate::store::{Head, Store, StoreError};

/// How one attempt to write a batch ended, when it did not.
enum Failure {
    /// Nothing was written.
    NotWritten(StoreError),
    /// COMMIT was sent and its answer lost.
    Unknown(StoreError),
    /// The head row no longer records this writer's base.
    Conflict(StoreError),
}

/// How long an unknown COMMIT is looked into before its commands are answered `unknown`.
const RESOLVE_FOR: std::time::Duration = std::time::Duration::from_secs(5);

impl PgStore {
    pub(super) fn stage_batch(&self, batch: SealedBatch) -> Result<StagedBatch, StoreError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(StoreError::FailStopped);
        }
        let written = self.staged_head();
        batch.check_base(&written)?;
        self.settle_uncertainty(&written)?;
        let outcome = match self.write_batch(&batch) {
            Ok(commands) => Ok(commands),
            Err(Failure::NotWritten(e)) => Err(self.not_written(e)),
            Err(Failure::Conflict(e)) => return self.fail(e),
            Err(Failure::Unknown(e)) => self.resolve(&batch, e),
        };
        let commands = outcome?;
        self.written_commands.store(commands, Ordering::SeqCst);
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = batch.new_head.clone();
        Ok(StagedBatch {
            events: batch.rows.len(),
            journal_seq: commands - batch.journal.len() as u64 + 1,
            journal: batch.journal,
            index: batch.index,
            new_head: batch.new_head,
            positions: batch.positions,
        })
    }

    /// A write that left nothing behind: its commands are answered `unknown`, and writing goes on. A lost
    /// connection empties the readers' pool too: its connections are as dead.
    fn not_written(&self, e: StoreError) -> StoreError {
        if matches!(e, StoreError::Unreachable { .. }) {
            self.pool.clear();
        }
        StoreError::WriteFailed {
            message: format!("nothing was written: {e}"),
        }
    }

    /// The head row (the head and the number of committed commands, which tells a batch without events from its
    /// base), read on a new connection.
    fn head_row_now(&self) -> Result<(Head, u64), StoreError> {
        let mut client = self.target.connect()?;
        let row = client
            .query_one(super::HEAD_ROW, &[])
            .map_err(|e| pg_error(&self.target, "cannot read the head row", &e))?;
        Ok(super::head_of(&row))
    }

    /// Finds out what an unknown COMMIT did, for up to [`RESOLVE_FOR`]: the number of commands committed when it
    /// was written; `WriteFailed` when it was not or the database stays away (remembered for the next append).
    fn resolve(&self, batch: &SealedBatch, e: StoreError) -> Result<u64, StoreError> {
        tracing::warn!(error = %e, "the answer to a COMMIT was lost; reading the head row to learn what it did");
        let deadline = std::time::Instant::now() + RESOLVE_FOR;
        let before = self.written_commands.load(Ordering::SeqCst);
        let after = before + batch.journal.len() as u64;
        loop {
            match self.head_row_now() {
                Ok((h, n)) if h == batch.base && n == before => return Err(self.not_written(e)),
                Ok((h, n)) if h == batch.new_head && n == after => {
                    return match self.barrier() {
                        Ok(()) => Ok(after),
                        Err(why) => {
                            *self.uncertain.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some((batch.base.clone(), before, batch.new_head.clone(), after));
                            Err(StoreError::WriteFailed {
                                message: format!("the outcome is unknown: {why}"),
                            })
                        }
                    };
                }
                Ok((h, _)) => {
                    return self.fail(StoreError::Conflict {
                        message: format!(
                            "after a lost COMMIT the head row records position {}, neither this writer's {} nor {}",
                            h.position, batch.base.position, batch.new_head.position
                        ),
                    })
                }
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(now) => {
                    *self.uncertain.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((batch.base.clone(), before, batch.new_head.clone(), after));
                    self.pool.clear();
                    return Err(StoreError::WriteFailed {
                        message: format!(
                            "the outcome is unknown: the database went away during COMMIT ({e}) and cannot be asked ({now})"
                        ),
                    });
                }
            }
        }
    }

    /// Before writing after an unknown COMMIT: goes on if it wrote nothing, stops writes if it wrote its batch.
    fn settle_uncertainty(&self, written: &Head) -> Result<(), StoreError> {
        let Some((base, before, head, after)) = self
            .uncertain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return Ok(());
        };
        match self.head_row_now() {
            Ok((h, n)) if h == base && n == before && h == *written => {
                *self.uncertain.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Ok(())
            }
            Ok((h, n)) if h == head && n == after => self.fail(StoreError::Conflict {
                message: format!(
                    "a batch whose COMMIT was answered `unknown` was written after all (the head row records position {}): reopen the ledger, which rebuilds its state from the log; retried commands are answered as duplicates",
                    h.position
                ),
            }),
            Ok((h, _)) => self.fail(StoreError::Conflict {
                message: format!(
                    "the head row records position {}, not this writer's {}",
                    h.position, written.position
                ),
            }),
            Err(e) => Err(self.not_written(e)),
        }
    }

    /// The writer's connection, opened again if it was lost (every append checks the head row and the epoch).
    fn writer_session<'a>(
        &self,
        slot: &'a mut Option<Watched>,
    ) -> Result<&'a mut Watched, Failure> {
        if slot.as_ref().is_some_and(|c| c.client.is_closed()) {
            slot.take()
                .into_iter()
                .for_each(|w| super::pool::close(w.client));
        }
        if slot.is_none() {
            let client = self.target.connect_watched().map_err(Failure::NotWritten)?;
            *slot = Some(client);
        }
        slot.as_mut().ok_or_else(|| {
            Failure::NotWritten(StoreError::Unreachable {
                place: self.target.to_string(),
                message: "no connection".into(),
            })
        })
    }

    /// Writes a sealed batch in one transaction and commits it (durable on return): the number of commands committed.
    fn write_batch(&self, batch: &SealedBatch) -> Result<u64, Failure> {
        let mut slot = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.write_on(&mut slot, batch);
        if matches!(result, Err(Failure::NotWritten(_) | Failure::Unknown(_))) {
            // A connection that failed a write is not trusted again: the next append opens another.
            slot.take()
                .into_iter()
                .for_each(|w| super::pool::close(w.client));
        }
        result
    }

    fn write_on(&self, slot: &mut Option<Watched>, batch: &SealedBatch) -> Result<u64, Failure> {
        let watched = self.writer_session(slot)?;
        watched.wait_cancelled();
        let client = &mut watched.client;
        let not_written = |context: &'static str| {
            let target = self.target.clone();
            move |e: postgres::Error| Failure::NotWritten(pg_error(&target, context, &e))
        };
        let n = i64::try_from(batch.journal.len()).unwrap_or(i64::MAX);
        let epoch = i64::try_from(self.epoch.load(Ordering::SeqCst)).unwrap_or(i64::MAX);
        if epoch == 0 {
            return Err(Failure::Conflict(StoreError::Deposed {
                message: "this process does not hold the writer's lease".into(),
            }));
        }
        let mut tx = client
            .transaction()
            .map_err(not_written("cannot begin the append"))?;
        let moved = tx
            .query_opt(
                "UPDATE head SET position = $1, hash = $2, commands = commands + $3
                 WHERE position = $4 AND hash = $5 AND epoch = $6 RETURNING commands - $3",
                &[
                    &pos(batch.new_head.position),
                    &batch.new_head.hash,
                    &n,
                    &pos(batch.base.position),
                    &batch.base.hash,
                    &epoch,
                ],
            )
            .map_err(not_written("the append failed (head row)"))?;
        let Some(row) = moved else {
            let now = tx
                .query_one("SELECT position, epoch FROM head", &[])
                .map_err(not_written("the append failed (head row)"))?;
            let (at, their): (i64, i64) = (now.get(0), now.get(1));
            if their != epoch {
                return Err(Failure::Conflict(StoreError::Deposed {
                    message: format!(
                        "another process took the writer's lease (epoch {their}; this writer's was {epoch})"
                    ),
                }));
            }
            return Err(Failure::Conflict(StoreError::Conflict {
                message: format!(
                    "the head row records position {at}, not this writer's {} with its hash",
                    batch.base.position
                ),
            }));
        };
        let first_seq: i64 = row.get(0);
        let positions: Vec<i64> = batch.rows.iter().map(|(p, _)| pos(*p)).collect();
        let envelopes: Vec<&str> = batch
            .rows
            .iter()
            .map(|(_, raw)| std::str::from_utf8(raw).unwrap_or_default())
            .collect();
        tx.execute(
            "INSERT INTO events (position, envelope) SELECT * FROM unnest($1::bigint[], $2::text[])",
            &[&positions, &envelopes],
        )
        .map_err(not_written("the append failed (events)"))?;
        let (mut kinds, mut ids, mut at) = (Vec::new(), Vec::new(), Vec::new());
        for (p, entities) in &batch.index {
            for e in entities {
                let (k, id) = super::entity_key(e);
                kinds.push(k);
                ids.push(id);
                at.push(pos(*p));
            }
        }
        tx.execute(
            "INSERT INTO history (kind, id, position)
             SELECT * FROM unnest($1::\"char\"[], $2::uuid[], $3::bigint[]) ON CONFLICT DO NOTHING",
            &[&kinds, &ids, &at],
        )
        .map_err(not_written("the append failed (history index)"))?;
        let keys: Vec<uuid::Uuid> = batch.journal.iter().map(|c| c.command_id.uuid()).collect();
        let seqs: Vec<i64> = (0..n).map(|i| first_seq + 1 + i).collect();
        let prints: Vec<Option<Vec<u8>>> = batch
            .journal
            .iter()
            .map(|c| c.fingerprint.map(|f| f.to_vec()))
            .collect();
        let firsts: Vec<i64> = batch.journal.iter().map(|c| pos(c.first)).collect();
        let counts: Vec<i32> = batch
            .journal
            .iter()
            .map(|c| i32::try_from(c.count).unwrap_or(i32::MAX))
            .collect();
        tx.execute(
            "INSERT INTO commands (key, seq, fingerprint, first_position, event_count)
             SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bytea[], $4::bigint[], $5::int[])",
            &[&keys, &seqs, &prints, &firsts, &counts],
        )
        .map_err(not_written("the append failed (command journal)"))?;
        tx.commit().map_err(|e| {
            if e.as_db_error().is_some_and(|d| d.severity() == "ERROR") {
                // The server answered an ERROR (not FATAL: a session ended by a shutdown says nothing of its last
                // commit): it refused the COMMIT and rolled the transaction back.
                return Failure::NotWritten(pg_error(&self.target, "COMMIT was refused", &e));
            }
            Failure::Unknown(StoreError::Postgres {
                place: self.target.to_string(),
                context: "COMMIT failed on its way".into(),
                message: message_of(&e),
            })
        })?;
        if watched.wait_cancelled() {
            // Committed here, perhaps on no standby yet: answered like a COMMIT whose answer was lost, once a
            // barrier confirms it reached the standbys (`resolve`).
            return Err(Failure::Unknown(StoreError::WriteFailed {
                message: "the COMMIT's wait for the synchronous standbys was cancelled".into(),
            }));
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(u64::try_from(first_seq).unwrap_or(0) + batch.journal.len() as u64)
    }
}
