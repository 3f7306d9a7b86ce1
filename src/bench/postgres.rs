//! The benchmark on PostgreSQL (`partner-ledger --store URL bench --postgres`): durable throughput in process and over
//! HTTP against concurrency, beside the careful per-command design measured in the same run on the same server; then
//! a larger ledger's catch-up read and its open until a first command. Every ledger lives in a schema of its own,
//! created for the run (the URL's role must be allowed to create schemas) and dropped after it.

use std::time::Instant;

use serde::Serialize;

use super::throughput::{self, Run};
use super::{Latencies, Summary};
use crate::domain::{parse_line, Position};
use crate::ledger::{Ledger, LedgerConfig};
use crate::store::postgres::PgTarget;

/// How many concurrent submitters each run has.
pub const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];
/// How many clients the per-command baseline runs with.
pub const BASELINE_CLIENTS: [usize; 3] = [1, 16, 64];

/// One run of the per-command design: `clients` connections, each committing one command per transaction.
#[derive(Clone, Debug, Serialize)]
pub struct BaselineRun {
    pub clients: usize,
    pub commands: usize,
    pub commands_per_s: f64,
    pub latency: Summary,
}

/// What a larger ledger costs to read and to open.
#[derive(Clone, Debug, Serialize)]
pub struct Large {
    pub commands: usize,
    pub events: u64,
    pub build_seconds: f64,
    /// Reading the whole log in order, as a stream catching up from 0 does.
    pub catch_up_events_per_s: f64,
    /// `Ledger::open` (snapshot, then the events after it) until a first command is committed.
    pub open_to_first_command_s: f64,
    /// A server process on it: start until a first command, memory, views and streams over HTTP.
    pub server: super::big::Open,
    pub now_http: Summary,
    pub as_of_http: Summary,
    pub streams: super::big::Streams,
}

#[derive(Clone, Debug, Serialize)]
pub struct Results {
    pub server_version: String,
    pub in_process: Vec<Run>,
    pub http: Vec<Run>,
    pub baseline: Vec<BaselineRun>,
    pub large: Large,
    pub suite_seconds: f64,
}

/// Runs the suite against the database `target` names (its schema is not used: each ledger gets its own).
pub fn run(
    target: &PgTarget,
    commands: usize,
    big: usize,
    out: Option<&std::path::Path>,
) -> anyhow::Result<Results> {
    let suite = Instant::now();
    let step = |what: &str| eprintln!("[{:>6.1} s] {what}", suite.elapsed().as_secs_f64());
    let work = tempfile::tempdir()?;
    let stories = super::workload::stories(commands, 11);
    let single = super::workload::stories((commands / 10).max(200), 12);
    let mut n = 0;
    let mut fresh = || -> anyhow::Result<PgTarget> {
        n += 1;
        let t = target
            .with_schema(&format!("bench_{}_{n}", std::process::id()))
            .map_err(anyhow::Error::msg)?;
        t.drop_schema()?;
        crate::store::postgres::migrate_schema(&t, None)?;
        crate::store::set_default_postgres(Some(t.clone()));
        Ok(t)
    };
    let mut in_process = Vec::new();
    let mut http = Vec::new();
    for c in CONCURRENCY {
        let st = if c == 1 { &single } else { &stories };
        step(&format!("in process, {c} submitter(s)"));
        let t = fresh()?;
        let (run, ledger) = throughput::in_process(work.path(), st, c)?;
        ledger.close();
        drop(ledger);
        t.drop_schema()?;
        in_process.push(run);
        step(&format!("HTTP, {c} client(s)"));
        let t = fresh()?;
        http.push(throughput::over_http(work.path(), st, c)?);
        t.drop_schema()?;
    }
    let mut baseline = Vec::new();
    for c in BASELINE_CLIENTS {
        step(&format!("per-command baseline, {c} client(s)"));
        let t = fresh()?;
        baseline.push(per_command(&t, c, if c == 1 { 1_000 } else { 5_000 })?);
        t.drop_schema()?;
    }
    step(&format!(
        "a ledger of {big} commands: build, catch-up read, open"
    ));
    let t = fresh()?;
    let large = large(work.path(), big)?;
    t.drop_schema()?;
    crate::store::set_default_postgres(Some(target.clone()));
    let server_version = target
        .connect()?
        .query_one("SHOW server_version", &[])?
        .get::<_, String>(0);
    let results = Results {
        server_version,
        in_process,
        http,
        baseline,
        large,
        suite_seconds: suite.elapsed().as_secs_f64(),
    };
    if let Some(out) = out {
        let old = std::fs::read_to_string(out).unwrap_or_default();
        std::fs::write(out, with_section(&old, &markdown(&results)))?;
        step(&format!(
            "wrote the PostgreSQL section of {}",
            out.display()
        ));
    }
    Ok(results)
}

