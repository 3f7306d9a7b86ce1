//! The write pipeline on sled: a sealed batch is staged as one sled transaction (its log segments, its journal
//! records and the head marker, all or nothing after a crash), then settled by one `flush()` + `fdatasync` of
//! `sled/db` for every batch staged meanwhile, because sled's flush alone is not a power-loss barrier on Linux
//! (STORAGE.md, spacejam/sled#1452). Only then do the head, the command index and the history index move.
//!
//! A failed transaction that provably left nothing behind (same head marker, no segment or journal record after the
//! staged head) is survived; any other failure stops writes until the store is reopened (fail-stop).

use std::sync::atomic::Ordering;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::fault::Fault;
use super::recover::journal_number;
use super::{io, segment, SledStore, HEAD_KEY};
use crate::domain::Position;
use crate::store::journal::{self, Committed};
use crate::store::sealed::{SealedBatch, StagedBatch};
use crate::store::{Envelope, EventStore, Head, StoreError};

impl SledStore {
    /// Makes everything written so far durable, in any tree of this database: `flush()` then `fdatasync` of
    /// `sled/db` (sled's flush alone is not a power-loss barrier). For state outside the log that must survive a
    /// crash once acknowledged, such as a consumer's checkpoint.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file
            .sync_data()
            .map_err(io("fdatasync of the database file failed"))
    }

    /// Stages a sealed batch and settles it: durable on return.
    pub(super) fn persist(&self, sealed: SealedBatch) -> Result<Vec<Vec<Position>>, StoreError> {
        let staged = self.stage_batch(sealed)?;
        let positions = staged.positions.clone();
        self.settle_batches(vec![staged])?;
        Ok(positions)
    }

    /// Writes a sealed batch in one transaction: its events, its journal records and the head marker. It is not
    /// durable yet and nobody sees it — the head, the command map and the index move only in
    /// [`SledStore::settle_batches`] — so a caller may write the next batch while this one is being synced.
    pub(super) fn stage_batch(&self, prepared: SealedBatch) -> Result<StagedBatch, StoreError> {
        let _writer = self.write.lock().unwrap_or_else(|e| e.into_inner());
        if self.failed.load(Ordering::SeqCst) {
            return Err(StoreError::FailStopped);
        }
        let written_head = self.staged();
        prepared.check_base(&written_head)?;
        let SealedBatch {
            rows,
            journal,
            index,
            new_head,
            positions,
            ..
        } = prepared;
        let head_bytes = serde_json::to_vec(&new_head).unwrap_or_default();
        let first_seq = self.journal_seq.load(Ordering::SeqCst);
        let records: Vec<([u8; 9], Vec<u8>)> = journal
            .chunks(journal::MAX_PER_RECORD)
            .zip(first_seq..)
            .map(|(chunk, seq)| (journal::key(seq), journal::encode(chunk)))
            .collect();
        if self.faults.strikes(Fault::Write) {
            return Err(StoreError::WriteFailed {
                message: "the write transaction failed (injected fault)".into(),
            });
        }
        let bytes: usize = rows.iter().map(|(_, r)| r.len()).sum();
        if let Err(message) = self.room.check(2 * bytes as u64) {
            return Err(StoreError::WriteFailed { message });
        }
        let segments = segment::pack(&rows);
        let result: Result<(), TransactionError<()>> =
            (&self.log.tree, &self.aux).transaction(|(e, a)| {
                for (k, v) in &segments {
                    e.insert(&k[..], v.as_slice())?;
                }
                for (k, v) in &records {
                    a.insert(&k[..], v.as_slice())?;
                }
                a.insert(HEAD_KEY, head_bytes.as_slice())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        if let Err(e) = result {
            let e = match e {
                TransactionError::Storage(s) => StoreError::Sled(s),
                TransactionError::Abort(()) => StoreError::Corrupt {
                    position: None,
                    message: "the write transaction aborted".into(),
                },
            };
            // sled applies a transaction all or nothing. If nothing of this one is visible, the failure is survived:
            // the caller goes on from the written head. Anything else stops writes.
            return match self.untouched_since(&written_head, first_seq) {
                Ok(true) => Err(StoreError::WriteFailed {
                    message: e.to_string(),
                }),
                _ => self.fail(e),
            };
        }
        self.journal_seq
            .store(first_seq + records.len() as u64, Ordering::SeqCst);
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = new_head.clone();
        Ok(StagedBatch {
            events: rows.len(),
            journal_seq: first_seq,
            journal,
            index,
            new_head,
            positions,
        })
    }

    /// Whether nothing was written after `head` (no log segment after it, the same head marker, no journal record from
    /// `journal_seq` on): a failed write transaction left no trace.
    fn untouched_since(&self, head: &Head, journal_seq: u64) -> Result<bool, StoreError> {
        let marker = self.aux.get(HEAD_KEY)?;
        let same_marker = match marker {
            None => head.position.0 == 0,
            Some(m) => serde_json::from_slice::<Head>(&m).is_ok_and(|h| h == *head),
        };
        let no_segment = self
            .log
            .tree
            .range(head.position.next().to_key()..)
            .next()
            .is_none();
        let no_record = self
            .aux
            .range(journal::key(journal_seq)..journal::key(u64::MAX))
            .next()
            .is_none();
        Ok(same_marker && no_segment && no_record)
    }

    /// Makes written batches durable — `flush()`, `fdatasync` of `sled/db`, then the `HEAD` file — and only then
    /// moves the head and shows them to the command map and the index. One sync covers every batch written so far.
    /// Any failure stops further writes (fail-stop).
    pub(super) fn settle_batches(&self, batches: Vec<StagedBatch>) -> Result<(), StoreError> {
        let Some(last) = batches.last() else {
            return Ok(());
        };
        let new_head = last.new_head.clone();
        if self.failed.load(Ordering::SeqCst) {
            return Err(StoreError::FailStopped);
        }
        if self.faults.strikes(Fault::Flush) {
            return self.fail(StoreError::Io {
                context: "flush of sled's log failed".into(),
                source: std::io::Error::other("injected fault"),
            });
        }
        if let Err(e) = self.db.flush() {
            return self.fail(StoreError::Sled(e));
        }
        self.flushes.fetch_add(1, Ordering::Relaxed);
        let synced = if self.faults.strikes(Fault::Sync) {
            Err(std::io::Error::other("injected fault"))
        } else {
            self.data_file.sync_data()
        };
        if let Err(e) = synced {
            return self.fail(StoreError::Io {
                context: "fdatasync of the database file failed".into(),
                source: e,
            });
        }
        self.fdatasyncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.write_head_file(&new_head) {
            return self.fail(e);
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        for b in &batches {
            self.appended.fetch_add(b.events as u64, Ordering::Relaxed);
            self.commands_committed
                .fetch_add(b.journal.len() as u64, Ordering::Relaxed);
            for (chunk, seq) in b
                .journal
                .chunks(journal::MAX_PER_RECORD)
                .zip(b.journal_seq..)
            {
                self.commands.add(journal_number(seq)?, chunk);
                self.settled_journal.fetch_max(seq, Ordering::SeqCst);
            }
            self.index.add(&b.index);
        }
        if self.index.tail_len() >= self.index_flush_positions {
            if let Some(f) = &self.flusher {
                f.wake();
            }
        }
        *self.head.lock().unwrap_or_else(|e| e.into_inner()) = new_head;
        Ok(())
    }

    /// The head after the last batch written (durable or not yet).
    pub(super) fn staged(&self) -> Head {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every committed command in commit order, as the command journal keeps it (for backups).
    pub(super) fn journal_records(
        &self,
    ) -> impl Iterator<Item = Result<Committed, StoreError>> + '_ {
        super::walk::prefix(&self.aux, &[journal::PREFIX])
            .filter_map(|item| match item {
                Err(e) => Some(vec![Err(StoreError::Sled(e))]),
                Ok((k, v)) => journal::seq_of(&k).map(|_| match journal::decode(&v) {
                    Ok(commands) => commands.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                }),
            })
            .flatten()
    }

    /// Appends already sealed envelopes with their commands' journal entries as a backup recorded them
    /// (`SealedBatch::of_envelopes`). Durable on return, like `commit`.
    pub(super) fn import_batch(
        &self,
        envelopes: &[Envelope],
        journal: Vec<Committed>,
    ) -> Result<(), StoreError> {
        let batch = SealedBatch::of_envelopes(EventStore::head(self), envelopes, journal)?;
        self.persist(batch).map(|_| ())
    }
}
