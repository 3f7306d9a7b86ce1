//! Event streams: catch-up from a position, then live, as Server-Sent Events or NDJSON.
//!
//! A stream task reads the log after its last position up to the head, sends what matches its filter, then waits for
//! the head to move. It never misses, repeats or reorders: it only ever reads positions after the last one it sent or
//! scanned, and positions are gapless. A filtered or idle stream sends a heartbeat with the position it has scanned up
//! to at least every heartbeat interval, so a consumer of rare events can checkpoint past quiet stretches.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;

use super::extract::ApiQuery;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use super::auth::Credential;
use super::encoding;
use super::framing::negotiate;
pub use super::framing::Framing;
use super::{ApiError, AppState};
use crate::access::{Principal, Scope};
use crate::domain::{CustomerId, EntityRef, PartnerId, Position};
use crate::ledger::Ledger;
use crate::store::StoreError;
use axum::Extension;

/// Which events a stream carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<PartnerId>,
    /// Event types; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// What the caller may see (set per request from its principal; never stored).
    #[serde(skip)]
    pub scope: Scope,
    /// `?format=cloudevents`: each event as a structured CloudEvent with this `source` (per request; never stored).
    #[serde(skip)]
    pub cloudevents: Option<Arc<str>>,
}

impl Filter {
    fn entities(&self) -> Vec<EntityRef> {
        let mut v = Vec::new();
        v.extend(self.customer.map(EntityRef::Customer));
        v.extend(self.partner.map(EntityRef::Partner));
        v
    }
}

#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow)]
    event_type: std::borrow::Cow<'a, str>,
}

/// The most bytes framed in one piece of a stream: what a stalled client can hold in memory is a few of these.
const PIECE_BYTES: usize = 256 * 1024;

/// What a piece of a stream holds: the framed bytes (possibly none), how many events they frame, and the last
/// position scanned.
struct Piece {
    bytes: Vec<u8>,
    events: u64,
    scanned: Position,
}

/// Frames the matching events after `after`, up to and including `upto`, stopping early once [`PIECE_BYTES`] are
/// framed or `room` events are.
fn read_piece(
    ledger: &Ledger,
    filter: &Filter,
    framing: Framing,
    (after, upto): (Position, Position),
    room: u64,
) -> Result<Piece, StoreError> {
    let store = ledger.store();
    let scope = filter.scope;
    // A confined stream judges each event against a live model that reflects at least that event's position: the
    // head moves before the projector installs a batch's model, and an older model could hide an event for good.
    let upto = if scope == Scope::All {
        upto
    } else {
        upto.min(
            ledger
                .live()
                .wait_for(upto, crate::ledger::CATCH_UP_TIMEOUT),
        )
    };
    if upto <= after {
        // The live model has not reached the next position yet (a projector more than the timeout behind): nothing
        // is judged, and the stream stays where it is.
        return Ok(Piece {
            bytes: Vec::new(),
            events: 0,
            scanned: after,
        });
    }
    let entities = filter.entities();
    let mut out = Vec::with_capacity(PIECE_BYTES + 4096);
    let mut scanned = after;
    let mut events = 0;
    // Whether the event was framed.
    let frame = |position: Position, raw: &[u8], out: &mut Vec<u8>| -> Result<bool, StoreError> {
        if scope != Scope::All && !ledger.live().read(|st, _| scope.sees_event(st, raw)) {
            return Ok(false);
        }
        let withheld = scope.withhold_bytes(raw);
        let stored = raw;
        let raw = withheld.as_deref().unwrap_or(raw);
        if let Some(source) = &filter.cloudevents {
            // The attributes come from the stored envelope (a withheld one need not decode as an event); the data is
            // what this caller may see.
            let described = crate::relay::Described::of(stored)
                .map_err(|message| StoreError::Codec { position, message })?;
            if !filter.types.is_empty() && !filter.types.contains(&described.event_type) {
                return Ok(false);
            }
            let mut event = Vec::with_capacity(raw.len() + 512);
            described.structured(source, raw, &mut event);
            framing.event(out, position, &described.event_type, &event);
            return Ok(true);
        }
        if filter.types.is_empty() && framing == Framing::Ndjson {
            framing.event(out, position, "", raw);
            return Ok(true);
        }
        let t: TypeOnly = serde_json::from_slice(raw).map_err(|e| StoreError::Codec {
            position,
            message: e.to_string(),
        })?;
        if filter.types.is_empty() || filter.types.iter().any(|x| *x == t.event_type) {
            framing.event(out, position, &t.event_type, raw);
            return Ok(true);
        }
        Ok(false)
    };
    let full = |out: &Vec<u8>, events: u64| out.len() >= PIECE_BYTES || events >= room;
    if entities.is_empty() {
        for e in store.read(after, Some(upto)) {
            let e = e?;
            events += u64::from(frame(e.position, &e.raw, &mut out)?);
            scanned = e.position;
            if full(&out, events) {
                break;
            }
        }
    } else {
        let mut cut = false;
        for p in crate::query::positions_about_all(store, &entities, after, Some(upto))? {
            if let Some(e) = store.get(p)? {
                events += u64::from(frame(p, &e.raw, &mut out)?);
            }
            scanned = p;
            if full(&out, events) {
                cut = true;
                break;
            }
        }
        if !cut {
            scanned = upto;
        }
    }
    Ok(Piece {
        bytes: out,
        events,
        scanned,
    })
}

