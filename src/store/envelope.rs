//! The stored envelope of WIRE.md and the hash chain over it.
//!
//! Canonical form (docs/events.md): the envelope without `hash` as JSON with object keys sorted by their bytes, no
//! insignificant whitespace, strings escaped as `serde_json` does (`"` `\\` and control characters; everything else as
//! UTF-8), integers in plain decimal. `hash = hex(SHA-256(prev_hash as 64 ASCII hex characters ‖ canonical bytes))`.
//! Python's `json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` produces the same bytes for
//! every envelope the ledger writes. The stored bytes are the canonical form of the whole envelope, `hash` included.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::{
    Actor, CommandId, CorrelationId, EntityRef, Event, EventId, Position, Timestamp, SCHEMA_VERSION,
};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event envelope as stored and streamed (WIRE.md).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub position: Position,
    pub event_id: EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    pub at: Timestamp,
    pub recorded_at: Timestamp,
    pub command_id: CommandId,
    pub correlation_id: Option<CorrelationId>,
    pub actor: Actor,
    pub data: Value,
    pub prev_hash: String,
    pub hash: String,
}

impl Envelope {
    /// The domain event inside, brought up to the current schema version first (see `upcast`).
    pub fn event(&self) -> Result<Event, serde_json::Error> {
        use serde::de::Error;
        let (t, d) =
            super::upcast::upcast(&self.event_type, self.schema_version, self.data.clone())
                .map_err(serde_json::Error::custom)?;
        Event::from_parts(&t, d)
    }
}

/// An event about to be appended: everything but its position and hashes, which the store assigns.
#[derive(Clone, PartialEq, Debug)]
pub struct NewEvent {
    pub event_id: EventId,
    pub event: Event,
    pub at: Timestamp,
    pub recorded_at: Timestamp,
    pub command_id: CommandId,
    pub correlation_id: Option<CorrelationId>,
    pub actor: Actor,
}

/// SHA-256 over the previous hash (as its 64 hex characters) and the canonical bytes.
pub fn chain_hash(prev_hash: &str, canonical: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical);
    hex::encode(h.finalize())
}

/// The fields of an envelope that sort before `hash`, in canonical (sorted) order.
#[derive(Serialize)]
struct Before<'a> {
    actor: SortedActor<'a>,
    at: &'a Timestamp,
    command_id: &'a CommandId,
    correlation_id: Option<&'a CorrelationId>,
    data: &'a Value,
    event_id: &'a EventId,
}

/// The fields of an envelope that sort after `hash`, in canonical order.
#[derive(Serialize)]
struct After<'a> {
    position: u64,
    prev_hash: &'a str,
    recorded_at: &'a Timestamp,
    schema_version: u32,
    #[serde(rename = "type")]
    event_type: &'a str,
}

/// The actor with its keys in canonical order.
#[derive(Serialize)]
struct SortedActor<'a> {
    role: crate::domain::Role,
    tenant: &'a crate::domain::TenantId,
    user: &'a str,
}

