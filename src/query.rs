//! Queries answered from the log's indexes: one customer's view, now or as of any position or instant.
//!
//! A view is folded from that customer's own indexed history plus the reference-data events of the partners it
//! involves, never by replaying the whole log; business time never decreases along the log (R35), so "as of an
//! instant" is a binary search over positions.

use std::str::FromStr;

use crate::domain::view::{customer_view as derive_view, AsOf, CustomerView};
use crate::domain::{CustomerId, EntityRef, Position, State, Timestamp};
use crate::store::{EventStore, StoreError};

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
            format!("`{s}` is neither a position (a whole number) nor an RFC 3339 time")
        })
    }
}

/// A view and how many events were read to build it.
#[derive(Clone, Debug)]
pub struct Answer {
    pub view: CustomerView,
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

fn fold(
    store: &dyn EventStore,
    state: &mut State,
    positions: &[Position],
) -> Result<usize, StoreError> {
    for p in positions {
        if let Some(stored) = store.get(*p)? {
            let env = stored.envelope()?;
            let event = env.event().map_err(|e| StoreError::Codec {
                position: *p,
                message: e.to_string(),
            })?;
            state.apply(env.at, &event);
        }
    }
    Ok(positions.len())
}

/// The customer view as of `spec` (now when `None`); `None` if the customer did not exist then.
pub fn customer(
    store: &dyn EventStore,
    customer: CustomerId,
    spec: Option<AsOfSpec>,
) -> Result<Option<Answer>, StoreError> {
    let as_of = resolve(store, spec)?;
    let upto = |v: Vec<Position>| -> Vec<Position> {
        v.into_iter().take_while(|p| *p <= as_of.position).collect()
    };
    let mut state = State::new();
    let mut read = fold(
        store,
        &mut state,
        &upto(store.history(&EntityRef::Customer(customer), Position(0))?),
    )?;
    let Some(c) = state.customers.get(&customer) else {
        return Ok(None);
    };
    let mut profile: Vec<Position> = Vec::new();
    for p in c.partners.clone() {
        profile.extend(upto(
            store.history(&EntityRef::PartnerProfile(p), Position(0))?,
        ));
    }
    profile.sort_unstable();
    read += fold(store, &mut state, &profile)?;
    Ok(derive_view(&state, customer, as_of).map(|view| Answer {
        view,
        events_read: read,
    }))
}
