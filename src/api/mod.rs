//! The HTTP service: commands, views, event streams and durable consumers over the library (docs/api.md).
//!
//! The router is a plain function of [`AppState`]; [`serve`] takes an injected listener and shutdown future, so tests
//! run the real server on `127.0.0.1:0`. Streams never hold the writer up: they follow the head through a `watch`
//! channel and read the log themselves, so a slow or stalled client only delays itself.

pub mod auth;
mod backup;
mod consumers;
mod openapi;
mod stream;

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::access::Principal;
use crate::domain::command::MAX_COMMAND_BYTES;
use crate::domain::{parse_line_as, CustomerId, EntityRef, PartnerId, SubscriptionId};
use crate::ledger::{Ledger, Outcome};
use crate::query::{self, AsOfSpec};

pub use consumers::Consumers;

/// The OpenAPI description served at `/v1/openapi.json`.
pub fn openapi_document() -> Value {
    openapi::document()
}

/// Settings of a running server.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// How often an idle or filtered stream sends a heartbeat with the scanned position.
    pub heartbeat: Duration,
    /// How often the scheduler issues `AdvanceClock` (also once at start-up).
    pub clock_interval: Duration,
    /// The largest request body accepted (larger: 413).
    pub body_limit: usize,
    /// How long a client may take to send a request's headers; a slower one is disconnected (slow-loris). An idle
    /// keep-alive connection is closed after this long too.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body (larger: 408, nothing of it submitted).
    pub body_timeout: Duration,
    /// How long shutdown waits for requests in flight (commands are answered, streams end) before it closes the
    /// connections that remain, such as a stream whose client stopped reading.
    pub shutdown_grace: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            clock_interval: Duration::from_secs(60),
            body_limit: 16 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Counters of the HTTP layer.
#[derive(Default)]
pub struct ApiMetrics {
    /// Streams currently connected.
    pub streams: AtomicI64,
    /// Command lines answered `invalid`.
    pub invalid: AtomicU64,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub ledger: Arc<Ledger>,
    pub consumers: Arc<Consumers>,
    pub metrics: Arc<ApiMetrics>,
    pub config: ServeConfig,
    /// Turns true when the server shuts down, so open streams end and graceful shutdown can finish.
    pub stopping: watch::Receiver<bool>,
    /// How callers are authenticated (local mode unless [`AppState::with_auth`]).
    pub auth: Arc<auth::Auth>,
}

impl AppState {
    /// Builds the state for a ledger; `stopping` ends the streams when it turns true.
    pub fn new(
        ledger: Arc<Ledger>,
        config: ServeConfig,
        stopping: watch::Receiver<bool>,
    ) -> Result<AppState, crate::store::StoreError> {
        Ok(AppState {
            consumers: Arc::new(Consumers::open(Arc::clone(&ledger))),
            ledger,
            metrics: Arc::new(ApiMetrics::default()),
            config,
            stopping,
            auth: Arc::new(auth::Auth::local()),
        })
    }

    /// The same state, authenticating callers with `auth`.
    pub fn with_auth(mut self, auth: Arc<auth::Auth>) -> AppState {
        self.auth = auth;
        self
    }
}

/// Middleware: reads the whole body within [`ServeConfig::body_timeout`] and [`ServeConfig::body_limit`] before any
/// handler runs, so a slow or oversized body is refused (408, 413) with nothing of it submitted, and holds at most the
/// limit in memory.
async fn read_body_in_time(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let limit = s.config.body_limit;
    match tokio::time::timeout(s.config.body_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
        Ok(Err(e))
            if std::error::Error::source(&e)
                .is_some_and(|c| c.is::<http_body_util::LengthLimitError>()) =>
        {
            error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than this server's limit of {limit} bytes; split it into several requests"),
        )
        }
        Ok(Err(e)) => error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the body could not be read: {e}"),
        ),
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the body did not arrive within {} ms; nothing of it was submitted",
                s.config.body_timeout.as_millis()
            ),
        ),
    }
}

