//! Backups an operator can trust: taken from a running server without stopping it (a consistent cut while commands
//! keep arriving), complete (events, the command journal with its fingerprints, refusals, consumers), and restored
//! into a ledger that answers every query and every re-submitted command as the original did.

use crate::common;

use std::path::Path;

use serde_json::{json, Value};

const CONTOSO: &str = "c0000000-0000-4000-8000-00000000000c";
const OPS: &str =
    r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops","role":"operator"}"#;

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_online_backup_restores_events_journal_refusals_and_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("original");
    for f in ["seed-story", "refusals"] {
        let cmds = std::fs::read(common::fixtures().join(f).join("commands.ndjson")).unwrap();
        assert!(common::run(&data, &["exec", "-"], Some(&cmds))
            .status
            .success());
    }
    let server = common::serve(&data, None, &[]);
    let u = server.url();
    let c = reqwest::Client::new();
    // A durable consumer with a checkpoint.
    let r = c
        .put(format!("{u}/v1/consumers/crm"))
        .json(&json!({"customer": CONTOSO}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .post(format!("{u}/v1/consumers/crm/ack"))
        .json(&json!({"position": 6}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Commands keep arriving while the backup is taken.
    let writers = tokio::spawn({
        let c = c.clone();
        let u = u.clone();
        async move {
            for i in 0..300 {
                let line = format!(
                    r#"{{"type":"RegisterCustomer","command_id":"b0c00000-0000-4000-8000-{i:012}","actor":{OPS},"customer":"cb000000-0000-4000-8000-{i:012}","company_name":"Backup {i}","domain":"b{i}.example","country":"NL","cloud":"public"}}"#
                );
                let r = c
                    .post(format!("{u}/v1/commands"))
                    .header("content-type", "application/json")
                    .body(line)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let backup = c.get(format!("{u}/v1/backup")).send().await.unwrap();
    assert_eq!(backup.status(), 200);
    assert_eq!(backup.headers()["content-type"], "application/x-ndjson");
    let body = backup.bytes().await.unwrap();
    writers.await.unwrap();
    let file = dir.path().join("online.backup.ndjson");
    std::fs::write(&file, &body).unwrap();
    let all = lines(&file);
    let header: Value = serde_json::from_str(&all[0]).unwrap();
    let cut = header["partner_ledger_backup"]["head"]["position"]
        .as_u64()
        .unwrap();
    let events: Vec<Value> = all
        .iter()
        .filter(|l| l.starts_with("{\"actor\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events.len() as u64,
        cut,
        "every event up to the cut, and none after it"
    );
    assert!(events.iter().zip(1..).all(|(e, p)| e["position"] == p));
    assert!(all.last().unwrap().starts_with("{\"end\""));
    // A checkpoint and a verification from the running server; the CLI cannot open the folder and says where to go.
    let cp: Value = common::get_json(&c, format!("{u}/v1/checkpoint")).await;
    assert!(cp["position"].as_u64().unwrap() >= cut);
    let verified = c
        .get(format!("{u}/v1/verify"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let last: Value = serde_json::from_str(verified.lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], "verified", "{verified}");
    assert_eq!(last["position"], cp["position"]);
    assert_eq!(last["hash"], cp["hash"]);
    for args in [&["export"][..], &["checkpoint"], &["verify"]] {
        let out = common::run(&data, args, None);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("locked") && err.contains("/v1/backup"),
            "{args:?}: {err}"
        );
    }
    server.stop().unwrap();
    // (Read after the server stopped: its start-up clock advance appended an event about Contoso before the cut.)
    let refusals_before = text(&common::run(
        &data,
        &[
            "history",
            "customer",
            CONTOSO,
            "--include-refusals",
            "--json",
        ],
        None,
    ));
    assert!(
        refusals_before.contains("\"refused\""),
        "the fixture refuses commands about Contoso"
    );

    // Restore the online backup into a new folder.
    let restored = dir.path().join("restored");
    let out = common::run(&restored, &["import", file.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text(&out).contains("refusals"), "{}", text(&out));
    // The same backup, byte for byte, comes out of the restored ledger.
    let again = common::run(&restored, &["export"], None).stdout;
    assert!(
        again == body,
        "the restored ledger's backup differs from the one restored"
    );
    // The refusal audit trail came along.
    let refusals_after = text(&common::run(
        &restored,
        &[
            "history",
            "customer",
            CONTOSO,
            "--include-refusals",
            "--json",
        ],
        None,
    ));
    assert!(
        refusals_after == refusals_before,
        "the restored history with refusals differs"
    );
    // The journal's fingerprints came along: a used id with other content is still caught; the same content is a
    // duplicate at its original positions.
    let seed: Vec<String> =
        std::fs::read_to_string(common::fixtures().join("seed-story/commands.ndjson"))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(str::to_string)
            .collect();
    let original: Vec<Value> = common::stdout_lines(&common::run(
        &data,
        &["exec", "-"],
        Some(seed.join("\n").as_bytes()),
    ));
    let replayed: Vec<Value> = common::stdout_lines(&common::run(
        &restored,
        &["exec", "-"],
        Some(seed.join("\n").as_bytes()),
    ));
    assert_eq!(
        replayed, original,
        "re-submissions answer as on the original"
    );
    assert!(
        replayed.iter().all(|o| o["duplicate"] == true),
        "{replayed:?}"
    );
    let changed = seed[2].replace("Contoso Ltd", "Contoso Holdings");
    let o = common::stdout_lines(&common::run(
        &restored,
        &["exec", "-"],
        Some(changed.as_bytes()),
    ));
    assert_eq!(o[0]["code"], "command_id_reused", "{o:?}");
    // The consumer came along with its checkpoint and filter.
    let server = common::serve(&restored, None, &[]);
    let v: Value = common::get_json(&c, format!("{}/v1/consumers/crm", server.url())).await;
    assert_eq!(v["checkpoint"], 6);
    assert_eq!(v["filter"]["customer"], CONTOSO);
    server.stop().unwrap();
}

#[test]
fn a_damaged_or_truncated_backup_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("original");
    let cmds = std::fs::read(common::fixtures().join("refusals/commands.ndjson")).unwrap();
    assert!(common::run(&data, &["exec", "-"], Some(&cmds))
        .status
        .success());
    let backup = text(&common::run(&data, &["export"], None));
    let all: Vec<&str> = backup.lines().collect();
    let command_line = all
        .iter()
        .position(|l| l.starts_with("{\"command\""))
        .unwrap();
    let damaged: Vec<(&str, String)> = vec![
        ("truncated: no end line", all[..all.len() - 1].join("\n")),
        ("a refusal missing", {
            let r = all
                .iter()
                .position(|l| l.starts_with("{\"refusal\""))
                .unwrap();
            let mut v = all.clone();
            v.remove(r);
            v.join("\n")
        }),
        ("a journal entry changed", {
            let mut v: Vec<String> = all.iter().map(|s| s.to_string()).collect();
            v[command_line] = v[command_line].replace("\"count\":1", "\"count\":2");
            v.join("\n")
        }),
        ("an event edited", backup.replacen("Adatum", "Adatun", 1)),
    ];
    for (what, content) in damaged {
        assert_ne!(content, backup, "{what}");
        let file = dir.path().join("damaged.ndjson");
        std::fs::write(&file, content).unwrap();
        let target = dir.path().join("target");
        let out = common::run(&target, &["import", file.to_str().unwrap()], None);
        assert!(!out.status.success(), "{what}: imported");
        assert!(
            text(&out).contains("nothing was written"),
            "{what}: {}",
            text(&out)
        );
        assert!(
            !target.exists(),
            "{what}: the refused import created the folder"
        );
    }
    // A file of bare envelopes (`events`) still restores, without the journal's fingerprints.
    let bare = common::run(&data, &["events"], None).stdout;
    let file = dir.path().join("bare.ndjson");
    std::fs::write(&file, bare).unwrap();
    let target = dir.path().join("bare");
    let out = common::run(&target, &["import", file.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text(&out).contains("bare envelopes"));
    assert_eq!(
        text(&common::run(&target, &["checkpoint"], None)),
        text(&common::run(&data, &["checkpoint"], None))
    );
}

/// A journal written before command ids were per tenant records a partner's command under its plain id. Such a
/// ledger keeps answering that partner's re-submissions as duplicates, and never answers another tenant from it.
#[test]
fn journals_from_before_per_tenant_ids_still_answer_their_own_tenant_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("original");
    let seed = std::fs::read(common::fixtures().join("seed-story/commands.ndjson")).unwrap();
    assert!(common::run(&data, &["exec", "-"], Some(&seed))
        .status
        .success());
    // The same backup, with every journal entry under the plain command_id of its events (the earlier layout).
    let backup = text(&common::run(&data, &["export"], None));
    let mut last_id = String::new();
    let mut changed = 0;
    let legacy: Vec<String> = backup
        .lines()
        .map(|l| {
            if l.starts_with("{\"actor\"") {
                let e: Value = serde_json::from_str(l).unwrap();
                last_id = e["command_id"].as_str().unwrap().to_string();
                l.to_string()
            } else if l.starts_with("{\"command\"") {
                let mut c: Value = serde_json::from_str(l).unwrap();
                if c["command"]["command_id"] != last_id.as_str() {
                    changed += 1;
                }
                c["command"]["command_id"] = json!(last_id);
                c.to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(
        changed > 0,
        "the seed story has partners' and customers' commands"
    );
    let file = dir.path().join("legacy.ndjson");
    std::fs::write(&file, legacy.join("\n")).unwrap();
    let restored = dir.path().join("restored");
    let out = common::run(&restored, &["import", file.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every command of the seed story, re-submitted by its own actor, is a duplicate at its positions.
    let again = common::stdout_lines(&common::run(&restored, &["exec", "-"], Some(&seed)));
    assert!(!again.is_empty());
    assert!(again.iter().all(|o| o["duplicate"] == true), "{again:?}");
    // Partner A's request id (5eed…04), used by partner B for a command of its own, is B's new command.
    let seed_text = String::from_utf8(seed.clone()).unwrap();
    let a_line = seed_text
        .lines()
        .find(|l| l.contains("5eed0000-0000-4000-8000-000000000004"))
        .unwrap();
    assert!(
        a_line.contains(r#""tenant":"a0000000-0000-4000-8000-00000000000a""#),
        "{a_line}"
    );
    let b_line = r#"{"type":"CreateCustomer","command_id":"5eed0000-0000-4000-8000-000000000004","actor":{"tenant":"b0000000-0000-4000-8000-00000000000b","user":"sales@bellows.example","role":"partner_sales_agent"},"partner":"b0000000-0000-4000-8000-00000000000b","customer":"cb000000-0000-4000-8000-0000000000b9","company_name":"Tailspin","domain":"tailspin.onmicrosoft.com","country":"NL"}"#;
    let o = common::stdout_lines(&common::run(
        &restored,
        &["exec", "-"],
        Some(b_line.as_bytes()),
    ));
    assert_eq!(o[0]["outcome"], "committed", "{o:?}");
    assert!(o[0].get("duplicate").is_none(), "{o:?}");
    // And A's own re-submission is still A's duplicate.
    let a_again = common::stdout_lines(&common::run(
        &restored,
        &["exec", "-"],
        Some(a_line.as_bytes()),
    ));
    assert_eq!(a_again[0]["duplicate"], true, "{a_again:?}");
}

/// A journal that is not in log order (the format-1 upgrade rebuilds it in command-id order) still gives a backup
/// that restores: the backup writes the journal in log order.
#[test]
fn a_journal_out_of_log_order_still_backs_up_and_restores() {
    use partner_ledger::store::journal::{group, Committed};
    use partner_ledger::store::{idempotency_key, Envelope, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("original");
    let seed = std::fs::read(common::fixtures().join("seed-story/commands.ndjson")).unwrap();
    assert!(common::run(&data, &["exec", "-"], Some(&seed))
        .status
        .success());
    let events: Vec<Envelope> = text(&common::run(&data, &["events"], None))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The same events in a new ledger whose journal lists the commands backwards, plus one that appended nothing.
    let shuffled = dir.path().join("shuffled");
    let commands;
    {
        let store = partner_ledger::store::open(&shuffled, &StoreOptions::default()).unwrap();
        let mut journal: Vec<Committed> = group(
            events
                .iter()
                .map(|e| (e.position, idempotency_key(&e.actor, e.command_id))),
        );
        journal.reverse();
        commands = journal.len() + 1;
        journal.push(Committed {
            command_id: "0e000000-0000-4000-8000-0000000000ee".parse().unwrap(),
            fingerprint: Some([7; 16]),
            first: partner_ledger::domain::Position(3),
            count: 0,
        });
        store.import_with(&events, journal).unwrap();
    }
    let backup = common::run(&shuffled, &["export"], None);
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    let file = dir.path().join("shuffled.ndjson");
    std::fs::write(&file, &backup.stdout).unwrap();
    let restored = dir.path().join("restored");
    let out = common::run(&restored, &["import", file.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text(&out).contains(&format!("{commands} commands")),
        "{}",
        text(&out)
    );
    assert_eq!(
        text(&common::run(&restored, &["checkpoint"], None)),
        text(&common::run(&data, &["checkpoint"], None))
    );
    let again = common::stdout_lines(&common::run(&restored, &["exec", "-"], Some(&seed)));
    assert!(again.iter().all(|o| o["duplicate"] == true), "{again:?}");
}
