//! Read models: checkpointed projections of the log, kept by the store, rebuildable at any time.
//!
//! A running ledger answers "now" from its live write model ([`crate::ledger::Live`]); the stored documents are what a
//! reader without the ledger open (the CLI) and a restart start from. The projector thread rewrites the documents of
//! the entities that changed every `projection_interval` and at close. A document is a [`Slice`] of the state, so a
//! view is derived when it is read, at whatever instant is asked (R36). Each read model's checkpoint (the last
//! position its documents reflect) is written after its documents, so after a crash it never claims more than is
//! there, and opening the ledger catches up from it.
//!
//! Documents are few and whole, because a read model writes one document per changed entity: a customer's document
//! holds everything about it (its partners, relationships, admin relationships, subscriptions and plans), so the
//! subscription view is read from its customer's document (found through the history index) and the partner view
//! from its profile, its customer list (in involvement order, 256 per block) and its customers' documents. The
//! expiring model holds, per UTC day, the active admin relationships whose recorded end falls on it, soonest first.
//! This module decides what the documents are ([`DocumentWrite`]); the store decides how it keeps them (sled:
//! `src/store/sled/read_models.rs`).

use std::collections::HashSet;

#[cfg(test)]
mod proptest;

pub use crate::domain::slice::ExpiringEntry;
use crate::domain::slice::Slice;
use crate::domain::state::{AdminStatus, State};
use crate::domain::{
    AdminRelationshipId, CustomerId, EntityRef, Event, PartnerId, Position, SubscriptionId,
    Timestamp,
};
use crate::replay::OpenError;
use crate::store::{DocumentWrite, KeyValue, ReadModel, ReadModelStore, Store, StoreError};

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
    /// Adds what `other` records (the documents of several batches, written together).
    pub fn merge(&mut self, other: Touched) {
        self.customers.extend(other.customers);
        self.partners.extend(other.partners);
        self.pairs.extend(other.pairs);
        self.days.extend(other.days);
        self.all_days |= other.all_days;
    }

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

/// The documents of the customers `touched` names.
fn customer_writes(state: &State, touched: &Touched) -> Vec<DocumentWrite> {
    touched
        .customers
        .iter()
        .map(|c| DocumentWrite::Customer(*c, Slice::customer(state, *c)))
        .collect()
}

/// The profiles of the partners `touched` names, and the blocks of partners' customer lists its pairs fall in.
fn partner_writes(state: &State, touched: &Touched) -> Vec<DocumentWrite> {
    let mut b: Vec<DocumentWrite> = touched
        .partners
        .iter()
        .map(|p| DocumentWrite::PartnerProfile(*p, Slice::partner_profile(state, *p)))
        .collect();
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
        let Some(list) = state.partner_customers.get(&p) else {
            continue;
        };
        let start = usize::try_from(block * BLOCK)
            .unwrap_or(usize::MAX)
            .min(list.len());
        let end = usize::try_from((block + 1) * BLOCK)
            .unwrap_or(usize::MAX)
            .min(list.len());
        b.push(DocumentWrite::PartnerCustomers {
            partner: p,
            block,
            customers: list.skip(start).take(end - start).iter().copied().collect(),
        });
    }
    b
}

/// The lists of the days `touched` names (every day when it says so; the caller clears the model first).
fn expiring_writes(state: &State, touched: &Touched) -> Vec<DocumentWrite> {
    if touched.days.is_empty() && !touched.all_days {
        return Vec::new();
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
    lists
        .into_iter()
        .map(|(day, mut entries)| {
            entries.sort_by_key(|e| (e.ends_at, e.admin_relationship));
            DocumentWrite::ExpiringDay { day, entries }
        })
        .collect()
}

/// The admin relationships ending between `from` and `to` in `state`, as the `expiring` read model lists them,
/// computed in memory: for a process that may not write the read models (it does not hold a shared ledger's lease).
pub fn expiring_in(state: &State, from: Timestamp, to: Timestamp) -> Vec<ExpiringEntry> {
    expiring_writes(state, &Touched::everything(state))
        .into_iter()
        .filter_map(|w| match w {
            DocumentWrite::ExpiringDay { day, entries }
                if day >= day_of(from) && day <= day_of(to) =>
            {
                Some(entries)
            }
            _ => None,
        })
        .flatten()
        .filter(|e| e.ends_at >= from && e.ends_at <= to)
        .collect()
}

/// The read models of one ledger, kept by its store.
#[derive(Clone, Copy)]
pub struct Projections<'a> {
    store: &'a dyn Store,
}