/// Route gate of the operations routes (metrics, consumers): operators, `system` and auditors read them; only
/// operators and `system` change consumers. Everyone else gets 403 (logged and counted).
async fn operations_gate(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(p) = req.extensions().get::<Principal>().cloned() else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no principal",
        );
    };
    let reads = req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD;
    let allowed = if reads {
        p.reads_everything()
    } else {
        p.is_operator() || p.kind == crate::access::Kind::Role(crate::domain::Role::System)
    };
    if allowed {
        return next.run(req).await;
    }
    let route = req.uri().path().to_string();
    s.auth.deny(
        &p.label(),
        &route,
        auth::forbidden(
            "not_allowed",
            format!(
                "{} may not operate the ledger (metrics, consumers, backups)",
                p.label()
            ),
        ),
    )
}

/// The routes (docs/api.md).
pub fn router(state: AppState) -> Router {
    use axum::middleware::from_fn_with_state;
    let limit = state.config.body_limit;
    let operations_routes = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/consumers", get(consumers::list))
        .route(
            "/v1/consumers/{name}",
            put(consumers::create)
                .get(consumers::show)
                .delete(consumers::remove),
        )
        .route("/v1/consumers/{name}/events", get(consumers::events))
        .route("/v1/consumers/{name}/ack", post(consumers::ack))
        .route("/v1/backup", get(backup::backup))
        .route("/v1/checkpoint", get(backup::checkpoint))
        .route("/v1/verify", get(backup::verify))
        .route_layer(from_fn_with_state(state.clone(), operations_gate));
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(openapi::document()) }),
        )
        .route("/v1/commands", post(post_commands))
        .route("/v1/customers/{id}", get(get_customer))
        .route("/v1/customers/{id}/history", get(get_customer_history))
        .route("/v1/partners/{id}", get(get_partner))
        .route("/v1/subscriptions/{id}", get(get_subscription))
        .route("/v1/events", get(stream::events))
        .merge(operations_routes)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_body_in_time,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes: then it stops accepting, ends the streams, lets in-flight
/// requests finish (their commands are acknowledged) for up to [`ServeConfig::shutdown_grace`], and returns; the
/// connections still open then are closed. Close the ledger afterwards to flush.
///
/// Connections are served by hyper directly (not `axum::serve`) so that a client slower than
/// [`ServeConfig::header_timeout`] to send its headers is disconnected, and a failed `accept` (out of file
/// descriptors) is logged and retried instead of ending the server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    stop: watch::Sender<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let scheduler = tokio::spawn(scheduler(
        Arc::clone(&state.ledger),
        state.config.clock_interval,
        state.stopping.clone(),
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(state.config.header_timeout);
    let grace = state.config.shutdown_grace;
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let conn = graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
                connections.spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended");
                    }
                });
            }
            // Finished connections are reaped as they end, so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop.send(true);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            grace_ms = grace.as_millis(),
            "connections still open after the shutdown grace period are closed"
        );
    }
    connections.abort_all();
    scheduler.abort();
    Ok(())
}

/// Issues `AdvanceClock` at start-up and then every `interval`, so time-driven transitions are recorded on time (R36).
/// After downtime the first one catches up in one command.
async fn scheduler(ledger: Arc<Ledger>, interval: Duration, mut stopping: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.changed() => return,
        }
        if let Some(cmd) = clock_advance() {
            let outcome = ledger.submit_async(cmd).await.outcome().await;
            tracing::debug!(outcome = %outcome.to_json(), "clock advanced");
        }
    }
}

/// The scheduler's `AdvanceClock` to the current time (actor `system`, user `scheduler`).
pub fn clock_advance() -> Option<crate::domain::Submitted> {
    use crate::domain::command::{body, Actor, Body, Role};
    let tenant = "00000000-0000-4000-8000-00000000005c".parse().ok()?;
    Some(crate::domain::Submitted {
        command_id: None,
        at: None,
        actor: Actor {
            tenant,
            user: "scheduler".into(),
            role: Role::System,
        },
        correlation_id: None,
        body: Body::AdvanceClock(body::AdvanceClock {
            to: crate::domain::Timestamp::from_datetime(chrono::Utc::now()),
        }),
    })
}

