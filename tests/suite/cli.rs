//! The CLI as a user meets it: outcomes per line, exit codes, and one-line errors for every bad folder or file.

use crate::common;

use common::*;

const OP: &str = r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops@ledger.example","role":"operator"}"#;

fn register_line(customer: &str) -> String {
    format!(
        r#"{{"type":"RegisterCustomer","actor":{OP},"customer":"{customer}","company_name":"Contoso","domain":"contoso.onmicrosoft.com","country":"NL","cloud":"public"}}"#
    )
}

#[test]
fn exec_reads_stdin_skips_comments_and_blank_lines_and_reports_invalid_lines_by_number() {
    let data = tempfile::tempdir().unwrap();
    let input = format!(
        "# a comment\n\n{}\nnot json\n{{\"type\":\"RegisterCustomer\",\"colour\":\"red\"}}\n{}\n",
        register_line("c0000000-0000-4000-8000-00000000000c"),
        register_line("c1000000-0000-4000-8000-0000000000c1"),
    );
    let out = run(data.path(), &["exec", "-"], Some(input.as_bytes()));
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["positions"], serde_json::json!([1]));
    assert_eq!(lines[1]["outcome"], "invalid");
    assert_eq!(lines[1]["line"], 4);
    assert!(lines[1]["message"]
        .as_str()
        .unwrap()
        .contains("not a JSON document"));
    assert_eq!(lines[2]["line"], 5);
    assert!(lines[2]["message"]
        .as_str()
        .unwrap()
        .contains("unknown field `colour`"));
    assert_eq!(
        lines[3]["positions"],
        serde_json::json!([2]),
        "an invalid line appends nothing"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "any invalid line makes exec exit non-zero"
    );
}

#[test]
fn exec_exits_zero_when_every_line_is_committed_or_refused() {
    let data = tempfile::tempdir().unwrap();
    let line = register_line("c0000000-0000-4000-8000-00000000000c");
    let input = format!("{line}\n{line}\n");
    let out = run(data.path(), &["exec", "-"], Some(input.as_bytes()));
    let lines = stdout_lines(&out);
    assert_eq!(lines[1]["outcome"], "refused");
    assert_eq!(lines[1]["code"], "invalid_state");
    assert!(lines[1]["rule"].is_null());
    assert!(out.status.success());
}

#[test]
fn an_over_long_line_is_invalid_and_the_next_line_still_runs() {
    let data = tempfile::tempdir().unwrap();
    let long = format!("{{\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    let input = format!(
        "{long}\n{}\n",
        register_line("c0000000-0000-4000-8000-00000000000c")
    );
    let out = run(data.path(), &["exec", "-"], Some(input.as_bytes()));
    let lines = stdout_lines(&out);
    assert_eq!(lines[0]["outcome"], "invalid");
    assert!(lines[0]["message"]
        .as_str()
        .unwrap()
        .contains("at most 65536 bytes"));
    assert_eq!(lines[1]["outcome"], "committed");
}

fn one_line_error(out: &std::process::Output) -> String {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn a_missing_command_file_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let err = one_line_error(&run(data.path(), &["exec", "/no/such/file.ndjson"], None));
    assert!(
        err.contains("cannot open the command file /no/such/file.ndjson"),
        "{err}"
    );
}

#[test]
fn reading_a_folder_without_a_ledger_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let missing = data.path().join("nothing-here");
    let err = one_line_error(&run(&missing, &["events"], None));
    assert!(err.contains("no ledger at"), "{err}");
    assert!(!missing.exists(), "reads never create a ledger");
}

#[test]
fn a_folder_that_is_not_a_ledger_is_refused() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("notes.txt"), "mine").unwrap();
    let err = one_line_error(&run(data.path(), &["exec", "-"], Some(b"")));
    assert!(err.contains("is not a partner-ledger data folder"), "{err}");
}

#[test]
fn an_unreadable_folder_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let err = one_line_error(&run(&file, &["events"], None));
    assert!(err.contains("not a partner-ledger data folder"), "{err}");
}