/// Builds the stored bytes of an event at `position` after `prev_hash`; returns them with the new hash.
///
/// The canonical form is written directly, without building a JSON tree: the fields before `hash` and the fields
/// after it are serialized as two structs whose fields are declared in sorted order; the hash is computed over both
/// joined without `hash`, then spliced in between. `data` is a `serde_json::Value`, whose maps are sorted.
pub fn seal(ev: &NewEvent, position: Position, prev_hash: &str) -> (Vec<u8>, String) {
    let data = ev.event.data();
    let before = Before {
        actor: SortedActor {
            role: ev.actor.role,
            tenant: &ev.actor.tenant,
            user: &ev.actor.user,
        },
        at: &ev.at,
        command_id: &ev.command_id,
        correlation_id: ev.correlation_id.as_ref(),
        data: &data,
        event_id: &ev.event_id,
    };
    let after = After {
        position: position.0,
        prev_hash,
        recorded_at: &ev.recorded_at,
        schema_version: SCHEMA_VERSION,
        event_type: ev.event.type_name(),
    };
    let mut head = Vec::with_capacity(512);
    let mut tail = Vec::with_capacity(192);
    // Serializing these structs of strings, numbers and a JSON value cannot fail.
    let _ = serde_json::to_writer(&mut head, &before);
    let _ = serde_json::to_writer(&mut tail, &after);
    // `head` is `{…}` and `tail` is `{…}`: join them as `{… , …}`.
    head.pop();
    let mut unhashed = Vec::with_capacity(head.len() + tail.len());
    unhashed.extend_from_slice(&head);
    unhashed.push(b',');
    unhashed.extend_from_slice(&tail[1..]);
    let hash = chain_hash(prev_hash, &unhashed);
    let mut stored = head;
    stored.extend_from_slice(b",\"hash\":\"");
    stored.extend_from_slice(hash.as_bytes());
    stored.extend_from_slice(b"\",");
    stored.extend_from_slice(&tail[1..]);
    (stored, hash)
}

/// The canonical bytes of a JSON value (keys sorted, compact). `serde_json::Map` is a sorted map in this build.
pub fn canonical(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Why one stored event does not check out.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChainBreak {
    pub position: Position,
    pub reason: String,
}

/// Checks one stored event: it decodes, sits at `expected` position, links to `prev_hash` and its hash matches.
/// Returns the decoded envelope.
pub fn check(raw: &[u8], expected: Position, prev_hash: &str) -> Result<Envelope, ChainBreak> {
    let brk = |reason: String| ChainBreak {
        position: expected,
        reason,
    };
    let mut value: Value = serde_json::from_slice(raw)
        .map_err(|e| brk(format!("the stored bytes are not JSON: {e}")))?;
    let Some(map) = value.as_object_mut() else {
        return Err(brk("the stored value is not a JSON object".into()));
    };
    let Some(Value::String(stored_hash)) = map.remove("hash") else {
        return Err(brk("the envelope has no hash".into()));
    };
    let recomputed = chain_hash(prev_hash, &canonical(&value));
    if let Some(Value::String(p)) = value.get("prev_hash") {
        if p != prev_hash {
            return Err(brk(format!(
                "prev_hash {p} does not match the hash {prev_hash} of the previous event"
            )));
        }
    }
    if recomputed != stored_hash {
        return Err(brk(format!(
            "the hash does not match the content (stored {stored_hash}, computed {recomputed})"
        )));
    }
    if let Value::Object(m) = &mut value {
        m.insert("hash".into(), Value::String(stored_hash));
    }
    let env: Envelope = serde_json::from_value(value)
        .map_err(|e| brk(format!("the envelope does not decode: {e}")))?;
    if env.position != expected {
        return Err(brk(format!(
            "the envelope says position {} where {expected} was expected",
            env.position
        )));
    }
    env.event()
        .map_err(|e| brk(format!("the {} event does not decode: {e}", env.event_type)))?;
    Ok(env)
}

/// Checks one stored event like [`check`] and returns its hash, without building the envelope. When the stored bytes
/// are the canonical form of the whole envelope (checked in one pass, [`is_canonical`]), the canonical form without
/// `hash` is those bytes with the `hash` member cut out: this hashes that, then decodes the envelope in one pass, which
/// is most of what verification costs. Bytes that are not canonical, or do not check out, take [`check`]'s path, which
/// re-serialises them and names what is wrong; so this accepts exactly what [`check`] accepts.
pub fn check_hash(raw: &[u8], expected: Position, prev_hash: &str) -> Result<String, ChainBreak> {
    match check_canonical(raw, expected, prev_hash) {
        Some(hash) => Ok(hash),
        None => check(raw, expected, prev_hash).map(|env| env.hash),
    }
}

/// The fast path of [`check_hash`]: `None` when anything is off, for [`check`] to say what.
fn check_canonical(raw: &[u8], expected: Position, prev_hash: &str) -> Option<String> {
    /// Every field of an envelope, borrowed; `data` and `actor` are left as text to decode or skip.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Parts<'a> {
        position: Position,
        event_id: EventId,
        #[serde(rename = "type", borrow)]
        event_type: std::borrow::Cow<'a, str>,
        schema_version: u32,
        at: Timestamp,
        recorded_at: Timestamp,
        command_id: CommandId,
        correlation_id: Option<CorrelationId>,
        actor: Actor,
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
        #[serde(borrow)]
        prev_hash: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        hash: std::borrow::Cow<'a, str>,
    }
    if !is_canonical(raw) {
        return None;
    }
    // The last match: in canonical bytes every member after the top-level `hash` (position, prev_hash, recorded_at,
    // schema_version, type) holds a plain value. A nested `"hash"` member found instead would not hash to a stored
    // hash that the decoded envelope's own `hash` equals, checked below.
    const MEMBER: &[u8] = b",\"hash\":\"";
    let at = memchr::memmem::rfind(raw, MEMBER)?;
    let stored = raw.get(at + MEMBER.len()..at + MEMBER.len() + 64)?;
    let rest = raw.get(at + MEMBER.len() + 64..)?;
    if rest.first() != Some(&b'"') {
        return None;
    }
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(&raw[..at]);
    h.update(&rest[1..]);
    let mut hex = [0u8; 64];
    hex::encode_to_slice(h.finalize(), &mut hex).ok()?;
    if hex.as_slice() != stored {
        return None;
    }
    let computed = std::str::from_utf8(&hex).ok()?;
    let parts: Parts = serde_json::from_slice(raw).ok()?;
    if parts.position != expected || parts.prev_hash != prev_hash || parts.hash != computed {
        return None;
    }
    super::event_of(&parts.event_type, parts.schema_version, parts.data).ok()?;
    Some(computed.to_string())
}

