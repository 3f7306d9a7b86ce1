//! The event log's layout in sled: envelopes packed a few dozen at a time into compressed segments.
//!
//! One key per event made sled do most of its work per event: its leaves split every 16 keys and are rewritten and
//! flushed whole, so a batch of a hundred small envelopes cost a hundred inserts and several node splits (measured in
//! docs/performance.md). A segment is one sled value holding consecutive envelopes of one batch, each exactly as
//! canonically stored, separated by a newline (canonical JSON never contains a raw newline: control characters in
//! strings are escaped), so the segment's content is itself NDJSON. Its key is the big-endian position of its first
//! event, so the log is still ordered by position and "the segment holding position p" is the last key at or before p.
//!
//! The content is stored LZ4-compressed (about 2.5 to 3 times smaller: envelopes repeat their field names and ids),
//! behind a byte `0x04`; a value that starts with `{` is uncompressed NDJSON, which readers accept too. Compression
//! changes only how the bytes are kept: what a segment yields are the canonical envelopes the hash chain covers.
//!
//! A stored segment stays below [`MAX_STORED`] bytes: sled writes a node as a separate blob file, which our
//! `fdatasync` of `sled/db` does not cover (STORAGE.md), once the node is larger than a quarter of its 512 KiB log
//! segment, and a leaf holds up to 17 values before it splits; 17 × 7,000 bytes stays below 128 KiB. Segments are
//! filled to [`RAW_TARGET`] bytes of envelopes before compression and split in two while they compress to more than
//! that. An envelope that alone is larger still gets a segment of its own.

use crate::domain::Position;
use crate::store::StoreError;

/// The most bytes of envelopes gathered into one segment before compression.
pub const RAW_TARGET: usize = 16 * 1024;
/// The most bytes one stored segment may take (unless a single envelope compresses to more).
pub const MAX_STORED: usize = 7_000;
/// The marker of LZ4-compressed content.
const LZ4: u8 = 0x04;
/// The largest content a segment may claim to decompress to (a damaged size must not allocate gigabytes).
const MAX_CONTENT: usize = 64 * 1024 * 1024;

/// Compresses envelopes (contiguous, ascending) into one stored segment, or more when they compress to more than
/// [`MAX_STORED`] bytes.
fn store(events: &[(Position, Vec<u8>)], out: &mut Vec<([u8; 8], Vec<u8>)>) {
    let Some((first, _)) = events.first() else {
        return;
    };
    let mut content = Vec::with_capacity(RAW_TARGET + 1024);
    for (i, (_, raw)) in events.iter().enumerate() {
        if i > 0 {
            content.push(b'\n');
        }
        content.extend_from_slice(raw);
    }
    let compressed = lz4_flex::compress(&content);
    if 1 + 4 + compressed.len() > MAX_STORED && events.len() > 1 {
        let (a, b) = events.split_at(events.len() / 2);
        store(a, out);
        store(b, out);
        return;
    }
    let mut value = Vec::with_capacity(5 + compressed.len());
    value.push(LZ4);
    value.extend_from_slice(
        &u32::try_from(content.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    value.extend_from_slice(&compressed);
    out.push((first.to_key(), value));
}

/// Packs consecutive events (position and canonical bytes, ascending and contiguous) into stored segments.
pub fn pack(events: &[(Position, Vec<u8>)]) -> Vec<([u8; 8], Vec<u8>)> {
    let mut out: Vec<([u8; 8], Vec<u8>)> = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, (_, raw)) in events.iter().enumerate() {
        if i > start && bytes + 1 + raw.len() > RAW_TARGET {
            store(&events[start..i], &mut out);
            start = i;
            bytes = 0;
        }
        bytes += raw.len() + 1;
    }
    store(&events[start..], &mut out);
    out
}

/// The NDJSON content of a stored segment: the envelopes, newline-separated.
pub fn content(value: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        position: None,
        message,
    };
    match value.first() {
        Some(b'{') => Ok(std::borrow::Cow::Borrowed(value)),
        Some(&LZ4) if value.len() >= 5 => {
            let size = usize::try_from(u32::from_le_bytes(
                value[1..5].try_into().unwrap_or_default(),
            ))
            .unwrap_or(usize::MAX);
            if size > MAX_CONTENT {
                return Err(corrupt(format!("a segment claims {size} bytes of content")));
            }
            lz4_flex::decompress(&value[5..], size)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| corrupt(format!("a segment does not decompress: {e}")))
        }
        _ => Err(corrupt(
            "a segment of the log is neither NDJSON nor compressed".into(),
        )),
    }
}

