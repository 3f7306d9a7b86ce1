//! A data folder written by an earlier format is upgraded in place at open, with the same chain and the same answers.

use crate::common;

use common::*;

/// Rewrites a format-3 folder as format 2 wrote it: one key per event in tree `events`.
fn downgrade_to_format_2(data: &std::path::Path) {
    let db = sled::Config::new().path(data.join("sled")).open().unwrap();
    let log = db.open_tree("log").unwrap();
    let events = db.open_tree("events").unwrap();
    for item in log.iter() {
        let (k, v) = item.unwrap();
        let first = u64::from_be_bytes(k.as_ref().try_into().unwrap());
        let content = partner_ledger::store::segment::content(&v).unwrap();
        for (i, raw) in content.split(|b| *b == b'\n').enumerate() {
            events
                .insert((first + i as u64).to_be_bytes(), raw)
                .unwrap();
        }
    }
    db.drop_tree("log").unwrap();
    db.flush().unwrap();
    drop(db);
    std::fs::write(
        data.join("ledger.json"),
        r#"{"format":"partner-ledger","version":2,"created_by":"0.1.0"}"#,
    )
    .unwrap();
}

#[test]
fn a_format_2_folder_is_upgraded_at_open_with_the_same_events_and_answers() {
    let data = tempfile::tempdir().unwrap();
    let seed = fixtures().join("seed-story/commands.ndjson");
    assert!(run(data.path(), &["exec", seed.to_str().unwrap()], None)
        .status
        .success());
    let events_before = run(data.path(), &["events"], None).stdout;
    let checkpoint = String::from_utf8(run(data.path(), &["checkpoint"], None).stdout).unwrap();
    downgrade_to_format_2(data.path());

    let verify = run(
        data.path(),
        &["verify", "--against", checkpoint.trim()],
        None,
    );
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_eq!(run(data.path(), &["events"], None).stdout, events_before);
    let marker = std::fs::read_to_string(data.path().join("ledger.json")).unwrap();
    assert!(marker.contains("\"version\":3"), "{marker}");
    // Re-submitting the seed story answers every command from the journal as a duplicate: nothing is appended.
    let again = stdout_lines(&run(data.path(), &["exec", seed.to_str().unwrap()], None));
    assert!(again
        .iter()
        .all(|o| o["outcome"] == "committed" && o["duplicate"] == true));
    assert_eq!(run(data.path(), &["events"], None).stdout, events_before);
}