/// A request that cannot be served, ready to send (boxed: a `Response` is large).
pub(crate) type Rejection = Box<Response>;

/// A JSON error body with a status, as a [`Rejection`].
pub(crate) fn reject(status: StatusCode, code: &str, message: impl Into<String>) -> Rejection {
    Box::new(error(status, code, message))
}

/// A JSON error body with a status.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

/// `GET /`: what this server is and where to go from here (the routes and the documentation in the repository).
async fn index(State(s): State<AppState>) -> Response {
    Json(json!({
        "name": "partner-ledger",
        "version": env!("CARGO_PKG_VERSION"),
        "head": s.ledger.store().head().position,
        "openapi": "/v1/openapi.json",
        "routes": {
            "commands": "POST /v1/commands (application/json: one command; application/x-ndjson: many)",
            "customer": "GET /v1/customers/{id}[?as_of=POSITION|TIME]",
            "customer_history": "GET /v1/customers/{id}/history[?include_refusals=true]",
            "partner": "GET /v1/partners/{id}[?as_of=…]",
            "subscription": "GET /v1/subscriptions/{id}[?as_of=…]",
            "events": "GET /v1/events[?from=N&customer=ID&partner=ID&types=A,B] (SSE, or NDJSON with Accept: application/x-ndjson)",
            "consumers": "GET|PUT|DELETE /v1/consumers/{name}, GET /v1/consumers/{name}/events, POST /v1/consumers/{name}/ack",
            "backup": "GET /v1/backup, GET /v1/checkpoint, GET /v1/verify",
            "health": "GET /healthz, GET /metrics",
        },
        "docs": ["README.md", "docs/api.md", "docs/commands.md", "docs/events.md", "docs/errors.md",
            "docs/security.md", "docs/audit.md", "docs/recovery.md"],
    }))
    .into_response()
}

/// `GET /healthz`: `200 {"status": "ok", …}`, or `503 {"status": "damaged", …}` once the background verification
/// found damage (writes are then refused; docs/recovery.md).
async fn healthz(State(s): State<AppState>) -> Response {
    let integrity = s.ledger.integrity();
    let damaged = integrity.status == crate::ledger::IntegrityStatus::Damaged;
    let body = Json(json!({"status": if damaged { "damaged" } else { "ok" },
        "head": s.ledger.store().head().position, "integrity": integrity}));
    if damaged {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    } else {
        body.into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let t = metrics_text(&s);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], t).into_response()
}

