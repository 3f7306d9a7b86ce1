//! The seam between the ledger and where it keeps its data: what the writer, the readers, the projections, the
//! audit trail and the consumers call, and nothing else. A backend implements [`Store`] (and the three smaller
//! traits it hands out); the sled backend in `sled/` is one, and `tests/suite/store_conformance.rs` runs the same
//! suite against any of them.
//!
//! The write pipeline has two steps, so that a backend can overlap them: [`Store::stage`] writes a sealed batch
//! atomically (all of it or nothing) and [`Store::settle`] makes everything staged durable and only then visible to
//! readers. On sled they are a transaction, then one `flush()` + `fdatasync` for every batch staged meanwhile; a
//! backend whose one COMMIT both writes and makes durable does all the work in `stage` and only publishes in
//! `settle`. Either way nothing is visible, and nothing may be acknowledged, before `settle` returned.

use super::journal::{self, Committed};
use super::{
    CommandRecord, Envelope, Head, SealedBatch, StagedBatch, StoreCounters, StoreError, StoredEvent,
};
use crate::domain::slice::{ExpiringEntry, Slice};
use crate::domain::{CommandId, CustomerId, EntityRef, PartnerId, Position, RefusalRecord};

/// An append-only, gapless, hash-chained event log: what readers need.
pub trait EventStore: Send + Sync {
    /// The last durable event (position 0 and the genesis hash when empty).
    fn head(&self) -> Head;
    /// Seals `entries` after the head, stages and settles them: appended in order, atomically, durable on return.
    /// Returns each entry's positions. (The ledger's writer pipelines the same two steps itself.)
    fn commit(&self, entries: &[super::CommitEntry]) -> Result<Vec<Vec<Position>>, StoreError>;
    /// The record of a committed command, by its idempotency key.
    fn command(&self, id: CommandId) -> Result<Option<CommandRecord>, StoreError>;
    /// The event at a position.
    fn get(&self, position: Position) -> Result<Option<StoredEvent>, StoreError>;
    /// Events after `after`, up to and including `to`, in order.
    fn read(
        &self,
        after: Position,
        to: Option<Position>,
    ) -> Box<dyn Iterator<Item = Result<StoredEvent, StoreError>> + '_>;
    /// The positions of an entity's events after `after`, in order, read from its history index.
    fn history(&self, entity: &EntityRef, after: Position) -> Result<Vec<Position>, StoreError>;
    /// Durability and batching counters.
    fn counters(&self) -> StoreCounters;
}

