//! Every fixture scenario runs through the real `exec` and `customer --json`, and must give the outcomes and views
//! written by hand in its folder.

use crate::common;

use common::*;
use serde_json::Value;

/// Runs a fixture on each backend: the same outcomes and views from sled and from PostgreSQL.
fn run_fixture(name: &str) {
    for (backend, data) in crate::pg::ledger_folders() {
        run_fixture_on(&format!("{name} on {backend}"), name, &data);
    }
}

fn run_fixture_on(name: &str, fixture: &str, data: &tempfile::TempDir) {
    let dir = fixtures().join(fixture);
    let commands = dir.join("commands.ndjson");
    let out = run(data.path(), &["exec", commands.to_str().unwrap()], None);
    let outcomes = stdout_lines(&out);
    let expected: Vec<Value> = std::fs::read_to_string(dir.join("expected-outcomes.ndjson"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        outcomes.len(),
        expected.len(),
        "{name}: one outcome per command\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, (e, a)) in expected.iter().zip(&outcomes).enumerate() {
        if let Some(m) = mismatch(e, a, "") {
            panic!(
                "{name}: outcome {} differs at {m}\nfull outcome: {a}",
                i + 1
            );
        }
        if a["outcome"] == "refused" {
            assert!(
                a["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{name}: a refusal explains itself"
            );
        }
        if a["outcome"] == "committed" && e.get("duplicate").is_none() {
            assert!(
                a.get("duplicate").is_none(),
                "{name}: outcome {} is not a duplicate",
                i + 1
            );
        }
    }
    assert!(
        out.status.success(),
        "{name}: exec exits 0 when every line committed or refused"
    );

    let views: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected-views.json")).unwrap())
            .unwrap();
    for (i, check) in views.iter().enumerate() {
        let customer = check["customer"].as_str().unwrap();
        let mut args = vec![
            "customer".to_string(),
            customer.to_string(),
            "--json".to_string(),
        ];
        match &check["as_of"] {
            Value::Null => {}
            Value::Number(n) => args.extend(["--as-of".to_string(), n.to_string()]),
            Value::String(s) => args.extend(["--as-of".to_string(), s.clone()]),
            other => panic!("bad as_of {other}"),
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(data.path(), &args, None);
        assert!(
            out.status.success(),
            "{name}: view {} failed: {}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
        let view: Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(m) = mismatch(&check["expect"], &view, "") {
            panic!("{name}: view {} differs at {m}\nfull view: {view:#}", i + 1);
        }
    }
    let verify = run(data.path(), &["verify"], None);
    assert!(verify.status.success(), "{name}: the chain verifies");
}

#[test]
fn seed_story() {
    run_fixture("seed-story");
}

#[test]
fn refusals() {
    run_fixture("refusals");
}

#[test]
fn gdap_lifecycle() {
    run_fixture("gdap-lifecycle");
}

#[test]
fn partner_set_over_time() {
    run_fixture("partner-set-over-time");
}

#[test]
fn two_tier() {
    run_fixture("two-tier");
}

#[test]
fn every_fixture_folder_is_run_by_a_test() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("expected-outcomes.ndjson").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "gdap-lifecycle",
            "partner-set-over-time",
            "refusals",
            "seed-story",
            "two-tier"
        ]
    );
}

/// The seed story's promise: A's subscription is identical before and after B joins, and nothing B did mentions it.
#[test]
fn seed_story_leaves_partner_as_subscription_untouched() {
    let data = tempfile::tempdir().unwrap();
    let commands = fixtures().join("seed-story/commands.ndjson");
    assert!(
        run(data.path(), &["exec", commands.to_str().unwrap()], None)
            .status
            .success()
    );
    let view_at = |as_of: &str| -> Value {
        let out = run(
            data.path(),
            &[
                "customer",
                "c0000000-0000-4000-8000-00000000000c",
                "--json",
                "--as-of",
                as_of,
            ],
            None,
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = view_at("7");
    let after = view_at("11");
    assert_eq!(before["subscriptions"][0], after["subscriptions"][0]);
    assert_eq!(after["partners"].as_array().unwrap().len(), 2);
    let b_events = stdout_lines(&run(data.path(), &["events", "--from", "7"], None));
    assert_eq!(b_events.len(), 4);
    for e in b_events {
        let text = e["data"].to_string();
        assert!(
            !text.contains("5a000000-0000-4000-8000-000000000001"),
            "B's event mentions A's subscription: {e}"
        );
        assert!(
            !text.contains("a0000000-0000-4000-8000-00000000000a"),
            "B's event mentions A: {e}"
        );
    }
}
