//! One stored envelope as a CloudEvent: the NATS subject it is published on, its binary-mode headers (NATS protocol
//! binding) and its structured form (`application/cloudevents+json`, for the HTTP streams). The event's `data` is the
//! envelope itself, byte for byte as stored, so that a consumer can check the hash chain from the broker alone.

use serde::Deserialize;

use crate::domain::{EntityRef, Position};

/// The CloudEvents version the ledger speaks.
pub const SPEC_VERSION: &str = "1.0";

/// The default `source` attribute (`--cloudevents-source`).
pub const DEFAULT_SOURCE: &str = "urn:partner-ledger";

/// The default subject prefix (`--nats-subject-prefix`).
pub const DEFAULT_PREFIX: &str = "ledger";

/// What a CloudEvent needs from an envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Described {
    pub position: Position,
    pub event_id: String,
    pub event_type: String,
    pub at: String,
    pub recorded_at: String,
    pub hash: String,
    pub prev_hash: String,
    /// `customer`, `partner` or `ledger`: what the event is about, the subject's second token.
    pub scope: &'static str,
    /// That customer's or partner's id (`-` for `ledger`): the subject's third token and `ce-subject`.
    pub about: String,
}

#[derive(Deserialize)]
struct Fields<'a> {
    position: Position,
    event_id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    #[serde(default)]
    schema_version: Option<u32>,
    at: &'a str,
    recorded_at: &'a str,
    hash: &'a str,
    prev_hash: &'a str,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
}

impl Described {
    /// Reads an envelope (the stored bytes).
    pub fn of(raw: &[u8]) -> Result<Described, String> {
        let f: Fields =
            serde_json::from_slice(raw).map_err(|e| format!("not a ledger envelope: {e}"))?;
        let version = f.schema_version.unwrap_or(crate::domain::SCHEMA_VERSION);
        let event = crate::store::event_of(f.event_type, version, f.data)
            .map_err(|e| format!("event {} does not decode: {e}", f.position))?;
        // The customer it is about, else the partner it is about (or acts for): every event names one of them.
        let (scope, about) = match event.entities().first() {
            Some(EntityRef::Customer(c) | EntityRef::CustomerProfile(c)) => {
                ("customer", c.to_string())
            }
            Some(EntityRef::Partner(p) | EntityRef::PartnerProfile(p)) => {
                ("partner", p.to_string())
            }
            _ => ("ledger", "-".to_string()),
        };
        Ok(Described {
            position: f.position,
            event_id: f.event_id.to_string(),
            event_type: f.event_type.to_string(),
            at: f.at.to_string(),
            recorded_at: f.recorded_at.to_string(),
            hash: f.hash.to_string(),
            prev_hash: f.prev_hash.to_string(),
            scope,
            about,
        })
    }

    /// The NATS subject: `PREFIX.customer.<customer id>.<EventType>`, `PREFIX.partner.<partner id>.<EventType>`
    /// for events about a partner alone (docs/streams.md).
    pub fn subject(&self, prefix: &str) -> String {
        format!("{prefix}.{}.{}.{}", self.scope, self.about, self.event_type)
    }

    /// The binary-mode attributes, as (header, value) pairs: `ce-…` attributes, `Content-Type` for the data, and the
    /// JetStream headers that make stream sequence N ledger position N (`Nats-Msg-Id`, `Nats-Expected-Last-Sequence`).
    pub fn headers(&self, source: &str) -> Vec<(&'static str, String)> {
        vec![
            ("Nats-Msg-Id", self.event_id.clone()),
            (
                "Nats-Expected-Last-Sequence",
                (self.position.0 - 1).to_string(),
            ),
            ("ce-specversion", SPEC_VERSION.to_string()),
            ("ce-id", self.event_id.clone()),
            ("ce-source", source.to_string()),
            ("ce-type", self.event_type.clone()),
            ("ce-time", self.at.clone()),
            ("ce-subject", self.about.clone()),
            ("Content-Type", "application/json".to_string()),
            ("ce-ledgerposition", self.position.0.to_string()),
            ("ce-ledgerhash", self.hash.clone()),
            ("ce-ledgerprevhash", self.prev_hash.clone()),
            ("ce-ledgerrecordedtime", self.recorded_at.clone()),
        ]
    }

    /// The structured form: one `application/cloudevents+json` object whose `data` is the envelope `raw`.
    pub fn structured(&self, source: &str, raw: &[u8], out: &mut Vec<u8>) {
        let attributes = serde_json::json!({
            "specversion": SPEC_VERSION,
            "id": self.event_id,
            "source": source,
            "type": self.event_type,
            "time": self.at,
            "subject": self.about,
            "datacontenttype": "application/json",
            "ledgerposition": self.position.0,
            "ledgerhash": self.hash,
            "ledgerprevhash": self.prev_hash,
            "ledgerrecordedtime": self.recorded_at,
        });
        // The attributes, then `data` spliced in as the stored bytes (never re-serialised: the hash covers them).
        let mut text = attributes.to_string();
        text.pop();
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(raw);
        out.push(b'}');
    }
}

/// Whether `name` may be a NATS subject token chosen by an operator (the prefix): letters, digits, `-` and `_`,
/// dot-separated, with no wildcard or whitespace.
pub fn valid_prefix(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first event of the seed story, as `export` printed it.
    fn envelope() -> Vec<u8> {
        br#"{"actor":{"role":"operator","tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops@ledger.example"},"at":"2024-01-08T09:00:00Z","command_id":"5eed0000-0000-4000-8000-000000000001","correlation_id":null,"data":{"cloud":"public","country":"NL","kind":"direct_bill","markets":["NL"],"name":"Adatum Cloud","partner":"a0000000-0000-4000-8000-00000000000a","partner_id":"4410001"},"event_id":"73a9d9c3-f2d1-441a-90d9-cc2e147a4753","hash":"a3746f6c8e866ea5e4c7fe8d87e76afa94044b7e1dd12e9b526cec56baceda9f","position":1,"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","recorded_at":"2026-12-01T00:51:05.180322036Z","schema_version":1,"type":"PartnerEnrolled"}"#.to_vec()
    }

    #[test]
    fn a_partner_event_lands_on_the_partners_subject_and_a_customer_event_on_the_customers() {
        let raw = envelope();
        let d = Described::of(&raw).unwrap();
        assert_eq!(d.scope, "partner");
        assert_eq!(
            d.subject("ledger"),
            format!("ledger.partner.{}.PartnerEnrolled", d.about)
        );
        let h = d.headers("urn:x");
        assert!(h.contains(&("Nats-Expected-Last-Sequence", "0".into())));
        assert!(h.contains(&("ce-id", d.event_id.clone())));
        let mut out = Vec::new();
        d.structured("urn:x", &raw, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["ledgerposition"], 1);
        let data: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v["data"], data);
    }

    #[test]
    fn prefixes_are_plain_tokens() {
        assert!(valid_prefix("ledger"));
        assert!(valid_prefix("acme.ledger-1"));
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a", "a."] {
            assert!(!valid_prefix(bad), "{bad}");
        }
    }
}
