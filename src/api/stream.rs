//! Event streams: catch-up from a position, then live, as Server-Sent Events or NDJSON.
//!
//! A stream task reads the log after its last position up to the head, sends what matches its filter, then waits for
//! the head to move. It never misses, repeats or reorders: it only ever reads positions after the last one it sent or
//! scanned, and positions are gapless. A filtered or idle stream sends a heartbeat with the position it has scanned up
//! to at least every heartbeat interval, so a consumer of rare events can checkpoint past quiet stretches.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{reject, AppState, Rejection};
use crate::domain::{CustomerId, EntityRef, PartnerId, Position};
use crate::ledger::Ledger;
use crate::store::{EventStore, StoreError};

/// Which events a stream carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<PartnerId>,
    /// Event types; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
}

impl Filter {
    fn entities(&self) -> Vec<EntityRef> {
        let mut v = Vec::new();
        v.extend(self.customer.map(EntityRef::Customer));
        v.extend(self.partner.map(EntityRef::Partner));
        v
    }
}

/// One item of a stream.
pub enum Item {
    Event {
        position: Position,
        event_type: String,
        raw: Vec<u8>,
    },
    Heartbeat(Position),
}

#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    event_type: String,
}

/// The matching events after `after` up to and including `upto`.
fn read_chunk(
    store: &dyn EventStore,
    filter: &Filter,
    after: Position,
    upto: Position,
) -> Result<Vec<Item>, StoreError> {
    let entities = filter.entities();
    let raws: Vec<(Position, Vec<u8>)> = if entities.is_empty() {
        store
            .read(after, Some(upto))
            .map(|e| e.map(|e| (e.position, e.raw)))
            .collect::<Result<_, _>>()?
    } else {
        let positions = crate::query::positions_about_all(store, &entities, after, Some(upto))?;
        let mut out = Vec::with_capacity(positions.len());
        for p in positions {
            if let Some(e) = store.get(p)? {
                out.push((p, e.raw));
            }
        }
        out
    };
    let mut items = Vec::with_capacity(raws.len());
    for (position, raw) in raws {
        let t: TypeOnly = serde_json::from_slice(&raw).map_err(|e| StoreError::Codec {
            position,
            message: e.to_string(),
        })?;
        if filter.types.is_empty() || filter.types.contains(&t.event_type) {
            items.push(Item::Event {
                position,
                event_type: t.event_type,
                raw,
            });
        }
    }
    Ok(items)
}

/// Feeds `tx` from position `after` on, forever (until the client goes, the ledger closes or the server stops).
pub async fn produce(
    ledger: Arc<Ledger>,
    filter: Filter,
    mut after: Position,
    heartbeat: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    tx: mpsc::Sender<Item>,
) {
    const CHUNK: u64 = 2048;
    let mut head_rx = ledger.watch_head();
    let mut last_sent = Instant::now();
    loop {
        // Mark the change seen before reading the head: a commit after this line triggers another change, so none
        // can slip between the read and the wait.
        head_rx.borrow_and_update();
        let head = ledger.store().head().position;
        while after < head {
            let upto = Position((after.0 + CHUNK).min(head.0));
            let (l, f) = (Arc::clone(&ledger), filter.clone());
            let items =
                match tokio::task::spawn_blocking(move || read_chunk(l.store(), &f, after, upto))
                    .await
                {
                    Ok(Ok(items)) => items,
                    _ => return,
                };
            for item in items {
                if tx.send(item).await.is_err() {
                    return;
                }
                last_sent = Instant::now();
            }
            after = upto;
            if last_sent.elapsed() >= heartbeat {
                if tx.send(Item::Heartbeat(after)).await.is_err() {
                    return;
                }
                last_sent = Instant::now();
            }
        }
        let wait = heartbeat.saturating_sub(last_sent.elapsed());
        tokio::select! {
            changed = head_rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait) => {
                if tx.send(Item::Heartbeat(after)).await.is_err() {
                    return;
                }
                last_sent = Instant::now();
            }
            _ = stopping.changed() => return,
        }
    }
}

