//! What opening a sled ledger checks and rebuilds: the head (the last key against the head marker, the newest events
//! re-verified), the in-memory index of the command journal, and the history index's tail.

use std::sync::atomic::Ordering;

use super::SledStore;
use crate::domain::Position;
use crate::store::journal;
use crate::store::verify::stored_hash;
use crate::store::{EventStore, Head, StoreError};

/// A journal record number as the in-memory command index keeps it (four billion records, at least one command each,
/// before it would not fit).
pub(super) fn journal_number(seq: u64) -> Result<u32, StoreError> {
    u32::try_from(seq).map_err(|_| StoreError::Corrupt {
        position: None,
        message: format!("journal record {seq} is beyond what the command index holds"),
    })
}

impl SledStore {
    /// Reads every journal record into the in-memory command map.
    pub(super) fn load_journal(&self) -> Result<(), StoreError> {
        // The index file a clean close left, if it covers the journal exactly as it is.
        let last = self
            .aux
            .scan_prefix([journal::PREFIX])
            .next_back()
            .transpose()?;
        if let Some((k, v)) = &last {
            if let Some(seq) = journal::seq_of(k) {
                match super::folder::commands_file::read(&self.dir, seq, v) {
                    Ok(Some(entries)) => {
                        self.commands.load(entries);
                        self.journal_seq.store(seq + 1, Ordering::SeqCst);
                        self.settled_journal.store(seq, Ordering::SeqCst);
                        self.index_file_covers.store(seq, Ordering::SeqCst);
                        return Ok(());
                    }
                    Ok(None) => {}
                    Err(why) => {
                        tracing::info!(%why, "the command index file is not used; reading the whole journal");
                    }
                }
            }
        }
        let mut next = 1;
        let mut found = Vec::new();
        for item in super::walk::prefix(&self.aux, &[journal::PREFIX]) {
            let (k, v) = item?;
            if let Some(seq) = journal::seq_of(&k) {
                let record = journal_number(seq)?;
                found.extend(
                    journal::decode(&v)?
                        .into_iter()
                        .map(|c| journal::entry(c.command_id.as_bytes(), record)),
                );
                next = seq + 1;
            }
        }
        self.commands.load(found);
        self.journal_seq.store(next, Ordering::SeqCst);
        self.settled_journal.store(next - 1, Ordering::SeqCst);
        Ok(())
    }

    /// Brings the history index up to the head: the events after its checkpoint go to its in-memory tail.
    pub(super) fn catch_up_index(&self) -> Result<(), StoreError> {
        let head = self.head();
        if self.index.checkpoint() > head.position {
            // The index describes a longer log than this one (it was restored or truncated): start over.
            self.index.clear()?;
        }
        let from = self.index.upto();
        let mut pending = Vec::new();
        for item in self.read(from, Some(head.position)) {
            let stored = item?;
            let (_, event) = stored.decode()?;
            pending.push((stored.position, event.entities()));
            if pending.len() >= 65_536 {
                self.index.add(&pending);
                pending.clear();
                if self.index.tail_len() >= self.index_flush_positions {
                    self.index.flush()?;
                }
            }
        }
        self.index.add(&pending);
        Ok(())
    }

    /// The head from the last key, checked against the head marker; the newest `tail` events are re-verified.
    pub(super) fn recover_head(&self, tail: u64) -> Result<Head, StoreError> {
        let marker = self.marker()?;
        let last = self.log.last()?;
        let (last_pos, last_raw) = match (&marker, last) {
            (None, None) => return Ok(Head::genesis()),
            (Some(m), None) if m.position.0 == 0 => return Ok(Head::genesis()),
            (Some(m), None) => {
                return Err(StoreError::Corrupt {
                    position: Some(Position(1)),
                    message: format!(
                        "the head marker records {} events but the log is empty",
                        m.position
                    ),
                })
            }
            (None, Some(_)) => {
                return Err(StoreError::Corrupt {
                    position: None,
                    message: "the log holds events but no head marker".into(),
                })
            }
            (Some(_), Some(last)) => last,
        };
        let m = marker.unwrap_or_else(Head::genesis);
        if last_pos != m.position {
            let first_bad = Position(last_pos.0.min(m.position.0) + 1);
            return Err(StoreError::Corrupt {
                position: Some(first_bad),
                message: format!(
                    "the log ends at position {last_pos} but the head marker records {}: events were removed or lost",
                    m.position
                ),
            });
        }
        let last_hash = stored_hash(&last_raw, last_pos)?;
        if last_hash != m.hash {
            return Err(StoreError::Corrupt {
                position: Some(last_pos),
                message: format!(
                    "the last event's hash {last_hash} differs from the head marker's {}",
                    m.hash
                ),
            });
        }
        let start = Position(last_pos.0.saturating_sub(tail.saturating_sub(1)).max(1));
        self.verify_range(start, last_pos, &mut |_| {})?;
        Ok(m)
    }
}
