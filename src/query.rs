//! Queries: customer, partner and subscription views, now or as of any position or instant.
//!
//! "Now" is read from the projections when they are at the log's head (one document read). "As of" is folded from
//! the entity's own indexed history plus the reference-data events of the entities its view names, never by
//! replaying the whole log. Business time never decreases along the log (R35), so "as of an instant" is a binary
//! search over positions.

use std::collections::BTreeSet;
use std::str::FromStr;

use serde::Serialize;

use crate::domain::slice::Slice;
use crate::domain::view::{customer_view, partner_view, subscription_view, AsOf};
use crate::domain::{
    CustomerId, EntityRef, Event, PartnerId, Position, State, SubscriptionId, Timestamp,
};
use crate::ledger::Ledger;
use crate::projection::Projections;
use crate::store::{EventStore, ReadModel, Store, StoreError};

/// A point in the log to answer "as of".
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AsOfSpec {
    /// After the event at this position.
    Position(Position),
    /// At this business instant.
    Time(Timestamp),
}

impl FromStr for AsOfSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(n) = s.parse::<u64>() {
            return Ok(AsOfSpec::Position(Position(n)));
        }
        s.parse::<Timestamp>().map(AsOfSpec::Time).map_err(|_| {
            format!("`{s}` is neither a position (a whole number) nor an RFC 3339 time: write, for example, 42, 2024-02-01T00:00:00Z or 2024-02-01T09:30:00+01:00")
        })
    }
}

/// Refuses an "as of" position after the log's head, naming the head: it is a typo or a clock from another ledger,
/// and answering at the head instead would present today's state as that position's. (An instant after the last
/// business time is fine: it answers the head, with statuses derived at that instant; docs/audit.md.)
pub fn beyond_head(store: &dyn EventStore, spec: Option<AsOfSpec>) -> Result<(), String> {
    if let Some(AsOfSpec::Position(p)) = spec {
        let head = store.head().position;
        if p > head {
            return Err(format!(
                "as of position {p}: the log's head is {head}, so there is no such position yet"
            ));
        }
    }
    Ok(())
}

/// A view and how many events were read to build it (0 when it came from a projection).
#[derive(Clone, Debug)]
pub struct Answer<V> {
    pub view: V,
    pub events_read: usize,
}

fn at_of(store: &dyn EventStore, position: Position) -> Result<Option<Timestamp>, StoreError> {
    match store.get(position)? {
        None => Ok(None),
        Some(e) => Ok(Some(e.envelope()?.at)),
    }
}

/// The last position whose business time is at or before `t` (0 if none).
fn position_at(
    store: &dyn EventStore,
    head: Position,
    t: Timestamp,
) -> Result<Position, StoreError> {
    let (mut lo, mut hi) = (0u64, head.0);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        match at_of(store, Position(mid))? {
            Some(at) if at <= t => lo = mid,
            _ => hi = mid - 1,
        }
    }
    Ok(Position(lo))
}

/// Resolves an as-of spec to the last included position and the instant statuses are derived at.
pub fn resolve(store: &dyn EventStore, spec: Option<AsOfSpec>) -> Result<AsOf, StoreError> {
    let head = store.head().position;
    let (position, at) = match spec {
        None => (head, None),
        Some(AsOfSpec::Position(p)) => (p.min(head), None),
        Some(AsOfSpec::Time(t)) => (position_at(store, head, t)?, Some(t)),
    };
    let at = match at {
        Some(t) => t,
        None => at_of(store, position)?.unwrap_or_else(crate::domain::earliest_business_time),
    };
    Ok(AsOf { position, at })
}

/// Reads and decodes the events at `positions`, in order.
fn decode_all(
    store: &dyn EventStore,
    positions: &[Position],
) -> Result<Vec<(Position, Timestamp, Event)>, StoreError> {
    let mut out = Vec::with_capacity(positions.len());
    for p in positions {
        if let Some(stored) = store.get(*p)? {
            let (at, event) = stored.decode()?;
            out.push((*p, at, event));
        }
    }
    Ok(out)
}

/// An entity's indexed positions up to `upto`.
fn history_upto(
    store: &dyn EventStore,
    entity: EntityRef,
    upto: Position,
) -> Result<Vec<Position>, StoreError> {
    Ok(store
        .history(&entity, Position(0))?
        .into_iter()
        .take_while(|p| *p <= upto)
        .collect())
}

