//! Damage is detected, not served: a flipped byte, a truncated value or a deleted key anywhere in the log is found by
//! the verification the server runs in the background after start, which then refuses writes and names the first bad
//! position (as `verify` does); removed last events are found at open, from the head marker.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::{raw_log, run, BIN};
use serde_json::Value;

/// A ledger of about 12,000 events, closed with a write-model snapshot, so that opening it reads neither the damaged
/// events (only the tail and the head marker are checked) nor replays them.
fn big_ledger() -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let generated = std::process::Command::new(BIN)
        .args(["generate", "--commands", "11000"])
        .output()
        .unwrap();
    assert!(generated.status.success());
    let out = run(&data, &["exec", "-"], Some(&generated.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        data.join("snapshot").exists(),
        "a snapshot was taken at close"
    );
    let verified = run(&data, &["verify"], None);
    let text = String::from_utf8_lossy(&verified.stdout).to_string();
    let head: u64 = text
        .strip_prefix("ok: ")
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(head > 11_000);
    (dir, head)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn verify_says(data: &Path) -> String {
    let out = run(data, &["verify"], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Starts `serve` on the damaged folder; waits until /healthz reports the damage; checks that writes are refused
/// naming the position; stops the server. Returns the reported first bad position.
fn served_damage(data: &Path) -> u64 {
    let served = common::serve(data, None, &[]);
    let url = served.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let position = rt.block_on(async {
        let c = reqwest::Client::new();
        let mut health = Value::Null;
        for _ in 0..400 {
            let r = c.get(format!("{url}/healthz")).send().await.unwrap();
            let status = r.status();
            health = r.json().await.unwrap();
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(health["status"], "damaged", "{health}");
        let position = health["integrity"]["first_bad_position"].as_u64().unwrap();
        // Writes are refused, naming the position.
        let r = c
            .post(format!("{url}/v1/commands"))
            .header("content-type", "application/json")
            .body(r#"{"type":"AdvanceClock","to":"2030-01-01T00:00:00Z","actor":{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops","role":"operator"}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
        let o: Value = r.json().await.unwrap();
        assert_eq!(o["outcome"], "unknown", "{o}");
        let message = o["message"].as_str().unwrap();
        assert!(message.contains(&format!("damaged at position {position}")), "{o}");
        // Reads still work.
        let r = c.get(format!("{url}/healthz")).send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
        position
    });
    assert!(
        served.stop().unwrap().success(),
        "the damaged server stops cleanly"
    );
    position
}

/// Damages a data folder; returns the first bad position.
type Damage = Box<dyn Fn(&Path) -> u64>;

#[test]
fn damage_anywhere_is_found_in_the_background_refuses_writes_and_verify_names_the_same_position() {
    let (pristine, head) = big_ledger();
    let pristine = pristine.path().join("data");
    let cases: Vec<(&str, Damage)> = vec![
        (
            "a flipped byte",
            Box::new(|d: &Path| {
                // One byte of the event id.
                raw_log::edit(d, 100, |e| {
                    let at = e.find("\"event_id\":\"").unwrap() + 12;
                    let flipped = if &e[at..=at] == "0" { "1" } else { "0" };
                    format!("{}{flipped}{}", &e[..at], &e[at + 1..])
                });
                100
            }),
        ),
        (
            "a truncated value",
            Box::new(|d: &Path| {
                raw_log::edit(d, 2_000, |e| e[..e.len() / 2].to_string());
                2_000
            }),
        ),
        (
            "a deleted key",
            Box::new(|d: &Path| raw_log::remove_segment(d, 5_000)),
        ),
    ];
    for (what, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        copy_dir(&pristine, &data);
        let expected = damage(&data);
        assert!(
            expected + 1024 < head,
            "the damage lies before the tail that open checks"
        );
        let found = served_damage(&data);
        assert_eq!(
            found, expected,
            "{what}: the server names the first bad position"
        );
        let text = verify_says(&data);
        assert!(
            text.starts_with(&format!("FAILED at position {expected}")),
            "{what}: {text}"
        );
    }
}

#[test]
fn removed_last_events_are_found_at_open_and_the_server_does_not_start() {
    let (dir, head) = big_ledger();
    let data = dir.path().join("data");
    raw_log::truncate_from(&data, head - 4);
    let out = std::process::Command::new(BIN)
        .arg("--data")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-sample-data"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("at position {}", head - 4)) && err.contains("removed"),
        "{err}"
    );
    let text = verify_says(&data);
    assert!(
        text.starts_with(&format!("FAILED at position {}", head - 4)),
        "{text}"
    );
}

/// Flips one byte of the event id stored at `position`.
fn flip(data: &Path, position: u64) {
    raw_log::edit(data, position, |e| {
        let at = e.find("\"event_id\":\"").unwrap() + 12;
        let flipped = if &e[at..=at] == "0" { "1" } else { "0" };
        format!("{}{flipped}{}", &e[..at], &e[at + 1..])
    });
}

#[test]
fn verify_checks_in_pieces_and_names_the_lowest_of_several_breaks() {
    // `verify` checks pieces of 2,048 events on several threads (1..=2048, 2049..=4096, 4097..): breaks at piece
    // edges, breaks in several pieces and a break before a gap in the same piece are all named at their lowest.
    let (pristine, head) = big_ledger();
    assert!(head > 6_200, "the ledger spans three pieces");
    let pristine = pristine.path().join("data");
    let cases: Vec<(&str, Damage)> = vec![
        (
            "breaks in two pieces, the later piece first",
            Box::new(|d: &Path| {
                flip(d, 4_500);
                flip(d, 3_000);
                3_000
            }),
        ),
        (
            "the last event of a piece, whose hash the next piece starts from",
            Box::new(|d: &Path| {
                flip(d, 2_048);
                2_048
            }),
        ),
        (
            "the first event of a piece",
            Box::new(|d: &Path| {
                flip(d, 4_097);
                4_097
            }),
        ),
        (
            "a flipped byte before a deleted key in the same piece",
            Box::new(|d: &Path| {
                flip(d, 4_200);
                let gap = raw_log::remove_segment(d, 4_700);
                assert!(gap > 4_200);
                4_200
            }),
        ),
    ];
    for (what, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        copy_dir(&pristine, &data);
        let expected = damage(&data);
        let text = verify_says(&data);
        assert!(
            text.starts_with(&format!("FAILED at position {expected}")),
            "{what}: {text}"
        );
    }
}