/// The careful per-command design, on its own tables in `t`'s schema: each command is one transaction that locks the
/// head row, chains its envelope's hash on the previous one, inserts it and moves the head, then commits
/// (`synchronous_commit` on). `clients` connections share `total` commands.
fn per_command(t: &PgTarget, clients: usize, total: usize) -> anyhow::Result<BaselineRun> {
    use sha2::{Digest, Sha256};
    let mut setup = t.connect()?;
    setup.batch_execute(
        "CREATE TABLE baseline_head (only_row boolean PRIMARY KEY, position bigint NOT NULL, hash text NOT NULL);
         INSERT INTO baseline_head VALUES (true, 0, '');
         CREATE TABLE baseline_events (position bigint PRIMARY KEY, envelope text NOT NULL);",
    )?;
    let envelope = "x".repeat(600);
    let each = total / clients;
    let started = Instant::now();
    let latencies: Vec<anyhow::Result<Latencies>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let envelope = envelope.as_str();
                scope.spawn(move || -> anyhow::Result<Latencies> {
                    let mut c = t.connect()?;
                    let mut lat = Latencies::default();
                    for _ in 0..each {
                        let s = Instant::now();
                        let mut tx = c.transaction()?;
                        let row = tx.query_one(
                            "SELECT position, hash FROM baseline_head FOR UPDATE",
                            &[],
                        )?;
                        let (position, prev): (i64, String) = (row.get(0), row.get(1));
                        let hash = hex::encode(Sha256::digest(format!("{prev}{envelope}")));
                        tx.execute(
                            "INSERT INTO baseline_events VALUES ($1, $2)",
                            &[&(position + 1), &envelope],
                        )?;
                        tx.execute(
                            "UPDATE baseline_head SET position = $1, hash = $2",
                            &[&(position + 1), &hash],
                        )?;
                        tx.commit()?;
                        lat.push(s.elapsed());
                    }
                    Ok(lat)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a client panicked")))
            })
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut all = Latencies::default();
    for l in latencies {
        all.extend(l?);
    }
    let commands = all.len();
    Ok(BaselineRun {
        clients,
        commands,
        commands_per_s: commands as f64 / seconds,
        latency: all.summary(),
    })
}

/// Builds a ledger of `commands` generated commands in the default schema, reads it whole, and opens it again
/// until a first command is committed.
fn large(dir: &std::path::Path, commands: usize) -> anyhow::Result<Large> {
    let (build, customers) = super::big::build(dir, commands, 13)?;
    let ledger = Ledger::open(LedgerConfig::new(dir))?;
    let build_seconds = build.seconds;
    let events = ledger.store().head().position.0;
    let read = Instant::now();
    let mut n = 0u64;
    for e in ledger.store().read(Position(0), None) {
        e?;
        n += 1;
    }
    let catch_up_events_per_s = n as f64 / read.elapsed().as_secs_f64();
    ledger.close();
    drop(ledger);
    let opened = Instant::now();
    let ledger = Ledger::open(LedgerConfig::new(dir))?;
    let first = parse_line(&format!(
        r#"{{"type":"EnrollPartner","command_id":"{}","actor":{{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"bench","role":"operator"}},"partner":"{}","partner_id":"4499999","name":"Bench Partner","kind":"direct_bill","country":"NL","cloud":"public","markets":["NL"]}}"#,
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4()
    ))?;
    ledger.execute(first);
    let open_to_first_command_s = opened.elapsed().as_secs_f64();
    ledger.close();
    drop(ledger);
    let (server, now_http, as_of_http, streams) = super::big::serve(dir, &customers, 10_000)?;
    Ok(Large {
        commands,
        events,
        build_seconds,
        catch_up_events_per_s,
        open_to_first_command_s,
        server,
        now_http,
        as_of_http,
        streams,
    })
}

const BEGIN: &str = "<!-- postgres: written by `partner-ledger bench --postgres --out docs/performance.md`; other runs keep it -->";
const END: &str = "<!-- end of postgres -->";