/// Where a stream ends: after the event at position `to`, or after `limit` events; neither: never.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bound {
    pub to: Option<Position>,
    pub limit: Option<u64>,
}

/// Sends a piece to the client unless the server stops first; `false` when the stream should end.
async fn send(
    tx: &mpsc::Sender<Bytes>,
    piece: Bytes,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    if *stopping.borrow() {
        return false;
    }
    tokio::select! {
        sent = tx.send(piece) => sent.is_ok(),
        _ = stopping.changed() => false,
    }
}

/// Feeds `tx` from position `after` on, until `bound` (or, without one, until the client goes, the ledger closes or
/// the server stops).
#[allow(clippy::too_many_arguments)]
pub async fn produce(
    ledger: Arc<Ledger>,
    filter: Filter,
    framing: Framing,
    mut after: Position,
    bound: Bound,
    heartbeat: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    tx: mpsc::Sender<Bytes>,
) {
    const CHUNK: u64 = 8192;
    let mut head_rx = ledger.watch_head();
    let mut last_sent = Instant::now();
    let mut left = bound.limit.unwrap_or(u64::MAX);
    let end = bound.to.unwrap_or(Position(u64::MAX));
    loop {
        if *stopping.borrow() || left == 0 || after >= end {
            return;
        }
        // Mark the change seen before reading the head: a commit after this line triggers another change, so none
        // can slip between the read and the wait.
        head_rx.borrow_and_update();
        let head = ledger.store().head().position.min(end);
        while after < head {
            let upto = Position((after.0 + CHUNK).min(head.0));
            let (l, f) = (Arc::clone(&ledger), filter.clone());
            let piece = tokio::task::spawn_blocking(move || {
                read_piece(&l, &f, framing, (after, upto), left)
            })
            .await;
            let Ok(Ok(piece)) = piece else {
                return;
            };
            if !piece.bytes.is_empty() {
                if !send(&tx, Bytes::from(piece.bytes), &mut stopping).await {
                    return;
                }
                last_sent = Instant::now();
            }
            after = piece.scanned;
            left = left.saturating_sub(piece.events);
            if left == 0 || after >= end {
                return;
            }
            if last_sent.elapsed() >= heartbeat {
                if !send(&tx, framing.heartbeat(after), &mut stopping).await {
                    return;
                }
                last_sent = Instant::now();
            }
        }
        let wait = heartbeat.saturating_sub(last_sent.elapsed());
        tokio::select! {
            changed = head_rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait) => {
                if !send(&tx, framing.heartbeat(after), &mut stopping).await {
                    return;
                }
                last_sent = Instant::now();
            }
            _ = stopping.changed() => return,
        }
    }
}

/// A stream's own stop signal: it turns true when the server stops, or when a reload of the tokens file removed (or
/// changed) the principal that opened the stream: a revoked principal keeps no open stream.
fn ends_when(
    s: &AppState,
    principal: Principal,
    credential: Credential,
) -> tokio::sync::watch::Receiver<bool> {
    let auth = Arc::clone(&s.auth);
    // Subscribed before the check, so a reload between authentication and here is either seen by the check or
    // reported by the channel.
    let mut reloads = auth.reloads();
    let revoked = !auth.still_valid(credential, &principal);
    let (end, ended) = tokio::sync::watch::channel(*s.stopping.borrow() || revoked);
    let mut server = s.stopping.clone();
    tokio::spawn(
        async move {
        loop {
            tokio::select! {
                changed = server.changed() => {
                    if changed.is_err() || *server.borrow() {
                        let _ = end.send(true);
                        return;
                    }
                }
                changed = reloads.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if !auth.still_valid(credential, &principal) {
                        tracing::info!(principal = %principal.label(), "an open stream ended: its principal was removed from the tokens file");
                        let _ = end.send(true);
                        return;
                    }
                }
                _ = end.closed() => return,
            }
        }
    }
        // In the request's span: its log lines name the request that opened the stream.
        .in_current_span(),
    );
    ended
}

