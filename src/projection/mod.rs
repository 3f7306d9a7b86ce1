//! Read models: checkpointed projections of the log, one sled tree each, rebuildable at any time.
//!
//! The writer already holds the folded write model, so after each commit it rewrites only the documents of the
//! entities that batch touched. A document is a [`Slice`] of the state, so a view is derived when it is read, at
//! whatever instant is asked (R36). Each projection's documents and its checkpoint (the last position it reflects)
//! are written in one sled `Batch` on its own tree, so they never disagree. Projections are not synced on their own:
//! after a crash a checkpoint may lag the log, and opening the ledger catches it up.
//!
//! | projection | key | document |
//! |---|---|---|
//! | `customers` | customer id | the customer's slice |
//! | `partners` | partner id, and partner id ‖ customer ordinal | the partner's profile, and its part of each customer |
//! | `subscriptions` | subscription id | the subscription's slice |
//! | `expiring` | end time ‖ admin relationship id | an active admin relationship and when it ends |

use std::collections::BTreeSet;

#[cfg(test)]
mod proptest;

use serde::{Deserialize, Serialize};

use crate::domain::slice::Slice;
use crate::domain::state::{AdminStatus, State};
use crate::domain::{
    AdminRelationshipId, CustomerId, EntityRef, Event, PartnerId, Position, RoleId, SubscriptionId,
    Timestamp,
};
use crate::store::{EventStore, SledStore, StoreError};

/// The stable names of the projections.
pub const NAMES: [&str; 4] = ["customers", "partners", "subscriptions", "expiring"];

const CHECKPOINT: &[u8] = b"checkpoint";

/// The entities whose documents a batch of events changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    pub customers: BTreeSet<CustomerId>,
    /// Partners whose profile document changed.
    pub partners: BTreeSet<PartnerId>,
    /// (partner, customer) pairs whose part of the partner's view changed.
    pub pairs: BTreeSet<(PartnerId, CustomerId)>,
    pub subscriptions: BTreeSet<SubscriptionId>,
    pub admin: BTreeSet<AdminRelationshipId>,
}

impl Touched {
    /// Records what `event` changes, reading `state` (already including the event) for the cascades: a partner's
    /// name appears in its customers' documents, a customer's name in its partners' and subscriptions' documents.
    pub fn add(&mut self, state: &State, event: &Event) {
        let entities = event.entities();
        for p in entities.iter().filter_map(|e| match e {
            EntityRef::Partner(p) => Some(*p),
            _ => None,
        }) {
            for c in entities.iter().filter_map(|e| match e {
                EntityRef::Customer(c) => Some(*c),
                _ => None,
            }) {
                self.pairs.insert((p, c));
            }
        }
        for e in entities {
            match e {
                EntityRef::Customer(c) => {
                    self.customers.insert(c);
                }
                EntityRef::Partner(p) => {
                    self.partners.insert(p);
                }
                EntityRef::Subscription(s) => {
                    self.subscriptions.insert(s);
                }
                EntityRef::PartnerProfile(p) => {
                    self.customers
                        .extend(state.partner_customers.get(&p).into_iter().flatten());
                    for c in state.partner_customers.get(&p).into_iter().flatten() {
                        if let Some(customer) = state.customers.get(c) {
                            self.subscriptions
                                .extend(customer.subscriptions.iter().copied());
                        }
                    }
                }
                EntityRef::CustomerProfile(c) => {
                    if let Some(customer) = state.customers.get(&c) {
                        self.pairs.extend(customer.partners.iter().map(|p| (*p, c)));
                        self.subscriptions
                            .extend(customer.subscriptions.iter().copied());
                        self.admin
                            .extend(customer.admin_relationships.iter().copied());
                    }
                }
            }
        }
        match event {
            Event::DelegatedAdminRequested {
                admin_relationship, ..
            }
            | Event::DelegatedAdminGranted {
                admin_relationship, ..
            }
            | Event::DelegatedAdminExtended {
                admin_relationship, ..
            }
            | Event::DelegatedAdminExpired {
                admin_relationship, ..
            }
            | Event::DelegatedAdminTerminated {
                admin_relationship, ..
            }
            | Event::DelegatedAdminRequestExpired {
                admin_relationship, ..
            } => {
                self.admin.insert(*admin_relationship);
            }
            // A plan's status shows in the view of each Azure subscription in it.
            Event::AzurePlanSuspended {
                billing_partner,
                customer,
            }
            | Event::AzurePlanReactivated {
                billing_partner,
                customer,
            } => {
                if let Some(plan) = state.plans.get(&(*billing_partner, *customer)) {
                    self.subscriptions
                        .extend(plan.subscriptions.iter().copied());
                }
            }
            Event::PartnerUpdated { partner, .. } => {
                for c in state.partner_customers.get(partner).into_iter().flatten() {
                    if let Some(customer) = state.customers.get(c) {
                        self.admin
                            .extend(customer.admin_relationships.iter().copied());
                    }
                }
            }
            _ => {}
        }
    }

