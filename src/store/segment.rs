//! The event log's layout in sled: envelopes packed a few at a time into segments.
//!
//! One key per event made sled do most of its work per event: its leaves split every 16 keys and are rewritten and
//! flushed whole, so a batch of a hundred small envelopes cost a hundred inserts and several node splits (measured in
//! docs/performance.md). A segment is one sled value holding consecutive envelopes of one batch, each exactly as
//! canonically stored, separated by a newline (canonical JSON never contains a raw newline: control characters in
//! strings are escaped). Its key is the big-endian position of its first event, so the log is still ordered by
//! position and "the segment holding position p" is the last key at or before p.
//!
//! A segment stays below [`SEGMENT_BYTES`]: sled writes a node as a separate blob file, which our `fdatasync` of
//! `sled/db` does not cover (STORAGE.md), once the node is larger than a quarter of its 512 KiB log segment, and a
//! leaf holds up to 17 values before it splits; 17 × 6 KiB stays below 128 KiB. An envelope larger than that still
//! gets a segment of its own.

use super::StoreError;
use crate::domain::Position;

/// The most bytes of envelopes one segment holds (unless a single envelope is larger).
pub const SEGMENT_BYTES: usize = 6 * 1024;

/// Packs consecutive events (position and canonical bytes, ascending and contiguous) into segments.
pub fn pack(events: &[(Position, Vec<u8>)]) -> Vec<([u8; 8], Vec<u8>)> {
    let mut out: Vec<([u8; 8], Vec<u8>)> = Vec::new();
    for (position, raw) in events {
        match out.last_mut() {
            Some((_, value)) if value.len() + 1 + raw.len() <= SEGMENT_BYTES => {
                value.push(b'\n');
                value.extend_from_slice(raw);
            }
            _ => {
                let mut value = Vec::with_capacity(SEGMENT_BYTES.max(raw.len()));
                value.extend_from_slice(raw);
                out.push((position.to_key(), value));
            }
        }
    }
    out
}

/// The events of one stored segment: each position with its bytes.
pub fn unpack(key: &[u8], value: &[u8]) -> Result<Vec<(Position, Vec<u8>)>, StoreError> {
    let first = Position::from_key(key).ok_or_else(|| StoreError::Corrupt {
        position: None,
        message: "a key of the log is not a position".into(),
    })?;
    Ok(value
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, raw)| (Position(first.0 + i as u64), raw.to_vec()))
        .collect())
}

/// Events read from the log, each with its position, or the error that stopped the read.
type Events<'a> = Box<dyn Iterator<Item = Result<(Position, Vec<u8>), StoreError>> + 'a>;

/// The log tree, read event by event.
pub struct Log {
    pub tree: sled::Tree,
}

impl Log {
    /// The key of the segment holding `position`, if any segment starts at or before it.
    fn segment_start(&self, position: Position) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self
            .tree
            .range(..=position.to_key())
            .next_back()
            .transpose()?
            .map(|(k, _)| k))
    }

    /// The stored bytes of the event at `position`.
    pub fn get(&self, position: Position) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((k, v)) = self
            .tree
            .range(..=position.to_key())
            .next_back()
            .transpose()?
        else {
            return Ok(None);
        };
        Ok(unpack(&k, &v)?
            .into_iter()
            .find(|(p, _)| *p == position)
            .map(|(_, raw)| raw))
    }

    /// The last event.
    pub fn last(&self) -> Result<Option<(Position, Vec<u8>)>, StoreError> {
        match self.tree.last()? {
            None => Ok(None),
            Some((k, v)) => Ok(unpack(&k, &v)?.pop()),
        }
    }

    /// The events after `after` up to and including `to`, in order.
    pub fn events(
        &self,
        after: Position,
        to: Option<Position>,
    ) -> impl Iterator<Item = Result<(Position, Vec<u8>), StoreError>> + '_ {
        let first = after.next();
        let to = to.unwrap_or(Position(u64::MAX));
        let start = match self.segment_start(first) {
            Ok(Some(k)) => Ok(k.to_vec()),
            Ok(None) => Ok(first.to_key().to_vec()),
            Err(e) => Err(e),
        };
        let segments: Box<dyn Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>>> =
            match start {
                Err(e) => Box::new(std::iter::once(Err(e))),
                Ok(_) if first > to => Box::new(std::iter::empty()),
                Ok(start) => Box::new(
                    self.tree
                        .range(start..=to.to_key().to_vec())
                        .map(|r| r.map_err(StoreError::from)),
                ),
            };
        segments
            .flat_map(|item| -> Events<'static> {
                match item.and_then(|(k, v)| unpack(&k, &v)) {
                    Ok(events) => Box::new(events.into_iter().map(Ok)),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                }
            })
            .filter(move |r| r.as_ref().map_or(true, |(p, _)| *p >= first && *p <= to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64, len: usize) -> (Position, Vec<u8>) {
        (Position(n), vec![b'a' + (n % 26) as u8; len])
    }

    #[test]
    fn packing_keeps_segments_small_and_unpacking_restores_every_event() {
        let events: Vec<_> = (1..=40).map(|n| ev(n, 700)).collect();
        let segments = pack(&events);
        assert!(segments.len() > 1);
        assert!(segments.iter().all(|(_, v)| v.len() <= SEGMENT_BYTES));
        let back: Vec<_> = segments
            .iter()
            .flat_map(|(k, v)| unpack(k, v).unwrap())
            .collect();
        assert_eq!(back, events);
        let big = pack(&[ev(1, 100), ev(2, 10_000), ev(3, 100)]);
        assert_eq!(
            big.len(),
            3,
            "an envelope larger than a segment gets its own"
        );
    }

    #[test]
    fn reads_find_events_inside_segments() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let log = Log {
            tree: db.open_tree("log").unwrap(),
        };
        let events: Vec<_> = (1..=30).map(|n| ev(n, 900)).collect();
        for (k, v) in pack(&events[..10]).into_iter().chain(pack(&events[10..])) {
            log.tree.insert(k, v).unwrap();
        }
        assert_eq!(log.get(Position(7)).unwrap(), Some(events[6].1.clone()));
        assert_eq!(log.get(Position(31)).unwrap(), None);
        assert_eq!(log.last().unwrap().unwrap().0, Position(30));
        let read = |after, to| -> Vec<u64> {
            log.events(Position(after), to)
                .map(|r| r.unwrap().0 .0)
                .collect()
        };
        assert_eq!(read(0, None), (1..=30).collect::<Vec<_>>());
        assert_eq!(read(6, Some(Position(12))), (7..=12).collect::<Vec<_>>());
        assert_eq!(read(30, None), Vec::<u64>::new());
        assert_eq!(read(12, Some(Position(12))), Vec::<u64>::new());
    }
}
