//! Batches on their way into a store: sealed (positions, canonical envelopes and their hash chain, computed without
//! touching the disk), then staged by a backend, then settled (durable and visible).
//!
//! Sealing is the same for every backend, so the chain a ledger writes does not depend on where it is stored.

use super::envelope::{canonical, check, seal};
use super::journal::Committed;
use super::{CommitEntry, Envelope, Head, StoreError};
use crate::domain::{EntityRef, Position};

/// A position and the exact bytes stored for it (the canonical envelope).
pub type Row = (Position, Vec<u8>);

/// A batch sealed and ready to stage: everything a commit computes before it touches the disk. Sealing is pure CPU
/// work, so the writer seals the next batch while the previous one is being made durable.
#[derive(Debug)]
pub struct SealedBatch {
    /// The head the batch extends.
    pub(crate) base: Head,
    pub(crate) rows: Vec<Row>,
    pub(crate) journal: Vec<Committed>,
    /// Each event's entities, for the history index.
    pub(crate) index: Vec<(Position, Vec<EntityRef>)>,
    pub(crate) new_head: Head,
    pub(crate) positions: Vec<Vec<Position>>,
}

impl SealedBatch {
    /// Seals `entries` after `base`: positions, envelopes and their hash chain, the journal entries and the index
    /// entries. A store stages the result only if its head is still `base`.
    pub fn seal(entries: &[CommitEntry], base: &Head) -> SealedBatch {
        let mut position = base.position;
        let mut prev = base.hash.clone();
        let mut rows: Vec<Row> = Vec::with_capacity(entries.len());
        let mut index = Vec::with_capacity(entries.len());
        let mut journal = Vec::with_capacity(entries.len());
        let mut positions_out = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut positions = Vec::with_capacity(entry.events.len());
            for ev in &entry.events {
                position = position.next();
                let (raw, hash) = seal(ev, position, &prev);
                prev = hash;
                rows.push((position, raw));
                index.push((position, ev.event.entities()));
                positions.push(position);
            }
            journal.push(Committed {
                command_id: entry.command_id,
                fingerprint: Some(entry.fingerprint),
                first: positions.first().copied().unwrap_or(position),
                count: u32::try_from(positions.len()).unwrap_or(u32::MAX),
            });
            positions_out.push(positions);
        }
        SealedBatch {
            base: base.clone(),
            rows,
            journal,
            index,
            new_head: Head {
                position,
                hash: prev,
            },
            positions: positions_out,
        }
    }

    /// A batch of envelopes sealed elsewhere (a backup, another backend) with their commands' journal entries as
    /// recorded there (fingerprints, and commands that appended nothing), so the copy answers re-submissions as the
    /// original did. Every envelope is checked: the next position after `head`, linked to the one before, its hash its
    /// own; and the journal entries must cover exactly these events.
    pub fn of_envelopes(
        head: Head,
        envelopes: &[Envelope],
        journal: Vec<Committed>,
    ) -> Result<SealedBatch, StoreError> {
        let mut prev = head.hash.clone();
        let mut expected = head.position;
        let mut rows: Vec<Row> = Vec::with_capacity(envelopes.len());
        let mut index = Vec::with_capacity(envelopes.len());
        for env in envelopes {
            expected = expected.next();
            let value = serde_json::to_value(env).map_err(|e| StoreError::Codec {
                position: env.position,
                message: e.to_string(),
            })?;
            let raw = canonical(&value);
            let checked = check(&raw, expected, &prev).map_err(|b| StoreError::Corrupt {
                position: Some(b.position),
                message: b.reason,
            })?;
            prev = checked.hash;
            let event = env.event().map_err(|e| StoreError::Codec {
                position: env.position,
                message: e.to_string(),
            })?;
            index.push((expected, event.entities()));
            rows.push((expected, raw));
        }
        let covered: u64 = journal.iter().map(|c| u64::from(c.count)).sum();
        if covered != envelopes.len() as u64 {
            return Err(StoreError::Corrupt {
                position: Some(head.position.next()),
                message: format!(
                    "the restored journal entries cover {covered} events, but {} were given",
                    envelopes.len()
                ),
            });
        }
        let positions = journal.iter().map(|c| c.record().positions).collect();
        Ok(SealedBatch {
            base: head,
            rows,
            journal,
            index,
            new_head: Head {
                position: expected,
                hash: prev,
            },
            positions,
        })
    }

    /// `Ok` when this batch extends `staged` (the store's staged head); otherwise the error every backend answers: the
    /// caller's bug, not a storage failure, and nothing is written.
    pub(crate) fn check_base(&self, staged: &Head) -> Result<(), StoreError> {
        if *staged == self.base {
            return Ok(());
        }
        Err(StoreError::Corrupt {
            position: Some(self.base.position.next()),
            message: format!(
                "a batch prepared after position {} was offered at position {}",
                self.base.position, staged.position
            ),
        })
    }

    /// Appends a batch sealed after this one, so both are staged together and settled by one sync. Refuses
    /// (returning `next` unchanged) a batch that does not extend this one.
    pub fn append(&mut self, next: SealedBatch) -> Result<(), Box<SealedBatch>> {
        if next.base != self.new_head {
            return Err(Box::new(next));
        }
        self.rows.extend(next.rows);
        self.journal.extend(next.journal);
        self.index.extend(next.index);
        self.positions.extend(next.positions);
        self.new_head = next.new_head;
        Ok(())
    }

    /// The head after this batch.
    pub fn head(&self) -> &Head {
        &self.new_head
    }

    /// Each entry's positions.
    pub fn positions(&self) -> &[Vec<Position>] {
        &self.positions
    }
}

/// A batch a store staged ([`super::Store::stage`]) and has not settled yet.
#[derive(Debug)]
pub struct StagedBatch {
    pub(crate) events: usize,
    /// The backend's number for its first journal record.
    pub(crate) journal_seq: u64,
    pub(crate) journal: Vec<Committed>,
    pub(crate) index: Vec<(Position, Vec<EntityRef>)>,
    pub(crate) new_head: Head,
    pub(crate) positions: Vec<Vec<Position>>,
}

impl StagedBatch {
    /// Each entry's positions.
    pub fn positions(&self) -> &[Vec<Position>] {
        &self.positions
    }

    /// The head after this batch.
    pub fn head(&self) -> &Head {
        &self.new_head
    }
}
