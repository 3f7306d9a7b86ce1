//! Verification of a chain, whatever stores it: contiguous positions, each envelope linked to the previous hash and its
//! own hash matching. A backend hands over its events in order; the checking is the same for all of them.

use super::envelope::{check_hash, ChainBreak};
use super::StoreError;
use crate::domain::Position;

/// Reads the `hash` field of stored envelope bytes without a full decode.
pub(crate) fn stored_hash(raw: &[u8], position: Position) -> Result<String, StoreError> {
    #[derive(serde::Deserialize)]
    struct OnlyHash {
        hash: String,
    }
    serde_json::from_slice::<OnlyHash>(raw)
        .map(|h| h.hash)
        .map_err(|e| StoreError::Corrupt {
            position: Some(position),
            message: format!("the stored event does not decode: {e}"),
        })
}

/// Checks events `from..=to`, read from `events` (which must start at `from`), the first linked to `prev`.
///
/// The events are read on this thread and checked in pieces of [`PIECE`] events on one worker per core (at most
/// four): a piece's first event is checked against the hash its predecessor stores, and that predecessor's own hash is
/// checked by the piece before, so every link and every hash is checked once. When pieces fail, the lowest position
/// is reported. `progress` is called with the last position of each piece checked (not in order).
pub(crate) fn check_chain(
    mut prev: String,
    events: impl Iterator<Item = Result<(Position, Vec<u8>), StoreError>>,
    from: Position,
    to: Position,
    progress: &mut dyn FnMut(Position),
) -> Result<(), StoreError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let mut first: Option<StoreError> = None;
    let (work, jobs) = std::sync::mpsc::sync_channel::<Piece>(workers * 2);
    let jobs = std::sync::Mutex::new(jobs);
    let expected = std::thread::scope(|scope| {
        let (report, reports) = std::sync::mpsc::channel::<(Position, Result<(), ChainBreak>)>();
        for _ in 0..workers {
            let (jobs, report) = (&jobs, report.clone());
            scope.spawn(move || loop {
                let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((prev, events)) = job else { return };
                let last = events.last().map(|e| e.0).unwrap_or_default();
                if report.send((last, check_piece(prev, &events))).is_err() {
                    return;
                }
            });
        }
        drop(report);
        let mut settle = |(last, result): (Position, Result<(), ChainBreak>),
                          first: &mut Option<StoreError>| {
            match result {
                Ok(()) => progress(last),
                Err(b) => keep(
                    StoreError::Corrupt {
                        position: Some(b.position),
                        message: b.reason,
                    },
                    first,
                ),
            }
        };
        let mut expected = from;
        let mut piece: Vec<(Position, Vec<u8>)> = Vec::with_capacity(PIECE);
        for item in events {
            let (pos, v) = match item {
                Ok(e) => e,
                Err(e) => {
                    keep(e, &mut first);
                    break;
                }
            };
            if pos != expected {
                keep(missing(expected), &mut first);
                break;
            }
            expected = expected.next();
            piece.push((pos, v));
            if piece.len() == PIECE {
                let (last, raw) = &piece[PIECE - 1];
                // A hash that cannot be read is reported by the piece holding it, at a lower position.
                let next_prev = stored_hash(raw, *last).unwrap_or_default();
                let full = std::mem::replace(&mut piece, Vec::with_capacity(PIECE));
                if work
                    .send((std::mem::replace(&mut prev, next_prev), full))
                    .is_err()
                {
                    break;
                }
                while let Ok(r) = reports.try_recv() {
                    settle(r, &mut first);
                }
                if first.is_some() {
                    break;
                }
            }
        }
        // Sent even after the reader stopped at a gap or a read error: a break before it is lower.
        if !piece.is_empty() {
            let _ = work.send((prev, piece));
        }
        drop(work);
        for r in reports {
            settle(r, &mut first);
        }
        expected
    });
    if first.is_none() && expected != to.next() {
        first = Some(missing(expected));
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The events checked as one piece of work: a few MB of envelopes.
const PIECE: usize = 2048;

/// A piece of work: the hash the first event must link to, and the events.
type Piece = (String, Vec<(Position, Vec<u8>)>);

/// Checks a piece's events in order, each against the one before.
fn check_piece(mut prev: String, events: &[(Position, Vec<u8>)]) -> Result<(), ChainBreak> {
    for (pos, raw) in events {
        prev = check_hash(raw, *pos, &prev)?;
    }
    Ok(())
}

pub(crate) fn missing(p: Position) -> StoreError {
    StoreError::Corrupt {
        position: Some(p),
        message: format!("event {p} is missing"),
    }
}

/// Where a verification error is, for keeping the first one (errors without a position sort last).
fn position_of(e: &StoreError) -> u64 {
    match e {
        StoreError::Corrupt {
            position: Some(p), ..
        } => p.0,
        _ => u64::MAX,
    }
}

/// Keeps `e` if it is the first error found so far (by position).
fn keep(e: StoreError, first: &mut Option<StoreError>) {
    if first
        .as_ref()
        .is_none_or(|f| position_of(&e) < position_of(f))
    {
        *first = Some(e);
    }
}

/// The hash event `from` must link to: the one event `from − 1` stores, read with `get` (the genesis hash for the
/// first event).
pub(crate) fn link_before(
    from: Position,
    get: impl FnOnce(Position) -> Result<Option<Vec<u8>>, StoreError>,
) -> Result<String, StoreError> {
    if from.0 <= 1 {
        return Ok(super::GENESIS_HASH.to_string());
    }
    let before = Position(from.0 - 1);
    let raw = get(before)?.ok_or_else(|| missing(before))?;
    stored_hash(&raw, before)
}

/// An error unless the log ends where the head record (`recorder`: "the head marker", "the head row") says.
pub(crate) fn ends_at_head(
    last: Position,
    head: Position,
    recorder: &str,
) -> Result<(), StoreError> {
    if last == head {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        position: Some(Position(last.0.min(head.0) + 1)),
        message: format!(
            "the log ends at position {last} but {recorder} records {head}: events were removed or lost"
        ),
    })
}