    /// Every entity of the state, for a rebuild.
    pub fn everything(state: &State) -> Touched {
        Touched {
            customers: state.customers.keys().copied().collect(),
            partners: state.partners.keys().copied().collect(),
            pairs: state.partner_customer_ordinal.keys().copied().collect(),
            subscriptions: state.subscriptions.keys().copied().collect(),
            admin: state.admin.keys().copied().collect(),
        }
    }
}

/// One row of the expiring view: an active admin relationship and when it ends.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ExpiringEntry {
    pub admin_relationship: AdminRelationshipId,
    pub name: String,
    pub partner: PartnerId,
    pub partner_name: String,
    pub customer: CustomerId,
    pub company_name: String,
    pub roles: Vec<RoleId>,
    pub ends_at: Timestamp,
    /// Whether it will extend by 180 days instead of expiring (R20).
    pub auto_extend: bool,
}

/// A stored key and value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// The projection trees of one ledger.
pub struct Projections {
    customers: sled::Tree,
    partners: sled::Tree,
    subscriptions: sled::Tree,
    expiring: sled::Tree,
}

fn doc_key(id: &[u8; 16]) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'd');
    k.extend_from_slice(id);
    k
}

/// A partner's part of its `ordinal`-th customer.
fn part_key(id: &[u8; 16], ordinal: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(b'e');
    k.extend_from_slice(id);
    k.extend_from_slice(&ordinal.to_be_bytes());
    k
}

