//! Read models: checkpointed projections of the log, one sled tree each, rebuildable at any time.
//!
//! A running ledger answers "now" from its live write model ([`crate::ledger::Live`]); these trees are what a reader
//! without the ledger open (the CLI) and a restart start from. The projector thread rewrites the documents of the
//! entities that changed every `projection_interval` and at close. A document is a [`Slice`] of the state in postcard's
//! binary encoding, so a view is derived when it is read, at whatever instant is asked (R36). Each projection's
//! checkpoint (the last position its documents reflect) is written after its documents, so after a crash it never
//! claims more than is there, and opening the ledger catches up from it.
//!
//! Documents are few and whole, because a projection writes one key per changed entity: a customer's document holds
//! everything about it, so the subscription view is read from its customer's document (found through the history
//! index) and the partner view from its customers' documents.
//!
//! | projection | key | document |
//! |---|---|---|
//! | `customers` | `d` ‖ customer id | the customer's slice: its partners, relationships, admin relationships, subscriptions and plans |
//! | `partners` | `d` ‖ partner id; `l` ‖ partner id ‖ block | the partner's profile; its customers in involvement order, 256 per block |
//! | `expiring` | `d` ‖ day | the active admin relationships whose recorded end falls on that UTC day, soonest first |

use std::collections::HashSet;

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
pub const NAMES: [&str; 3] = ["customers", "partners", "expiring"];

const CHECKPOINT: &[u8] = b"checkpoint";
/// Customers per block of a partner's customer list.
const BLOCK: u64 = 256;

/// The entities whose documents a batch of events changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    pub customers: HashSet<CustomerId>,
    /// Partners whose profile document changed.
    pub partners: HashSet<PartnerId>,
    /// (partner, customer) pairs an event named: the block of the partner's customer list that holds the customer
    /// may have changed.
    pub pairs: HashSet<(PartnerId, CustomerId)>,
    /// UTC days (since 1970) whose list of ending admin relationships changed.
    pub days: HashSet<u64>,
    /// Every day: the expiring projection is rewritten whole (a rebuild, or catching up after a restart, when the
    /// days the stored lists were written for are not known).
    pub all_days: bool,
}

/// The UTC day an instant falls on, as days since 1970.
fn day_of(t: Timestamp) -> u64 {
    u64::try_from(t.datetime().timestamp().div_euclid(86_400)).unwrap_or(0)
}

/// The day an admin relationship is listed under in the expiring projection: its recorded end, while it is active.
fn listed_day(state: &State, id: &AdminRelationshipId) -> Option<u64> {
    let a = state.admin.get(id)?;
    match (a.status, a.ends_at) {
        (AdminStatus::Active, Some(ends_at)) => Some(day_of(ends_at)),
        _ => None,
    }
}

/// The admin relationship an event is about, if any.
fn admin_of(event: &Event) -> Option<AdminRelationshipId> {
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
        } => Some(*admin_relationship),
        _ => None,
    }
}

impl Touched {
    /// Records what applying `event` to `state` is about to change that only the state before it knows: the day an
    /// admin relationship was listed under before the event moved or ended it. Call it before `State::apply`, and
    /// [`Touched::add`] after.
    pub fn before(&mut self, state: &State, event: &Event) {
        if let Some(day) = admin_of(event).and_then(|id| listed_day(state, &id)) {
            self.days.insert(day);
        }
    }