/// Counts a connected stream for `/metrics` while it lives.
struct Connected(Arc<super::ApiMetrics>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts a stream and frames it as SSE or NDJSON (by `Accept`). The producer reads and frames pieces of up to
/// [`PIECE_BYTES`]; at most four wait for the client, so a stalled client holds about a megabyte. `scope` confines
/// the stream to what the caller may see (docs/security.md).
pub fn respond(
    s: &AppState,
    headers: &HeaderMap,
    mut filter: Filter,
    who: (&Principal, Credential),
    after: Position,
    bound: Bound,
) -> Result<Response, ApiError> {
    filter.scope = who.0.scope();
    let framing = negotiate(headers)?;
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::spawn(
        produce(
            Arc::clone(&s.ledger),
            filter,
            framing,
            after,
            bound,
            s.config.heartbeat,
            ends_when(s, who.0.clone(), who.1),
            tx,
        )
        .in_current_span(),
    );
    s.metrics.streams.fetch_add(1, Ordering::Relaxed);
    let guard = Connected(Arc::clone(&s.metrics));
    let pieces = ReceiverStream::new(rx).map(move |piece| {
        let _keep = &guard;
        piece
    });
    let content_type = match framing {
        Framing::Ndjson => "application/x-ndjson",
        Framing::Sse => "text/event-stream",
    };
    Ok(encoding::streamed(
        headers,
        &[
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::VARY, "accept, authorization"),
        ],
        pieces,
    ))
}

#[derive(Deserialize)]
pub struct StreamParams {
    from: Option<u64>,
    to: Option<u64>,
    limit: Option<u64>,
    customer: Option<String>,
    partner: Option<String>,
    types: Option<String>,
    format: Option<String>,
}

/// `format`: `envelope` (the default: each event as stored) or `cloudevents` (each a structured CloudEvent,
/// `application/cloudevents+json`, whose `data` is the envelope; docs/streams.md).
pub fn cloudevents_of(format: Option<&str>, s: &AppState) -> Result<Option<Arc<str>>, ApiError> {
    match format {
        None | Some("envelope") => Ok(None),
        Some("cloudevents") => Ok(Some(Arc::from(s.config.cloudevents_source.as_str()))),
        Some(other) => Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "format `{other}` is not a stream format: envelope (the default) or cloudevents"
            ),
        )),
    }
}

/// A stream's optional end: `to` (a position, at or after where it starts) and `limit` (events, at least 1).
pub fn bound_of(after: Position, to: Option<u64>, limit: Option<u64>) -> Result<Bound, ApiError> {
    if let Some(t) = to {
        if t < after.0 {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("to {t} is before the stream's start after position {after}"),
            ));
        }
    }
    if limit == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit is a number of events, at least 1",
        ));
    }
    Ok(Bound {
        to: to.map(Position),
        limit,
    })
}

/// Parses the filter query parameters.
pub fn filter_of(
    customer: Option<&str>,
    partner: Option<&str>,
    types: Option<&str>,
) -> Result<Filter, ApiError> {
    let bad = |kind: &str, e: crate::domain::ParseError| {
        ApiError::new(
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
        return Err(ApiError::new(
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
        scope: Scope::All,
        cloudevents: None,
    })
}

/// The position a client resumes after: `Last-Event-ID` (set by SSE clients on reconnect) wins over `from`. A point
/// after the log's head is refused (400, naming the head): those positions do not exist yet. A process that follows
/// the writer waits for a point it has not reached yet (`forward::wait_for_point`).
pub async fn resume_point(
    s: &AppState,
    headers: &HeaderMap,
    from: Option<u64>,
) -> Result<Position, ApiError> {
    let point = requested_point(headers, from)?;
    let what = if headers.contains_key("last-event-id") {
        "Last-Event-ID"
    } else {
        "from"
    };
    super::forward::wait_for_point(s, headers, what, point).await?;
    Ok(point)
}

fn requested_point(headers: &HeaderMap, from: Option<u64>) -> Result<Position, ApiError> {
    match headers
        .get("last-event-id")
        .map(|v| v.to_str().map(str::trim))
    {
        Some(Ok(v)) => v.parse::<u64>().map(Position).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_last_event_id",
                format!("Last-Event-ID `{v}` is not a position"),
            )
        }),
        Some(Err(_)) => Err(ApiError::new(
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
    Extension(who): Extension<Principal>,
    Extension(credential): Extension<Credential>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<StreamParams>,
) -> Result<Response, ApiError> {
    let mut filter = filter_of(
        p.customer.as_deref(),
        p.partner.as_deref(),
        p.types.as_deref(),
    )?;
    filter.cloudevents = cloudevents_of(p.format.as_deref(), &s)?;
    let after = resume_point(&s, &headers, p.from).await?;
    let bound = bound_of(after, p.to, p.limit)?;
    respond(&s, &headers, filter, (&who, credential), after, bound)
}
