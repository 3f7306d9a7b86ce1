//! Measurements on a large ledger: building it, bytes on disk, a raw scan beside a rebuild of every projection,
//! opening it, resident memory, view latency, and event streams.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Serialize;

use super::http::{Client, Server};
use super::{Latencies, Summary};
use crate::domain::{parse_line, CustomerId, Position};
use crate::ledger::{Ledger, LedgerConfig};
use crate::projection::Projections;
use crate::query::{self, AsOfSpec};
use crate::store::ReadModel;
use crate::store::{Store, StoreOptions};
use crate::workload::{generate, WorkloadSpec};

/// Building the ledger from generated commands, the way `exec` does: submitted without waiting, answered in order.
#[derive(Clone, Debug, Serialize)]
pub struct Build {
    pub commands: usize,
    pub events: u64,
    pub seconds: f64,
    pub commands_per_s: f64,
}

/// Generates `commands` commands and executes them into a new ledger in `dir`, then advances its clock to now, so the
/// ledger is current when a server opens it. Business times are spread over the weeks before now (the generator steps
/// about ten seconds a command). Returns the build and some customer ids to query.
pub fn build(dir: &Path, commands: usize, seed: u64) -> anyhow::Result<(Build, Vec<CustomerId>)> {
    let ledger = Arc::new(Ledger::open(LedgerConfig::new(dir))?);
    let now = crate::domain::Timestamp::from_datetime(chrono::Utc::now());
    let span = i64::try_from(commands).unwrap_or(i64::MAX / 11) * 102 / 10;
    let spec = WorkloadSpec {
        commands,
        seed,
        start: now.plus_seconds(-span),
    };
    let started = Instant::now();
    // Generated and parsed on another thread, submitted without waiting, answered in order: what `exec` does.
    let (tx, rx) = std::sync::mpsc::sync_channel::<crate::ledger::Ticket>(16_384);
    let submitter = Arc::clone(&ledger);
    let producer = std::thread::spawn(move || -> anyhow::Result<Vec<CustomerId>> {
        let mut customers = Vec::new();
        for line in generate(spec) {
            let cmd = parse_line(&line).map_err(|e| anyhow::anyhow!("generated: {e}"))?;
            if let crate::domain::command::Body::RegisterCustomer(b) = &cmd.body {
                if customers.len() < 4096 {
                    customers.push(b.customer);
                }
            }
            if tx.send(submitter.submit(cmd)).is_err() {
                break;
            }
        }
        Ok(customers)
    });
    for t in rx {
        t.wait();
    }
    let customers = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the generator panicked"))??;
    let op =
        r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"bench","role":"operator"}"#;
    let tick = format!(r#"{{"type":"AdvanceClock","actor":{op},"to":"{now}"}}"#);
    ledger.execute(parse_line(&tick).map_err(|e| anyhow::anyhow!("{e}"))?);
    let events = ledger.store().head().position.0;
    ledger.close();
    let seconds = started.elapsed().as_secs_f64();
    Ok((
        Build {
            commands,
            events,
            seconds,
            commands_per_s: commands as f64 / seconds,
        },
        customers,
    ))
}

/// Bytes on disk beside the events' own bytes.
#[derive(Clone, Debug, Serialize)]
pub struct Disk {
    pub events: u64,
    /// `du -sb` of the data folder: every file's and folder's length.
    pub folder_bytes: u64,
    /// The events as NDJSON, as `export` writes them.
    pub raw_json_bytes: u64,
    pub bytes_per_event: f64,
    pub ratio: f64,
    /// Of which the write-model snapshot.
    pub snapshot_bytes: u64,
}

fn du(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.len();
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                total += du(&e.path());
            }
        }
    }
    total
}

/// Measures the folder of a closed ledger.
pub fn disk(dir: &Path) -> anyhow::Result<Disk> {
    let folder_bytes = du(dir);
    let store = open_store(dir)?;
    let mut raw = 0u64;
    let mut events = 0u64;
    for e in store.read(Position(0), None) {
        raw += e?.raw.len() as u64 + 1;
        events += 1;
    }
    Ok(Disk {
        events,
        folder_bytes,
        raw_json_bytes: raw,
        bytes_per_event: folder_bytes as f64 / events.max(1) as f64,
        ratio: folder_bytes as f64 / raw.max(1) as f64,
        snapshot_bytes: std::fs::metadata(dir.join(crate::snapshot::FILE))
            .map(|m| m.len())
            .unwrap_or(0),
    })
}

