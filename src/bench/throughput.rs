//! Durable command throughput in process, against concurrency, beside raw sled baselines measured in the same run.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::{Latencies, Summary};
use crate::domain::{parse_line, Position};
use crate::ledger::{Ledger, LedgerConfig, Outcome};
use crate::store::EventStore;

/// One run of `submitters` concurrent submitters.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub submitters: usize,
    pub commands: usize,
    pub committed: usize,
    pub refused: usize,
    pub events: u64,
    pub seconds: f64,
    pub commands_per_s: f64,
    pub events_per_s: f64,
    /// Commit latency: from submitting a command to its answer.
    pub latency: Summary,
    pub commands_per_fdatasync: f64,
}

/// Runs the set-up, then the stories with `submitters` concurrent async submitters (each runs one story at a time, in
/// order), on a fresh ledger in `dir`. Returns the run and the ledger, still open.
pub fn in_process(
    dir: &Path,
    stories: &super::workload::Stories,
    submitters: usize,
) -> anyhow::Result<(Run, Arc<Ledger>)> {
    let ledger = Arc::new(Ledger::open(LedgerConfig::new(dir))?);
    let tickets: Vec<_> = stories
        .setup
        .iter()
        .map(|l| parse_line(l).map(|c| ledger.submit(c)))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("set-up: {e}"))?;
    for t in tickets {
        t.wait();
    }
    let before = ledger.stats();
    let head_before = ledger.store().head().position;
    let queue: Arc<Mutex<VecDeque<Vec<String>>>> =
        Arc::new(Mutex::new(stories.stories.iter().cloned().collect()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let tally = runtime.block_on(async {
        let tasks: Vec<_> = (0..submitters)
            .map(|_| {
                let (ledger, queue) = (Arc::clone(&ledger), Arc::clone(&queue));
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    while let Some(story) = next_story(&queue) {
                        for line in story {
                            let Ok(cmd) = parse_line(&line) else { continue };
                            let t = Instant::now();
                            let outcome = ledger.submit_async(cmd).await.outcome().await;
                            tally.count(
                                t.elapsed(),
                                matches!(outcome, Outcome::Committed { .. }),
                                matches!(outcome, Outcome::Refused { .. }),
                            );
                        }
                    }
                    tally
                })
            })
            .collect();
        let mut all = Tally::default();
        for t in tasks {
            if let Ok(t) = t.await {
                all.merge(t);
            }
        }
        all
    });
    let seconds = started.elapsed().as_secs_f64();
    let events = ledger.store().head().position.0 - head_before.0;
    let fsyncs = ledger.stats().fdatasyncs - before.fdatasyncs;
    Ok((tally.run(submitters, events, seconds, fsyncs), ledger))
}

/// What concurrent submitters saw: each command's latency, and how many were committed or refused.
#[derive(Default)]
struct Tally {
    latencies: Latencies,
    committed: usize,
    refused: usize,
}

impl Tally {
    fn count(&mut self, latency: std::time::Duration, committed: bool, refused: bool) {
        self.latencies.push(latency);
        self.committed += usize::from(committed);
        self.refused += usize::from(refused);
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.committed += other.committed;
        self.refused += other.refused;
    }

    fn run(self, submitters: usize, events: u64, seconds: f64, fsyncs: u64) -> Run {
        let commands = self.latencies.len();
        Run {
            submitters,
            commands,
            committed: self.committed,
            refused: self.refused,
            events,
            seconds,
            commands_per_s: commands as f64 / seconds,
            events_per_s: events as f64 / seconds,
            latency: self.latencies.summary(),
            commands_per_fdatasync: self.committed as f64 / fsyncs.max(1) as f64,
        }
    }
}

/// The next customer story for a submitter, in generation order.
fn next_story(queue: &Mutex<VecDeque<Vec<String>>>) -> Option<Vec<String>> {
    queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
}

/// Raw sled, no ledger: the same envelope bytes written the simplest durable way.
#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    pub events: usize,
    /// Batches of 1,000 envelopes, each one `apply_batch` + `flush()` + `fdatasync`.
    pub batch_events_per_s: f64,
    /// One envelope per insert + `flush()` + `fdatasync`: the latency of one durable write.
    pub single: Summary,
}

/// Writes `envelopes` into a fresh sled database in `dir`: in batches of 1,000, then one at a time (up to 2,000).
pub fn baseline(dir: &Path, envelopes: &[Vec<u8>]) -> anyhow::Result<Baseline> {
    let raw = crate::store::raw_sled_baseline(dir, envelopes)?;
    let mut lat = Latencies::default();
    for d in raw.single {
        lat.push(d);
    }
    Ok(Baseline {
        events: envelopes.len(),
        batch_events_per_s: raw.batch_events_per_s,
        single: lat.summary(),
    })
}

/// The stored envelopes of a ledger, oldest first (at most `limit`).
pub fn envelopes(store: &dyn EventStore, limit: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for e in store.read(Position(0), None).take(limit) {
        out.push(e?.raw);
    }
    Ok(out)
}

/// Runs the set-up, then the stories with `clients` concurrent HTTP clients (one keep-alive connection each, one
/// command per request), against a fresh server process on `dir`.
pub fn over_http(
    dir: &Path,
    stories: &super::workload::Stories,
    clients: usize,
) -> anyhow::Result<Run> {
    let server = super::http::Server::start(dir)?;
    let addr = server.addr;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let queue: Arc<Mutex<VecDeque<Vec<String>>>> =
        Arc::new(Mutex::new(stories.stories.iter().cloned().collect()));
    let setup = stories.setup.clone();
    let (seconds, tally, head_before) = runtime.block_on(async move {
        let mut c = super::http::Client::connect(addr).await?;
        for line in &setup {
            c.command(line).await?;
        }
        let head_before = super::http::head(&mut c).await?;
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let queue = Arc::clone(&queue);
                tokio::spawn(async move {
                    let mut c = super::http::Client::connect(addr).await?;
                    let mut tally = Tally::default();
                    while let Some(story) = next_story(&queue) {
                        for line in story {
                            let t = Instant::now();
                            let (status, _) = c.command(&line).await?;
                            tally.count(t.elapsed(), status == 200, status == 422);
                        }
                    }
                    Ok::<_, anyhow::Error>(tally)
                })
            })
            .collect();
        let mut all = Tally::default();
        for t in tasks {
            all.merge(t.await??);
        }
        Ok::<_, anyhow::Error>((started.elapsed().as_secs_f64(), all, head_before))
    })?;
    let (head_after, fsyncs) = runtime.block_on(async {
        let mut c = super::http::Client::connect(addr).await?;
        let head = super::http::head(&mut c).await?;
        let (_, metrics) = c.get("/metrics").await?;
        let fsyncs: u64 = String::from_utf8_lossy(&metrics)
            .lines()
            .find(|l| l.starts_with("partner_ledger_fdatasyncs_total "))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok::<_, anyhow::Error>((head, fsyncs))
    })?;
    let events = head_after - head_before;
    server.stop()?;
    Ok(tally.run(clients, events, seconds, fsyncs))
}