/// Everything a ledger keeps: the log and its write pipeline, the command journal, verification, and the stores
/// beside the log (read models, refusals, consumers).
pub trait Store: EventStore {
    /// Writes a sealed batch atomically, after the last staged batch (its base must be [`Store::staged_head`]). It is
    /// not visible to readers until [`Store::settle`]. A failure that provably left nothing behind is
    /// `StoreError::WriteFailed` and writing goes on; any other failure stops writes until the store is reopened.
    fn stage(&self, batch: SealedBatch) -> Result<StagedBatch, StoreError>;
    /// Makes every staged batch durable, then moves the head, the command journal's index and the history index past
    /// `batches` (in order). Any failure stops writes until the store is reopened.
    fn settle(&self, batches: Vec<StagedBatch>) -> Result<(), StoreError>;
    /// The head after the last staged batch, durable or not yet: the base of the next batch.
    fn staged_head(&self) -> Head;
    /// Every committed command in commit order, as the command journal keeps it (for backups).
    fn journal(&self) -> Box<dyn Iterator<Item = Result<Committed, StoreError>> + '_>;
    /// Appends already sealed envelopes with their commands' journal entries as a backup recorded them: each must be
    /// the next position and link to the head. Durable on return.
    fn import_with(
        &self,
        envelopes: &[Envelope],
        journal: Vec<Committed>,
    ) -> Result<(), StoreError>;
    /// Appends already sealed envelopes without journal (a file of bare envelopes): each run of events with one
    /// `command_id` gets a journal entry without a fingerprint. Durable on return.
    fn import(&self, envelopes: &[Envelope]) -> Result<(), StoreError> {
        let journal = journal::group(
            envelopes
                .iter()
                .map(|e| (e.position, super::idempotency_key(&e.actor, e.command_id))),
        );
        self.import_with(envelopes, journal)
    }
    /// Verifies events `from..=to`: contiguous positions, each linked to the previous hash, each hash matching.
    fn verify_range(
        &self,
        from: Position,
        to: Position,
        progress: &mut dyn FnMut(Position),
    ) -> Result<(), StoreError>;
    /// Walks the whole chain and checks it against the recorded head; `progress` is told how far it got, from time to
    /// time and not necessarily in order.
    fn verify_all(&self, progress: &mut dyn FnMut(Position)) -> Result<Head, StoreError>;
    /// Makes everything written so far durable, outside the log too (refusals, documents): for a restore.
    fn sync(&self) -> Result<(), StoreError>;
    /// `Err` (saying why) when writing about `bytes` outside the commit path (documents, snapshots, consumers) would
    /// eat into the free space the store keeps.
    fn room_for(&self, bytes: u64) -> Result<(), String>;
    /// Whether an earlier storage failure stopped writes.
    fn is_failed(&self) -> bool;
    /// Whether the storage can be used right now (`Err` says why not: a database that cannot be reached), for
    /// `/healthz`. An embedded store always can.
    fn reachable(&self) -> Result<(), String> {
        Ok(())
    }
    /// Writes the history index's pending entries now (it is also written in the background and at close).
    fn flush_index(&self) -> Result<usize, StoreError>;
    /// How many committed commands the journal's index holds.
    fn commands_remembered(&self) -> usize;
    /// The write-model snapshot's bytes (`crate::snapshot`), if one was written.
    fn read_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// The first `len` bytes of the snapshot (its header), without reading the rest.
    fn snapshot_header(&self, len: usize) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the snapshot, atomically (a crash leaves the old one or the new one) and durably.
    fn write_snapshot(&self, bytes: &[u8]) -> Result<(), StoreError>;
    /// The snapshot as a stream, if one was written (by default its bytes, read whole).
    fn snapshot_reader(&self) -> Result<Option<Box<dyn std::io::Read + Send + '_>>, StoreError> {
        Ok(self
            .read_snapshot()?
            .map(|bytes| Box::new(std::io::Cursor::new(bytes)) as Box<dyn std::io::Read + Send>))
    }
    /// Replaces the snapshot with what `fill` writes, as [`Store::write_snapshot`] does (by default gathered in
    /// memory first).
    fn write_snapshot_with(
        &self,
        fill: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let mut bytes = Vec::new();
        fill(&mut bytes).map_err(|e| StoreError::Codec {
            position: Position(0),
            message: format!("the write-model snapshot does not serialize: {e}"),
        })?;
        self.write_snapshot(&bytes)
    }
    /// The snapshot's size in bytes (0 without one).
    fn snapshot_size(&self) -> u64;
    /// The read models' documents and checkpoints.
    fn read_models(&self) -> &dyn ReadModelStore;
    /// The PostgreSQL backend, whose ledger several processes share: its writer's lease and how a process that does
    /// not hold it follows the one that does (`None` on sled, which one process holds at a time).
    fn shared(&self) -> Option<&super::postgres::PgStore> {
        None
    }
    /// Before answering a group of commands that wrote nothing (refusals, duplicates): confirms this process still
    /// writes the ledger as it last wrote it, so no answer is decided on a state another writer has moved past.
    fn confirm(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// The refusal audit trail.
    fn refusals(&self) -> &dyn RefusalStore;
    /// The durable consumers.
    fn consumers(&self) -> &dyn ConsumerStore;
    /// Arms a fault for tests of the failure paths (absent from builds other than the crate's own tests).
    #[cfg(test)]
    fn inject(&self, plan: super::FaultPlan);
    /// How many injected faults have struck.
    #[cfg(test)]
    fn faults_struck(&self) -> u64;
}

/// The read models, each with a stable name and a checkpoint (the last position its documents reflect).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ReadModel {
    Customers,
    Partners,
    Expiring,
}

impl ReadModel {
    /// Every read model.
    pub const ALL: [ReadModel; 3] = [
        ReadModel::Customers,
        ReadModel::Partners,
        ReadModel::Expiring,
    ];

    /// Their stable names, in the order of [`ReadModel::ALL`].
    pub const NAMES: [&'static str; 3] = ["customers", "partners", "expiring"];

    /// Its stable name (`rebuild NAME`, `/metrics`).
    pub fn name(self) -> &'static str {
        ReadModel::NAMES[self as usize]
    }