pub(super) fn open_store(dir: &Path) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    Ok(crate::store::open(
        dir,
        &StoreOptions {
            create: false,
            ..StoreOptions::default()
        },
    )?)
}

/// A raw scan of the log with every event decoded, beside a rebuild of every projection from the same log.
#[derive(Clone, Debug, Serialize)]
pub struct Rebuild {
    pub events: u64,
    pub scan_decode_seconds: f64,
    pub scan_decode_per_s: f64,
    pub rebuild_seconds: f64,
    pub rebuild_per_s: f64,
    pub ratio: f64,
}

/// Measures a scan + decode, then a rebuild of all projections, on the closed ledger in `dir`.
pub fn rebuild(dir: &Path) -> anyhow::Result<Rebuild> {
    let store = open_store(dir)?;
    let started = Instant::now();
    let mut events = 0u64;
    for e in store.read(Position(0), None) {
        let _ = e?.decode()?;
        events += 1;
    }
    let scan = started.elapsed().as_secs_f64();
    let projections = Projections::open(&*store);
    let started = Instant::now();
    projections.rebuild(&ReadModel::ALL, |_| {})?;
    let rebuild = started.elapsed().as_secs_f64();
    Ok(Rebuild {
        events,
        scan_decode_seconds: scan,
        scan_decode_per_s: events as f64 / scan,
        rebuild_seconds: rebuild,
        rebuild_per_s: events as f64 / rebuild,
        ratio: scan / rebuild,
    })
}