/// Folds `own` plus the profile events of every partner and customer those events name, up to `upto`, in log order.
/// Each event is read once; the count returned is how many were read.
fn fold_with_profiles(
    store: &dyn EventStore,
    own: Vec<Position>,
    upto: Position,
) -> Result<(State, usize), StoreError> {
    let mut events = decode_all(store, &own)?;
    let named: BTreeSet<EntityRef> = events.iter().flat_map(|(_, _, e)| e.entities()).collect();
    let own: BTreeSet<Position> = own.into_iter().collect();
    let mut profiles: BTreeSet<Position> = BTreeSet::new();
    for e in named {
        let profile = match e {
            EntityRef::Partner(p) => EntityRef::PartnerProfile(p),
            EntityRef::Customer(c) => EntityRef::CustomerProfile(c),
            _ => continue,
        };
        profiles.extend(
            history_upto(store, profile, upto)?
                .into_iter()
                .filter(|p| !own.contains(p)),
        );
    }
    let profiles: Vec<Position> = profiles.into_iter().collect();
    events.extend(decode_all(store, &profiles)?);
    events.sort_unstable_by_key(|(p, _, _)| *p);
    let mut state = State::new();
    for (_, at, event) in &events {
        state.apply(*at, event);
    }
    Ok((state, events.len()))
}

/// "Now" from the stored documents, when the projections it reads are at the log's head (`None` otherwise).
fn current<V>(
    store: &dyn Store,
    projections_read: &[ReadModel],
    doc: impl FnOnce(&Projections) -> Result<Option<Slice>, StoreError>,
    derive: impl FnOnce(&State, AsOf) -> Option<V>,
) -> Result<Option<Option<Answer<V>>>, StoreError> {
    let projections = Projections::open(store);
    let head = store.head().position;
    for name in projections_read {
        if projections.checkpoint(*name)? != head {
            return Ok(None);
        }
    }
    let as_of = resolve(store, None)?;
    Ok(Some(doc(&projections)?.and_then(|slice| {
        derive(&slice.into_state(), as_of).map(|view| Answer {
            view,
            events_read: 0,
        })
    })))
}

/// "Now" from a running ledger's live write model. It first waits (briefly) until the live state reflects the log's
/// head as this call found it, so a client always reads its own acknowledged writes; the answer's `as_of` names the
/// position it reflects.
fn live_now<V>(
    ledger: &Ledger,
    derive: impl FnOnce(&State, AsOf) -> Option<V>,
) -> Option<Answer<V>> {
    let head = ledger.store().head().position;
    let live = ledger.live();
    live.wait_for(head, std::time::Duration::from_secs(5));
    live.read(|state, position| {
        let at = state
            .clock
            .unwrap_or_else(crate::domain::earliest_business_time);
        derive(state, AsOf { position, at }).map(|view| Answer {
            view,
            events_read: 0,
        })
    })
}

/// The customer view from an open ledger: now from its live state, as of a point from the log.
pub fn customer_in(
    ledger: &Ledger,
    id: CustomerId,
    spec: Option<AsOfSpec>,
) -> Result<Option<Answer<crate::domain::view::CustomerView>>, StoreError> {
    match spec {
        None => Ok(live_now(ledger, |s, a| customer_view(s, id, a))),
        Some(_) => customer(ledger.store(), id, spec),
    }
}

/// The partner view from an open ledger.
pub fn partner_in(
    ledger: &Ledger,
    id: PartnerId,
    spec: Option<AsOfSpec>,
) -> Result<Option<Answer<crate::domain::view::PartnerView>>, StoreError> {
    match spec {
        None => Ok(live_now(ledger, |s, a| partner_view(s, id, a))),
        Some(_) => partner(ledger.store(), id, spec),
    }
}

/// The subscription view from an open ledger.
pub fn subscription_in(
    ledger: &Ledger,
    id: SubscriptionId,
    spec: Option<AsOfSpec>,
) -> Result<Option<Answer<crate::domain::view::SubscriptionView>>, StoreError> {
    match spec {
        None => Ok(live_now(ledger, |s, a| subscription_view(s, id, a))),
        Some(_) => subscription(ledger.store(), id, spec),
    }
}

/// The customer view as of `spec` (now when `None`); `None` if the customer did not exist then.
pub fn customer(
    store: &dyn Store,
    id: CustomerId,
    spec: Option<AsOfSpec>,
) -> Result<Option<Answer<crate::domain::view::CustomerView>>, StoreError> {
    if spec.is_none() {
        if let Some(answer) = current(
            store,
            &[ReadModel::Customers],
            |p| p.customer(id),
            |s, a| customer_view(s, id, a),
        )? {
            return Ok(answer);
        }
    }
    let as_of = resolve(store, spec)?;
    let own = history_upto(store, EntityRef::Customer(id), as_of.position)?;
    let (state, read) = fold_with_profiles(store, own, as_of.position)?;
    Ok(customer_view(&state, id, as_of).map(|view| Answer {
        view,
        events_read: read,
    }))
}