/// Whether `b` is exactly what [`canonical`] writes for the JSON it holds: no insignificant whitespace, object keys
/// strictly ascending by their bytes (so none twice), strings escaped as `serde_json` escapes them, integers in plain
/// decimal. Anything else (floats included) answers `false`, for the full check to judge.
pub fn is_canonical(b: &[u8]) -> bool {
    let mut i = 0;
    canonical_value(b, &mut i, 0) && i == b.len()
}

/// Nesting deeper than this is left to the full check (and its parser's own limit).
const MAX_DEPTH: usize = 64;

fn canonical_value(b: &[u8], i: &mut usize, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    match b.get(*i) {
        Some(b'{') => {
            *i += 1;
            if b.get(*i) == Some(&b'}') {
                *i += 1;
                return true;
            }
            let mut previous: Option<&[u8]> = None;
            loop {
                let start = *i;
                if !canonical_string(b, i) {
                    return false;
                }
                let key = &b[start + 1..*i - 1];
                // A key with an escape sorts by its decoded bytes: left to the full check.
                if key.contains(&b'\\') || previous.is_some_and(|p| p >= key) {
                    return false;
                }
                previous = Some(key);
                if b.get(*i) != Some(&b':') {
                    return false;
                }
                *i += 1;
                if !canonical_value(b, i, depth + 1) {
                    return false;
                }
                match b.get(*i) {
                    Some(b',') => *i += 1,
                    Some(b'}') => {
                        *i += 1;
                        return true;
                    }
                    _ => return false,
                }
            }
        }
        Some(b'[') => {
            *i += 1;
            if b.get(*i) == Some(&b']') {
                *i += 1;
                return true;
            }
            loop {
                if !canonical_value(b, i, depth + 1) {
                    return false;
                }
                match b.get(*i) {
                    Some(b',') => *i += 1,
                    Some(b']') => {
                        *i += 1;
                        return true;
                    }
                    _ => return false,
                }
            }
        }
        Some(b'"') => canonical_string(b, i),
        Some(b't') => literal(b, i, b"true"),
        Some(b'f') => literal(b, i, b"false"),
        Some(b'n') => literal(b, i, b"null"),
        Some(b'-' | b'0'..=b'9') => {
            let negative = b[*i] == b'-';
            if negative {
                *i += 1;
            }
            let start = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            let digits = &b[start..*i];
            let plain = match digits {
                [] => false,
                [b'0'] => !negative,
                [first, ..] => *first != b'0',
            };
            plain && !matches!(b.get(*i), Some(b'.' | b'e' | b'E'))
        }
        _ => false,
    }
}