impl<'a> Projections<'a> {
    /// The read models of the ledger `store` holds.
    pub fn open(store: &'a dyn Store) -> Projections<'a> {
        Projections { store }
    }

    fn models(&self) -> &dyn ReadModelStore {
        self.store.read_models()
    }

    /// The last position a read model reflects (0 when it was never built).
    pub fn checkpoint(&self, model: ReadModel) -> Result<Position, StoreError> {
        self.models().checkpoint(model)
    }

    /// The oldest checkpoint of all read models.
    pub fn oldest_checkpoint(&self) -> Result<Position, StoreError> {
        let mut oldest = Position(u64::MAX);
        for model in ReadModel::ALL {
            oldest = oldest.min(self.checkpoint(model)?);
        }
        Ok(oldest)
    }

    /// Rewrites the documents of `touched` from `state`, which reflects the log up to `head`, in every read model.
    pub fn update(
        &self,
        state: &State,
        touched: &Touched,
        head: Position,
    ) -> Result<(), StoreError> {
        self.update_only(&ReadModel::ALL, state, touched, head)
    }

    /// As [`Self::update`], for the given read models only (the others keep their documents and checkpoints).
    pub fn update_only(
        &self,
        models: &[ReadModel],
        state: &State,
        touched: &Touched,
        head: Position,
    ) -> Result<(), StoreError> {
        for model in models {
            if *model == ReadModel::Expiring && touched.all_days {
                self.models().clear(*model)?;
            }
            let writes = match model {
                ReadModel::Customers => customer_writes(state, touched),
                ReadModel::Partners => partner_writes(state, touched),
                ReadModel::Expiring => expiring_writes(state, touched),
            };
            self.models().write(*model, writes, head)?;
        }
        Ok(())
    }

    /// Brings every read model up to the log's head, given the write model at that head.
    pub fn catch_up(&self, state: &State) -> Result<(), StoreError> {
        let head = self.store.head().position;
        let from = self.oldest_checkpoint()?;
        if from == head {
            return Ok(());
        }
        if from > head {
            self.clear(&ReadModel::ALL)?;
            return self.update(state, &Touched::everything(state), head);
        }
        let mut touched = Touched {
            // Which days the stored lists were written for is not known: rewrite them all (a few hundred keys).
            all_days: true,
            ..Touched::default()
        };
        for item in self.store.read(from, None) {
            let (_, event) = item?.decode()?;
            touched.add(state, &event);
        }
        self.update(state, &touched, head)
    }

    /// Empties read models (documents and checkpoints).
    pub fn clear(&self, models: &[ReadModel]) -> Result<(), StoreError> {
        for model in models {
            self.models().clear(*model)?;
        }
        Ok(())
    }

    /// Drops the given read models and rebuilds them from the whole log; `progress` sees each folded position.
    /// Returns the folded state.
    pub fn rebuild(
        &self,
        models: &[ReadModel],
        progress: impl FnMut(Position),
    ) -> Result<State, OpenError> {
        let state = crate::replay::replay(self.store, progress)?;
        self.clear(models)?;
        self.update_only(
            models,
            &state,
            &Touched::everything(&state),
            self.store.head().position,
        )?;
        Ok(state)
    }

    /// The stored slice of a customer.
    pub fn customer(&self, id: CustomerId) -> Result<Option<Slice>, StoreError> {
        self.models().customer(id)
    }

    /// The stored slice of a partner: its profile, its customer list, and the documents of those customers.
    pub fn partner(&self, id: PartnerId) -> Result<Option<Slice>, StoreError> {
        let Some(mut s) = self.models().partner_profile(id)? else {
            return Ok(None);
        };
        let customers = self.models().partner_customers(id)?;
        for c in &customers {
            if let Some(part) = self.customer(*c)? {
                s.absorb(part);
            }
        }
        s.partner_customers = vec![(id, customers)];
        Ok(Some(s))
    }

    /// The stored slice of a subscription: its customer's document, found through the subscription's first event.
    pub fn subscription(&self, id: SubscriptionId) -> Result<Option<Slice>, StoreError> {
        let Some(first) = self
            .store
            .history(&EntityRef::Subscription(id), Position(0))?
            .first()
            .copied()
        else {
            return Ok(None);
        };
        let Some(stored) = self.store.get(first)? else {
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
        Ok(self
            .models()
            .expiring_days(day_of(from), day_of(to))?
            .into_iter()
            .filter(|e| e.ends_at >= from && e.ends_at <= to)
            .collect())
    }

    /// Every stored document of a read model as the store keeps it, in key order (for tests comparing rebuilds).
    pub fn dump(&self, model: ReadModel) -> Result<Vec<KeyValue>, StoreError> {
        self.models().dump(model)
    }
}