/// The partner view as of `spec` (now when `None`); `None` if the partner was not enrolled then.
pub fn partner(
    store: &dyn Store,
    id: PartnerId,
    spec: Option<AsOfSpec>,
) -> Result<Option<Answer<crate::domain::view::PartnerView>>, StoreError> {
    if spec.is_none() {
        if let Some(answer) = current(
            store,
            &[ReadModel::Partners, ReadModel::Customers],
            |p| p.partner(id),
            |s, a| partner_view(s, id, a),
        )? {
            return Ok(answer);
        }
    }
    let as_of = resolve(store, spec)?;
    let own = history_upto(store, EntityRef::Partner(id), as_of.position)?;
    let (state, read) = fold_with_profiles(store, own, as_of.position)?;
    Ok(partner_view(&state, id, as_of).map(|view| Answer {
        view,
        events_read: read,
    }))
}

/// The subscription view as of `spec` (now when `None`); `None` if it did not exist then.
pub fn subscription(
    store: &dyn Store,
    id: SubscriptionId,
    spec: Option<AsOfSpec>,
) -> Result<Option<Answer<crate::domain::view::SubscriptionView>>, StoreError> {
    if spec.is_none() {
        if let Some(answer) = current(
            store,
            &[ReadModel::Customers],
            |p| p.subscription(id),
            |s, a| subscription_view(s, id, a),
        )? {
            return Ok(answer);
        }
    }
    let as_of = resolve(store, spec)?;
    let mut own = history_upto(store, EntityRef::Subscription(id), as_of.position)?;
    // The Azure plan's status lives in the plan's events, which are indexed under its customer and billing partner.
    if let Some(first) = own.first() {
        if let Some(stored) = store.get(*first)? {
            if let Ok(Event::AzureSubscriptionAdded {
                customer,
                billing_partner,
                ..
            }) = stored.envelope()?.event()
            {
                let plan_events =
                    history_upto(store, EntityRef::Customer(customer), as_of.position)?;
                let partner_events: BTreeSet<Position> =
                    history_upto(store, EntityRef::Partner(billing_partner), as_of.position)?
                        .into_iter()
                        .collect();
                own.extend(
                    plan_events
                        .into_iter()
                        .filter(|p| partner_events.contains(p)),
                );
            }
        }
    }
    let (state, read) = fold_with_profiles(store, own, as_of.position)?;
    Ok(subscription_view(&state, id, as_of).map(|view| Answer {
        view,
        events_read: read,
    }))
}

/// The positions after `after`, up to and including `to`, of the events about every one of `entities` (at least
/// one), read from the indexes.
pub fn positions_about_all(
    store: &dyn EventStore,
    entities: &[EntityRef],
    after: Position,
    to: Option<Position>,
) -> Result<Vec<Position>, StoreError> {
    let Some((first, rest)) = entities.split_first() else {
        return Ok(Vec::new());
    };
    let within = |p: &Position| to.is_none_or(|t| *p <= t);
    let mut positions: Vec<Position> = store
        .history(first, after)?
        .into_iter()
        .take_while(within)
        .collect();
    for e in rest {
        let other: std::collections::HashSet<Position> = store
            .history(e, after)?
            .into_iter()
            .take_while(within)
            .collect();
        positions.retain(|p| other.contains(p));
    }
    Ok(positions)
}

/// One line of a history or diff.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct HistoryLine {
    pub position: Position,
    pub at: Timestamp,
    pub recorded_at: Timestamp,
    pub actor: crate::domain::Actor,
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: serde_json::Value,
}

impl From<crate::store::Envelope> for HistoryLine {
    fn from(env: crate::store::Envelope) -> HistoryLine {
        HistoryLine {
            position: env.position,
            at: env.at,
            recorded_at: env.recorded_at,
            actor: env.actor,
            event_type: env.event_type,
            data: env.data,
        }
    }
}

/// An entity's events after `from` up to and including `to`, oldest first.
pub fn history(
    store: &dyn EventStore,
    entity: EntityRef,
    from: Position,
    to: Option<Position>,
) -> Result<Vec<HistoryLine>, StoreError> {
    let mut out = Vec::new();
    for p in store.history(&entity, from)? {
        if to.is_some_and(|t| p > t) {
            break;
        }
        if let Some(stored) = store.get(p)? {
            out.push(HistoryLine::from(stored.envelope()?));
        }
    }
    Ok(out)
}
