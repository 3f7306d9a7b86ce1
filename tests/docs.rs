//! The documentation names every command, event type and refusal code the code has, so docs cannot drift.

use partner_ledger::domain::{Body, Code, Event};

fn doc(name: &str) -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/").to_string() + name)
        .unwrap()
}

#[test]
fn every_command_is_documented_with_an_example() {
    let text = doc("commands.md");
    for t in Body::TYPE_NAMES {
        assert!(
            text.contains(&format!("## `{t}`")),
            "{t} has no section in docs/commands.md"
        );
        assert!(
            text.contains(&format!("{{\"type\":\"{t}\"")),
            "{t} has no example in docs/commands.md"
        );
    }
}

#[test]
fn every_event_type_is_documented_with_an_example() {
    let text = doc("events.md");
    for t in Event::TYPE_NAMES {
        let section = text
            .split(&format!("### `{t}`"))
            .nth(1)
            .unwrap_or_else(|| panic!("{t} is missing from docs/events.md"));
        assert!(section.contains("```json"), "{t} has no example");
    }
}

#[test]
fn every_refusal_code_is_documented_with_its_vendor_code() {
    let text = doc("errors.md");
    for c in Code::ALL {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` ", c.as_str())))
            .unwrap_or_else(|| panic!("{c} is missing from docs/errors.md"));
        if let Some(v) = c.vendor_code() {
            assert!(
                row.contains(&v.to_string()),
                "{c}: vendor code {v} not documented"
            );
        }
    }
}

#[test]
fn every_http_route_is_documented() {
    let text = doc("api.md");
    let openapi = partner_ledger::api::openapi_document();
    for path in openapi["paths"].as_object().unwrap().keys() {
        let route = path.split('{').next().unwrap().trim_end_matches('/');
        assert!(text.contains(route), "{path} is missing from docs/api.md");
    }
}