fn literal(b: &[u8], i: &mut usize, word: &[u8]) -> bool {
    if b.get(*i..*i + word.len()) == Some(word) {
        *i += word.len();
        true
    } else {
        false
    }
}

/// A string as `serde_json` writes it: `"` and `\\` and control characters escaped (the five short forms, else
/// `\\u00xx` in lowercase hex), nothing else.
fn canonical_string(b: &[u8], i: &mut usize) -> bool {
    if b.get(*i) != Some(&b'"') {
        return false;
    }
    *i += 1;
    loop {
        match b.get(*i) {
            None => return false,
            Some(b'"') => {
                *i += 1;
                return true;
            }
            Some(c) if *c < 0x20 => return false,
            Some(b'\\') => {
                match b.get(*i + 1) {
                    Some(b'"' | b'\\' | b'n' | b't' | b'r' | b'b' | b'f') => *i += 2,
                    Some(b'u') => {
                        let Some(hex) = b.get(*i + 2..*i + 6) else {
                            return false;
                        };
                        // Only control characters without a short form are written this way.
                        let lower = |c: &u8| c.is_ascii_digit() || (b'a'..=b'f').contains(c);
                        if hex[0] != b'0' || hex[1] != b'0' || hex[2] > b'1' || !lower(&hex[3]) {
                            return false;
                        }
                        if matches!(&hex[2..4], b"08" | b"09" | b"0a" | b"0c" | b"0d") {
                            return false;
                        }
                        *i += 6;
                    }
                    _ => return false,
                }
            }
            Some(_) => *i += 1,
        }
    }
}

