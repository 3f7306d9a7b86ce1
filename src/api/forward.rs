//! Many processes, one ledger (PostgreSQL): commands sent to a process that does not write are forwarded to the one
//! that does, and a read can ask to reflect a position another process answered (read-your-writes).
//!
//! - **Forwarding.** The writer advertises its address in the lease row (`serve --advertise`). A follower sends the
//!   request on unchanged (body, `Content-Type`, `Accept`, `Authorization`), marked `Ledger-Forwarded-By`, and relays
//!   the answer. The writer authenticates the caller's own credentials, exactly as if it had been called directly: a
//!   follower gains no right of its own. A forwarded request that reaches a process which is no longer the writer is
//!   answered 503 `not_the_writer` and never forwarded again; the follower then asks the lease again and retries,
//!   for as long as a lease takes to expire and a few seconds more. Nothing is sent twice unless the first attempt
//!   certainly did not arrive (the connection was refused); a request whose answer was lost is answered 503
//!   `writer_unavailable` (retry with the same `command_id`).
//! - **Read-your-writes.** Every answer to `POST /v1/commands` carries `Ledger-Position`: the log's head when it
//!   was answered, which covers everything the answer reports. A request carrying `Ledger-Min-Position: N` waits
//!   until this process reflects position N, for up to [`MIN_POSITION_WAIT`], or is answered 503
//!   `position_not_reached` with `Retry-After`.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::domain::Position;
use crate::ledger::Role;

/// The position a command's answer reached.
pub const POSITION: HeaderName = HeaderName::from_static("ledger-position");
/// The position a read must reflect.
pub const MIN_POSITION: HeaderName = HeaderName::from_static("ledger-min-position");
/// Set on a forwarded request: the name of the process that forwarded it.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("ledger-forwarded-by");
/// How long a read waits for `Ledger-Min-Position`.
pub const MIN_POSITION_WAIT: Duration = Duration::from_secs(5);
/// How long a forwarded request may take to be answered (a large NDJSON request takes a while).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

/// Adds `Ledger-Position` (the head now) to a command's answer.
pub(super) fn with_position(s: &AppState, mut r: Response) -> Response {
    if !r.headers().contains_key(POSITION) {
        let head = s.ledger.store().head().position;
        if let Ok(v) = HeaderValue::from_str(&head.0.to_string()) {
            r.headers_mut().insert(POSITION, v);
        }
    }
    r
}

/// Middleware: a request with `Ledger-Min-Position: N` waits until this process reflects position N.
pub(super) async fn min_position(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    let Some(value) = req.headers().get(MIN_POSITION) else {
        return Ok(next.run(req).await);
    };
    let wanted = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_header",
                "Ledger-Min-Position is a position: a whole number, as a command's answer gave it in Ledger-Position",
            )
        })?;
    // A position the log has not reached is refused at once (400 `beyond_head`) where nothing but the log's own
    // growth could bring it, as for a stream's starting point; a follower first waits for the writer's head.
    wait_for_point(&s, req.headers(), "Ledger-Min-Position", Position(wanted)).await?;
    // Polled rather than waited for on a blocking thread, so that many waiting reads hold no thread.
    let deadline = Instant::now() + MIN_POSITION_WAIT;
    let reached = loop {
        let now = s.ledger.live().position();
        if now.0 >= wanted || Instant::now() >= deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    if reached.0 < wanted {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "position_not_reached",
            format!(
                "this process reflects position {reached}, not yet {wanted}, after waiting {} s; retry, here or on the process that answered",
                MIN_POSITION_WAIT.as_secs()
            ),
        )
        .with("position", reached.0)
        .header(header::RETRY_AFTER, "1"));
    }
    Ok(next.run(req).await)
}

fn client() -> &'static hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
> {
    static CLIENT: std::sync::OnceLock<
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            http_body_util::Full<Bytes>,
        >,
    > = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector)
    })
}

/// A 503 to retry in a second: the forwarding errors' one shape.
fn retry_later(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message).header(header::RETRY_AFTER, "1")
}

fn not_the_writer() -> ApiError {
    retry_later(
        "not_the_writer",
        "this process no longer writes the ledger; the request was not submitted: send it again",
    )
}

