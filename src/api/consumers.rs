//! Durable consumers: a named filter and a checkpoint kept by the ledger, so a downstream service resumes exactly
//! where it acknowledged, across its restarts and the server's.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::stream::{filter_of, respond, Filter};
use super::{error, reject, AppState, Rejection};
use crate::domain::Position;
use crate::store::{ConsumerStore, StoreError};

/// A stored consumer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    pub name: String,
    pub filter: Filter,
    /// The last position acknowledged; the stream resumes after it.
    pub checkpoint: Position,
}

/// The consumers of one ledger, kept by its store.
pub struct Consumers {
    ledger: Arc<crate::ledger::Ledger>,
    /// Held across every read-modify-write (create, ack, delete), so concurrent acks form an atomic maximum and an
    /// ack racing a delete never brings the consumer back.
    changing: std::sync::Mutex<()>,
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        position: None,
        message: format!("a consumer record does not decode: {e}"),
    }
}

impl Consumers {
    /// The consumers of the ledger.
    pub fn open(ledger: Arc<crate::ledger::Ledger>) -> Consumers {
        Consumers {
            ledger,
            changing: std::sync::Mutex::new(()),
        }
    }

    fn store(&self) -> &dyn ConsumerStore {
        self.ledger.store().consumers()
    }

    fn get(&self, name: &str) -> Result<Option<Consumer>, StoreError> {
        match self.store().get(name)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(corrupt),
        }
    }

    /// Writes a consumer durably, so an acknowledged checkpoint survives a crash (507 near a full disk).
    fn put(&self, c: &Consumer) -> Result<(), StoreError> {
        self.store()
            .put(&c.name, &serde_json::to_vec(c).unwrap_or_default())
    }

    /// Removes a consumer, durably; whether it existed.
    fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let _changing = self.lock();
        self.store().remove(name)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn all(&self) -> Result<Vec<Consumer>, StoreError> {
        self.store()
            .all()?
            .iter()
            .map(|v| serde_json::from_slice(v).map_err(corrupt))
            .collect()
    }
}

fn valid_name(name: &str) -> Result<(), Rejection> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(())
    } else {
        Err(reject(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            "a consumer name is 1 to 64 letters, digits, '-', '_' or '.'",
        ))
    }
}

fn internal(e: StoreError) -> Response {
    if let StoreError::WriteFailed { message } = &e {
        return error(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            message.clone(),
        );
    }
    tracing::error!(error = %e, "consumer store failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the consumer store failed; see the server log",
    )
}

fn with_lag(c: &Consumer, head: Position) -> serde_json::Value {
    json!({"name": c.name, "filter": c.filter, "checkpoint": c.checkpoint, "lag": head.0.saturating_sub(c.checkpoint.0)})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    customer: Option<String>,
    partner: Option<String>,
    #[serde(default)]
    types: Vec<String>,
    /// Start after this position (default 0: everything).
    #[serde(default)]
    from: u64,
}

/// `PUT /v1/consumers/{name}`: creates a consumer (201), or confirms an identical one (200); a different filter is 409.
pub async fn create(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Option<Json<CreateBody>>,
) -> Response {
    if let Err(r) = valid_name(&name) {
        return *r;
    }
    let body = body.map(|b| b.0).unwrap_or(CreateBody {
        customer: None,
        partner: None,
        types: Vec::new(),
        from: 0,
    });
    let types = body.types.join(",");
    let filter = match filter_of(
        body.customer.as_deref(),
        body.partner.as_deref(),
        Some(&types),
    ) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let head = s.ledger.store().head().position;
    if body.from > head.0 {
        return beyond_head("from", body.from, head);
    }
    let consumers = Arc::clone(&s.consumers);
    // On a blocking thread: the lock may wait for acks that sync, and creating syncs too.
    let created = tokio::task::spawn_blocking(move || {
        let _changing = consumers.lock();
        match consumers.get(&name) {
            Err(e) => internal(e),
            Ok(Some(existing)) if existing.filter == filter => {
                (StatusCode::OK, Json(with_lag(&existing, head))).into_response()
            }
            Ok(Some(_)) => error(
                StatusCode::CONFLICT,
                "consumer_exists",
                format!("consumer {name} exists with another filter; delete it first"),
            ),
            Ok(None) => {
                let c = Consumer {
                    name,
                    filter,
                    checkpoint: Position(body.from),
                };
                match consumers.put(&c) {
                    Ok(()) => (StatusCode::CREATED, Json(with_lag(&c, head))).into_response(),
                    Err(e) => internal(e),
                }
            }
        }
    })
    .await;
    created.unwrap_or_else(|_| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the creation failed",
        )
    })
}

