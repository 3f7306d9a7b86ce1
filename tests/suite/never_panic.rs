//! The parsers of untrusted and on-disk bytes never panic: arbitrary bytes, and valid inputs with bytes flipped,
//! inserted, deleted or cut off, go into the command parser, the envelope decoder and the segment and journal readers
//! (`partner_ledger::fuzz`, also the `cargo fuzz` targets of fuzz/; docs/fuzzing.md).

use crate::common;

use std::sync::OnceLock;

use partner_ledger::domain::{parse_line, Position};
use partner_ledger::ledger::{Ledger, LedgerConfig};
use partner_ledger::store::segment;
use proptest::prelude::*;

/// Valid samples: the seed story's command lines, its stored envelopes, and its log packed into segments.
struct Samples {
    lines: Vec<Vec<u8>>,
    envelopes: Vec<Vec<u8>>,
    records: Vec<Vec<u8>>,
}

fn samples() -> &'static Samples {
    static S: OnceLock<Samples> = OnceLock::new();
    S.get_or_init(|| {
        let text =
            std::fs::read_to_string(common::fixtures().join("seed-story/commands.ndjson")).unwrap();
        let lines: Vec<Vec<u8>> = text
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| l.as_bytes().to_vec())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(LedgerConfig::new(dir.path())).unwrap();
        for l in &lines {
            ledger.execute(parse_line(std::str::from_utf8(l).unwrap()).unwrap());
        }
        let rows: Vec<(Position, Vec<u8>)> = ledger
            .store()
            .read(Position(0), None)
            .map(|e| e.unwrap())
            .map(|e| (e.position, e.raw))
            .collect();
        ledger.close();
        let envelopes = rows.iter().map(|(_, r)| r.clone()).collect();
        let records = segment::pack(&rows)
            .into_iter()
            .map(|(k, v)| {
                let mut b = k.to_vec();
                b.extend(v);
                b
            })
            .collect();
        Samples {
            lines,
            envelopes,
            records,
        }
    })
}

/// A valid sample damaged by a few edits.
fn mutated(pick: fn(&Samples) -> &Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        any::<usize>(),
        prop::collection::vec((0u8..4, any::<usize>(), any::<u8>()), 1..6),
    )
        .prop_map(move |(i, edits)| {
            let list = pick(samples());
            let mut b = list[i % list.len()].clone();
            for (kind, at, byte) in edits {
                let at = if b.is_empty() { 0 } else { at % b.len() };
                match kind {
                    0 if !b.is_empty() => b[at] ^= byte | 1,
                    1 => b.insert(at, byte),
                    2 if !b.is_empty() => {
                        b.remove(at);
                    }
                    _ => b.truncate(at),
                }
            }
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_any_parser(bytes in prop::collection::vec(any::<u8>(), 0..2_048)) {
        partner_ledger::fuzz::command_line(&bytes);
        partner_ledger::fuzz::stored_event(&bytes);
        partner_ledger::fuzz::stored_record(&bytes);
    }

    #[test]
    fn damaged_command_lines_never_panic_the_parser(bytes in mutated(|s| &s.lines)) {
        partner_ledger::fuzz::command_line(&bytes);
    }

    #[test]
    fn damaged_envelopes_never_panic_the_decoder(bytes in mutated(|s| &s.envelopes)) {
        partner_ledger::fuzz::stored_event(&bytes);
    }

    #[test]
    fn damaged_segments_never_panic_the_reader(bytes in mutated(|s| &s.records)) {
        partner_ledger::fuzz::stored_record(&bytes);
    }
}

#[test]
fn the_samples_are_valid_so_the_mutations_start_from_real_inputs() {
    let s = samples();
    assert!(s.lines.len() >= 10 && s.envelopes.len() >= 10 && !s.records.is_empty());
    for l in &s.lines {
        assert!(parse_line(std::str::from_utf8(l).unwrap()).is_ok());
    }
    let mut prev = partner_ledger::store::GENESIS_HASH.to_string();
    for (i, e) in s.envelopes.iter().enumerate() {
        prev = partner_ledger::store::check(e, Position(i as u64 + 1), &prev)
            .unwrap()
            .hash;
    }
    let (k, v) = s.records[0].split_at(8);
    assert_eq!(segment::unpack(k, v).unwrap().len(), s.envelopes.len());
}