fn metrics_text(s: &AppState) -> String {
    use std::fmt::Write;
    let st = s.ledger.stats();
    let h = s.ledger.histograms();
    let mut t = String::new();
    let _ = writeln!(t, "# HELP partner_ledger_commands_total Commands answered, by outcome.\n# TYPE partner_ledger_commands_total counter");
    for (outcome, n) in [
        ("committed", st.committed),
        ("duplicate", st.duplicates),
        ("refused", st.refused),
        ("unknown", st.unknown),
        ("invalid", s.metrics.invalid.load(Ordering::Relaxed)),
    ] {
        let _ = writeln!(
            t,
            "partner_ledger_commands_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    let _ = writeln!(t, "# HELP partner_ledger_events_appended_total Events appended.\n# TYPE partner_ledger_events_appended_total counter\npartner_ledger_events_appended_total {}", st.events);
    let _ = writeln!(t, "# HELP partner_ledger_fdatasyncs_total fdatasync calls, one per durable batch.\n# TYPE partner_ledger_fdatasyncs_total counter\npartner_ledger_fdatasyncs_total {}", st.fdatasyncs);
    let _ = writeln!(t, "# HELP partner_ledger_commit_latency_seconds Time to decide, write, flush and sync a batch.\n# TYPE partner_ledger_commit_latency_seconds histogram");
    for (i, b) in crate::ledger::LATENCY_BUCKETS.iter().enumerate() {
        let _ = writeln!(
            t,
            "partner_ledger_commit_latency_seconds_bucket{{le=\"{b}\"}} {}",
            h.commit_latency_buckets[i]
        );
    }
    let total = h.commit_latency_buckets.last().copied().unwrap_or(0);
    let _ = writeln!(t, "partner_ledger_commit_latency_seconds_bucket{{le=\"+Inf\"}} {total}\npartner_ledger_commit_latency_seconds_sum {}\npartner_ledger_commit_latency_seconds_count {total}", h.commit_latency_seconds_sum);
    let _ = writeln!(t, "# HELP partner_ledger_commit_batch_size Commands per durable batch.\n# TYPE partner_ledger_commit_batch_size histogram");
    for (i, b) in crate::ledger::BATCH_BUCKETS.iter().enumerate() {
        let _ = writeln!(
            t,
            "partner_ledger_commit_batch_size_bucket{{le=\"{b}\"}} {}",
            h.batch_size_buckets[i]
        );
    }
    let batches = h.batch_size_buckets.last().copied().unwrap_or(0);
    let _ = writeln!(t, "partner_ledger_commit_batch_size_bucket{{le=\"+Inf\"}} {batches}\npartner_ledger_commit_batch_size_sum {}\npartner_ledger_commit_batch_size_count {batches}", st.committed);
    let _ = writeln!(t, "# HELP partner_ledger_stream_consumers Event streams connected.\n# TYPE partner_ledger_stream_consumers gauge\npartner_ledger_stream_consumers {}", s.metrics.streams.load(Ordering::Relaxed));
    let _ = writeln!(t, "# HELP partner_ledger_head_position The last position of the log.\n# TYPE partner_ledger_head_position gauge\npartner_ledger_head_position {}", s.ledger.store().head().position);
    let _ = writeln!(t, "# HELP partner_ledger_denied_requests_total Requests refused by authentication (401) or authorisation (403).\n# TYPE partner_ledger_denied_requests_total counter");
    for ((status, reason), n) in s.auth.denied_counts() {
        let _ = writeln!(
            t,
            "partner_ledger_denied_requests_total{{status=\"{status}\",reason=\"{reason}\"}} {n}"
        );
    }
    t
}

fn outcome_response(o: &Outcome) -> Response {
    let status = match o {
        Outcome::Committed { .. } => StatusCode::OK,
        Outcome::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Outcome::Unknown { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Outcome::Invalid { .. } => StatusCode::BAD_REQUEST,
    };
    (status, Json(o.to_json())).into_response()
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// A command line as read, with its line number: a command, or why it is not one.
enum Parsed {
    Invalid(usize, String),
    Command(usize, crate::domain::Submitted),
}

/// Reads the lines of an NDJSON body (numbered from 1; blank and `#` lines skipped), lazily, so that a caller that
/// needs no authorisation can submit each command as soon as it is read.
fn parse_ndjson<'a>(
    body: &'a [u8],
    actor: Option<&'a crate::domain::Actor>,
) -> impl Iterator<Item = Parsed> + 'a {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter_map(move |(i, line)| {
            let n = i + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > MAX_COMMAND_BYTES {
                return Some(Parsed::Invalid(
                    n,
                    format!(
                        "the command is {} bytes; at most {MAX_COMMAND_BYTES} bytes are accepted (R38)",
                        line.len()
                    ),
                ));
            }
            let Ok(text) = std::str::from_utf8(line) else {
                return Some(Parsed::Invalid(n, "the line is not valid UTF-8".into()));
            };
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                return None;
            }
            Some(match parse_line_as(text, actor) {
                Ok(cmd) => Parsed::Command(n, cmd),
                Err(e) => Parsed::Invalid(n, e.0),
            })
        })
}