    /// Records what `event` changes, reading `state` (already including the event) for the cascades: a partner's
    /// name appears in its customers' documents, a customer's name in its expiring entries.
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
                EntityRef::Partner(_) | EntityRef::Subscription(_) => {}
                EntityRef::PartnerProfile(p) => {
                    self.partners.insert(p);
                    // Its name is in its customers' documents and in its expiring entries.
                    for c in state.partner_customers.get(&p).into_iter().flatten() {
                        self.customers.insert(*c);
                        if let Some(customer) = state.customers.get(c) {
                            self.days.extend(
                                customer
                                    .admin_relationships
                                    .iter()
                                    .filter(|id| {
                                        state.admin.get(id).is_some_and(|a| a.partner == p)
                                    })
                                    .filter_map(|id| listed_day(state, id)),
                            );
                        }
                    }
                }
                EntityRef::CustomerProfile(c) => {
                    // Its company name is in its expiring entries.
                    if let Some(customer) = state.customers.get(&c) {
                        self.days.extend(
                            customer
                                .admin_relationships
                                .iter()
                                .filter_map(|id| listed_day(state, id)),
                        );
                    }
                }
            }
        }
        if let Some(day) = admin_of(event).and_then(|id| listed_day(state, &id)) {
            self.days.insert(day);
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
            && self.partners.is_empty()
            && self.pairs.is_empty()
            && self.days.is_empty()
            && !self.all_days
    }

    /// Every entity of the state, for a rebuild.
    pub fn everything(state: &State) -> Touched {
        Touched {
            customers: state.customers.keys().copied().collect(),
            partners: state.partners.keys().copied().collect(),
            pairs: state.partner_customer_ordinal.keys().copied().collect(),
            days: HashSet::new(),
            all_days: true,
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
    expiring: sled::Tree,
}

fn doc_key(id: &[u8; 16]) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'd');
    k.extend_from_slice(id);
    k
}

/// A block of a partner's customer list.
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

/// Writes to one projection tree, applied key by key with the checkpoint last.
///
/// Not a sled `Batch`: a batch holds sled's process-wide write lock for its whole length, and a large one would stall
/// the ledger's commits meanwhile. Not being atomic is safe because the checkpoint is written last: after a crash in
/// the middle, the stored checkpoint still says where the documents are known to be complete, and catching up from
/// it rewrites every document an event after it touched.
#[derive(Default)]
struct Writes(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Writes {
    fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.0.push((key.into(), Some(value.into())));
    }
    fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.0.push((key.into(), None));
    }
    fn apply(self, tree: &sled::Tree, checkpoint: &[u8; 8]) -> Result<(), StoreError> {
        for (k, v) in self.0 {
            match v {
                Some(v) => tree.insert(k, v)?,
                None => tree.remove(k)?,
            };
        }
        tree.insert(CHECKPOINT, &checkpoint[..])?;
        Ok(())
    }
}

/// A document's bytes: postcard, compact and fast, since documents are internal and rewritten often.
fn encode<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap_or_default()
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes)
        .map_err(|e| corrupt(format!("a projection document does not decode: {e}")))
}

impl Projections {
    /// Opens (creating if needed) the projection trees in the ledger's database.
    pub fn open(store: &SledStore) -> Result<Projections, StoreError> {
        Ok(Projections {
            customers: store.tree("proj.customers")?,
            partners: store.tree("proj.partners")?,
            expiring: store.tree("proj.expiring")?,
        })
    }