/// What a command request should become on this process: `None` to submit it here (this process writes, or the
/// ledger is not shared); otherwise the writer's answer, relayed.
pub(super) async fn forward(
    s: &AppState,
    headers: &HeaderMap,
    path: &str,
    body: &Bytes,
    actor: Option<&crate::domain::Actor>,
) -> Option<Result<Response, ApiError>> {
    let wait = s.ledger.lease_period()? + Duration::from_secs(3);
    if matches!(s.ledger.role(), Role::Writer) {
        return None;
    }
    // Every command gets its `command_id` here, so that an answer lost on the way can name what to retry.
    let (body, ids) = &with_command_ids(headers, body, actor);
    let deadline = Instant::now() + wait;
    loop {
        let writer = match s.ledger.role() {
            Role::Writer => return None,
            // A forwarded request is never forwarded again: the sender asks the lease again.
            Role::Follower { .. } if headers.contains_key(FORWARDED_BY) => {
                return Some(Ok(refuse_not_writer()))
            }
            Role::Follower { writer } => writer.filter(|w| !w.address.is_empty()),
        };
        if let Some(w) = writer {
            if headers.contains_key(header::AUTHORIZATION)
                && !s.cleartext_forwarding
                && !loopback(&w.address)
            {
                // The caller's token would cross the network in cleartext: only where the operator said so.
                return Some(Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "insecure_forward",
                    format!(
                        "the ledger's writer is at {}, over plain HTTP beyond this host; forwarding a bearer token there needs --insecure-http on a trusted network (docs/operations.md). Send the command to the writer",
                        w.address
                    ),
                )));
            }
            match send(headers, &w.address, path, body).await {
                Ok(r)
                    if r.status() == StatusCode::SERVICE_UNAVAILABLE
                        && r.headers().contains_key(NOT_WRITER) => {}
                Ok(r) => return Some(Ok(r)),
                Err(Sent::NotSent(_)) if Instant::now() < deadline => {}
                Err(Sent::NotSent(why)) => {
                    return Some(Err(retry_later(
                        "no_writer",
                        format!(
                            "the ledger's writer at {} could not be reached for {} s ({why}); nothing was submitted: retry",
                            w.address,
                            wait.as_secs()
                        ),
                    )))
                }
                Err(Sent::Unknown(why)) => {
                    return Some(Err(retry_later(
                        "writer_unavailable",
                        format!(
                            "the ledger's writer at {} did not answer ({why}); the commands may or may not be committed: retry each with its command_id",
                            w.address
                        ),
                    )
                    .with("command_ids", ids)))
                }
            }
        }
        if Instant::now() >= deadline {
            return Some(Err(retry_later(
                "no_writer",
                format!(
                    "no process has written the ledger for {} s (the writer's lease is being taken over); nothing was submitted: retry",
                    wait.as_secs()
                ),
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The request's body with a `command_id` given to every command line that parses and has none (inserted as the
/// object's first member; nothing else of the line changes), and the ids of all its commands, in order.
fn with_command_ids(
    headers: &HeaderMap,
    body: &Bytes,
    actor: Option<&crate::domain::Actor>,
) -> (Bytes, Vec<String>) {
    let ndjson = super::extract::media_type(headers) == "application/x-ndjson";
    let Ok(text) = std::str::from_utf8(body) else {
        return (body.clone(), Vec::new());
    };
    let mut out = String::with_capacity(text.len() + 64);
    let mut ids = Vec::new();
    let lines: Vec<&str> = if ndjson {
        text.split_inclusive('\n').collect()
    } else {
        vec![text]
    };
    for line in lines {
        let command = line.trim();
        match crate::domain::parse_line_as(command, actor) {
            Ok(c) if !command.is_empty() && !command.starts_with('#') => {
                if let Some(given) = c.command_id {
                    out.push_str(line);
                    ids.push(given.to_string());
                } else {
                    let id = uuid::Uuid::new_v4().to_string();
                    let at = line.find('{').map_or(0, |i| i + 1);
                    out.push_str(&line[..at]);
                    out.push_str(&format!("\"command_id\":\"{id}\","));
                    out.push_str(&line[at..]);
                    ids.push(id);
                }
            }
            _ => out.push_str(line),
        }
    }
    (Bytes::from(out), ids)
}

/// Whether an advertised `http://host:port` address is on this host's loopback.
fn loopback(address: &str) -> bool {
    let host = address
        .parse::<axum::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_string()));
    match host.as_deref() {
        Some("localhost") => true,
        Some(h) => h
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Marks a `not_the_writer` answer, so a forwarding process knows to ask the lease again.
const NOT_WRITER: HeaderName = HeaderName::from_static("ledger-not-writer");

/// The `not_the_writer` answer with its mark.
pub(super) fn refuse_not_writer() -> Response {
    let mut r = not_the_writer().into_response();
    r.headers_mut()
        .insert(NOT_WRITER, HeaderValue::from_static("1"));
    r
}

enum Sent {
    /// Certainly not received (no connection).
    NotSent(String),
    /// Sent, answer lost.
    Unknown(String),
}

async fn send(
    headers: &HeaderMap,
    address: &str,
    path: &str,
    body: &Bytes,
) -> Result<Response, Sent> {
    let uri: axum::http::Uri = format!("{}{path}", address.trim_end_matches('/'))
        .parse()
        .map_err(|e| {
            Sent::NotSent(format!(
                "the advertised address `{address}` is not a URL: {e}"
            ))
        })?;
    let mut req = axum::http::Request::post(uri);
    for name in [header::CONTENT_TYPE, header::ACCEPT, header::AUTHORIZATION] {
        if let Some(v) = headers.get(&name) {
            req = req.header(name, v);
        }
    }
    // The request's id (the client's or the one this process gave it) and its W3C trace context travel with it, so
    // the writer's log lines for it name the same ids.
    for name in ["x-request-id", "traceparent", "tracestate"] {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v);
        }
    }
    let name = HeaderValue::from_str(&crate::store::postgres::process_name())
        .unwrap_or(HeaderValue::from_static("partner-ledger"));
    let req = req
        .header(FORWARDED_BY, name)
        .body(http_body_util::Full::new(body.clone()))
        .map_err(|e| Sent::NotSent(e.to_string()))?;
    let answer = tokio::time::timeout(FORWARD_TIMEOUT, async {
        let r = client().request(req).await.map_err(|e| {
            if e.is_connect() {
                Sent::NotSent(e.to_string())
            } else {
                Sent::Unknown(e.to_string())
            }
        })?;
        let (parts, body) = r.into_parts();
        let bytes = http_body_util::BodyExt::collect(body)
            .await
            .map_err(|e| Sent::Unknown(e.to_string()))?
            .to_bytes();
        Ok::<_, Sent>(Response::from_parts(parts, Body::from(bytes)))
    })
    .await
    .map_err(|_| Sent::Unknown(format!("no answer within {} s", FORWARD_TIMEOUT.as_secs())))??;
    Ok(answer)
}

/// Waits until this process has `point` (a resume point or a starting point): at once on the writer or on sled,
/// where a point after the head is refused (400 `beyond_head`). A process that follows the writer (or reads a
/// replica) may simply not have it yet: it waits up to [`MIN_POSITION_WAIT`], then asks the writer for its head.
/// A point the writer has not reached either is `beyond_head`; otherwise (or when the writer cannot be asked) the
/// answer is 503 `position_not_reached`, to retry.
pub(super) async fn wait_for_point(
    s: &AppState,
    headers: &HeaderMap,
    what: &str,
    point: Position,
) -> Result<(), ApiError> {
    let head = || s.ledger.store().head().position;
    if point <= head() {
        return Ok(());
    }
    let writer = match s.ledger.role() {
        Role::Follower { writer } if s.ledger.lease_period().is_some() => writer,
        _ => return Err(super::consumers::beyond_head(what, point.0, head())),
    };
    let deadline = Instant::now() + MIN_POSITION_WAIT;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if point <= head() {
            return Ok(());
        }
    }
    let theirs = if s.ledger.on_replica() {
        // The primary is out of reach but through the writer, asked with the caller's own credentials (a token
        // crosses the network in cleartext only where forwarding a command's would).
        match writer {
            Some(w) => {
                let auth = headers
                    .get(header::AUTHORIZATION)
                    .filter(|_| s.cleartext_forwarding || loopback(&w.address));
                writer_head(&w.address, auth).await
            }
            None => None,
        }
    } else {
        // A follower of the primary reads the head row itself.
        let ledger = std::sync::Arc::clone(&s.ledger);
        tokio::task::spawn_blocking(move || {
            ledger
                .store()
                .shared()
                .and_then(|pg| pg.recorded_head().ok())
                .map(|p| p.0)
        })
        .await
        .ok()
        .flatten()
    };
    if let Some(theirs) = theirs.filter(|h| point.0 > *h) {
        return Err(super::consumers::beyond_head(
            what,
            point.0,
            Position(theirs),
        ));
    }
    let here = head();
    Err(retry_later(
        "position_not_reached",
        format!(
            "{what} {point} is after this process's head {here} (it follows the writer{}), and was not reached within {} s; retry, here or at the writer",
            if s.ledger.on_replica() { " through a replica" } else { "" },
            MIN_POSITION_WAIT.as_secs()
        ),
    )
    .with("position", here.0))
}

/// The writer's head, as its `/healthz` says (`None` when it cannot be asked within two seconds, or refuses).
async fn writer_head(address: &str, auth: Option<&HeaderValue>) -> Option<u64> {
    let uri: axum::http::Uri = format!("{}/healthz", address.trim_end_matches('/'))
        .parse()
        .ok()?;
    let mut req = axum::http::Request::get(uri);
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let req = req.body(http_body_util::Full::new(Bytes::new())).ok()?;
    let answer = tokio::time::timeout(Duration::from_secs(2), async {
        let r = client().request(req).await.ok()?;
        http_body_util::BodyExt::collect(r.into_body())
            .await
            .ok()
            .map(|b| b.to_bytes())
    })
    .await
    .ok()??;
    serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()?
        .get("head")?
        .as_u64()
}

/// On a replica, which can write nothing, a write other than a command (which is forwarded to the writer) is
/// answered 503 `read_only_replica`, naming the writer's address when it is known.
pub(super) fn refuse_on_replica(s: &AppState) -> Result<(), ApiError> {
    if !s.ledger.on_replica() {
        return Ok(());
    }
    let at = match s.ledger.role() {
        Role::Follower { writer: Some(w) } if !w.address.is_empty() => {
            format!("send it to the writer, at {}", w.address)
        }
        _ => "send it to a process of the primary".to_string(),
    };
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "read_only_replica",
        format!("this process reads a replica (a hot standby), where nothing can be written: {at}"),
    ))
}
