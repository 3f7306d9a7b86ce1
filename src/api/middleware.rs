//! Middleware of every route: the body read within its time and size limits before any handler runs, the gate of
//! the operations routes (metrics, consumers, backups), 406 for a read whose answer `Accept` does not take, request
//! ids, and HSTS over TLS.

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

/// Middleware, outermost: every request gets an id, the client's `X-Request-Id` when it sends a usable one (1 to 128
/// visible ASCII characters), else a fresh UUID, echoed in the answer's `X-Request-Id`. The id, and the trace id of a
/// W3C `traceparent` header when there is one, are fields of a span around the request, so every log line written
/// while serving it names them; at `info`, one line per request says how it was answered.
pub(super) async fn request_id(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument;
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let trace_id = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id_of)
        .unwrap_or_default();
    // At ERROR level so it is on whenever any line is written (a denial is a WARN line).
    let span = tracing::span!(
        tracing::Level::ERROR,
        "request",
        request_id = %id,
        trace_id = %trace_id,
        method = %req.method(),
        path = %req.uri().path(),
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        // What the handlers see (and forward to the writer) is the id the answer names.
        req.headers_mut().insert("x-request-id", v);
    }
    let started = std::time::Instant::now();
    let mut r = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = r.status().as_u16(),
            ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "answered"
        )
    });
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        r.headers_mut().insert("x-request-id", v);
    }
    r
}

/// The trace id of a W3C `traceparent` (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero).
fn trace_id_of(traceparent: &str) -> Option<String> {
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    match parts.as_slice() {
        [version, trace, parent, flags]
            if hex(version, 2)
                && *version != "ff"
                && hex(trace, 32)
                && nonzero(trace)
                && hex(parent, 16)
                && nonzero(parent)
                && hex(flags, 2) =>
        {
            Some(trace.to_ascii_lowercase())
        }
        _ => None,
    }
}

/// Middleware: a read (`GET`, `HEAD`) whose answer's media type the request's `Accept` does not take (q-values
/// honoured, `type/*` and `*/*` included) is answered 406 `not_acceptable` instead. Without `Accept`, anything goes.
/// Errors keep their JSON shape whatever `Accept` says, and a write's answer is given as it is, since its effect has
/// happened. Streams negotiate their own framing first (SSE or NDJSON), so what they answer always passes.
pub(super) async fn acceptable(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::{header, Method};
    use axum::response::IntoResponse;
    let reads = req.method() == Method::GET || req.method() == Method::HEAD;
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| reads && !v.trim().is_empty())
        .map(str::to_string);
    let r = next.run(req).await;
    let Some(accept) = accept else { return r };
    if !r.status().is_success() {
        return r;
    }
    let Some(media) = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
    else {
        return r;
    };
    if super::framing::quality(&accept, &media) > 0.0 {
        return r;
    }
    ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "not_acceptable",
        format!("this answer is {media}; `Accept: {accept}` does not take it"),
    )
    .into_response()
}

/// Middleware: over TLS, every answer tells browsers to use HTTPS only for this host (`Strict-Transport-Security`,
/// one year).
pub(super) async fn strict_transport_security(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut r = next.run(req).await;
    if s.tls.is_some() {
        r.headers_mut().insert(
            axum::http::header::STRICT_TRANSPORT_SECURITY,
            axum::http::HeaderValue::from_static("max-age=31536000"),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_traceparent_gives_its_trace_id_and_a_malformed_one_nothing() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            super::trace_id_of(good).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(super::trace_id_of(bad), None, "{bad}");
        }
    }
}