    fn tree(&self, name: &str) -> Option<&sled::Tree> {
        match name {
            "customers" => Some(&self.customers),
            "partners" => Some(&self.partners),
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
        let mut b = Writes::default();
        for c in &touched.customers {
            match Slice::customer(state, *c) {
                Some(s) => b.insert(doc_key(c.as_bytes()), encode(&s)),
                None => b.remove(doc_key(c.as_bytes())),
            }
        }
        b.apply(&self.customers, checkpoint)
    }

    fn update_partners(
        &self,
        state: &State,
        touched: &Touched,
        checkpoint: &[u8; 8],
    ) -> Result<(), StoreError> {
        let mut b = Writes::default();
        for p in &touched.partners {
            match Slice::partner_profile(state, *p) {
                Some(s) => b.insert(doc_key(p.as_bytes()), encode(&s)),
                None => b.remove(doc_key(p.as_bytes())),
            }
        }
        let blocks: HashSet<(PartnerId, u64)> = touched
            .pairs
            .iter()
            .filter_map(|pair| {
                state
                    .partner_customer_ordinal
                    .get(pair)
                    .map(|ordinal| (pair.0, ordinal / BLOCK))
            })
            .collect();
        for (p, block) in blocks {
            let list = state
                .partner_customers
                .get(&p)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let start = usize::try_from(block * BLOCK)
                .unwrap_or(usize::MAX)
                .min(list.len());
            let end = usize::try_from((block + 1) * BLOCK)
                .unwrap_or(usize::MAX)
                .min(list.len());
            b.insert(block_key(p.as_bytes(), block), encode(&list[start..end]));
        }
        b.apply(&self.partners, checkpoint)
    }

    fn update_expiring(
        &self,
        state: &State,
        touched: &Touched,
        checkpoint: &[u8; 8],
    ) -> Result<(), StoreError> {
        if touched.days.is_empty() && !touched.all_days {
            return Writes::default().apply(&self.expiring, checkpoint);
        }
        // One pass over the admin relationships gathers the lists of the days to write.
        let mut lists: std::collections::BTreeMap<u64, Vec<ExpiringEntry>> = if touched.all_days {
            Default::default()
        } else {
            touched.days.iter().map(|d| (*d, Vec::new())).collect()
        };
        for a in state.admin.values() {
            let (AdminStatus::Active, Some(ends_at)) = (a.status, a.ends_at) else {
                continue;
            };
            let day = day_of(ends_at);
            let list = if touched.all_days {
                lists.entry(day).or_default()
            } else {
                match lists.get_mut(&day) {
                    Some(l) => l,
                    None => continue,
                }
            };
            list.push(ExpiringEntry {
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
            });
        }
        if touched.all_days {
            self.expiring.clear()?;
        }
        let mut b = Writes::default();
        for (day, mut list) in lists {
            if list.is_empty() {
                b.remove(day_key(day));
            } else {
                list.sort_by_key(|e| (e.ends_at, e.admin_relationship));
                b.insert(day_key(day), encode(&list));
            }
        }
        b.apply(&self.expiring, checkpoint)
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
        let mut touched = Touched {
            // Which days the stored lists were written for is not known: rewrite them all (a few hundred keys).
            all_days: true,
            ..Touched::default()
        };
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

    /// The stored slice of a customer.
    pub fn customer(&self, id: CustomerId) -> Result<Option<Slice>, StoreError> {
        match self.customers.get(doc_key(id.as_bytes()))? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some),
        }
    }

    /// The stored slice of a partner: its profile, its customer list, and the documents of those customers.
    pub fn partner(&self, id: PartnerId) -> Result<Option<Slice>, StoreError> {
        let Some(v) = self.partners.get(doc_key(id.as_bytes()))? else {
            return Ok(None);
        };
        let mut s: Slice = decode(&v)?;
        let mut prefix = vec![b'l'];
        prefix.extend_from_slice(id.as_bytes());
        let mut customers: Vec<CustomerId> = Vec::new();
        for item in self.partners.scan_prefix(&prefix) {
            let (_, v) = item?;
            customers.extend(decode::<Vec<CustomerId>>(&v)?);
        }
        for c in &customers {
            if let Some(part) = self.customer(*c)? {
                s.absorb(part);
            }
        }
        s.partner_customers = vec![(id, customers)];
        Ok(Some(s))
    }

    /// The stored slice of a subscription: its customer's document, found through the subscription's first event.
    pub fn subscription(
        &self,
        store: &dyn EventStore,
        id: SubscriptionId,
    ) -> Result<Option<Slice>, StoreError> {
        let Some(first) = store
            .history(&EntityRef::Subscription(id), Position(0))?
            .first()
            .copied()
        else {
            return Ok(None);
        };
        let Some(stored) = store.get(first)? else {
            return Ok(None);
        };
        let (_, event) = stored.decode()?;
        let Some(customer) = event.entities().into_iter().find_map(|e| match e {
            EntityRef::Customer(c) => Some(c),
            _ => None,
        }) else {
            return Ok(None);
        };
        self.customer(customer)
    }

    /// Active admin relationships whose recorded end lies in `[from, to]`, soonest first.
    pub fn expiring(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<ExpiringEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .expiring
            .range(day_key(day_of(from))..=day_key(day_of(to)))
        {
            let (k, v) = item?;
            if k.as_ref() == CHECKPOINT {
                continue;
            }
            let list: Vec<ExpiringEntry> = decode(&v)?;
            out.extend(
                list.into_iter()
                    .filter(|e| e.ends_at >= from && e.ends_at <= to),
            );
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
