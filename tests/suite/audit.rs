//! History, refusals, diff, checkpoints, export and import, through the real binary; most of them on both backends
//! (sled, then PostgreSQL).

use crate::common;

use common::*;
use serde_json::Value;

const CONTOSO: &str = "c0000000-0000-4000-8000-00000000000c";
const A: &str = "a0000000-0000-4000-8000-00000000000a";

fn ledger_with(fixture: &str) -> tempfile::TempDir {
    let data = crate::pg::folder();
    let commands = fixtures().join(fixture).join("commands.ndjson");
    assert!(
        run(data.path(), &["exec", commands.to_str().unwrap()], None)
            .status
            .success()
    );
    data
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn history_includes_refused_commands_from_the_audit_trail_without_changing_state() {
    crate::pg::on_both_backends(|| {
        let data = ledger_with("refusals");
        let plain = stdout_lines(&run(
            data.path(),
            &["history", "customer", CONTOSO, "--json"],
            None,
        ));
        assert!(plain.iter().all(|l| l.get("position").is_some()));
        let with = stdout_lines(&run(
            data.path(),
            &[
                "history",
                "customer",
                CONTOSO,
                "--json",
                "--include-refusals",
            ],
            None,
        ));
        let refused: Vec<&Value> = with.iter().filter_map(|l| l.get("refused")).collect();
        let codes: Vec<&str> = refused
            .iter()
            .map(|r| r["code"].as_str().unwrap())
            .collect();
        assert_eq!(
            codes,
            [
                "no_reseller_relationship",
                "cloud_mismatch",
                "not_partner_of_record",
                "relationship_has_active_subscriptions",
                "invalid_duration",
                "duplicate_name",
                "auto_extend_with_global_admin",
                "request_expired"
            ]
        );
        let first = refused[0];
        assert_eq!(first["type"], "AddAzureSubscription");
        assert_eq!(first["rule"], "R24");
        assert_eq!(first["actor"]["role"], "partner_sales_agent");
        assert_eq!(first["at"], "2024-01-12T09:01:00Z");
        assert_eq!(with.len(), plain.len() + refused.len());
        // The refusals left the event log alone.
        assert_eq!(stdout_lines(&run(data.path(), &["events"], None)).len(), 15);
        // A partner's history carries its own refusals, e.g. B cancelling A's subscription.
        let b = stdout_lines(&run(
            data.path(),
            &[
                "history",
                "partner",
                "b0000000-0000-4000-8000-00000000000b",
                "--json",
                "--include-refusals",
            ],
            None,
        ));
        assert!(b
            .iter()
            .any(|l| l["refused"]["code"] == "not_partner_of_record"));
    });
}

#[test]
fn diff_lists_what_changed_between_two_points_with_time_actor_and_position() {
    crate::pg::on_both_backends(|| {
        let data = ledger_with("partner-set-over-time");
        let out = text(&run(
            data.path(),
            &[
                "customer",
                CONTOSO,
                "--diff",
                "2024-04-01T00:00:00Z",
                "2024-07-01T12:00:00Z",
            ],
            None,
        ));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("4 change(s)"), "{out}");
        assert!(
            lines[1].contains("2024-05-01T09:00:00Z")
                && lines[1].contains("#10")
                && lines[1].contains("cancelled"),
            "{out}"
        );
        assert!(
            lines[2].contains("partner Adatum Cloud removed")
                && lines[2].contains("admin@adatum.example"),
            "{out}"
        );
        assert!(lines[3].contains("partner Bellows IT removed"), "{out}");
        assert!(
            lines[4].contains("Adatum Cloud requested a relationship") && lines[4].contains("#13"),
            "{out}"
        );
    });
}

#[test]
fn verify_against_a_checkpoint_proves_extension_and_names_a_rewrite_or_truncation() {
    crate::pg::on_both_backends(|| {
        let data = ledger_with("seed-story");
        let checkpoint = text(&run(data.path(), &["checkpoint"], None))
            .trim()
            .to_string();
        assert!(checkpoint.starts_with("11:"));
        // More history is appended: the log still extends the checkpoint.
        let more = fixtures().join("gdap-lifecycle/commands.ndjson");
        let extra: String = std::fs::read_to_string(more)
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"AdvanceClock\"") && l.contains("2024-02-16"))
            .collect();
        assert!(run(data.path(), &["exec", "-"], Some(extra.as_bytes()))
            .status
            .success());
        let out = run(data.path(), &["verify", "--against", &checkpoint], None);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("extends the checkpoint at 11"));
        // A checkpoint whose hash differs names the position.
        let forged = format!("5:{}", "ab".repeat(32));
        let out = run(data.path(), &["verify", "--against", &forged], None);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out).contains("FAILED at position 5") && text(&out).contains("rewritten"));
        // A checkpoint beyond the head means events were removed.
        let out = run(
            data.path(),
            &["verify", "--against", &format!("99:{}", "cd".repeat(32))],
            None,
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out).contains("events were removed"));
        assert!(
            !run(data.path(), &["verify", "--against", "nonsense"], None)
                .status
                .success()
        );
    });
}

