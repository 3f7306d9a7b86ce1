//! Stream benchmark over loopback HTTP: live commit-to-consumer latency, catch-up rate, and whether a consumer that
//! stops reading slows the writer or grows memory.
//!
//! `cargo run --release --example streams -- [COMMANDS]` (default 100,000 for the stalled-consumer runs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use partner_ledger::api::{serve, AppState, ServeConfig};
use partner_ledger::ledger::{Ledger, LedgerConfig};
use partner_ledger::store::EventStore;

const OP: &str =
    r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops","role":"operator"}"#;

fn register() -> String {
    format!(
        r#"{{"type":"RegisterCustomer","actor":{OP},"customer":"{}","company_name":"Customer","domain":"c.onmicrosoft.com","country":"NL","cloud":"public"}}"#,
        uuid::Uuid::new_v4()
    )
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

async fn start() -> (String, Arc<Ledger>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temp folder");
    let ledger = Arc::new(Ledger::open(LedgerConfig::new(dir.path())).expect("the ledger opens"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let config = ServeConfig {
        clock_interval: Duration::from_secs(3600),
        ..ServeConfig::default()
    };
    let state = AppState::new(Arc::clone(&ledger), config, stop_rx).expect("state");
    tokio::spawn(async move { serve(listener, state, stop_tx, std::future::pending()).await });
    (url, ledger, dir)
}

async fn write_all(url: &str, commands: usize) -> f64 {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let (c, u) = (client.clone(), url.to_string());
            tokio::spawn(async move {
                for _ in 0..commands / 8 / 100 {
                    let body: String = (0..100).map(|_| register() + "\n").collect();
                    let r = c
                        .post(format!("{u}/v1/commands"))
                        .header("content-type", "application/x-ndjson")
                        .body(body)
                        .send()
                        .await;
                    r.expect("a response").text().await.expect("a body");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("a writer");
    }
    commands as f64 / started.elapsed().as_secs_f64()
}

fn pct(v: &mut [f64], per_mille: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) * per_mille / 1000]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let commands: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let client = reqwest::Client::new();

    // 1. Live latency: one command at a time; when does the stream deliver it, after the POST returned?
    let (url, _ledger, _dir) = start().await;
    let received: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let stream = client
        .get(format!("{url}/v1/events"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("a stream");
    let r2 = Arc::clone(&received);
    tokio::spawn(async move {
        let mut s = stream.bytes_stream();
        let mut buf = Vec::new();
        while let Some(Ok(chunk)) = s.next().await {
            let now = Instant::now();
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
                    if let Some(p) = v["position"].as_u64() {
                        r2.lock().expect("lock").insert(p, now);
                    }
                }
            }
        }
    });
    let mut after_ack = Vec::new();
    let mut after_send = Vec::new();
    for _ in 0..2_000 {
        let sent = Instant::now();
        let r = client
            .post(format!("{url}/v1/commands"))
            .header("content-type", "application/json")
            .body(register())
            .send()
            .await
            .expect("a response");
        let v: serde_json::Value = r.json().await.expect("json");
        let acked = Instant::now();
        let p = v["positions"][0].as_u64().expect("a position");
        let got = loop {
            if let Some(t) = received.lock().expect("lock").get(&p) {
                break *t;
            }
            tokio::time::sleep(Duration::from_micros(50)).await;
        };
        after_ack.push(got.saturating_duration_since(acked).as_secs_f64() * 1e3);
        after_send.push(got.duration_since(sent).as_secs_f64() * 1e3);
    }
    println!(
        "live stream, 2,000 commands one at a time: delivered {:.3} ms (median) / {:.3} ms (p99) after the POST was answered; {:.3} / {:.3} ms after it was sent",
        pct(&mut after_ack, 500), pct(&mut after_ack, 990), pct(&mut after_send, 500), pct(&mut after_send, 990)
    );

    // 2. Writer rate without any consumer.
    let (url, ledger, _dir2) = start().await;
    let alone = write_all(&url, commands).await;
    println!("{commands} commands over HTTP, 8 clients, no stream: {alone:.0} commands/s");

    // 3. Catch-up of a stream over loopback.
    let started = Instant::now();
    let resp = client
        .get(format!("{url}/v1/events"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("a stream");
    let mut s = resp.bytes_stream();
    let (mut lines, head) = (0u64, ledger.store().head().position.0);
    'read: while let Some(Ok(chunk)) = s.next().await {
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        if lines >= head {
            break 'read;
        }
    }
    println!(
        "catch-up of {head} events over loopback NDJSON: {:.0} events/s",
        head as f64 / started.elapsed().as_secs_f64()
    );

    // 4. The same load with a connected consumer that reads nothing.
    let (url, ledger, _dir3) = start().await;
    let rss_before = rss_mib();
    let stalled = client
        .get(format!("{url}/v1/events"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("a stream");
    let with = write_all(&url, commands).await;
    let rss_after = rss_mib();
    println!(
        "{commands} commands with a stalled consumer: {with:.0} commands/s ({:+.1}% against no stream); process RSS {rss_before:.0} MiB before, {rss_after:.0} MiB after",
        100.0 * (with - alone) / alone
    );
    let started = Instant::now();
    let mut s = stalled.bytes_stream();
    let (mut lines, head) = (0u64, ledger.store().head().position.0);
    while let Some(Ok(chunk)) = s.next().await {
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        if lines >= head {
            break;
        }
    }
    println!(
        "the stalled consumer then received all {lines} events in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}
