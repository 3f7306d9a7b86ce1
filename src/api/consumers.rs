//! Durable consumers: a named filter and a checkpoint kept by the ledger, so a downstream service resumes exactly
//! where it acknowledged, across its restarts and the server's.

use std::sync::Arc;

use axum::extract::State;

use super::extract::{json_body, ApiPath};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::stream::{filter_of, respond, Filter};
use super::{ApiError, AppState};
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
        let _changing = self.lock()?;
        self.store().remove(name)
    }

    /// Held across every read-modify-write: this process's lock, then every process's (a shared PostgreSQL ledger).
    fn lock(&self) -> Result<(std::sync::MutexGuard<'_, ()>, Box<dyn std::any::Any>), StoreError> {
        let here = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        Ok((here, self.store().exclusive()?))
    }

    fn all(&self) -> Result<Vec<Consumer>, StoreError> {
        self.store()
            .all()?
            .iter()
            .map(|v| serde_json::from_slice(v).map_err(corrupt))
            .collect()
    }
}

fn valid_name(name: &str) -> Result<(), ApiError> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            "a consumer name is 1 to 64 letters, digits, '-', '_' or '.'",
        ))
    }
}

fn failed(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("the {what} failed"),
    )
}

fn no_consumer(name: &str) -> ApiError {
    ApiError::not_found("not_found", format!("no consumer {name}"))
}

/// A consumer as the API shows it: its filter, checkpoint and lag.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ConsumerStatus {
    pub name: String,
    pub filter: Filter,
    /// The last position acknowledged; the stream resumes after it.
    pub checkpoint: Position,
    /// How many positions the log's head is past the checkpoint.
    pub lag: u64,
}

fn with_lag(c: &Consumer, head: Position) -> ConsumerStatus {
    ConsumerStatus {
        name: c.name.clone(),
        filter: c.filter.clone(),
        checkpoint: c.checkpoint,
        lag: head.0.saturating_sub(c.checkpoint.0),
    }
}

/// `PUT /v1/consumers/{name}`: what the consumer's stream carries and where it starts.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[schemars(with = "Option<crate::domain::CustomerId>")]
    customer: Option<String>,
    #[schemars(with = "Option<crate::domain::PartnerId>")]
    partner: Option<String>,
    /// Event types; empty or absent: all.
    #[serde(default)]
    types: Vec<String>,
    /// Start after this position (default 0: everything).
    #[serde(default)]
    from: u64,
}

/// `PUT /v1/consumers/{name}`: creates a consumer (201), or confirms an identical one (200); a different filter is 409.
pub async fn create(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    valid_name(&name)?;
    let body = json_body::<CreateBody>(&headers, &body)?.unwrap_or(CreateBody {
        customer: None,
        partner: None,
        types: Vec::new(),
        from: 0,
    });
    super::forward::refuse_on_replica(&s)?;
    let types = body.types.join(",");
    let filter = filter_of(
        body.customer.as_deref(),
        body.partner.as_deref(),
        Some(&types),
    )?;
    let head = s.ledger.store().head().position;
    if body.from > head.0 {
        return Err(beyond_head("from", body.from, head));
    }
    let consumers = Arc::clone(&s.consumers);
    // On a blocking thread: the lock may wait for acks that sync, and creating syncs too.
    tokio::task::spawn_blocking(move || {
        let _changing = consumers.lock().map_err(ApiError::from)?;
        match consumers.get(&name).map_err(ApiError::from)? {
            Some(existing) if existing.filter == filter => {
                Ok((StatusCode::OK, Json(with_lag(&existing, head))).into_response())
            }
            Some(_) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "consumer_exists",
                format!("consumer {name} exists with another filter; delete it first"),
            )),
            None => {
                let c = Consumer {
                    name,
                    filter,
                    checkpoint: Position(body.from),
                };
                consumers.put(&c).map_err(ApiError::from)?;
                Ok((StatusCode::CREATED, Json(with_lag(&c, head))).into_response())
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(failed("creation")))
}

/// Runs a read of the consumers on a blocking thread: a database backend blocks while it waits for the answer.
async fn read<T: Send + 'static>(
    consumers: &Arc<Consumers>,
    f: impl FnOnce(&Consumers) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let consumers = Arc::clone(consumers);
    match tokio::task::spawn_blocking(move || f(&consumers)).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(_) => Err(failed("reading")),
    }
}

