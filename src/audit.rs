//! The refusal audit trail: every refused command, kept apart from the event log so it never changes any state.
//!
//! One sled tree, `audit.refusals`: `r` ‖ sequence → the record, and `x` ‖ kind ‖ entity id ‖ sequence → nothing, so
//! an entity's refusals are read from an index like its events. Records are written right after the batch that
//! decided them, without a sync of their own: they become durable with the next commit's `fdatasync` or sled's
//! background flush (at most 500 ms later). Losing the last few in a power cut loses no business state.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::domain::{Actor, CommandId, EntityRef, Refusal, Timestamp};
use crate::store::{SledStore, StoreError};

/// One refused command.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RefusalRecord {
    /// When the ledger refused it.
    pub recorded_at: Timestamp,
    /// Its business time.
    pub at: Timestamp,
    pub command_id: CommandId,
    pub actor: Actor,
    /// The command type.
    #[serde(rename = "type")]
    pub command_type: String,
    /// The customers, partners and subscriptions it named.
    pub entities: Vec<String>,
    pub code: String,
    pub rule: Option<String>,
    pub message: String,
}

impl RefusalRecord {
    /// Builds a record from a refusal.
    pub fn new(
        recorded_at: Timestamp,
        at: Timestamp,
        command_id: CommandId,
        actor: Actor,
        command_type: &str,
        entities: &[EntityRef],
        refusal: &Refusal,
    ) -> Self {
        Self {
            recorded_at,
            at,
            command_id,
            actor,
            command_type: command_type.to_string(),
            entities: entities.iter().map(entity_label).collect(),
            code: refusal.code.as_str(),
            rule: refusal.rule.map(|r| r.to_string()),
            message: refusal.message.clone(),
        }
    }
}

/// The entity a label of [`RefusalRecord::entities`] names (the inverse of `entity_label`).
fn entity_of_label(label: &str) -> Option<EntityRef> {
    let (kind, id) = label.split_once(':')?;
    match kind {
        "customer" => id.parse().ok().map(EntityRef::Customer),
        "partner" => id.parse().ok().map(EntityRef::Partner),
        "subscription" => id.parse().ok().map(EntityRef::Subscription),
        _ => None,
    }
}

fn entity_label(e: &EntityRef) -> String {
    match e {
        EntityRef::Customer(c) | EntityRef::CustomerProfile(c) => format!("customer:{c}"),
        EntityRef::Partner(p) | EntityRef::PartnerProfile(p) => format!("partner:{p}"),
        EntityRef::Subscription(s) => format!("subscription:{s}"),
    }
}

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
    pub fn open(store: &SledStore) -> Result<RefusalLog, StoreError> {
        let tree = store.tree("audit.refusals")?;
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

    /// Appends records with their index entries. Key by key rather than as one sled `Batch`, which would take sled's
    /// process-wide write lock and wait for the commit in progress: each record is written before its index entries,
    /// so an entry never points at a record that was not written.
    pub fn append(&self, records: &[(RefusalRecord, Vec<EntityRef>)]) -> Result<(), StoreError> {
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

    /// Every refusal, oldest first.
    pub fn all(&self) -> impl Iterator<Item = Result<RefusalRecord, StoreError>> + '_ {
        self.upto(u64::MAX)
    }

    /// The sequence number of the last refusal filed (0: none): a backup copies the refusals up to it.
    pub fn filed(&self) -> u64 {
        self.next.load(Ordering::SeqCst).saturating_sub(1)
    }

    /// The refusals filed up to sequence number `last`, oldest first (for backups).
    pub fn upto(&self, last: u64) -> impl Iterator<Item = Result<RefusalRecord, StoreError>> + '_ {
        self.tree
            .range(record_key(1)..=record_key(last.max(1)))
            .filter(move |_| last > 0)
            .map(|item| {
                let (_, v) = item?;
                decode(&v)
            })
    }

    /// Whether no refusal was ever filed.
    pub fn is_empty(&self) -> bool {
        self.tree.scan_prefix(b"r").next().is_none()
    }

    /// Files records restored from a backup, in their order, indexed under the entities they name.
    pub fn restore(&self, records: &[RefusalRecord]) -> Result<(), StoreError> {
        let with_entities: Vec<(RefusalRecord, Vec<EntityRef>)> = records
            .iter()
            .map(|r| {
                let entities = r
                    .entities
                    .iter()
                    .filter_map(|l| entity_of_label(l))
                    .collect();
                (r.clone(), entities)
            })
            .collect();
        self.append(&with_entities)
    }

    /// The refusals filed under an entity, oldest first.
    pub fn of(&self, entity: &EntityRef) -> Result<Vec<RefusalRecord>, StoreError> {
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
