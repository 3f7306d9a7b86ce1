//! Middleware of every route: the body read within its time and size limits before any handler runs, and the gate of
//! the operations routes (metrics, consumers, backups).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::error::ApiError;
use super::{auth, AppState};
use crate::access::Principal;

/// Middleware: reads the whole body within [`ServeConfig::body_timeout`] and [`ServeConfig::body_limit`] before any
/// handler runs, so a slow or oversized body is refused (408, 413) with nothing of it submitted, and holds at most the
/// limit in memory.
pub(super) async fn read_body_in_time(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let limit = s.config.body_limit;
    match tokio::time::timeout(s.config.body_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(next
            .run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await),
        Ok(Err(e))
            if std::error::Error::source(&e)
                .is_some_and(|c| c.is::<http_body_util::LengthLimitError>()) =>
        {
            Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than this server's limit of {limit} bytes; split it into several requests"),
        ))
        }
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the body could not be read: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the body did not arrive within {} ms; nothing of it was submitted",
                s.config.body_timeout.as_millis()
            ),
        )),
    }
}

/// Route gate of the operations routes (metrics, consumers): operators, `system` and auditors read them; only
/// operators and `system` change consumers. Everyone else gets 403 (logged and counted).
pub(super) async fn operations_gate(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    let Some(p) = req.extensions().get::<Principal>().cloned() else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no principal",
        ));
    };
    let reads = req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD;
    let allowed = if reads {
        p.reads_everything()
    } else {
        p.is_operator() || p.kind == crate::access::Kind::Role(crate::domain::Role::System)
    };
    if allowed {
        return Ok(next.run(req).await);
    }
    let route = req.uri().path().to_string();
    Err(s.auth.deny(
        &p.label(),
        &route,
        auth::forbidden(
            "not_allowed",
            format!(
                "{} may not operate the ledger (metrics, consumers, backups)",
                p.label()
            ),
        ),
    ))
}
