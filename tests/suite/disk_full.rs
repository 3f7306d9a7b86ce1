//! A full disk, for real: the ledger on a 64 MiB tmpfs (mounted in a private mount namespace by `unshare`), fed more
//! than fits. Writes stop short of the ledger's reserve (sled never sees ENOSPC), the commands that did not fit are
//! answered `unknown`, every acknowledged command is in the log and nothing else is, the chain verifies on the full
//! disk, and once space is added the same input commits the rest, exactly once.

use crate::common;

use std::collections::HashMap;

use serde_json::Value;

fn outcomes(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_full_disk_answers_unknown_keeps_every_acknowledged_command_and_recovers_when_space_is_added() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let generated = std::process::Command::new(common::BIN)
        .args(["generate", "--commands", "100000"])
        .output()
        .unwrap();
    assert!(generated.status.success());
    std::fs::write(d.join("commands.ndjson"), &generated.stdout).unwrap();
    let script = format!(
        r#"set -u
M={d}/mnt
mkdir -p $M
mount -t tmpfs -o size=64m tmpfs $M || exit 90
B={bin}
timeout 120 $B --data $M/data exec {d}/commands.ndjson > {d}/out1.ndjson 2> {d}/err1.txt; echo $? > {d}/exit1
df -k $M | tail -1 > {d}/df1
timeout 120 $B --data $M/data verify > {d}/verify1.txt 2>&1; echo $? > {d}/vexit1
mount -o remount,size=512m $M || exit 91
timeout 120 $B --data $M/data exec {d}/commands.ndjson > {d}/out2.ndjson 2> {d}/err2.txt; echo $? > {d}/exit2
timeout 120 $B --data $M/data verify > {d}/verify2.txt 2>&1; echo $? > {d}/vexit2
"#,
        d = d.display(),
        bin = common::BIN
    );
    let status = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .status()
        .expect("unshare (util-linux) runs the test in its own mount namespace");
    assert!(
        status.success(),
        "the tmpfs could not be mounted: {status:?}"
    );
    let read = |name: &str| {
        std::fs::read_to_string(d.join(name))
            .unwrap()
            .trim()
            .to_string()
    };

    // The first run filled the disk: some commands committed, the rest were answered unknown, none was lost.
    assert_eq!(
        read("exit1"),
        "5",
        "exec exits 5 (storage) when some outcomes are unknown: {}",
        read("err1.txt")
    );
    let first = outcomes(&d.join("out1.ndjson"));
    let committed: HashMap<String, Vec<u64>> = first
        .iter()
        .filter(|o| o["outcome"] == "committed")
        .map(|o| {
            let positions = o["positions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap())
                .collect();
            (o["command_id"].as_str().unwrap().to_string(), positions)
        })
        .collect();
    let unknown: Vec<&Value> = first.iter().filter(|o| o["outcome"] == "unknown").collect();
    assert!(committed.len() > 1_000, "{}", committed.len());
    assert!(
        unknown.len() > 1_000,
        "the disk filled up: {}",
        unknown.len()
    );
    let message = unknown[0]["message"].as_str().unwrap();
    assert!(
        message.contains("MiB free") && message.contains("retry with the same command_id"),
        "{message}"
    );
    // The chain verifies on the full disk, and holds exactly the acknowledged events.
    assert_eq!(read("vexit1"), "0", "{}", read("verify1.txt"));
    let events: usize = committed.values().map(Vec::len).sum();
    assert!(
        read("verify1.txt").starts_with(&format!("ok: {events} events")),
        "{} (acknowledged events: {events})",
        read("verify1.txt")
    );
    let free_kib: u64 = read("df1")
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        free_kib > 16 * 1024,
        "sled never saw a full disk: {free_kib} KiB left"
    );

    // With space added, the same input: every command acknowledged before is a duplicate at the same positions, and
    // everything else commits now.
    assert_eq!(read("exit2"), "0", "{}", read("err2.txt"));
    let second = outcomes(&d.join("out2.ndjson"));
    assert_eq!(second.len(), first.len());
    for o in &second {
        assert_ne!(o["outcome"], "unknown", "{o}");
        if let Some(positions) = committed.get(o["command_id"].as_str().unwrap()) {
            assert_eq!(o["duplicate"], true, "{o}");
            let again: Vec<u64> = o["positions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap())
                .collect();
            assert_eq!(&again, positions, "{o}");
        }
    }
    assert_eq!(read("vexit2"), "0", "{}", read("verify2.txt"));
    eprintln!(
        "disk full: {} acknowledged ({events} events) before the disk filled, {} answered unknown, all present after; {} KiB left free",
        committed.len(),
        unknown.len(),
        free_kib
    );
}

/// The reserve as the HTTP service shows it, with a reserve larger than any disk: commands are answered `unknown`
/// ("… MiB free …", retry at once), consumers are not written (507), and the server keeps serving reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_disk_without_room_answers_unknown_and_507_and_keeps_serving() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let mut config = partner_ledger::ledger::LedgerConfig::new(dir.path());
    config.store.min_free_bytes = u64::MAX / 4;
    let ledger = Arc::new(partner_ledger::ledger::Ledger::open(config).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state =
        partner_ledger::api::AppState::new(Arc::clone(&ledger), Default::default(), stop_rx)
            .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(partner_ledger::api::serve(
        listener,
        state,
        stop_tx,
        async {
            let _ = rx.await;
        },
    ));
    let c = reqwest::Client::new();
    let command = r#"{"type":"RegisterCustomer","command_id":"d15c0000-0000-4000-8000-000000000001","actor":{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops","role":"operator"},"customer":"d15c0000-0000-4000-8000-00000000000c","company_name":"Full","domain":"full.example","country":"NL","cloud":"public"}"#;
    let r = c
        .post(format!("{url}/v1/commands"))
        .header("content-type", "application/json")
        .body(command)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let o: Value = r.json().await.unwrap();
    assert_eq!(o["outcome"], "unknown");
    assert!(
        o["message"]
            .as_str()
            .unwrap()
            .contains("nothing of it was written"),
        "{o}"
    );
    let r = c
        .put(format!("{url}/v1/consumers/billing"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 507);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "insufficient_storage", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("keeps in reserve"),
        "{e}"
    );
    let r = c.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        !ledger.store().is_failed(),
        "no fail-stop: writing resumes once there is room"
    );
    let _ = tx.send(());
    server.await.unwrap().unwrap();
    ledger.close();
}