/// Starting the server on the large ledger.
#[derive(Clone, Debug, Serialize)]
pub struct Open {
    pub events: u64,
    /// From starting the process until it listened.
    pub until_listening_s: f64,
    /// From starting the process until its first command was answered as committed.
    pub until_first_command_s: f64,
    /// The server's resident memory after that command, and its high-water mark.
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

/// View latency, in process and over HTTP.
#[derive(Clone, Debug, Serialize)]
pub struct Queries {
    /// The customer view now, in process (the live write model).
    pub now_in_process: Summary,
    /// The customer view as of a past position, in process (folded from its indexed history).
    pub as_of_in_process: Summary,
    pub now_http: Summary,
    pub as_of_http: Summary,
}

/// Event streams over HTTP.
#[derive(Clone, Debug, Serialize)]
pub struct Streams {
    pub catch_up_events: u64,
    pub catch_up_seconds: f64,
    pub catch_up_per_s: f64,
    /// From the command's answer to the event arriving on a stream that was already following the head.
    pub live_after_answer: Summary,
    /// From sending the command to the event arriving.
    pub live_after_send: Summary,
}

/// Starts the server on the ledger in `dir`, commits one command, measures memory, views over HTTP and streams, then
/// stops it.
pub fn serve(
    dir: &Path,
    customers: &[CustomerId],
    queries: usize,
) -> anyhow::Result<(Open, Summary, Summary, Streams)> {
    let events = open_store(dir)?.head().position.0;
    let started = Instant::now();
    let server = Server::start(dir)?;
    let until_listening = server.started_in.as_secs_f64();
    let addr = server.addr;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let op = r#""actor":{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"bench","role":"operator"}"#;
    let register = move || {
        format!(
            r#"{{"type":"RegisterCustomer",{op},"customer":"{}","company_name":"Bench","domain":"bench.onmicrosoft.com","country":"NL","cloud":"public"}}"#,
            uuid::Uuid::new_v4()
        )
    };
    let (first, now_http, as_of_http) = runtime.block_on(async {
        let mut c = Client::connect(addr).await?;
        let (status, body) = c.command(&register()).await?;
        anyhow::ensure!(
            status == 200,
            "the first command answered {status}: {body:?}"
        );
        let first = started.elapsed().as_secs_f64();
        let mut now = Latencies::default();
        for i in 0..queries {
            let id = customers[i % customers.len()];
            let t = Instant::now();
            let (status, _) = c.get(&format!("/v1/customers/{id}")).await?;
            now.push(t.elapsed());
            anyhow::ensure!(status == 200, "a customer view answered {status}");
        }
        let mut as_of = Latencies::default();
        for i in 0..queries / 10 {
            let id = customers[i % customers.len()];
            let t = Instant::now();
            let (status, _) = c
                .get(&format!("/v1/customers/{id}?as_of={}", events / 2))
                .await?;
            as_of.push(t.elapsed());
            anyhow::ensure!(
                status == 200 || status == 404,
                "an as-of view answered {status}"
            );
        }
        Ok::<_, anyhow::Error>((first, now.summary(), as_of.summary()))
    })?;
    let (peak, rss) = super::http::memory(server.pid()).unwrap_or_default();
    let open = Open {
        events,
        until_listening_s: until_listening,
        until_first_command_s: first,
        rss_bytes: rss,
        peak_rss_bytes: peak,
    };
    let streams = runtime.block_on(streams(addr, register, queries.min(2000)))?;
    server.stop()?;
    Ok((open, now_http, as_of_http, streams))
}

async fn streams(
    addr: std::net::SocketAddr,
    register: impl Fn() -> String,
    live: usize,
) -> anyhow::Result<Streams> {
    let mut c = Client::connect(addr).await?;
    let head = super::http::head(&mut c).await?;
    // Catch-up: everything from the start, until the head.
    let mut s = Client::connect(addr).await?;
    let started = Instant::now();
    let mut body = s.stream("/v1/events?from=0").await?;
    let mut seen = 0u64;
    let mut partial = Vec::new();
    'catch_up: while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        partial.extend_from_slice(&data);
        while let Some(i) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=i).collect();
            if line.starts_with(b"{\"heartbeat\"") {
                continue;
            }
            seen += 1;
            if seen >= head {
                break 'catch_up;
            }
        }
    }
    let catch_up_seconds = started.elapsed().as_secs_f64();
    drop(body);
    // A fresh connection for the commands: the first one sat idle through the catch-up, which can take longer than
    // the server keeps an idle connection open (--header-timeout-ms, 10 s).
    let mut c = Client::connect(addr).await?;
    // Live: a stream already at the head, then commands one at a time.
    let mut s = Client::connect(addr).await?;
    let mut body = s.stream(&format!("/v1/events?from={head}")).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let reader = tokio::spawn(async move {
        let mut partial = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let now = Instant::now();
            partial.extend_from_slice(&data);
            while let Some(i) = partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial.drain(..=i).collect();
                #[derive(serde::Deserialize)]
                struct P {
                    position: Option<u64>,
                }
                if let Ok(P { position: Some(p) }) = serde_json::from_slice::<P>(&line) {
                    if tx.send((p, now)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut after_answer = Latencies::default();
    let mut after_send = Latencies::default();
    for _ in 0..live {
        let sent = Instant::now();
        let (status, body) = c
            .request(
                "POST",
                "/v1/commands",
                Some("application/json"),
                Bytes::from(register()),
            )
            .await?;
        let answered = Instant::now();
        anyhow::ensure!(status == 200, "a live command answered {status}");
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let position = v["positions"][0].as_u64().unwrap_or(0);
        loop {
            let (p, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("the live stream ended"))?;
            if p == position {
                after_answer.push(at.saturating_duration_since(answered));
                after_send.push(at.saturating_duration_since(sent));
                break;
            }
        }
    }
    reader.abort();
    Ok(Streams {
        catch_up_events: seen,
        catch_up_seconds,
        catch_up_per_s: seen as f64 / catch_up_seconds,
        live_after_answer: after_answer.summary(),
        live_after_send: after_send.summary(),
    })
}

/// The customer view in process: now (live write model) and as of the middle of the log (folded from the index).
pub fn queries_in_process(
    dir: &Path,
    customers: &[CustomerId],
    queries: usize,
) -> anyhow::Result<(Summary, Summary)> {
    let ledger = Arc::new(Ledger::open(LedgerConfig::new(dir))?);
    let head = ledger.store().head().position;
    let mut now = Latencies::default();
    for i in 0..queries {
        let id = customers[i % customers.len()];
        let t = Instant::now();
        let a = query::customer_in(&ledger, id, None)?;
        now.push(t.elapsed());
        anyhow::ensure!(a.is_some(), "customer {id} is missing");
    }
    let mut as_of = Latencies::default();
    let mid = Some(AsOfSpec::Position(Position(head.0 / 2)));
    for i in 0..queries / 10 {
        let id = customers[i % customers.len()];
        let t = Instant::now();
        let _ = query::customer_in(&ledger, id, mid)?;
        as_of.push(t.elapsed());
    }
    ledger.close();
    Ok((now.summary(), as_of.summary()))
}
