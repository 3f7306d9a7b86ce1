//! How a stream is put on the wire: Server-Sent Events or NDJSON, chosen from the request's `Accept`.

use axum::body::Bytes;
use axum::http::{header, HeaderMap};

use super::ApiError;
use crate::domain::Position;

/// How a stream is framed on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Framing {
    /// Server-Sent Events: `id`, `event` (the type) and `data` (the envelope) per event.
    Sse,
    /// One envelope per line; heartbeats as `{"heartbeat":{"position":n}}`.
    Ndjson,
}

impl Framing {
    pub(super) fn event(self, out: &mut Vec<u8>, position: Position, event_type: &str, raw: &[u8]) {
        match self {
            Framing::Ndjson => {
                out.extend_from_slice(raw);
                out.push(b'\n');
            }
            Framing::Sse => {
                out.extend_from_slice(
                    format!("id: {position}\nevent: {event_type}\ndata: ").as_bytes(),
                );
                out.extend_from_slice(raw);
                out.extend_from_slice(b"\n\n");
            }
        }
    }

    pub(super) fn heartbeat(self, position: Position) -> Bytes {
        Bytes::from(match self {
            Framing::Ndjson => format!("{{\"heartbeat\":{{\"position\":{position}}}}}\n"),
            Framing::Sse => {
                format!("id: {position}\nevent: heartbeat\ndata: {{\"position\":{position}}}\n\n")
            }
        })
    }
}

/// The framing the client accepts (`Accept`, q-values honoured): SSE (`text/event-stream`, also for `*/*`, `text/*`
/// or no `Accept` at all) or NDJSON (`application/x-ndjson`, also for `application/*`); the higher q wins, SSE on a
/// tie; nothing acceptable is 406 `not_acceptable`.
pub(super) fn negotiate(headers: &HeaderMap) -> Result<Framing, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Framing::Sse);
    };
    if accept.trim().is_empty() {
        return Ok(Framing::Sse);
    }
    // For each framing, the q of the most specific range that matches it (exact 2, `type/*` 1, `*/*` 0).
    let mut best = [(-1i8, 0.0f32); 2];
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        for (i, (exact, family)) in [
            ("text/event-stream", "text/*"),
            ("application/x-ndjson", "application/*"),
        ]
        .iter()
        .enumerate()
        {
            let specificity = if media == *exact {
                2
            } else if media == *family {
                1
            } else if media == "*/*" {
                0
            } else {
                continue;
            };
            if specificity > best[i].0 {
                best[i] = (specificity, q);
            }
        }
    }
    let (sse, ndjson) = (best[0].1, best[1].1);
    if sse <= 0.0 && ndjson <= 0.0 {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            format!("streams are text/event-stream or application/x-ndjson; `Accept: {accept}` takes neither"),
        ));
    }
    Ok(if ndjson > sse {
        Framing::Ndjson
    } else {
        Framing::Sse
    })
}
