//! `POST /v1/commands`: one JSON command or NDJSON, every line authorised before any is submitted, each answered
//! with its outcome (docs/api.md).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::extract::media_type;
use super::{auth, forward, AppState};
use crate::access::Principal;
use crate::domain::command::MAX_COMMAND_BYTES;
use crate::domain::parse_line_as;
use crate::ledger::Outcome;

fn outcome_response(o: &Outcome) -> Response {
    let status = match o {
        Outcome::Committed { .. } => StatusCode::OK,
        Outcome::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Outcome::Unknown { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Outcome::Invalid { .. } => StatusCode::BAD_REQUEST,
    };
    (status, Json(o.to_json())).into_response()
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
) -> Result<(), ApiError> {
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
            Err(s.auth.deny(
                &who.label(),
                "/v1/commands",
                auth::forbidden(denial.reason, message),
            ))
        }
    }
}

/// `POST /v1/commands`: one JSON command, or NDJSON (one outcome line per input line). On a process that does not
/// write a shared ledger, forwarded to the one that does (`forward.rs`). Every answer carries `Ledger-Position`.
pub(super) async fn post_commands(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = who.actor();
    let answer = match forward::forward(&s, &headers, "/v1/commands", &body, actor.as_ref()).await {
        Some(relayed) => relayed,
        None => submit_here(&s, who, headers, body).await,
    }?;
    Ok(forward::with_position(&s, answer))
}

async fn submit_here(
    s: &AppState,
    who: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let s = s.clone();
    if who.kind == crate::access::Kind::Auditor {
        return Err(s.auth.deny(
            &who.label(),
            "/v1/commands",
            auth::forbidden("read_only", "auditors read; they issue no commands"),
        ));
    }
    let actor = who.actor();
    match media_type(&headers).as_str() {
        "application/json" => {
            let Ok(text) = std::str::from_utf8(&body) else {
                s.metrics.invalid.fetch_add(1, Ordering::Relaxed);
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "the body is not valid UTF-8",
                ));
            };
            match parse_line_as(text.trim(), actor.as_ref()) {
                Err(e) => {
                    s.metrics.invalid.fetch_add(1, Ordering::Relaxed);
                    Ok(outcome_response(&Outcome::Invalid {
                        line: 1,
                        message: e.0,
                    }))
                }
                Ok(cmd) => {
                    authorise(&s, &who, &[(1, &cmd)]).await?;
                    Ok(outcome_response(
                        &s.ledger
                            .submit_async_as(cmd, who.scope())
                            .await
                            .outcome()
                            .await,
                    ))
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
                authorise(&s, &who, &commands).await?;
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
            Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "send application/json (one command) or application/x-ndjson (many), not `{other}`"
            ),
        )),
    }
}
