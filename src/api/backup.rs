//! Backups, checkpoints and verification from a running server (docs/audit.md), so operators and auditors need no
//! downtime: the CLI's `export`, `checkpoint` and `verify` cannot open a folder a server holds.

use std::io::Write;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::AppState;
use crate::domain::Position;
use crate::ledger::Ledger;
use crate::store::StoreError;

/// A `Write` that sends what is written to a response body in pieces; a client that went away makes it fail with
/// `BrokenPipe`, which ends the work.
struct Pipe {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

const PIECE: usize = 256 * 1024;

impl Write for Pipe {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(piece)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

/// Runs `work` on a blocking thread, streaming what it writes as the NDJSON body of the response.
fn ndjson_from(
    headers: &HeaderMap,
    ledger: Arc<Ledger>,
    work: impl FnOnce(&Ledger, &mut Pipe) -> std::io::Result<()> + Send + 'static,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::task::spawn_blocking(move || {
        let mut pipe = Pipe {
            tx,
            buf: Vec::with_capacity(PIECE + 4096),
        };
        if let Err(e) = work(&ledger, &mut pipe).and_then(|()| pipe.flush()) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::error!(error = %e, "an online backup or verification failed");
            }
        }
    });
    super::encoding::streamed(
        headers,
        &[
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        ReceiverStream::new(rx),
    )
}

/// `GET /v1/backup`: a complete backup (events, command journal, refusals, consumers) at a consistent cut, the head
/// when the request arrived, named in the first line. `import` restores it. A failure mid-way ends the body without
/// the closing `end` line, so a truncated backup is never mistaken for a whole one.
pub async fn backup(State(s): State<AppState>, headers: HeaderMap) -> Response {
    ndjson_from(&headers, Arc::clone(&s.ledger), |ledger, out| {
        crate::backup::write(ledger.store(), Position(0), None, out, |_| {})
            .map(|_| ())
            .map_err(|e| match e {
                crate::backup::BackupError::Io(io) => io,
                other => std::io::Error::other(other.to_string()),
            })
    })
}

/// `GET /v1/checkpoint`: the head's position and hash, to keep elsewhere and check later with
/// `verify --against POSITION:HASH` or `GET /v1/verify`.
pub async fn checkpoint(State(s): State<AppState>) -> Response {
    let head = s.ledger.store().head();
    Json(json!({
        "position": head.position,
        "hash": head.hash,
        "checkpoint": format!("{}:{}", head.position, head.hash),
    }))
    .into_response()
}

/// `GET /v1/verify`: walks the hash chain from position 1 to the head when the request arrived, reporting progress
/// every 65,536 events (`{"verified_upto": n, "head": h}`), then one last line: `{"status": "verified", …}` or
/// `{"status": "damaged", "first_bad_position": p, "message": …}`.
pub async fn verify(State(s): State<AppState>, headers: HeaderMap) -> Response {
    ndjson_from(&headers, Arc::clone(&s.ledger), |ledger, out| {
        const CHUNK: u64 = 65_536;
        let store = ledger.store();
        let head = store.head();
        let mut from = 1;
        while from <= head.position.0 {
            let upto = (from + CHUNK - 1).min(head.position.0);
            if let Err(e) = store.verify_range(Position(from), Position(upto), &mut |_| {}) {
                let (position, message) = match e {
                    StoreError::Corrupt { position, message } => (position, message),
                    other => (None, other.to_string()),
                };
                let last = json!({"status": "damaged", "first_bad_position": position, "message": message,
                    "head": head.position});
                return writeln!(out, "{last}");
            }
            writeln!(
                out,
                "{}",
                json!({"verified_upto": upto, "head": head.position})
            )?;
            out.flush()?;
            from = upto + 1;
        }
        let last = json!({"status": "verified", "position": head.position, "hash": head.hash,
            "checkpoint": format!("{}:{}", head.position, head.hash)});
        writeln!(out, "{last}")
    })
}