/// `GET /v1/consumers`: every consumer with its checkpoint and lag.
pub async fn list(State(s): State<AppState>) -> Response {
    let head = s.ledger.store().head().position;
    match s.consumers.all() {
        Ok(all) => Json(all.iter().map(|c| with_lag(c, head)).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}

/// `GET /v1/consumers/{name}`.
pub async fn show(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    match s.consumers.get(&name) {
        Ok(Some(c)) => Json(with_lag(&c, s.ledger.store().head().position)).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no consumer {name}"),
        ),
        Err(e) => internal(e),
    }
}

/// `DELETE /v1/consumers/{name}`.
pub async fn remove(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    let consumers = Arc::clone(&s.consumers);
    let n = name.clone();
    match tokio::task::spawn_blocking(move || consumers.delete(&n)).await {
        Ok(Ok(true)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(false)) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no consumer {name}"),
        ),
        Ok(Err(e)) => internal(e),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the deletion failed",
        ),
    }
}

/// A resume point or starting point after the log's head: 400, naming the head (the positions in between do not
/// exist yet, and accepting it would skip them once they do).
pub(super) fn beyond_head(what: &str, asked: u64, head: Position) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": "beyond_head",
            "message": format!("{what} {asked} is after the log's head {head}; resume at or before the head"),
            "head": head,
        })),
    )
        .into_response()
}

/// `GET /v1/consumers/{name}/events`: the consumer's filter, from its checkpoint (or a later `Last-Event-ID`).
pub async fn events(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<crate::access::Principal>,
    axum::Extension(credential): axum::Extension<super::auth::Credential>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    match s.consumers.get(&name) {
        Ok(Some(c)) => {
            let head = s.ledger.store().head().position;
            let after = match super::stream::resume_point(&headers, Some(c.checkpoint.0), head) {
                Ok(p) => p.max(c.checkpoint),
                Err(r) => return *r,
            };
            // The operations gate let only principals who read everything (operators, system, auditors) this far.
            respond(&s, &headers, c.filter, (&who, credential), after)
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no consumer {name}"),
        ),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    position: u64,
}

/// `POST /v1/consumers/{name}/ack {"position": n}`: moves the checkpoint forward (never backwards: 409).
pub async fn ack(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Json(body): Json<AckBody>,
) -> Response {
    let consumers = Arc::clone(&s.consumers);
    let head = s.ledger.store().head().position;
    let result =
        tokio::task::spawn_blocking(move || -> Result<Result<Consumer, Rejection>, StoreError> {
            let _changing = consumers.lock();
            let Some(mut c) = consumers.get(&name)? else {
                return Ok(Err(reject(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no consumer {name}"),
                )));
            };
            let p = Position(body.position);
            if p < c.checkpoint {
                return Ok(Err(reject(
                    StatusCode::CONFLICT,
                    "ack_backwards",
                    format!(
                        "consumer {name} is at {}; a checkpoint never moves back to {p}",
                        c.checkpoint
                    ),
                )));
            }
            if p > head {
                return Ok(Err(Box::new(
                    (
                        StatusCode::BAD_REQUEST,
                        Json(json!({"error": "ack_beyond_head",
                            "message": format!("position {p} is after the log's head {head}"),
                            "head": head})),
                    )
                        .into_response(),
                )));
            }
            c.checkpoint = p;
            consumers.put(&c)?;
            Ok(Ok(c))
        })
        .await;
    match result {
        Ok(Ok(Ok(c))) => Json(with_lag(&c, head)).into_response(),
        Ok(Ok(Err(r))) => *r,
        Ok(Err(e)) => internal(e),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the acknowledgement failed",
        ),
    }
}