#[test]
fn a_folder_left_with_only_a_free_lock_is_no_ledger_yet_not_a_foreign_folder() {
    // What a creator that died between taking the lock and writing ledger.json leaves behind.
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("LOCK"), "12345\n").unwrap();
    let err = one_line_error(&run(data.path(), &["events"], None));
    assert!(err.contains("no ledger at"), "{err}");
    // And it can be created there.
    let seed = std::fs::read(fixtures().join("seed-story/commands.ndjson")).unwrap();
    assert!(run(data.path(), &["exec", "-"], Some(&seed))
        .status
        .success());
}

#[test]
fn a_ledger_in_use_by_another_process_names_that_process() {
    let data = tempfile::tempdir().unwrap();
    let mut holder = std::process::Command::new(BIN)
        .arg("--data")
        .arg(data.path())
        .args(["exec", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the holder has created and locked the ledger.
    let lock = data.path().join("LOCK");
    for _ in 0..200 {
        if std::fs::read_to_string(&lock).is_ok_and(|s| !s.trim().is_empty()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let err = one_line_error(&run(data.path(), &["events"], None));
    assert!(
        err.contains(&format!("is locked by process {}", holder.id())),
        "{err}"
    );
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    assert!(
        run(data.path(), &["events"], None).status.success(),
        "free again once the holder exits"
    );
}

#[test]
fn events_filter_by_customer_and_partner_and_range() {
    let data = tempfile::tempdir().unwrap();
    let seed = fixtures().join("seed-story/commands.ndjson");
    assert!(run(data.path(), &["exec", seed.to_str().unwrap()], None)
        .status
        .success());
    let pos = |args: &[&str]| -> Vec<u64> {
        let mut all = vec!["events"];
        all.extend_from_slice(args);
        stdout_lines(&run(data.path(), &all, None))
            .iter()
            .map(|e| e["position"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(pos(&[]), (1..=11).collect::<Vec<_>>());
    assert_eq!(pos(&["--from", "9", "--to", "10"]), vec![10]);
    assert_eq!(
        pos(&["--partner", "b0000000-0000-4000-8000-00000000000b"]),
        vec![2, 8, 9, 10, 11]
    );
    assert_eq!(
        pos(&[
            "--customer",
            "c0000000-0000-4000-8000-00000000000c",
            "--from",
            "8"
        ]),
        vec![9, 10, 11]
    );
    assert_eq!(
        pos(&[
            "--customer",
            "c0000000-0000-4000-8000-00000000000c",
            "--partner",
            "a0000000-0000-4000-8000-00000000000a"
        ]),
        vec![4, 5, 7]
    );
    assert_eq!(
        pos(&["--subscription", "5a000000-0000-4000-8000-000000000001"]),
        vec![7]
    );
}

#[test]
fn customer_prints_a_readable_table_and_an_unknown_customer_is_an_error() {
    let data = tempfile::tempdir().unwrap();
    let seed = fixtures().join("seed-story/commands.ndjson");
    assert!(run(data.path(), &["exec", seed.to_str().unwrap()], None)
        .status
        .success());
    let out = run(
        data.path(),
        &["customer", "c0000000-0000-4000-8000-00000000000c"],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Contoso Ltd")
            && text.contains("Adatum Cloud")
            && text.contains("Bellows IT"),
        "{text}"
    );
    assert!(text.contains("O365_E3 × 25"), "{text}");
    let out = run(
        data.path(),
        &["customer", "c9000000-0000-4000-8000-0000000000c9"],
        None,
    );
    assert_eq!(out.status.code(), Some(3));
    let out = run(data.path(), &["customer", "not-a-uuid"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a lowercase hyphenated UUID"));
}

#[test]
fn the_demo_loads_the_seed_story_once_and_shows_contoso() {
    let data = tempfile::tempdir().unwrap();
    let ledger = data.path().join("ledger-data");
    let out = run(&ledger, &["demo"], None);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("10 commands committed durably"), "{text}");
    assert!(
        text.contains("Bellows IT") && text.contains("Contoso Production"),
        "{text}"
    );
    assert!(
        text.contains(&format!("--data {}", ledger.display())),
        "{text}"
    );
    let again = run(&ledger, &["demo"], None);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already holds 11 events"));
}

/// On PostgreSQL the demo names where the ledger is without the URL (which may hold a password), and its hints leave
/// out `--data`, which would point at another ledger.
#[test]
fn the_demo_on_postgres_names_the_database_and_hints_without_data() {
    let data = crate::pg::folder_on_postgres();
    let out = run(data.path(), &["demo"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("10 commands committed durably"), "{text}");
    assert!(text.contains("database postgres schema ledger_"), "{text}");
    assert!(!text.contains("--data"), "{text}");
    assert!(
        text.contains("with the same --store and --pg-schema"),
        "{text}"
    );
}

#[test]
fn exit_codes_are_distinct_and_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let seed = std::fs::read(fixtures().join("seed-story/commands.ndjson")).unwrap();
    assert_eq!(
        run(&data, &["exec", "-"], Some(&seed)).status.code(),
        Some(0)
    );
    // 1: invalid input.
    assert_eq!(
        run(&data, &["exec", "-"], Some(b"{not json}\n"))
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        run(&data, &["export", "--to", "999999"], None)
            .status
            .code(),
        Some(1)
    );
    // 2: bad usage (clap).
    assert_eq!(
        run(&data, &["no-such-command"], None).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&data, &["events", "--no-such-flag"], None)
            .status
            .code(),
        Some(2)
    );
    // 3: not found, and no ledger at all.
    assert_eq!(
        run(
            &data,
            &["customer", "c9000000-0000-4000-8000-000000000009"],
            None
        )
        .status
        .code(),
        Some(3)
    );
    assert_eq!(
        run(&dir.path().join("none"), &["checkpoint"], None)
            .status
            .code(),
        Some(3)
    );
    // 4: locked by a running server.
    let server = common::serve(&data, None, &[]);
    let out = run(&data, &["checkpoint"], None);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);
}

#[test]
fn completions_a_man_page_and_json_logs_come_from_the_parser() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run(dir.path(), &["completions", shell], None);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        for command in ["serve", "exec", "export", "import", "verify"] {
            assert!(text.contains(command), "{shell} completions lack {command}");
        }
    }
    let man = run(dir.path(), &["man"], None);
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.contains(".TH partner-ledger 1") && man.contains("completions"),
        "{man}"
    );
    // JSON logs: one object per line on standard error, no colour codes.
    let out = run(
        &dir.path().join("none"),
        &["--log-format", "json", "--log-level", "debug", "checkpoint"],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains('\u{1b}'),
        "colour codes in a log that is not a terminal: {err}"
    );
    let out = run(
        dir.path(),
        &["--log-format", "json", "--log-level", "debug", "exec", "-"],
        Some(b""),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let json: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!json.is_empty(), "no JSON log lines at debug: {err}");
    assert!(json
        .iter()
        .all(|v| v["level"].is_string() && v["timestamp"].is_string()));
}

#[test]
fn a_wrong_kind_of_file_or_a_date_without_time_is_answered_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let commands = fixtures().join("seed-story/commands.ndjson");
    // import given a file of commands: it names exec, writes nothing.
    let target = dir.path().join("restored");
    let out = run(&target, &["import", commands.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("partner-ledger exec FILE"));
    assert!(!target.exists());
    // exec given a backup: each line says to use import.
    let data = dir.path().join("ledger");
    assert!(run(&data, &["exec", commands.to_str().unwrap()], None)
        .status
        .success());
    let backup = run(&data, &["export"], None).stdout;
    let out = run(&dir.path().join("other"), &["exec", "-"], Some(&backup));
    let first = stdout_lines(&out).remove(0);
    assert_eq!(first["outcome"], "invalid");
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains("partner-ledger import FILE"),
        "{first}"
    );
    // A date without a time gets examples of the accepted forms.
    let out = run(
        &data,
        &[
            "customer",
            "c0000000-0000-4000-8000-00000000000c",
            "--as-of",
            "2024-02-01",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2024-02-01T00:00:00Z"));
}