fn expiring_key(ends_at: Timestamp, id: AdminRelationshipId) -> Vec<u8> {
    let secs = u64::try_from(ends_at.datetime().timestamp()).unwrap_or(0);
    let mut k = Vec::with_capacity(25);
    k.push(b'e');
    k.extend_from_slice(&secs.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn admin_key(id: AdminRelationshipId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'a');
    k.extend_from_slice(id.as_bytes());
    k
}

/// Writes (or removes, for an entity that no longer exists) the document of each id.
fn put_docs<'a, Id: IdBytes + 'a>(
    b: &mut sled::Batch,
    ids: impl IntoIterator<Item = &'a Id>,
    slice: impl Fn(&Id) -> Option<Slice>,
) {
    for id in ids {
        match slice(id) {
            Some(s) => b.insert(doc_key(id.id_bytes()), json(&s)),
            None => b.remove(doc_key(id.id_bytes())),
        }
    }
}

/// The 16 bytes of an entity id, for document keys.
trait IdBytes {
    fn id_bytes(&self) -> &[u8; 16];
}

impl IdBytes for CustomerId {
    fn id_bytes(&self) -> &[u8; 16] {
        self.as_bytes()
    }
}

impl IdBytes for PartnerId {
    fn id_bytes(&self) -> &[u8; 16] {
        self.as_bytes()
    }
}

impl IdBytes for SubscriptionId {
    fn id_bytes(&self) -> &[u8; 16] {
        self.as_bytes()
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl Projections {
    /// Opens (creating if needed) the projection trees in the ledger's database.
    pub fn open(store: &SledStore) -> Result<Projections, StoreError> {
        Ok(Projections {
            customers: store.tree("proj.customers")?,
            partners: store.tree("proj.partners")?,
            subscriptions: store.tree("proj.subscriptions")?,
            expiring: store.tree("proj.expiring")?,
        })
    }

    fn tree(&self, name: &str) -> Option<&sled::Tree> {
        match name {
            "customers" => Some(&self.customers),
            "partners" => Some(&self.partners),
            "subscriptions" => Some(&self.subscriptions),
            "expiring" => Some(&self.expiring),
            _ => None,
        }
    }

    /// The last position a projection reflects (0 when it was never built).
    pub fn checkpoint(&self, name: &str) -> Result<Position, StoreError> {
        let Some(tree) = self.tree(name) else {
            return Ok(Position(0));
        };
        Ok(tree
            .get(CHECKPOINT)?
            .and_then(|v| Position::from_key(&v))
            .unwrap_or_default())
    }

    /// The oldest checkpoint of all projections.
    pub fn oldest_checkpoint(&self) -> Result<Position, StoreError> {
        let mut oldest = Position(u64::MAX);
        for name in NAMES {
            oldest = oldest.min(self.checkpoint(name)?);
        }
        Ok(oldest)
    }

    /// Rewrites the documents of `touched` from `state`, which reflects the log up to `head`, in every projection.
    pub fn update(
        &self,
        state: &State,
        touched: &Touched,
        head: Position,
    ) -> Result<(), StoreError> {
        self.update_only(&NAMES, state, touched, head)
    }

    /// As [`Self::update`], for the named projections only (the others keep their documents and checkpoints).
    pub fn update_only(
        &self,
        names: &[&str],
        state: &State,
        touched: &Touched,
        head: Position,
    ) -> Result<(), StoreError> {
        let checkpoint = head.to_key();
        if names.contains(&"customers") {
            self.update_customers(state, touched, &checkpoint)?;
        }
        if names.contains(&"partners") {
            self.update_partners(state, touched, &checkpoint)?;
        }
        if names.contains(&"subscriptions") {
            self.update_subscriptions(state, touched, &checkpoint)?;
        }
        if names.contains(&"expiring") {
            self.update_expiring(state, touched, &checkpoint)?;
        }
        Ok(())
    }

    fn update_customers(
        &self,
        state: &State,
        touched: &Touched,
        checkpoint: &[u8; 8],
    ) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        put_docs(&mut b, &touched.customers, |c| Slice::customer(state, *c));
        b.insert(CHECKPOINT, &checkpoint[..]);
        Ok(self.customers.apply_batch(b)?)
    }

    fn update_partners(
        &self,
        state: &State,
        touched: &Touched,
        checkpoint: &[u8; 8],
    ) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        put_docs(&mut b, &touched.partners, |p| {
            Slice::partner_profile(state, *p)
        });
        for (p, c) in &touched.pairs {
            let Some(ordinal) = state.partner_customer_ordinal.get(&(*p, *c)) else {
                continue;
            };
            if let Some(s) = Slice::partner_customer(state, *p, *c) {
                b.insert(part_key(p.as_bytes(), *ordinal), json(&s));
            }
        }
        b.insert(CHECKPOINT, &checkpoint[..]);
        Ok(self.partners.apply_batch(b)?)
    }

    fn update_subscriptions(
        &self,
        state: &State,
        touched: &Touched,
        checkpoint: &[u8; 8],
    ) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        put_docs(&mut b, &touched.subscriptions, |id| {
            Slice::subscription(state, *id)
        });
        b.insert(CHECKPOINT, &checkpoint[..]);
        Ok(self.subscriptions.apply_batch(b)?)
    }

    fn update_expiring(
        &self,
        state: &State,
        touched: &Touched,
        checkpoint: &[u8; 8],
    ) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for id in &touched.admin {
            if let Some(old) = self.expiring.get(admin_key(*id))? {
                b.remove(old);
                b.remove(admin_key(*id));
            }
            let Some(a) = state.admin.get(id) else {
                continue;
            };
            let (AdminStatus::Active, Some(ends_at)) = (a.status, a.ends_at) else {
                continue;
            };
            let entry = ExpiringEntry {
                admin_relationship: a.id,
                name: a.name.clone(),
                partner: a.partner,
                partner_name: state
                    .partners
                    .get(&a.partner)
                    .map(|p| p.name.clone())
                    .unwrap_or_default(),
                customer: a.customer,
                company_name: state
                    .customers
                    .get(&a.customer)
                    .map(|c| c.company_name.clone())
                    .unwrap_or_default(),
                roles: a.roles.clone(),
                ends_at,
                auto_extend: a.auto_extend,
            };
            let key = expiring_key(ends_at, a.id);
            b.insert(admin_key(a.id), key.clone());
            b.insert(key, json(&entry));
        }
        b.insert(CHECKPOINT, &checkpoint[..]);
        Ok(self.expiring.apply_batch(b)?)
    }

    /// Brings every projection up to the log's head, given the write model at that head.
    pub fn catch_up(&self, store: &dyn EventStore, state: &State) -> Result<(), StoreError> {
        let head = store.head().position;
        let from = self.oldest_checkpoint()?;
        if from == head {
            return Ok(());
        }
        if from > head {
            self.clear(&NAMES)?;
            return self.update(state, &Touched::everything(state), head);
        }
        let mut touched = Touched::default();
        for item in store.read(from, None) {
            let (_, event) = item?.decode()?;
            touched.add(state, &event);
        }
        self.update(state, &touched, head)
    }

    /// Empties projections (documents and checkpoints).
    pub fn clear(&self, names: &[&str]) -> Result<(), StoreError> {
        for name in names {
            if let Some(t) = self.tree(name) {
                t.clear()?;
            }
        }
        Ok(())
    }

    /// Drops the named projections and rebuilds them from the whole log; `progress` sees each folded position.
    /// Returns the folded state.
    pub fn rebuild(
        &self,
        store: &dyn EventStore,
        names: &[&str],
        progress: impl FnMut(Position),
    ) -> Result<State, crate::ledger::OpenError> {
        let state = crate::ledger::replay(store, progress)?;
        self.clear(names)?;
        self.update_only(
            names,
            &state,
            &Touched::everything(&state),
            store.head().position,
        )?;
        Ok(state)
    }

    fn slice(tree: &sled::Tree, id: &[u8; 16]) -> Result<Option<Slice>, StoreError> {
        match tree.get(doc_key(id))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    position: None,
                    message: format!("a projection document does not decode: {e}"),
                }),
        }
    }

    /// The stored slice of a customer.
    pub fn customer(&self, id: CustomerId) -> Result<Option<Slice>, StoreError> {
        Self::slice(&self.customers, id.as_bytes())
    }

    /// The stored slice of a partner: its profile and its part of each customer, in involvement order.
    pub fn partner(&self, id: PartnerId) -> Result<Option<Slice>, StoreError> {
        let Some(mut s) = Self::slice(&self.partners, id.as_bytes())? else {
            return Ok(None);
        };
        let mut prefix = vec![b'e'];
        prefix.extend_from_slice(id.as_bytes());
        let mut customers = Vec::new();
        for item in self.partners.scan_prefix(&prefix) {
            let (_, v) = item?;
            let part: Slice = serde_json::from_slice(&v)
                .map_err(|e| corrupt(format!("a projection document does not decode: {e}")))?;
            customers.extend(part.customers.iter().map(|c| c.id));
            s.absorb(part);
        }
        s.partner_customers = vec![(id, customers)];
        Ok(Some(s))
    }

    /// The stored slice of a subscription.
    pub fn subscription(&self, id: SubscriptionId) -> Result<Option<Slice>, StoreError> {
        Self::slice(&self.subscriptions, id.as_bytes())
    }

    /// Active admin relationships whose recorded end lies in `[from, to]`, soonest first.
    pub fn expiring(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<ExpiringEntry>, StoreError> {
        let start = expiring_key(
            from,
            AdminRelationshipId::new(uuid::Uuid::from_u128(1)).map_err(corrupt)?,
        );
        let mut end = expiring_key(
            to,
            AdminRelationshipId::new(uuid::Uuid::from_u128(u128::MAX)).map_err(corrupt)?,
        );
        end.push(0xff);
        let mut out = Vec::new();
        for item in self.expiring.range(start..end) {
            let (_, v) = item?;
            let entry: ExpiringEntry =
                serde_json::from_slice(&v).map_err(|e| corrupt(e.to_string()))?;
            if entry.ends_at >= from && entry.ends_at <= to {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Every stored document of a projection, as raw bytes in key order (for tests comparing rebuilds).
    pub fn dump(&self, name: &str) -> Result<Vec<KeyValue>, StoreError> {
        let Some(tree) = self.tree(name) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in tree.iter() {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt {
        position: None,
        message,
    }
}