#[test]
fn export_then_import_reproduces_the_identical_chain_and_views() {
    crate::pg::on_both_backends(|| {
        let data = ledger_with("two-tier");
        let export = run(data.path(), &["export"], None).stdout;
        let file = data.path().join("backup.ndjson");
        std::fs::write(&file, &export).unwrap();
        let restored = crate::pg::folder();
        let out = run(restored.path(), &["import", file.to_str().unwrap()], None);
        assert!(
            out.status.success(),
            "{}{}",
            text(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            run(restored.path(), &["export"], None).stdout,
            export,
            "byte for byte"
        );
        assert!(run(restored.path(), &["verify"], None).status.success());
        let view = |d: &std::path::Path| run(d, &["customer", CONTOSO, "--json"], None).stdout;
        assert_eq!(view(restored.path()), view(data.path()));
        // Re-submitting a restored command is recognised as a duplicate.
        let first = std::fs::read_to_string(fixtures().join("two-tier/commands.ndjson")).unwrap();
        let line = first.lines().find(|l| l.starts_with('{')).unwrap();
        let again = stdout_lines(&run(restored.path(), &["exec", "-"], Some(line.as_bytes())));
        assert_eq!(again[0]["duplicate"], true);
        assert_eq!(again[0]["positions"], serde_json::json!([1]));
        // Importing into a ledger that is not empty is refused.
        let out = run(restored.path(), &["import", file.to_str().unwrap()], None);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("import needs an empty ledger"));
    });
}

#[test]
fn import_refuses_a_broken_chain_naming_the_first_bad_position_and_writes_nothing() {
    crate::pg::on_both_backends(import_refuses_a_broken_chain);
}

fn import_refuses_a_broken_chain() {
    let data = ledger_with("seed-story");
    let export = String::from_utf8(run(data.path(), &["export"], None).stdout).unwrap();
    let tampered = export.replacen("\"quantity\":25", "\"quantity\":26", 1);
    let file = data.path().join("tampered.ndjson");
    std::fs::write(&file, tampered).unwrap();
    // On sled a folder not created yet; on PostgreSQL the fresh, empty schema standing for `target`.
    let target = crate::pg::folder();
    let dest = if crate::pg::on_postgres() {
        target.path().to_path_buf()
    } else {
        target.path().join("ledger")
    };
    let nothing_written = |dest: &std::path::Path| {
        if crate::pg::on_postgres() {
            let events = run(dest, &["events"], None);
            assert!(events.status.success(), "{}", text(&events));
            assert!(events.stdout.is_empty(), "{}", text(&events));
        } else {
            assert!(
                !dest.exists(),
                "nothing was written, not even an empty ledger"
            );
        }
    };
    let out = run(&dest, &["import", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("import refused at position 7"),
        "{}",
        text(&out)
    );
    nothing_written(&dest);
    // A gap is refused too (the event at position 4 and its journal entry left out).
    let all: Vec<&str> = export.lines().collect();
    let fourth = all
        .iter()
        .position(|l| l.contains("\"position\":4,"))
        .unwrap();
    let gap: String = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != fourth && *i != fourth + 1)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&file, gap).unwrap();
    let out = run(&dest, &["import", file.to_str().unwrap()], None);
    assert!(
        text(&out).contains("import refused at position 4"),
        "{}",
        text(&out)
    );
    nothing_written(&dest);
}

#[test]
fn csv_export_has_a_header_and_one_row_per_event() {
    crate::pg::on_both_backends(|| {
        let data = ledger_with("seed-story");
        let csv = text(&run(data.path(), &["export", "--format", "csv"], None));
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows.len(), 12);
        assert!(rows[0].starts_with("position,at,recorded_at,type,"));
        assert!(rows[7].starts_with("7,2024-01-11T08:00:00Z,"));
        assert!(
            rows[7].contains(",SubscriptionAdded,")
                && rows[7].contains("\"{\"\"billing_partner\"\"")
        );
    });
}