/// Counts a connected stream for `/metrics` while it lives.
struct Connected(Arc<super::ApiMetrics>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts a stream and frames it as SSE or NDJSON (by `Accept`).
pub fn respond(s: &AppState, headers: &HeaderMap, filter: Filter, after: Position) -> Response {
    let (tx, rx) = mpsc::channel::<Item>(256);
    tokio::spawn(produce(
        Arc::clone(&s.ledger),
        filter,
        after,
        s.config.heartbeat,
        s.stopping.clone(),
        tx,
    ));
    s.metrics.streams.fetch_add(1, Ordering::Relaxed);
    let guard = Connected(Arc::clone(&s.metrics));
    let ndjson = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    let items = ReceiverStream::new(rx);
    if ndjson {
        let body = items.map(move |item| {
            let _keep = &guard;
            let mut line = match item {
                Item::Event { raw, .. } => raw,
                Item::Heartbeat(p) => {
                    format!("{{\"heartbeat\":{{\"position\":{p}}}}}").into_bytes()
                }
            };
            line.push(b'\n');
            Ok::<Bytes, Infallible>(Bytes::from(line))
        });
        (
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            Body::from_stream(body),
        )
            .into_response()
    } else {
        let events = items.map(move |item| {
            let _keep = &guard;
            Ok::<SseEvent, Infallible>(match item {
                Item::Event {
                    position,
                    event_type,
                    raw,
                } => SseEvent::default()
                    .id(position.to_string())
                    .event(event_type)
                    .data(String::from_utf8_lossy(&raw)),
                Item::Heartbeat(p) => SseEvent::default()
                    .id(p.to_string())
                    .event("heartbeat")
                    .data(format!("{{\"position\":{p}}}")),
            })
        });
        Sse::new(events).into_response()
    }
}

#[derive(Deserialize)]
pub struct StreamParams {
    from: Option<u64>,
    customer: Option<String>,
    partner: Option<String>,
    types: Option<String>,
}

/// Parses the filter query parameters.
pub fn filter_of(
    customer: Option<&str>,
    partner: Option<&str>,
    types: Option<&str>,
) -> Result<Filter, Rejection> {
    let bad = |kind: &str, e: String| {
        reject(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("{kind}: {e}"),
        )
    };
    let types: Vec<String> = types
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(unknown) = types
        .iter()
        .find(|t| !crate::domain::Event::TYPE_NAMES.contains(&t.as_str()))
    {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "invalid_type",
            format!("`{unknown}` is not an event type"),
        ));
    }
    Ok(Filter {
        customer: customer
            .map(|c| c.parse().map_err(|e| bad("customer", e)))
            .transpose()?,
        partner: partner
            .map(|p| p.parse().map_err(|e| bad("partner", e)))
            .transpose()?,
        types,
    })
}

/// The position a client resumes after: `Last-Event-ID` (set by SSE clients on reconnect) wins over `from`.
pub fn resume_point(headers: &HeaderMap, from: Option<u64>) -> Result<Position, Rejection> {
    match headers
        .get("last-event-id")
        .map(|v| v.to_str().map(str::trim))
    {
        Some(Ok(v)) => v.parse::<u64>().map(Position).map_err(|_| {
            reject(
                StatusCode::BAD_REQUEST,
                "invalid_last_event_id",
                format!("Last-Event-ID `{v}` is not a position"),
            )
        }),
        Some(Err(_)) => Err(reject(
            StatusCode::BAD_REQUEST,
            "invalid_last_event_id",
            "Last-Event-ID is not text",
        )),
        None => Ok(Position(from.unwrap_or(0))),
    }
}

/// `GET /v1/events`.
pub async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<StreamParams>,
) -> Response {
    let filter = match filter_of(
        p.customer.as_deref(),
        p.partner.as_deref(),
        p.types.as_deref(),
    ) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let after = match resume_point(&headers, p.from) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    respond(&s, &headers, filter, after)
}