/// The events of one stored segment: each position with its bytes.
pub fn unpack(key: &[u8], value: &[u8]) -> Result<Vec<(Position, Vec<u8>)>, StoreError> {
    let first = Position::from_key(key).ok_or_else(|| StoreError::Corrupt {
        position: None,
        message: "a key of the log is not a position".into(),
    })?;
    let content = content(value).map_err(|e| match e {
        StoreError::Corrupt { message, .. } => StoreError::Corrupt {
            position: Some(first),
            message,
        },
        other => other,
    })?;
    content
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, raw)| {
            // A damaged key near the end of the position space must not wrap around (found by `cargo fuzz`).
            let position = u64::try_from(i)
                .ok()
                .and_then(|i| first.0.checked_add(i))
                .ok_or_else(|| StoreError::Corrupt {
                    position: Some(first),
                    message: "a segment of the log runs past the last possible position".into(),
                })?;
            Ok((Position(position), raw.to_vec()))
        })
        .collect()
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

    /// The events after `after` up to and including `to`, in order, in constant memory (`walk.rs`).
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
                    super::walk::range(&self.tree, &start, &to.to_key())
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
    fn a_segment_key_near_the_end_of_the_position_space_is_damage_not_a_wrap_around() {
        // Found by `cargo fuzz run stored_record`: this panicked on overflow (and wrapped to position 0 in release).
        let e = unpack(&[0xff; 8], b"{\"a\":1}\n{\"b\":2}").unwrap_err();
        assert!(
            e.to_string()
                .contains("runs past the last possible position"),
            "{e}"
        );
        assert_eq!(
            unpack(&[0xff; 8], b"{\"a\":1}").unwrap()[0].0,
            Position(u64::MAX)
        );
    }

    #[test]
    fn packing_keeps_segments_small_and_unpacking_restores_every_event() {
        let events: Vec<_> = (1..=200).map(|n| ev(n, 700)).collect();
        let segments = pack(&events);
        assert!(segments.len() > 1);
        assert!(segments.iter().all(|(_, v)| v.len() <= MAX_STORED));
        let back: Vec<_> = segments
            .iter()
            .flat_map(|(k, v)| unpack(k, v).unwrap())
            .collect();
        assert_eq!(back, events);
        let big = pack(&[ev(1, 100), ev(2, 20_000), ev(3, 100)]);
        assert_eq!(
            big.len(),
            3,
            "an envelope larger than a segment gets its own"
        );
        // Content that does not compress is split until each piece fits.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<_> = (1..=20u64)
            .map(|n| {
                let bytes = (0..700)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Anything but a newline, which never occurs inside an envelope.
                        b'!' + u8::try_from(x % 90).unwrap_or(0)
                    })
                    .collect();
                (Position(n), bytes)
            })
            .collect();
        let pieces = pack(&noise);
        assert!(pieces.len() > 2);
        assert!(pieces.iter().all(|(_, v)| v.len() <= MAX_STORED));
        let back: Vec<_> = pieces
            .iter()
            .flat_map(|(k, v)| unpack(k, v).unwrap())
            .collect();
        assert_eq!(back, noise);
    }

    #[test]
    fn a_damaged_segment_is_reported_not_trusted() {
        let (k, mut v) = pack(&[ev(1, 700), ev(2, 700)]).remove(0);
        v[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            unpack(&k, &v).is_err(),
            "a huge claimed size is refused before allocating"
        );
        let (k, mut v) = pack(&[ev(1, 700), ev(2, 700)]).remove(0);
        let n = v.len();
        v.truncate(n - 3);
        assert!(unpack(&k, &v).is_err());
        assert!(unpack(&k, b"garbage").is_err());
        assert_eq!(
            unpack(&k, b"{\"a\":1}\n{\"b\":2}").unwrap().len(),
            2,
            "uncompressed NDJSON is read too"
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
