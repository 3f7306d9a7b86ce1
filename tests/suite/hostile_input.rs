//! Hostile and broken input through `exec`: each line gets a precise `invalid` answer naming the problem, nothing is
//! appended for it, and the lines around it still run (issue 6's catalogue, CLI side).

use crate::common;

use common::*;

const OP: &str = r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops@ledger.example","role":"operator"}"#;

fn register(customer: &str, extra: &str) -> String {
    format!(
        r#"{{"type":"RegisterCustomer","actor":{OP},"customer":"{customer}","company_name":"Contoso","domain":"contoso.onmicrosoft.com","country":"NL","cloud":"public"{extra}}}"#
    )
}

const GOOD: &str = "c0000000-0000-4000-8000-00000000000c";

#[test]
fn every_malformed_line_is_invalid_with_a_precise_message_and_appends_nothing() {
    let nested = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let cases: Vec<(String, &str)> = vec![
        ("this is not json".into(), "not a JSON document"),
        (register(GOOD, "")[..60].to_string(), "not a JSON document"),
        (
            register(GOOD, "").replace("\"Contoso\"", "[\"Contoso\"]"),
            "invalid type: sequence",
        ),
        (
            register(GOOD, "").replace("RegisterCustomer", "RegisterAlien"),
            "unknown command type `RegisterAlien`",
        ),
        (register(GOOD, r#","vip":true"#), "unknown field `vip`"),
        (
            register(GOOD, "").replace(r#","domain":"contoso.onmicrosoft.com""#, ""),
            "missing field `domain`",
        ),
        (
            register("00000000-0000-0000-0000-000000000000", ""),
            "the nil UUID is not a valid id",
        ),
        (
            register("C0000000-0000-4000-8000-00000000000C", ""),
            "not a lowercase hyphenated UUID",
        ),
        (
            register(GOOD, r#","at":"2024-02-30T00:00:00Z""#),
            "not an RFC 3339 time",
        ),
        (
            register(GOOD, r#","at":"+10000-01-01T00:00:00Z""#),
            "not an RFC 3339 time",
        ),
        (
            register(GOOD, r#","command_id":"not-a-uuid""#),
            "not a lowercase hyphenated UUID",
        ),
        (
            register(GOOD, "").replace("\"NL\"", "\"Netherlands\""),
            "not an ISO 3166-1 alpha-2 country code",
        ),
        (
            register(GOOD, "").replace("Contoso\"", &format!("{}\"", "x".repeat(1_048_576))),
            "at most 65536 bytes",
        ),
        (
            register(GOOD, r#","country":"NL""#),
            "duplicate field `country`",
        ),
        (nested, "recursion limit exceeded"),
        ("[1,2,3]".into(), "a command must be a JSON object"),
        ("null".into(), "a command must be a JSON object"),
        (r#"{"type":42}"#.into(), "field `type` must be a string"),
    ];
    let data = tempfile::tempdir().unwrap();
    let mut input = String::new();
    for (line, _) in &cases {
        input.push_str(line);
        input.push('\n');
    }
    // Invalid UTF-8, then a good command that must still commit.
    let mut bytes = input.into_bytes();
    bytes.extend_from_slice(b"{\"type\":\"RegisterCustomer\",\"x\":\"\xff\xfe\"}\n");
    bytes.extend_from_slice(register(GOOD, "").as_bytes());
    bytes.push(b'\n');
    let out = run(data.path(), &["exec", "-"], Some(&bytes));
    assert_eq!(out.status.code(), Some(1), "invalid lines make exec exit 1");
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), cases.len() + 2);
    for (i, (_, expected)) in cases.iter().enumerate() {
        let l = &lines[i];
        assert_eq!(l["outcome"], "invalid", "case {i}: {l}");
        assert_eq!(l["line"], i + 1);
        assert!(
            l["message"].as_str().unwrap().contains(expected),
            "case {i}: expected `{expected}` in {l}"
        );
        assert!(
            l["message"].as_str().unwrap().len() < 400,
            "case {i}: the message stays short"
        );
    }
    assert_eq!(lines[cases.len()]["message"], "the line is not valid UTF-8");
    assert_eq!(
        lines[cases.len() + 1]["positions"],
        serde_json::json!([1]),
        "only the good command appended"
    );
    assert_eq!(stdout_lines(&run(data.path(), &["events"], None)).len(), 1);
}

#[test]
fn values_out_of_range_are_refused_by_their_rule_never_invalid() {
    let data = tempfile::tempdir().unwrap();
    let cases = [
        (
            register(GOOD, r#","at":"1969-07-20T20:17:00Z""#),
            "time_out_of_range",
            "R37",
        ),
        (
            register(GOOD, r#","at":"2999-01-01T00:00:00Z""#),
            "time_out_of_range",
            "R37",
        ),
        (
            register(GOOD, "").replace("\"Contoso\"", "\"Contoso\\u0000Ltd\""),
            "invalid_text",
            "R38",
        ),
        (
            register(GOOD, "").replace("\"Contoso\"", &format!("\"{}\"", "x".repeat(300))),
            "invalid_text",
            "R38",
        ),
    ];
    let input: String = cases.iter().map(|(l, _, _)| format!("{l}\n")).collect();
    let out = run(data.path(), &["exec", "-"], Some(input.as_bytes()));
    assert!(out.status.success());
    for (l, (_, code, rule)) in stdout_lines(&out).iter().zip(&cases) {
        assert_eq!(
            (
                l["outcome"].as_str(),
                l["code"].as_str(),
                l["rule"].as_str()
            ),
            (Some("refused"), Some(*code), Some(*rule)),
            "{l}"
        );
    }
    assert!(stdout_lines(&run(data.path(), &["events"], None)).is_empty());
}