/// `page` with its PostgreSQL section replaced by `section` (appended when it has none).
pub fn with_section(page: &str, section: &str) -> String {
    super::report::with_section(page, (BEGIN, END), section)
}

/// The PostgreSQL section of a page, if it has one (for a run that rewrites the rest of the page).
pub fn section_of(page: &str) -> Option<String> {
    super::report::section_of(page, (BEGIN, END))
}

fn markdown(r: &Results) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(t, "## On PostgreSQL\n");
    let _ = writeln!(
        t,
        "`partner-ledger bench --postgres --out docs/performance.md` (without `--store`: a throwaway server of this machine's \
         PostgreSQL) on PostgreSQL {} (the same machine, loopback, `synchronous_commit` on, the server's defaults \
         otherwise), {:.0} s in all. Each run is a fresh ledger in a schema of its own.\n",
        r.server_version, r.suite_seconds
    );
    let _ = writeln!(t, "| submitters | in process: commands/s | p50 | p99 | p99.9 | over HTTP: commands/s | p50 | p99 | p99.9 | commands per COMMIT (HTTP) |");
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|");
    for (a, b) in r.in_process.iter().zip(&r.http) {
        let _ = writeln!(
            t,
            "| {} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} |",
            a.submitters,
            a.commands_per_s,
            a.latency.p50_ms,
            a.latency.p99_ms,
            a.latency.p999_ms,
            b.commands_per_s,
            b.latency.p50_ms,
            b.latency.p99_ms,
            b.latency.p999_ms,
            b.commands_per_fdatasync
        );
    }
    let _ = writeln!(
        t,
        "\nThe careful per-command design on the same server (one transaction per command: lock the head row, chain the \
         hash, insert, move the head, COMMIT):\n"
    );
    let _ = writeln!(t, "| clients | commands/s | p50 | p99 | p99.9 |");
    let _ = writeln!(t, "|---|---|---|---|---|");
    for b in &r.baseline {
        let _ = writeln!(
            t,
            "| {} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms |",
            b.clients, b.commands_per_s, b.latency.p50_ms, b.latency.p99_ms, b.latency.p999_ms
        );
    }
    let http64 = r.http.iter().find(|h| h.submitters == 64);
    let base64 = r.baseline.iter().find(|b| b.clients == 64);
    if let (Some(h), Some(b)) = (http64, base64) {
        let _ = writeln!(
            t,
            "\nAt 64 HTTP clients the ledger commits {:.1}× the baseline's commands per second at 64 clients (target ≥ 5×), \
             with p99 {:.1} ms (target ≤ 20 ms).",
            h.commands_per_s / b.commands_per_s,
            h.latency.p99_ms
        );
    }
    let l = &r.large;
    let _ = writeln!(
        t,
        "\nA ledger of {} generated commands ({} events, built in {:.1} s): the whole log read in order (a stream catching \
         up from 0) at {:.0} events/s (target ≥ 100,000); opened (snapshot from the database, then the events after it) \
         until a first command was committed in {:.2} s.",
        l.commands, l.events, l.build_seconds, l.catch_up_events_per_s, l.open_to_first_command_s
    );
    let _ = writeln!(
        t,
        "\nA server process on it (`serve`, its own connections): listening after {:.2} s, a first command committed \
         {:.2} s after its start, {:.0} MB resident then ({:.0} MB at the peak). Over HTTP, one keep-alive client: the \
         customer view now p50 {:.2} ms, p99 {:.2} ms ({} requests), as of a past position p50 {:.2} ms, p99 {:.2} ms; \
         a stream from position 0 delivered {} events in {:.1} s ({:.0} events/s, target ≥ 100,000), and a following \
         stream received a new event {:.2} ms (p50) after its command was answered.",
        l.server.until_listening_s,
        l.server.until_first_command_s,
        l.server.rss_bytes as f64 / 1e6,
        l.server.peak_rss_bytes as f64 / 1e6,
        l.now_http.p50_ms,
        l.now_http.p99_ms,
        l.now_http.count,
        l.as_of_http.p50_ms,
        l.as_of_http.p99_ms,
        l.streams.catch_up_events,
        l.streams.catch_up_seconds,
        l.streams.catch_up_per_s,
        l.streams.live_after_answer.p50_ms
    );
    t
}
