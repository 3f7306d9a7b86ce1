//! Acknowledged means durable, and damage is detected: `kill -9` with commands in flight, a flipped byte in sled's
//! files, and a log whose last events were removed.

use crate::common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;

const OP: &str = r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops@ledger.example","role":"operator"}"#;

fn register_line(n: u64) -> (String, String) {
    let command_id = format!("{:08x}-0000-4000-8000-{:012x}", n, n);
    let customer = format!("c{:07x}-0000-4000-8000-{:012x}", n, n);
    (
        command_id.clone(),
        format!(
            r#"{{"type":"RegisterCustomer","command_id":"{command_id}","actor":{OP},"customer":"{customer}","company_name":"Customer {n}","domain":"c{n}.onmicrosoft.com","country":"NL","cloud":"public"}}"#
        ),
    )
}

/// One round: stream commands into `exec -`, kill -9 after at least `min_acks` acknowledgements with more in flight,
/// and return the acknowledged command ids with their positions.
fn kill_round(data: &std::path::Path, first: u64, min_acks: usize) -> HashMap<String, Vec<u64>> {
    let mut command = Command::new(BIN);
    crate::pg::point(&mut command, data);
    let mut child = command
        .arg("--data")
        .arg(data)
        .args(["exec", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&sent);
    let feeder = std::thread::spawn(move || {
        // Far more than will be acknowledged before the kill; write errors end the feed once the process is gone.
        let mut stdin = std::io::BufWriter::with_capacity(64 * 1024, stdin);
        for n in first..first + 1_000_000 {
            let (_, line) = register_line(n);
            if stdin
                .write_all(line.as_bytes())
                .and_then(|_| stdin.write_all(b"\n"))
                .is_err()
            {
                break;
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        counter.load(std::sync::atomic::Ordering::SeqCst)
    });
    let stdout = child.stdout.take().unwrap();
    let mut acked = HashMap::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["outcome"], "committed", "{v}");
        let positions = v["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect();
        acked.insert(v["command_id"].as_str().unwrap().to_string(), positions);
        // Kill once enough are acknowledged and the feeder is well ahead of the acknowledgements.
        if acked.len() >= min_acks
            && sent.load(std::sync::atomic::Ordering::SeqCst) > acked.len() + 2_000
        {
            break;
        }
    }
    // Commands are still streaming in and being committed: kill without warning.
    child.kill().unwrap();
    child.wait().unwrap();
    let sent = feeder.join().unwrap();
    assert!(
        sent > acked.len() + 1_000,
        "commands were in flight at the kill ({sent} sent, {} acknowledged)",
        acked.len()
    );
    acked
}

#[test]
fn every_acknowledged_command_survives_kill_9_with_commands_in_flight() {
    for (backend, data) in crate::pg::ledger_folders() {
        eprintln!("on {backend}");
        kill_rounds(&data);
    }
}

fn kill_rounds(data: &tempfile::TempDir) {
    let mut all_acked: HashMap<String, Vec<u64>> = HashMap::new();
    for round in 0..3u64 {
        let acked = kill_round(data.path(), 1 + round * 10_000_000, 1_000);
        assert!(acked.len() >= 1_000);
        all_acked.extend(acked);
        let verify = run(data.path(), &["verify"], None);
        assert!(
            verify.status.success(),
            "round {round}: {}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
        let events = stdout_lines(&run(data.path(), &["events"], None));
        let positions: Vec<u64> = events
            .iter()
            .map(|e| e["position"].as_u64().unwrap())
            .collect();
        assert_eq!(
            positions,
            (1..=positions.len() as u64).collect::<Vec<_>>(),
            "round {round}: contiguous from 1"
        );
        let by_position: HashMap<u64, &str> = events
            .iter()
            .map(|e| {
                (
                    e["position"].as_u64().unwrap(),
                    e["command_id"].as_str().unwrap(),
                )
            })
            .collect();
        for (command_id, ps) in &all_acked {
            for p in ps {
                assert_eq!(
                    by_position.get(p),
                    Some(&command_id.as_str()),
                    "round {round}: acknowledged {command_id} lost at {p}"
                );
            }
        }
        assert!(events.len() >= all_acked.len());
    }
}

fn seeded() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let seed = fixtures().join("seed-story/commands.ndjson");
    assert!(run(data.path(), &["exec", seed.to_str().unwrap()], None)
        .status
        .success());
    data
}

#[test]
fn verify_detects_a_flipped_byte_in_the_raw_sled_files() {
    let data = seeded();
    // The log's first segment as sled stores it (compressed): find those bytes in sled's file and damage one.
    let stored = raw_log::stored_segment(data.path(), 1);
    let db = data.path().join("sled/db");
    let mut bytes = std::fs::read(&db).unwrap();
    let at = bytes
        .windows(stored.len())
        .position(|w| w == stored.as_slice())
        .expect("the segment is in the data file");
    bytes[at + stored.len() / 2] ^= 0x20;
    std::fs::write(&db, bytes).unwrap();
    // sled either refuses its damaged files or drops the damaged record and what follows; both are reported.
    let out = run(data.path(), &["verify"], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("FAILED"), "{text}");
    assert!(
        text.contains("at position ") || text.contains("HEAD file records 11 events"),
        "{text}"
    );
    // Opening for work refuses the damaged ledger too.
    let out = run(data.path(), &["exec", "-"], Some(b""));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the ledger is damaged"));
}

#[test]
fn verify_detects_a_log_whose_last_events_were_removed_via_the_head_marker() {
    let data = seeded();
    common::raw_log::truncate_from(data.path(), 10);
    let out = run(data.path(), &["verify"], None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAILED at position 10"), "{text}");
    assert!(text.contains("head marker records 11"), "{text}");
}

#[test]
fn verify_detects_an_edited_event_whose_hash_no_longer_matches() {
    let data = seeded();
    common::raw_log::edit(data.path(), 5, |e| e.replace("15:30:00Z", "15:31:00Z"));
    let out = run(data.path(), &["verify"], None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAILED at position 5: the hash does not match"),
        "{text}"
    );
}
