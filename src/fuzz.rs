//! Entry points for fuzzing the parsers that read untrusted or on-disk bytes: command lines (from clients), stored
//! envelopes, log segments and journal records (from disk). Each must answer every input with a value or an error and
//! never panic. Used by the property tests (tests/suite/never_panic.rs) and by the `cargo fuzz` targets in `fuzz/`
//! (docs/fuzzing.md).

use crate::domain::{parse_line, parse_line_as, Actor, Position, Role, TenantId};
use crate::store::{check, journal, segment, StoredEvent, GENESIS_HASH};

/// A command line, as a client sends it: parsed as is and on behalf of an authenticated actor.
pub fn command_line(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let parsed = parse_line(&text);
    let actor = Actor {
        tenant: "a0000000-0000-4000-8000-00000000000a"
            .parse::<TenantId>()
            .unwrap_or_else(|_| unreachable!()),
        user: "fuzz".into(),
        role: Role::PartnerAdminAgent,
    };
    let as_actor = parse_line_as(&text, Some(&actor));
    // Whatever was accepted fingerprints, serializes and names its entities.
    for s in [parsed, as_actor].into_iter().flatten() {
        let _ = s.fingerprint();
        let _ = s.body.entities(&crate::domain::State::new());
    }
}

/// A stored envelope, as read from the log: chain check, fast decode, full decode and the event inside.
pub fn stored_event(bytes: &[u8]) {
    let full = check(bytes, Position(1), GENESIS_HASH);
    // The fast check accepts exactly what the full one accepts, with the same hash.
    match crate::store::check_hash(bytes, Position(1), GENESIS_HASH) {
        Ok(hash) => assert_eq!(Some(hash), full.as_ref().ok().map(|e| e.hash.clone())),
        Err(_) => assert!(full.is_err()),
    }
    let stored = StoredEvent {
        position: Position(1),
        raw: bytes.to_vec(),
    };
    let _ = stored.decode();
    if let Ok(env) = stored.envelope() {
        let _ = env.event();
    }
    let _ = crate::access::Scope::Partner(
        "a0000000-0000-4000-8000-00000000000a"
            .parse()
            .unwrap_or_else(|_| unreachable!()),
    )
    .sees_event(&crate::domain::State::new(), bytes);
}

/// A log segment or journal record, as read from sled: the first 8 bytes are the key, the rest the value.
pub fn stored_record(bytes: &[u8]) {
    let (key, value) = bytes.split_at(bytes.len().min(8));
    let _ = segment::content(value);
    if let Ok(events) = segment::unpack(key, value) {
        for (p, raw) in events {
            let _ = check(&raw, p, GENESIS_HASH);
        }
    }
    let _ = journal::decode(value);
    let _ = journal::seq_of(key);
}
