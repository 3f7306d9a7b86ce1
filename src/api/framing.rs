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
    let sse = quality(accept, "text/event-stream");
    let ndjson = quality(accept, "application/x-ndjson");
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

/// How much an `Accept` header wants `media` (`type/subtype`, lowercase): the q-value of the most specific range
/// that matches it (the type itself before `type/*` before `*/*`; parameters other than `q` ignored), 0 when none
/// does.
pub(super) fn quality(accept: &str, media: &str) -> f32 {
    let family = media.split('/').next().unwrap_or_default();
    let mut best = (-1i8, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let range = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let specificity = if range == media {
            2
        } else if range.strip_suffix("/*") == Some(family) {
            1
        } else if range == "*/*" {
            0
        } else {
            continue;
        };
        if specificity > best.0 {
            best = (specificity, q);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::quality;

    #[test]
    fn the_most_specific_range_gives_the_quality() {
        assert_eq!(quality("application/json", "application/json"), 1.0);
        assert_eq!(quality("text/html", "application/json"), 0.0);
        assert_eq!(quality("text/html, */*;q=0.1", "application/json"), 0.1);
        assert_eq!(
            quality("application/*;q=0.5, */*;q=0.9", "application/json"),
            0.5
        );
        assert_eq!(
            quality("application/json;q=0, */*", "application/json"),
            0.0
        );
        assert_eq!(
            quality("Application/JSON; charset=utf-8", "application/json"),
            1.0
        );
        assert_eq!(quality("text/*", "text/event-stream"), 1.0);
    }
}
