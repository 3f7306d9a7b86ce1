//! The read models in sled: one tree per model (`proj.customers`, `proj.partners`, `proj.expiring`), documents in
//! postcard's binary encoding (compact and fast; they are internal and rewritten often), and each tree's checkpoint
//! under the key `checkpoint`.
//!
//! | model | key | document |
//! |---|---|---|
//! | `customers` | `d` ‖ customer id | the customer's slice |
//! | `partners` | `d` ‖ partner id; `l` ‖ partner id ‖ block | the partner's profile; 256 of its customers per block |
//! | `expiring` | `d` ‖ day (big-endian) | the active admin relationships ending on that UTC day, soonest first |
//!
//! Documents are written key by key, not as a sled `Batch`: a batch holds sled's process-wide write lock for its
//! whole length, and a large one would stall the ledger's commits meanwhile. The checkpoint is written last.

use serde::{Deserialize, Serialize};

use crate::domain::slice::{ExpiringEntry, Slice};
use crate::domain::{CustomerId, PartnerId, Position};
use crate::store::{DocumentWrite, KeyValue, ReadModel, ReadModelStore, StoreError};

const CHECKPOINT: &[u8] = b"checkpoint";

/// The read models' trees of one database.
pub(super) struct ReadModelTrees {
    customers: sled::Tree,
    partners: sled::Tree,
    expiring: sled::Tree,
}

fn doc_key(id: &[u8; 16]) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'd');
    k.extend_from_slice(id);
    k
}

fn block_key(id: &[u8; 16], block: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(b'l');
    k.extend_from_slice(id);
    k.extend_from_slice(&block.to_be_bytes());
    k
}

fn day_key(day: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b'd');
    k.extend_from_slice(&day.to_be_bytes());
    k
}

fn encode<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap_or_default()
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        position: None,
        message: format!("a projection document does not decode: {e}"),
    })
}

impl ReadModelTrees {
    pub(super) fn open(db: &sled::Db) -> Result<ReadModelTrees, StoreError> {
        Ok(ReadModelTrees {
            customers: db.open_tree("proj.customers")?,
            partners: db.open_tree("proj.partners")?,
            expiring: db.open_tree("proj.expiring")?,
        })
    }

    fn tree(&self, model: ReadModel) -> &sled::Tree {
        match model {
            ReadModel::Customers => &self.customers,
            ReadModel::Partners => &self.partners,
            ReadModel::Expiring => &self.expiring,
        }
    }
}

impl ReadModelStore for ReadModelTrees {
    fn checkpoint(&self, model: ReadModel) -> Result<Position, StoreError> {
        Ok(self
            .tree(model)
            .get(CHECKPOINT)?
            .and_then(|v| Position::from_key(&v))
            .unwrap_or_default())
    }

    fn write(
        &self,
        model: ReadModel,
        writes: Vec<DocumentWrite>,
        checkpoint: Position,
    ) -> Result<(), StoreError> {
        let tree = self.tree(model);
        for w in writes {
            let (key, value) = match w {
                DocumentWrite::Customer(id, doc) => {
                    (doc_key(id.as_bytes()), doc.map(|d| encode(&d)))
                }
                DocumentWrite::PartnerProfile(id, doc) => {
                    (doc_key(id.as_bytes()), doc.map(|d| encode(&d)))
                }
                DocumentWrite::PartnerCustomers {
                    partner,
                    block,
                    customers,
                } => (
                    block_key(partner.as_bytes(), block),
                    Some(encode(&customers)),
                ),
                DocumentWrite::ExpiringDay { day, entries } => (
                    day_key(day),
                    (!entries.is_empty()).then(|| encode(&entries)),
                ),
            };
            match value {
                Some(v) => tree.insert(key, v)?,
                None => tree.remove(key)?,
            };
        }
        tree.insert(CHECKPOINT, &checkpoint.to_key()[..])?;
        Ok(())
    }

    fn clear(&self, model: ReadModel) -> Result<(), StoreError> {
        Ok(self.tree(model).clear()?)
    }

    fn customer(&self, id: CustomerId) -> Result<Option<Slice>, StoreError> {
        match self.customers.get(doc_key(id.as_bytes()))? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some),
        }
    }

    fn partner_profile(&self, id: PartnerId) -> Result<Option<Slice>, StoreError> {
        match self.partners.get(doc_key(id.as_bytes()))? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some),
        }
    }

    fn partner_customers(&self, id: PartnerId) -> Result<Vec<CustomerId>, StoreError> {
        let mut prefix = vec![b'l'];
        prefix.extend_from_slice(id.as_bytes());
        let mut customers: Vec<CustomerId> = Vec::new();
        for item in super::walk::prefix(&self.partners, &prefix) {
            let (_, v) = item?;
            customers.extend(decode::<Vec<CustomerId>>(&v)?);
        }
        Ok(customers)
    }

    fn expiring_days(&self, first: u64, last: u64) -> Result<Vec<ExpiringEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.expiring.range(day_key(first)..=day_key(last)) {
            let (k, v) = item?;
            if k.as_ref() == CHECKPOINT {
                continue;
            }
            out.extend(decode::<Vec<ExpiringEntry>>(&v)?);
        }
        Ok(out)
    }

    fn dump(&self, model: ReadModel) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        for item in super::walk::all(self.tree(model)) {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}