/// Authorises every command of a request before any is submitted (docs/security.md): one denied line denies the
/// whole request, so nothing of it is appended.
async fn authorise(
    s: &AppState,
    who: &Principal,
    commands: &[(usize, &crate::domain::Submitted)],
) -> Result<(), Rejection> {
    if commands.is_empty() || who.kind == crate::access::Kind::Local {
        return Ok(());
    }
    if !who.reads_everything() {
        // Judged against every command answered before this one arrived (an accepted request, say).
        let ledger = Arc::clone(&s.ledger);
        let _ = tokio::task::spawn_blocking(move || ledger.live_caught_up()).await;
    }
    let denied = s.ledger.live().read(|st, _| {
        commands
            .iter()
            .find_map(|(n, c)| who.may_submit(st, c).err().map(|e| (*n, e)))
    });
    match denied {
        None => Ok(()),
        Some((n, denial)) => {
            let message = if commands.len() > 1 || n > 1 {
                format!(
                    "line {n}: {}; nothing of this request was submitted",
                    denial.message
                )
            } else {
                denial.message
            };
            Err(Box::new(s.auth.deny(
                &who.label(),
                "/v1/commands",
                auth::forbidden(denial.reason, message),
            )))
        }
    }
}

/// `POST /v1/commands`: one JSON command, or NDJSON (one outcome line per input line).
async fn post_commands(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if who.kind == crate::access::Kind::Auditor {
        return s.auth.deny(
            &who.label(),
            "/v1/commands",
            auth::forbidden("read_only", "auditors read; they issue no commands"),
        );
    }
    let actor = who.actor();
    match media_type(&headers).as_str() {
        "application/json" => {
            let Ok(text) = std::str::from_utf8(&body) else {
                s.metrics.invalid.fetch_add(1, Ordering::Relaxed);
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "the body is not valid UTF-8",
                );
            };
            match parse_line_as(text.trim(), actor.as_ref()) {
                Err(e) => {
                    s.metrics.invalid.fetch_add(1, Ordering::Relaxed);
                    outcome_response(&Outcome::Invalid {
                        line: 1,
                        message: e.0,
                    })
                }
                Ok(cmd) => {
                    if let Err(r) = authorise(&s, &who, &[(1, &cmd)]).await {
                        return *r;
                    }
                    outcome_response(
                        &s.ledger
                            .submit_async_as(cmd, who.scope())
                            .await
                            .outcome()
                            .await,
                    )
                }
            }
        }
        "application/x-ndjson" => {
            enum Pending {
                Invalid(Outcome),
                Ticket(crate::ledger::Ticket),
            }
            let scope = who.scope();
            async fn submit(s: &AppState, p: Parsed, scope: crate::access::Scope) -> Pending {
                match p {
                    Parsed::Invalid(line, message) => Pending::Invalid(Outcome::Invalid {
                        line: line as u64,
                        message,
                    }),
                    Parsed::Command(_, cmd) => {
                        Pending::Ticket(s.ledger.submit_async_as(cmd, scope).await)
                    }
                }
            }
            let lines = parse_ndjson(&body, actor.as_ref());
            let mut pending = Vec::new();
            if who.kind == crate::access::Kind::Local {
                // Nothing to authorise: each command goes to the writer as soon as it is read.
                for p in lines {
                    pending.push(submit(&s, p, scope).await);
                }
            } else {
                // Every line is authorised before any is submitted.
                let parsed: Vec<Parsed> = lines.collect();
                let commands: Vec<(usize, &crate::domain::Submitted)> = parsed
                    .iter()
                    .filter_map(|p| match p {
                        Parsed::Command(n, c) => Some((*n, c)),
                        Parsed::Invalid(..) => None,
                    })
                    .collect();
                if let Err(r) = authorise(&s, &who, &commands).await {
                    return *r;
                }
                for p in parsed {
                    pending.push(submit(&s, p, scope).await);
                }
            }
            let mut out = Vec::with_capacity(pending.len() * 96);
            for p in pending {
                let v = match p {
                    Pending::Invalid(invalid) => {
                        s.metrics.invalid.fetch_add(1, Ordering::Relaxed);
                        invalid.to_json()
                    }
                    Pending::Ticket(t) => t.outcome().await.to_json(),
                };
                let _ = serde_json::to_writer(&mut out, &v);
                out.push(b'\n');
            }
            ([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response()
        }
        other => error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "send application/json (one command) or application/x-ndjson (many), not `{other}`"
            ),
        ),
    }
}

