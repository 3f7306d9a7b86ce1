//! The golden log of today's events must replay to the same views forever (schema evolution goes through upcasters).

use crate::common;

use common::*;
use serde_json::Value;

#[test]
fn the_golden_log_replays_to_the_same_views() {
    let dir = fixtures().join("golden");
    let data = tempfile::tempdir().unwrap();
    let out = run(
        data.path(),
        &["import", dir.join("events.ndjson").to_str().unwrap()],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run(data.path(), &["verify"], None).status.success());
    let types: std::collections::BTreeSet<String> =
        stdout_lines(&run(data.path(), &["events"], None))
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect();
    assert_eq!(
        types.len(),
        partner_ledger::domain::Event::TYPE_NAMES.len(),
        "the golden log covers every event type"
    );
    let views: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("views.json")).unwrap()).unwrap();
    assert!(views.len() >= 20);
    for v in &views {
        let (kind, id) = (v["kind"].as_str().unwrap(), v["id"].as_str().unwrap());
        let mut args = vec![kind, id, "--json"];
        if let Some(a) = v["as_of"].as_str() {
            args.extend(["--as-of", a]);
        }
        let got: Value = serde_json::from_slice(&run(data.path(), &args, None).stdout).unwrap();
        assert_eq!(got, v["view"], "{kind} {id} as of {}", v["as_of"]);
    }
}
