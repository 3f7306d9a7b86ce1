//! The parties an event or a command names (`domain::parties`, what the history index and access control read) are
//! exactly the customer, subscription and partner ids its wire form carries: over a generated workload, every event
//! and every command is compared with its JSON. A field that names a party but is left out of `parties()` fails here.

use std::collections::BTreeSet;

use partner_ledger::domain::{parse_line, Body, CommandId, Event, State, Timestamp};
use partner_ledger::workload::{generate, WorkloadSpec};
use serde_json::Value;

use crate::common;

/// The fields of a wire form that name a partner as a party.
const PARTNER_FIELDS: [&str; 6] = [
    "partner",
    "provider",
    "reseller",
    "billing_partner",
    "partner_of_record",
    "removed_by",
];

fn ids(v: &Value, fields: &[&str]) -> BTreeSet<String> {
    fields
        .iter()
        .filter_map(|f| v.get(*f).and_then(Value::as_str))
        // `removed_by` of DAP is a role ("partner", "customer"), not an id.
        .filter(|s| s.len() == 36)
        .map(str::to_string)
        .collect()
}

fn text<T: ToString>(v: Option<T>) -> Option<String> {
    v.map(|x| x.to_string())
}

struct Seen {
    events: BTreeSet<String>,
    commands: BTreeSet<String>,
}

impl Seen {
    fn command(&mut self, line: &str) -> partner_ledger::domain::Submitted {
        let submitted = parse_line(line).unwrap();
        let body: Value = serde_json::to_value(&submitted.body).unwrap();
        let named = submitted.body.parties();
        // A command names the partner it acts for first; a reseller of record is an attribute, not a party.
        let partners: BTreeSet<String> = named.partners.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            partners,
            ids(&body, &["partner", "provider", "reseller"]),
            "{line}"
        );
        let acting = body
            .get("partner")
            .or(body.get("provider"))
            .and_then(Value::as_str);
        assert_eq!(text(named.partners.first()).as_deref(), acting, "{line}");
        assert_eq!(
            text(named.customer).as_deref(),
            body["customer"].as_str(),
            "{line}"
        );
        assert_eq!(
            text(named.subscription).as_deref(),
            body["subscription"].as_str(),
            "{line}"
        );
        self.commands
            .insert(body["type"].as_str().unwrap().to_string());
        submitted
    }

    fn event(&mut self, event: &Event) {
        let v = serde_json::to_value(event).unwrap();
        let data = &v["data"];
        let p = event.parties();
        let partners: BTreeSet<String> = p.partners.iter().map(|p| p.to_string()).collect();
        assert_eq!(partners, ids(data, &PARTNER_FIELDS), "{v}");
        assert_eq!(
            text(p.customer).as_deref(),
            data["customer"].as_str(),
            "{v}"
        );
        assert_eq!(
            text(p.subscription).as_deref(),
            data["subscription"].as_str(),
            "{v}"
        );
        self.events.insert(v["type"].as_str().unwrap().to_string());
    }

    /// Checks every command of `lines` and every event the rules decide for it.
    fn fold(&mut self, lines: impl Iterator<Item = String>) {
        let start = Timestamp::ymd_hms(2023, 1, 1, 0, 0, 0);
        let mut state = State::new();
        for (n, line) in lines.enumerate() {
            let submitted = self.command(&line);
            let id = CommandId::new(uuid::Uuid::from_u128(n as u128 + 1)).unwrap();
            let at = state.clock.unwrap_or(start);
            let cmd = submitted.into_command(id, at, at);
            let Ok(events) = partner_ledger::domain::decide(&state, &cmd) else {
                continue;
            };
            for event in events {
                state.apply(cmd.at, &event);
                self.event(&event);
            }
        }
    }
}

#[test]
fn every_event_and_command_names_exactly_the_parties_its_wire_form_carries() {
    let mut seen = Seen {
        events: BTreeSet::new(),
        commands: BTreeSet::new(),
    };
    seen.fold(generate(WorkloadSpec {
        commands: 6_000,
        seed: 11,
        start: Timestamp::ymd_hms(2024, 2, 6, 0, 0, 0),
    }));
    // Every scenario of fixtures/, and the golden log's events as stored.
    for entry in std::fs::read_dir(common::fixtures()).unwrap() {
        let commands = entry.unwrap().path().join("commands.ndjson");
        if let Ok(text) = std::fs::read_to_string(&commands) {
            seen.fold(
                text.lines()
                    .filter(|l| l.starts_with('{'))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
        }
    }
    let golden = std::fs::read_to_string(common::fixtures().join("golden/events.ndjson")).unwrap();
    for line in golden.lines() {
        let (_, event) = partner_ledger::store::decode_envelope(line.as_bytes()).unwrap();
        seen.event(&event);
    }
    // The comparison covered the whole contract, not a corner of it.
    let missing: Vec<&str> = Event::TYPE_NAMES
        .iter()
        .copied()
        .filter(|t| !seen.events.contains(*t))
        .collect();
    assert!(
        missing.is_empty(),
        "event types never compared: {missing:?}"
    );
    let missing: Vec<&str> = Body::TYPE_NAMES
        .iter()
        .copied()
        .filter(|t| !seen.commands.contains(*t))
        .collect();
    assert!(
        missing.is_empty(),
        "command types never compared: {missing:?}"
    );
}