#[test]
fn partner_and_subscription_views_now_and_as_of() {
    crate::pg::on_both_backends(|| {
        let data = ledger_with("partner-set-over-time");
        let partner = |as_of: Option<&str>| -> Value {
            let mut args = vec!["partner", A, "--json"];
            if let Some(a) = as_of {
                args.extend(["--as-of", a]);
            }
            serde_json::from_slice(&run(data.path(), &args, None).stdout).unwrap()
        };
        let before = partner(Some("2024-03-01T00:00:00Z"));
        assert_eq!(before["customers"][0]["relationship"], "active");
        assert_eq!(
            before["customers"][0]["subscriptions"],
            serde_json::json!({"active": 1, "suspended": 0, "cancelled": 0})
        );
        let gone = partner(Some("2024-06-01T00:00:00Z"));
        assert_eq!(gone["customers"][0]["relationship"], "removed");
        assert_eq!(gone["customers"][0]["subscriptions"]["cancelled"], 1);
        let now = partner(None);
        assert_eq!(now["customers"][0]["relationship"], "active");
        assert_eq!(now["customers"][0]["company_name"], "Contoso Ltd");
        let sub = |as_of: &str| -> Value {
            serde_json::from_slice(
                &run(
                    data.path(),
                    &[
                        "subscription",
                        "5a000000-0000-4000-8000-000000000001",
                        "--json",
                        "--as-of",
                        as_of,
                    ],
                    None,
                )
                .stdout,
            )
            .unwrap()
        };
        assert_eq!(sub("2024-04-01T00:00:00Z")["status"], "active");
        assert_eq!(sub("2024-05-01T09:00:00Z")["status"], "cancelled");
        assert_eq!(
            run(
                data.path(),
                &[
                    "subscription",
                    "5a000000-0000-4000-8000-000000000001",
                    "--as-of",
                    "3"
                ],
                None
            )
            .status
            .code(),
            Some(3)
        );
    });
}

#[test]
fn the_expiring_view_lists_active_admin_relationships_ending_soon() {
    crate::pg::on_both_backends(|| {
        let data = ledger_with("gdap-lifecycle");
        // Cut the fixture before the termination: position 8 extends the relationship to 2025-02-09T08:00Z.
        let export =
            String::from_utf8(run(data.path(), &["export", "--to", "8"], None).stdout).unwrap();
        let file = data.path().join("upto8.ndjson");
        std::fs::write(&file, export).unwrap();
        let restored = crate::pg::folder();
        assert!(
            run(restored.path(), &["import", file.to_str().unwrap()], None)
                .status
                .success()
        );
        let rows = |args: &[&str]| {
            stdout_lines(&run(
                restored.path(),
                &[&["expiring", "--json"], args].concat(),
                None,
            ))
        };
        assert!(
            rows(&["--days", "30"]).is_empty(),
            "the end is months after the last business time"
        );
        let soon = rows(&["--days", "30", "--at", "2025-01-20T00:00:00Z"]);
        assert_eq!(soon.len(), 1);
        assert_eq!(soon[0]["ends_at"], "2025-02-09T08:00:00Z");
        assert_eq!(soon[0]["auto_extend"], true);
        assert_eq!(soon[0]["company_name"], "Contoso Ltd");
        // Once terminated, it is no longer listed.
        assert!(stdout_lines(&run(
            data.path(),
            &[
                "expiring",
                "--json",
                "--days",
                "365",
                "--at",
                "2025-01-20T00:00:00Z"
            ],
            None
        ))
        .is_empty());
    });
}

#[test]
fn rebuild_recreates_the_read_models_identically() {
    crate::pg::on_both_backends(|| {
        let data = ledger_with("refusals");
        let before: Vec<Vec<u8>> = [("customer", CONTOSO), ("partner", A)]
            .iter()
            .map(|(k, id)| run(data.path(), &[k, id, "--json"], None).stdout)
            .collect();
        let out = text(&run(data.path(), &["rebuild"], None));
        assert!(
            out.starts_with("rebuilt customers, partners, expiring from 15 events"),
            "{out}"
        );
        let out = text(&run(data.path(), &["rebuild", "customers"], None));
        assert!(out.starts_with("rebuilt customers from 15 events"), "{out}");
        let after: Vec<Vec<u8>> = [("customer", CONTOSO), ("partner", A)]
            .iter()
            .map(|(k, id)| run(data.path(), &[k, id, "--json"], None).stdout)
            .collect();
        assert_eq!(before, after);
        assert!(!run(data.path(), &["rebuild", "nonsense"], None)
            .status
            .success());
    });
}

