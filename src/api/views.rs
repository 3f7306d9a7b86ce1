//! The views (`/v1/customers/{id}`, `/v1/partners/{id}`, `/v1/subscriptions/{id}`, now or as of a position or an
//! instant) and a customer's history, confined to what the caller may see.

use std::sync::Arc;

use axum::extract::{Extension, State};

use super::extract::{ApiPath, ApiQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::caching;
use super::error::ApiError;
use super::AppState;
use crate::access::Principal;
use crate::domain::{CustomerId, EntityRef, PartnerId, SubscriptionId};
use crate::ledger::Ledger;
use crate::query::{self, AsOfSpec};

#[derive(Deserialize)]
pub(super) struct AsOfParam {
    as_of: Option<String>,
}

/// Reads `as_of`; a position after the head is 400 `as_of_beyond_head`, with the head in the body.
fn parse_as_of(p: &AsOfParam, ledger: &Ledger) -> Result<Option<AsOfSpec>, ApiError> {
    let spec = match &p.as_of {
        None => None,
        Some(s) => Some(
            s.parse()
                .map_err(|e: String| ApiError::bad_request("invalid_as_of", e))?,
        ),
    };
    if let Err(message) = query::beyond_head(ledger.store(), spec) {
        return Err(ApiError::bad_request("as_of_beyond_head", message)
            .with("head", ledger.store().head().position));
    }
    Ok(spec)
}

fn parse_id<T: std::str::FromStr<Err = crate::domain::ParseError>>(
    kind: &str,
    s: &str,
) -> Result<T, ApiError> {
    s.parse()
        .map_err(|e| ApiError::bad_request("invalid_id", format!("{kind} id: {e}")))
}

/// Runs a read on a blocking thread and maps "not there" to 404.
async fn view<V: serde::Serialize + Send + 'static>(
    s: &AppState,
    headers: &HeaderMap,
    what: String,
    read: impl FnOnce(&Ledger) -> Result<Option<V>, crate::store::StoreError> + Send + 'static,
) -> Result<Response, ApiError> {
    let ledger = Arc::clone(&s.ledger);
    let failed = || {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the read failed; see the server log",
        )
    };
    match tokio::task::spawn_blocking(move || read(&ledger)).await {
        Ok(Ok(Some(v))) => Ok(caching::respond(
            headers,
            serde_json::to_value(v).unwrap_or(Value::Null),
        )),
        Ok(Ok(None)) => Err(ApiError::not_found(
            "not_found",
            format!("{what} is not in this ledger"),
        )),
        Ok(Err(e @ crate::store::StoreError::Unreachable { .. })) => Err(ApiError::from(e)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "read failed");
            Err(failed())
        }
        Err(e) => {
            tracing::error!(error = %e, "read task failed");
            Err(failed())
        }
    }
}

pub(super) async fn get_customer(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<AsOfParam>,
) -> Result<Response, ApiError> {
    let id = parse_id::<CustomerId>("customer", &id)?;
    let as_of = parse_as_of(&q, &s.ledger)?;
    let scope = who.scope();
    view(&s, &headers, format!("customer {id}"), move |st| {
        st.live_caught_up();
        if !st.live().read(|state, _| scope.sees_customer(state, id)) {
            return Ok(None);
        }
        Ok(query::customer_in(st, id, as_of)?.map(|a| {
            let mut v = a.view;
            scope.confine_customer_view(&mut v);
            v
        }))
    })
    .await
}

pub(super) async fn get_partner(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<AsOfParam>,
) -> Result<Response, ApiError> {
    let id = parse_id::<PartnerId>("partner", &id)?;
    let as_of = parse_as_of(&q, &s.ledger)?;
    let scope = who.scope();
    view(&s, &headers, format!("partner {id}"), move |st| {
        if !scope.sees_partner(id) {
            return Ok(None);
        }
        Ok(query::partner_in(st, id, as_of)?.map(|a| a.view))
    })
    .await
}

pub(super) async fn get_subscription(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<AsOfParam>,
) -> Result<Response, ApiError> {
    let id = parse_id::<SubscriptionId>("subscription", &id)?;
    let as_of = parse_as_of(&q, &s.ledger)?;
    let scope = who.scope();
    view(&s, &headers, format!("subscription {id}"), move |st| {
        st.live_caught_up();
        if !st
            .live()
            .read(|state, _| scope.sees_subscription(state, id))
        {
            return Ok(None);
        }
        Ok(query::subscription_in(st, id, as_of)?.map(|a| a.view))
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct HistoryParams {
    #[serde(default)]
    include_refusals: bool,
}

pub(super) async fn get_customer_history(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryParams>,
) -> Result<Response, ApiError> {
    let id = parse_id::<CustomerId>("customer", &id)?;
    let scope = who.scope();
    view(&s, &headers, format!("customer {id}"), move |ledger| {
        let entity = EntityRef::Customer(id);
        ledger.live_caught_up();
        if !ledger.live().read(|st, _| scope.sees_customer(st, id)) {
            return Ok(None);
        }
        let mut events = Vec::new();
        for p in ledger
            .store()
            .history(&entity, crate::domain::Position(0))?
        {
            let Some(stored) = ledger.store().get(p)? else {
                continue;
            };
            if ledger
                .live()
                .read(|st, _| scope.sees_event_in_history(st, &stored.raw))
            {
                let mut line = serde_json::to_value(query::HistoryLine::from(stored.envelope()?))
                    .unwrap_or(Value::Null);
                scope.withhold(&mut line);
                events.push(line);
            }
        }
        if events.is_empty() {
            return Ok(None);
        }
        let mut out = json!({"customer": id, "events": events});
        if q.include_refusals {
            let mut refusals = ledger.refusals().of(&entity)?;
            refusals.retain(|r| scope.sees_actor(&r.actor));
            out["refusals"] = serde_json::to_value(refusals).unwrap_or(Value::Null);
        }
        Ok(Some(out))
    })
    .await
}