#[derive(Deserialize)]
struct AsOfParam {
    as_of: Option<String>,
}

/// Reads `as_of`; a position after the head is 400 `as_of_beyond_head`, with the head in the body.
fn parse_as_of(p: &AsOfParam, ledger: &Ledger) -> Result<Option<AsOfSpec>, Rejection> {
    let spec = match &p.as_of {
        None => None,
        Some(s) => Some(
            s.parse()
                .map_err(|e: String| reject(StatusCode::BAD_REQUEST, "invalid_as_of", e))?,
        ),
    };
    if let Err(message) = query::beyond_head(ledger.store(), spec) {
        return Err(Box::new(
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "as_of_beyond_head", "message": message,
                    "head": ledger.store().head().position})),
            )
                .into_response(),
        ));
    }
    Ok(spec)
}

fn parse_id<T: std::str::FromStr<Err = crate::domain::ParseError>>(
    kind: &str,
    s: &str,
) -> Result<T, Rejection> {
    s.parse().map_err(|e| {
        reject(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("{kind} id: {e}"),
        )
    })
}

/// Runs a read on a blocking thread and maps "not there" to 404.
async fn view<V: serde::Serialize + Send + 'static>(
    s: &AppState,
    what: String,
    read: impl FnOnce(&Ledger) -> Result<Option<V>, crate::store::StoreError> + Send + 'static,
) -> Response {
    let ledger = Arc::clone(&s.ledger);
    match tokio::task::spawn_blocking(move || read(&ledger)).await {
        Ok(Ok(Some(v))) => Json(v).into_response(),
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} is not in this ledger"),
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "read failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the read failed; see the server log",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "read task failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the read failed; see the server log",
            )
        }
    }
}

async fn get_customer(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<AsOfParam>,
) -> Response {
    let (id, as_of) = match (
        parse_id::<CustomerId>("customer", &id),
        parse_as_of(&q, &s.ledger),
    ) {
        (Ok(i), Ok(a)) => (i, a),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    let scope = who.scope();
    view(&s, format!("customer {id}"), move |st| {
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

async fn get_partner(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<AsOfParam>,
) -> Response {
    let (id, as_of) = match (
        parse_id::<PartnerId>("partner", &id),
        parse_as_of(&q, &s.ledger),
    ) {
        (Ok(i), Ok(a)) => (i, a),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    let scope = who.scope();
    view(&s, format!("partner {id}"), move |st| {
        if !scope.sees_partner(id) {
            return Ok(None);
        }
        Ok(query::partner_in(st, id, as_of)?.map(|a| a.view))
    })
    .await
}

async fn get_subscription(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<AsOfParam>,
) -> Response {
    let (id, as_of) = match (
        parse_id::<SubscriptionId>("subscription", &id),
        parse_as_of(&q, &s.ledger),
    ) {
        (Ok(i), Ok(a)) => (i, a),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    let scope = who.scope();
    view(&s, format!("subscription {id}"), move |st| {
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
struct HistoryParams {
    #[serde(default)]
    include_refusals: bool,
}

async fn get_customer_history(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<HistoryParams>,
) -> Response {
    let id = match parse_id::<CustomerId>("customer", &id) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let scope = who.scope();
    view(&s, format!("customer {id}"), move |ledger| {
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