/// The index keys of an entity: a kind byte and the 16 id bytes.
pub fn entity_prefix(entity: &EntityRef) -> [u8; 18] {
    let (kind, id) = match entity {
        EntityRef::Customer(c) => (b'c', *c.as_bytes()),
        EntityRef::Partner(p) => (b'p', *p.as_bytes()),
        EntityRef::Subscription(s) => (b's', *s.as_bytes()),
        EntityRef::PartnerProfile(p) => (b'n', *p.as_bytes()),
        EntityRef::CustomerProfile(c) => (b'k', *c.as_bytes()),
    };
    let mut k = [0u8; 18];
    k[0] = b'x';
    k[1] = kind;
    k[2..].copy_from_slice(&id);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Role, TenantId};
    use serde_json::Map;

    fn sample() -> NewEvent {
        NewEvent {
            event_id: "e0000000-0000-4000-8000-000000000001".parse().unwrap(),
            event: Event::AzurePlanCreated {
                billing_partner: "b0000000-0000-4000-8000-00000000000b".parse().unwrap(),
                customer: "c0000000-0000-4000-8000-00000000000c".parse().unwrap(),
            },
            at: "2024-01-10T09:00:00Z".parse().unwrap(),
            recorded_at: "2026-11-24T10:00:00.123456Z".parse().unwrap(),
            command_id: "ccccdddd-0000-4000-8000-000000000001".parse().unwrap(),
            correlation_id: None,
            actor: Actor {
                tenant: "b0000000-0000-4000-8000-00000000000b"
                    .parse::<TenantId>()
                    .unwrap(),
                user: "sales@b.example".into(),
                role: Role::PartnerSalesAgent,
            },
        }
    }

    #[test]
    fn sealed_events_check_out_and_link() {
        let (raw1, h1) = seal(&sample(), Position(1), GENESIS_HASH);
        let env = check(&raw1, Position(1), GENESIS_HASH).unwrap();
        assert_eq!(env.hash, h1);
        assert_eq!(env.event_type, "AzurePlanCreated");
        let (raw2, _) = seal(&sample(), Position(2), &h1);
        assert!(check(&raw2, Position(2), &h1).is_ok());
        assert!(check(&raw2, Position(2), GENESIS_HASH).is_err());
        assert!(check(&raw2, Position(3), &h1).is_err());
    }

    #[test]
    fn a_flipped_byte_breaks_the_hash() {
        let (raw, _) = seal(&sample(), Position(1), GENESIS_HASH);
        let text = String::from_utf8(raw).unwrap();
        let tampered = text.replace("sales@b.example", "sales@c.example");
        let err = check(tampered.as_bytes(), Position(1), GENESIS_HASH).unwrap_err();
        assert!(err.reason.contains("hash does not match"), "{}", err.reason);
    }

    #[test]
    fn the_fast_check_agrees_with_the_full_one_and_falls_back_for_other_bytes() {
        let (raw1, h1) = seal(&sample(), Position(1), GENESIS_HASH);
        let (raw2, h2) = seal(&sample(), Position(2), &h1);
        assert_eq!(check_hash(&raw1, Position(1), GENESIS_HASH).unwrap(), h1);
        assert_eq!(
            check_canonical(&raw1, Position(1), GENESIS_HASH),
            Some(h1.clone()),
            "sealed bytes take the fast path"
        );
        assert_eq!(check_hash(&raw2, Position(2), &h1).unwrap(), h2);
        // A wrong link, a wrong position or a changed byte fail with the full check's own words.
        for (raw, at, prev) in [
            (raw2.clone(), Position(2), GENESIS_HASH.to_string()),
            (raw2.clone(), Position(3), h1.clone()),
            (
                String::from_utf8(raw1.clone())
                    .unwrap()
                    .replace("sales@b.example", "sales@c.example")
                    .into_bytes(),
                Position(1),
                GENESIS_HASH.to_string(),
            ),
        ] {
            assert_eq!(
                check_hash(&raw, at, &prev).unwrap_err(),
                check(&raw, at, &prev).unwrap_err()
            );
        }
        // The same envelope stored with its keys in another order and spaces: not the canonical bytes, so the cut
        // does not hash to the stored hash, and the full check (which re-serialises) accepts it.
        let value: Value = serde_json::from_slice(&raw1).unwrap();
        let mut members: Vec<(String, Value)> =
            value.as_object().unwrap().clone().into_iter().collect();
        members.reverse();
        let reordered = format!(
            "{{ {} }}",
            members
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), v))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(check_canonical(reordered.as_bytes(), Position(1), GENESIS_HASH).is_none());
        assert_eq!(
            check_hash(reordered.as_bytes(), Position(1), GENESIS_HASH).unwrap(),
            h1
        );
    }

    #[test]
    fn bytes_that_are_not_canonical_never_pass_on_a_hash_computed_over_themselves() {
        // A forger rewrites an event in another layout and hashes the cut bytes as the fast path would: the full check
        // hashes the canonical form, so the fast path must refuse to judge such bytes.
        let (raw, _) = seal(&sample(), Position(1), GENESIS_HASH);
        let text = String::from_utf8(raw).unwrap();
        for variant in [
            text.replacen('{', "{ ", 1),
            text.replace("sales@b.example", "s\\u0061les@b.example"),
            format!("{text} "),
        ] {
            let member = variant.rfind(",\"hash\":\"").unwrap();
            let cut = format!("{}{}", &variant[..member], &variant[member + 9 + 64 + 1..]);
            let forged_hash = chain_hash(GENESIS_HASH, cut.as_bytes());
            let forged = format!(
                "{}{}{}",
                &variant[..member + 9],
                forged_hash,
                &variant[member + 9 + 64..]
            );
            assert!(!is_canonical(forged.as_bytes()), "{forged}");
            assert!(
                check_hash(forged.as_bytes(), Position(1), GENESIS_HASH).is_err(),
                "accepted a hash over non-canonical bytes: {forged}"
            );
            assert!(check(forged.as_bytes(), Position(1), GENESIS_HASH).is_err());
        }
    }

    #[test]
    fn is_canonical_accepts_exactly_what_the_canonical_writer_writes() {
        let values = [
            serde_json::json!({"b": [1, -2, 0, "x"], "a": {"z": null, "y": true, "x": false}, "c": ""}),
            serde_json::json!({"s": "tab\tnew\nline\r\u{8}\u{c}\u{1}\u{1f} \"q\" \\ / é 😀"}),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!(18446744073709551615u64),
        ];
        for v in &values {
            let bytes = canonical(v);
            assert!(is_canonical(&bytes), "{}", String::from_utf8_lossy(&bytes));
        }
        for text in [
            "{\"b\":1,\"a\":2}",
            "{\"a\":1,\"a\":2}",
            "{\"a\": 1}",
            " {}",
            "{\"a\":\"\\/\"}",
            "{\"a\":\"\\u0041\"}",
            "{\"a\":\"\\u000a\"}",
            "{\"a\":\"\\u001F\"}",
            "{\"a\":1.0}",
            "{\"a\":1e3}",
            "{\"a\":01}",
            "{\"a\":-0}",
            "{\"a\":[1,]}",
            "{\"\\u0061\":1}",
        ] {
            assert!(!is_canonical(text.as_bytes()), "{text}");
        }
    }

    /// The canonical form built as a JSON tree, the obvious way: the reference the direct writer must match.
    fn seal_reference(ev: &NewEvent, position: Position, prev_hash: &str) -> (Vec<u8>, String) {
        let mut m = Map::new();
        m.insert("position".into(), Value::from(position.0));
        m.insert("event_id".into(), Value::String(ev.event_id.to_string()));
        m.insert(
            "type".into(),
            Value::String(ev.event.type_name().to_string()),
        );
        m.insert("schema_version".into(), Value::from(SCHEMA_VERSION));
        m.insert("at".into(), Value::String(ev.at.to_string()));
        m.insert(
            "recorded_at".into(),
            Value::String(ev.recorded_at.to_string()),
        );
        m.insert(
            "command_id".into(),
            Value::String(ev.command_id.to_string()),
        );
        m.insert(
            "correlation_id".into(),
            ev.correlation_id
                .map_or(Value::Null, |c| Value::String(c.to_string())),
        );
        m.insert("actor".into(), serde_json::to_value(&ev.actor).unwrap());
        m.insert("data".into(), ev.event.data());
        m.insert("prev_hash".into(), Value::String(prev_hash.to_string()));
        let mut v = Value::Object(m);
        let hash = chain_hash(prev_hash, &canonical(&v));
        v.as_object_mut()
            .unwrap()
            .insert("hash".into(), Value::String(hash.clone()));
        (canonical(&v), hash)
    }

    #[test]
    fn the_direct_writer_matches_the_json_tree_form() {
        let mut ev = sample();
        ev.actor.user = "Zoë \"quoted\" \\ \u{7f}".into();
        for correlation in [
            None,
            Some("cccc0000-0000-4000-8000-000000000009".parse().unwrap()),
        ] {
            ev.correlation_id = correlation;
            for (position, prev) in [
                (Position(1), GENESIS_HASH.to_string()),
                (Position(u64::MAX), "ab".repeat(32)),
            ] {
                assert_eq!(
                    seal(&ev, position, &prev),
                    seal_reference(&ev, position, &prev)
                );
            }
        }
    }

    #[test]
    fn the_stored_bytes_are_sorted_compact_json() {
        let (raw, _) = seal(&sample(), Position(1), GENESIS_HASH);
        let text = String::from_utf8(raw).unwrap();
        assert!(text.starts_with("{\"actor\":{\"role\":\"partner_sales_agent\""));
        assert!(!text.contains(": "));
        assert!(text.contains("\"recorded_at\":\"2026-11-24T10:00:00.123456Z\""));
    }
}