/// `GET /v1/consumers`: every consumer with its checkpoint and lag.
pub async fn list(State(s): State<AppState>) -> Result<Response, ApiError> {
    let head = s.ledger.store().head().position;
    let all = read(&s.consumers, |c| c.all()).await?;
    Ok(Json(all.iter().map(|c| with_lag(c, head)).collect::<Vec<_>>()).into_response())
}

/// `GET /v1/consumers/{name}`.
pub async fn show(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let n = name.clone();
    match read(&s.consumers, move |c| c.get(&n)).await? {
        Some(c) => Ok(Json(with_lag(&c, s.ledger.store().head().position)).into_response()),
        None => Err(no_consumer(&name)),
    }
}

/// `DELETE /v1/consumers/{name}`.
pub async fn remove(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    super::forward::refuse_on_replica(&s)?;
    let consumers = Arc::clone(&s.consumers);
    let n = name.clone();
    match tokio::task::spawn_blocking(move || consumers.delete(&n)).await {
        Ok(Ok(true)) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(Ok(false)) => Err(no_consumer(&name)),
        Ok(Err(e)) => Err(ApiError::from(e)),
        Err(_) => Err(failed("deletion")),
    }
}

/// A resume point or starting point after the log's head: 400, naming the head (the positions in between do not
/// exist yet, and accepting it would skip them once they do).
pub(super) fn beyond_head(what: &str, asked: u64, head: Position) -> ApiError {
    ApiError::bad_request(
        "beyond_head",
        format!("{what} {asked} is after the log's head {head}; resume at or before the head"),
    )
    .with("head", head)
}

/// `GET /v1/consumers/{name}/events`: the consumer's filter, from its checkpoint (or a later `Last-Event-ID`).
pub async fn events(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<crate::access::Principal>,
    axum::Extension(credential): axum::Extension<super::auth::Credential>,
    ApiPath(name): ApiPath<String>,
    super::extract::ApiQuery(bounds): super::extract::ApiQuery<BoundParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let n = name.clone();
    let cloudevents = super::stream::cloudevents_of(bounds.format.as_deref(), &s)?;
    let Some(mut c) = read(&s.consumers, move |c| c.get(&n)).await? else {
        return Err(no_consumer(&name));
    };
    c.filter.cloudevents = cloudevents;
    let after = super::stream::resume_point(&s, &headers, Some(c.checkpoint.0))
        .await?
        .max(c.checkpoint);
    let bound = super::stream::bound_of(after, bounds.to, bounds.limit)?;
    // The operations gate let only principals who read everything (operators, system, auditors) this far.
    respond(&s, &headers, c.filter, (&who, credential), after, bound)
}

/// A consumer stream's optional end (see `/v1/events`).
#[derive(Deserialize)]
pub struct BoundParams {
    to: Option<u64>,
    limit: Option<u64>,
    format: Option<String>,
}

/// `POST /v1/consumers/{name}/ack`: the position to acknowledge.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    position: u64,
}

/// `POST /v1/consumers/{name}/ack {"position": n}`: moves the checkpoint forward (never backwards: 409).
pub async fn ack(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Some(body) = json_body::<AckBody>(&headers, &body)? else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "send the position to acknowledge: {\"position\": n}",
        ));
    };
    super::forward::refuse_on_replica(&s)?;
    let consumers = Arc::clone(&s.consumers);
    let mut head = s.ledger.store().head().position;
    if body.position > head.0 && s.ledger.lease_period().is_some() {
        // Several processes share the ledger: a position read on another one may not have reached this one yet.
        let deadline = std::time::Instant::now() + super::forward::MIN_POSITION_WAIT;
        while s.ledger.store().head().position.0 < body.position
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        head = s.ledger.store().head().position;
    }
    let c = tokio::task::spawn_blocking(move || -> Result<Consumer, ApiError> {
        let _changing = consumers.lock().map_err(ApiError::from)?;
        let Some(mut c) = consumers.get(&name).map_err(ApiError::from)? else {
            return Err(no_consumer(&name));
        };
        let p = Position(body.position);
        if p < c.checkpoint {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "ack_backwards",
                format!(
                    "consumer {name} is at {}; a checkpoint never moves back to {p}",
                    c.checkpoint
                ),
            ));
        }
        if p > head {
            return Err(ApiError::bad_request(
                "ack_beyond_head",
                format!("position {p} is after the log's head {head}"),
            )
            .with("head", head));
        }
        c.checkpoint = p;
        consumers.put(&c).map_err(ApiError::from)?;
        Ok(c)
    })
    .await
    .unwrap_or_else(|_| Err(failed("acknowledgement")))?;
    Ok(Json(with_lag(&c, head)).into_response())
}