    /// The read model of a stable name.
    pub fn named(name: &str) -> Option<ReadModel> {
        ReadModel::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// A stored key and value, as a backend keeps them.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One change to a read model's documents.
#[derive(Clone, Debug)]
pub enum DocumentWrite {
    /// A customer's slice (model `customers`); `None` removes it.
    Customer(CustomerId, Option<Slice>),
    /// A partner's profile (model `partners`); `None` removes it.
    PartnerProfile(PartnerId, Option<Slice>),
    /// One block of a partner's customers in involvement order (model `partners`).
    PartnerCustomers {
        partner: PartnerId,
        block: u64,
        customers: Vec<CustomerId>,
    },
    /// The active admin relationships ending on one UTC day (days since 1970), soonest first (model `expiring`); an
    /// empty list removes the day.
    ExpiringDay {
        day: u64,
        entries: Vec<ExpiringEntry>,
    },
}

/// Where a backend keeps the read models' documents, its own way (sled: trees of postcard documents).
pub trait ReadModelStore: Send + Sync {
    /// The last position a read model reflects (0 when it was never built).
    fn checkpoint(&self, model: ReadModel) -> Result<Position, StoreError>;
    /// Applies `writes` to a read model, then records `checkpoint`. Not necessarily atomic: the checkpoint is written
    /// last, so after a crash it never claims more than is there.
    fn write(
        &self,
        model: ReadModel,
        writes: Vec<DocumentWrite>,
        checkpoint: Position,
    ) -> Result<(), StoreError>;
    /// Empties a read model (documents and checkpoint).
    fn clear(&self, model: ReadModel) -> Result<(), StoreError>;
    /// A customer's stored slice.
    fn customer(&self, id: CustomerId) -> Result<Option<Slice>, StoreError>;
    /// A partner's stored profile.
    fn partner_profile(&self, id: PartnerId) -> Result<Option<Slice>, StoreError>;
    /// A partner's customers in involvement order.
    fn partner_customers(&self, id: PartnerId) -> Result<Vec<CustomerId>, StoreError>;
    /// The stored expiring entries of the UTC days `first..=last` (days since 1970), day by day.
    fn expiring_days(&self, first: u64, last: u64) -> Result<Vec<ExpiringEntry>, StoreError>;
    /// Every stored document of a read model as the backend keeps it, in key order (for tests comparing rebuilds).
    fn dump(&self, model: ReadModel) -> Result<Vec<KeyValue>, StoreError>;
}

/// The refusal audit trail: refused commands in filing order, indexed by the entities they name.
pub trait RefusalStore: Send + Sync {
    /// Files records in order, each indexed under its entities.
    fn append(&self, records: &[(RefusalRecord, Vec<EntityRef>)]) -> Result<(), StoreError>;
    /// The sequence number of the last refusal filed (0: none): a backup copies the refusals up to it.
    fn filed(&self) -> u64;
    /// The refusals filed up to sequence number `last`, oldest first.
    fn upto(&self, last: u64) -> Box<dyn Iterator<Item = Result<RefusalRecord, StoreError>> + '_>;
    /// Whether no refusal was ever filed.
    fn is_empty(&self) -> bool;
    /// The refusals filed under an entity, oldest first.
    fn of(&self, entity: &EntityRef) -> Result<Vec<RefusalRecord>, StoreError>;
    /// Every refusal, oldest first.
    fn all(&self) -> Box<dyn Iterator<Item = Result<RefusalRecord, StoreError>> + '_> {
        self.upto(u64::MAX)
    }
    /// Files records restored from a backup, in their order, indexed under the entities they name.
    fn restore(&self, records: &[RefusalRecord]) -> Result<(), StoreError> {
        let with_entities: Vec<(RefusalRecord, Vec<EntityRef>)> = records
            .iter()
            .map(|r| (r.clone(), r.named_entities()))
            .collect();
        self.append(&with_entities)
    }
}

/// The durable consumers' documents (name, filter, checkpoint as JSON), by name.
pub trait ConsumerStore: Send + Sync {
    /// A consumer's document.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes a consumer's document, durable on return; refused (`WriteFailed`) near a full disk.
    fn put(&self, name: &str, document: &[u8]) -> Result<(), StoreError>;
    /// Removes a consumer, durable on return; whether it existed.
    fn remove(&self, name: &str) -> Result<bool, StoreError>;
    /// Every consumer's document, by name.
    fn all(&self) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Held across a read-modify-write of a consumer by every process sharing the ledger (PostgreSQL), so that
    /// acknowledgements on two processes still form an atomic maximum. One process holds a sled ledger: nothing to do.
    fn exclusive(&self) -> Result<Box<dyn std::any::Any>, StoreError> {
        Ok(Box::new(()))
    }
}
