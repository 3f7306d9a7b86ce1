//! Helpers for the tests of several processes on one PostgreSQL ledger (`many_processes`, `replicas`, `patroni`):
//! commands with known ids, sending them over HTTP, recording what a stream delivers, reading the log straight from
//! the database.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::pg::Pg;

pub const OP: &str = r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops@ledger.example","role":"operator"}"#;

/// A command registering customer `n` of series `series`: its `command_id`, customer id and line.
pub fn register(series: usize, n: usize) -> (String, String, String) {
    let id = format!("{series:08x}-0000-4000-8000-{n:012x}");
    let customer = format!("c{series:07x}-0000-4000-8000-{n:012x}");
    let line = format!(
        r#"{{"type":"RegisterCustomer","command_id":"{id}","actor":{OP},"customer":"{customer}","company_name":"Customer {series}-{n}","domain":"c{series}x{n}.onmicrosoft.com","country":"NL","cloud":"public"}}"#
    );
    (id, customer, line)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Sends one command; its status, answer and `Ledger-Position`.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    line: &str,
) -> Result<(u16, Value, Option<u64>), String> {
    let r = client
        .post(format!("{url}/v1/commands"))
        .header("content-type", "application/json")
        .body(line.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let position = r
        .headers()
        .get("ledger-position")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = r.text().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
        position,
    ))
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let r = client
        .get(url)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// What one stream delivered: (position, hash) in the order it came.
pub type Delivered = Arc<Mutex<Vec<(u64, String)>>>;

/// Records everything `/v1/events` on `url` delivers, resuming after the last position whenever the stream breaks
/// (the process or its database went away), until `stop`.
pub fn record(
    rt: &tokio::runtime::Runtime,
    url: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Delivered, tokio::task::JoinHandle<()>) {
    let delivered: Delivered = Arc::default();
    let out = Arc::clone(&delivered);
    let task = rt.spawn(async move {
        use futures_util::StreamExt;
        let client = reqwest::Client::new();
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let from = out.lock().unwrap().last().map_or(0, |(p, _)| *p);
            let Ok(r) = client
                .get(format!("{url}/v1/events?from={from}"))
                .header("accept", "application/x-ndjson")
                .send()
                .await
            else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut stream = r.bytes_stream();
            let mut buf = String::new();
            loop {
                let next = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let chunk = match next {
                    Err(_) => continue,
                    Ok(Some(Ok(c))) => c,
                    Ok(_) => break,
                };
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(i) = buf.find('\n') {
                    let line: String = buf.drain(..=i).collect();
                    if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                        if let (Some(p), Some(h)) = (v["position"].as_u64(), v["hash"].as_str()) {
                            out.lock().unwrap().push((p, h.to_string()));
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (delivered, task)
}

/// Every position of the log on `pg`'s `schema`, with its hash, read straight from the events table.
pub fn log_on(pg: &Pg, schema: &str) -> Vec<(u64, String)> {
    let mut c = postgres::Client::connect(&pg.url("postgres"), postgres::NoTls).unwrap();
    c.query(
        &format!("SELECT position, envelope FROM {schema}.events ORDER BY position"),
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| {
        let e: Value = serde_json::from_str(r.get::<_, &str>(1)).unwrap();
        (
            u64::try_from(r.get::<_, i64>(0)).unwrap(),
            e["hash"].as_str().unwrap().to_string(),
        )
    })
    .collect()
}

/// Asserts that a stream delivered a gapless run from 1, each position with the hash the log holds.
pub fn assert_delivered_exist(delivered: &[(u64, String)], log: &[(u64, String)], what: &str) {
    for (i, (p, h)) in delivered.iter().enumerate() {
        assert_eq!(
            *p,
            i as u64 + 1,
            "{what}: delivered out of order or with a gap"
        );
        let held = log.get(i).map(|(_, h)| h.as_str());
        assert_eq!(
            held,
            Some(h.as_str()),
            "{what}: position {p} was delivered but the log (after failover) does not hold it with that hash"
        );
    }
}

/// Runs blocking work (a synchronous PostgreSQL client) from inside the tests' async code.
pub fn off_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

/// Two `serve` processes on one PostgreSQL ledger, each in a folder that `point` makes stand for it, logging to
/// `<folder>.stderr`: the folders, the servers and their URLs.
pub fn two_servers(
    point: impl Fn(&std::path::Path),
) -> (
    Vec<tempfile::TempDir>,
    Vec<crate::common::Server>,
    Vec<String>,
) {
    let dirs = vec![tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for d in &dirs {
        point(d.path());
    }
    let servers: Vec<crate::common::Server> = dirs
        .iter()
        .map(|d| {
            crate::common::Server::launch(d.path(), &[], Some(&d.path().with_extension("stderr")))
                .unwrap()
        })
        .collect();
    let urls = servers.iter().map(crate::common::Server::url).collect();
    (dirs, servers, urls)
}
