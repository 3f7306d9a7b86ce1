//! The refusal audit trail in sled: every refused command, kept apart from the event log so it never changes any state.
//!
//! One sled tree, `audit.refusals`: `r` ‖ sequence → the record, and `x` ‖ kind ‖ entity id ‖ sequence → nothing, so
//! an entity's refusals are read from an index like its events. Records are written right after the batch that
//! decided them, without a sync of their own: they become durable with the next commit's `fdatasync` or sled's
//! background flush (at most 500 ms later). Losing the last few in a power cut loses no business state.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::{EntityRef, RefusalRecord};
use crate::store::{RefusalStore, StoreError};

/// The refusal audit trail of one ledger.
pub struct RefusalLog {
    tree: sled::Tree,
    next: AtomicU64,
}

fn record_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'r';
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl RefusalLog {
    /// Opens the audit tree of the ledger.
    pub(super) fn open(db: &sled::Db) -> Result<RefusalLog, StoreError> {
        let tree = db.open_tree("audit.refusals")?;
        let next = match tree.scan_prefix(b"r").next_back() {
            Some(item) => {
                let (k, _) = item?;
                let bytes: [u8; 8] = k[1..].try_into().unwrap_or([0; 8]);
                u64::from_be_bytes(bytes) + 1
            }
            None => 1,
        };
        Ok(RefusalLog {
            tree,
            next: AtomicU64::new(next),
        })
    }
}

impl RefusalStore for RefusalLog {
    /// Key by key rather than as one sled `Batch`, which would take sled's process-wide write lock and wait for the
    /// commit in progress: each record is written before its index entries, so an entry never points at a record
    /// that was not written.
    fn append(&self, records: &[(RefusalRecord, Vec<EntityRef>)]) -> Result<(), StoreError> {
        for (record, entities) in records {
            let seq = self.next.fetch_add(1, Ordering::SeqCst);
            self.tree.insert(
                &record_key(seq)[..],
                serde_json::to_vec(record).unwrap_or_default(),
            )?;
            for e in entities {
                let mut k = crate::store::entity_prefix(e).to_vec();
                k.extend_from_slice(&seq.to_be_bytes());
                self.tree.insert(k, &[][..])?;
            }
        }
        Ok(())
    }

    fn filed(&self) -> u64 {
        self.next.load(Ordering::SeqCst).saturating_sub(1)
    }

    fn upto(&self, last: u64) -> Box<dyn Iterator<Item = Result<RefusalRecord, StoreError>> + '_> {
        Box::new(
            super::walk::range(&self.tree, &record_key(1), &record_key(last.max(1)))
                .filter(move |_| last > 0)
                .map(|item| {
                    let (_, v) = item?;
                    decode(&v)
                }),
        )
    }

    fn is_empty(&self) -> bool {
        self.tree.scan_prefix(b"r").next().is_none()
    }

    fn of(&self, entity: &EntityRef) -> Result<Vec<RefusalRecord>, StoreError> {
        let prefix = crate::store::entity_prefix(entity);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix) {
            let (k, _) = item?;
            let seq: [u8; 8] = k[prefix.len()..].try_into().unwrap_or([0; 8]);
            if let Some(v) = self.tree.get(record_key(u64::from_be_bytes(seq)))? {
                out.push(decode(&v)?);
            }
        }
        Ok(out)
    }
}

fn decode(bytes: &[u8]) -> Result<RefusalRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        position: None,
        message: format!("a refusal record does not decode: {e}"),
    })
}