#[test]
fn a_100000_event_ledger_round_trips_through_export_and_import_byte_for_byte() {
    crate::pg::on_both_backends(a_100000_event_round_trip);
}

fn a_100000_event_round_trip() {
    use partner_ledger::ledger::Ledger;
    let data = crate::pg::folder();
    {
        let ledger = Ledger::open(crate::pg::config_for(data.path())).unwrap();
        let spec = partner_ledger::workload::WorkloadSpec {
            commands: 99_000,
            seed: 11,
            ..Default::default()
        };
        let tickets: Vec<_> = partner_ledger::workload::generate(spec)
            .map(|l| ledger.submit(partner_ledger::domain::parse_line(&l).unwrap()))
            .collect();
        for t in tickets {
            t.wait();
        }
        assert!(
            ledger.store().head().position.0 >= 100_000,
            "{}",
            ledger.store().head().position
        );
    }
    let export = run(data.path(), &["export"], None).stdout;
    let file = data.path().join("backup.ndjson");
    std::fs::write(&file, &export).unwrap();
    let restored = crate::pg::folder();
    let out = run(restored.path(), &["import", file.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run(restored.path(), &["verify"], None).status.success());
    let again = run(restored.path(), &["export"], None).stdout;
    assert!(
        again == export,
        "the restored export differs from the original"
    );
    assert_eq!(
        text(&run(restored.path(), &["checkpoint"], None)),
        text(&run(data.path(), &["checkpoint"], None))
    );
}

#[test]
fn an_as_of_answer_reads_only_that_customers_events_and_its_partners_names() {
    crate::pg::on_both_backends(as_of_reads_only_what_it_needs);
}

fn as_of_reads_only_what_it_needs() {
    use partner_ledger::domain::Position;
    use partner_ledger::query::{self, AsOfSpec};
    let data = ledger_with("seed-story");
    // Another customer served by B: positions 12-14, which no Contoso answer should read.
    let op = r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops","role":"operator"}"#;
    let b = r#"{"tenant":"b0000000-0000-4000-8000-00000000000b","user":"b","role":"partner_admin_agent"}"#;
    let ga = r#"{"tenant":"c1000000-0000-4000-8000-0000000000c1","user":"ga","role":"customer_global_admin"}"#;
    let more = format!(
        "{}\n{}\n{}\n",
        format_args!(
            r#"{{"type":"RegisterCustomer","actor":{op},"customer":"c1000000-0000-4000-8000-0000000000c1","company_name":"Fabrikam","domain":"f.example","country":"NL","cloud":"public"}}"#
        ),
        format_args!(
            r#"{{"type":"RequestRelationship","actor":{b},"request":"1b000000-0000-4000-8000-0000000000f1","partner":"b0000000-0000-4000-8000-00000000000b","customer":"c1000000-0000-4000-8000-0000000000c1"}}"#
        ),
        format_args!(
            r#"{{"type":"AcceptRelationship","actor":{ga},"request":"1b000000-0000-4000-8000-0000000000f1","customer":"c1000000-0000-4000-8000-0000000000c1"}}"#
        ),
    );
    assert!(run(data.path(), &["exec", "-"], Some(more.as_bytes()))
        .status
        .success());
    let store = partner_ledger::store::open(data.path(), &crate::pg::config_for(data.path()).store)
        .unwrap();
    let store = &*store;
    let id = CONTOSO.parse().unwrap();
    // Before B joined: Contoso's events 3..=7 and A's enrolment (1); not B's enrolment (2).
    let a = query::customer(store, id, Some(AsOfSpec::Position(Position(7))))
        .unwrap()
        .unwrap();
    assert_eq!(a.events_read, 6);
    // At the head (14): Contoso's 9 events (3-11) and both enrolments, not Fabrikam's 3.
    let a = query::customer(store, id, Some(AsOfSpec::Position(Position(14))))
        .unwrap()
        .unwrap();
    assert_eq!(a.events_read, 11);
    let now = query::customer(store, id, None).unwrap().unwrap();
    assert_eq!(
        now.events_read, 0,
        "the current view is one projection document"
    );
}
