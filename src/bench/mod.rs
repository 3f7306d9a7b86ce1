//! The benchmark suite (`partner-ledger bench`): every figure of docs/performance.md, each measured beside its own
//! baseline in the same run, on this machine.

pub mod http;
pub mod throughput;
pub mod workload;

use std::time::Duration;

use serde::Serialize;

/// Latencies collected during a run.
#[derive(Default, Clone)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }
    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Percentiles in milliseconds.
    pub fn summary(&self) -> Summary {
        let mut v = self.0.clone();
        v.sort_unstable();
        let at = |per_100k: usize| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let i = ((v.len() - 1) * per_100k) / 100_000;
            v[i].as_secs_f64() * 1e3
        };
        Summary {
            count: v.len(),
            p50_ms: at(50_000),
            p99_ms: at(99_000),
            p999_ms: at(99_900),
            max_ms: at(100_000),
        }
    }
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

pub mod big;
pub mod growth;
pub mod growth_report;
pub mod postgres;
pub mod relay;
pub mod report;

use std::path::PathBuf;
use std::time::Instant;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where ledgers are built (a temporary folder by default).
    pub work: Option<PathBuf>,
    /// The Markdown page to write (its plot goes beside it as `performance.svg`).
    pub out: Option<PathBuf>,
    /// Commands per throughput run (a tenth of it with one submitter).
    pub commands: usize,
    /// Commands generated into the large ledger.
    pub big: usize,
    /// Customer views read per query measurement.
    pub queries: usize,
    /// Throughput runs per concurrency, interleaved with the baselines.
    pub rounds: usize,
    /// The command line, for the report.
    pub command: String,
}

impl Options {
    /// The full suite.
    pub fn full() -> Options {
        Options {
            work: None,
            out: None,
            commands: 60_000,
            big: 1_000_000,
            queries: 10_000,
            rounds: 3,
            command: "partner-ledger bench".into(),
        }
    }

    /// A smoke run of every part, in seconds, with small sizes (no figure from it means anything).
    pub fn quick() -> Options {
        Options {
            commands: 2_000,
            big: 5_000,
            queries: 200,
            rounds: 1,
            command: "partner-ledger bench --quick".into(),
            ..Options::full()
        }
    }
}

/// The machine the suite ran on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpus: String,
    pub memory: String,
    pub kernel: String,
    pub disk: String,
}

impl Machine {
    pub(super) fn describe(work: &std::path::Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(str::trim)
            .unwrap_or("unknown CPU")
            .to_string();
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| format!("Linux {}", s.trim()))
            .unwrap_or_else(|_| "unknown kernel".into());
        let disk = std::process::Command::new("df")
            .args(["-hT", &work.display().to_string()])
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .nth(1)
                    .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            })
            .unwrap_or_else(|| "an unknown disk".into());
        Machine {
            cpus: format!("{cpus} CPUs: {model}"),
            memory: format!("{:.0} GiB of memory", mem_kb as f64 / 1024.0 / 1024.0),
            kernel,
            disk: format!("`{}` ({disk})", work.display()),
        }
    }
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Results {
    pub command: String,
    pub date: String,
    pub machine: Machine,
    pub rounds: usize,
    pub throughput_commands: usize,
    pub in_process: Vec<throughput::Run>,
    pub http: Vec<throughput::Run>,
    pub baseline: throughput::Baseline,
    pub baselines: Vec<f64>,
    pub build: big::Build,
    pub disk: big::Disk,
    pub rebuild: big::Rebuild,
    pub open: big::Open,
    pub queries: big::Queries,
    pub customers: usize,
    pub streams: big::Streams,
    pub suite_seconds: f64,
}

/// What the profiles showed limits each figure; printed on the performance page.
pub const LIMITS: &str = include_str!("limits.md");

const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];

fn median_run(mut runs: Vec<throughput::Run>) -> Option<throughput::Run> {
    runs.sort_by(|a, b| a.commands_per_s.total_cmp(&b.commands_per_s));
    let mid = runs.len() / 2;
    runs.into_iter().nth(mid)
}

/// Runs the suite, printing progress on standard error, and writes the report when asked.
pub fn run(options: &Options) -> anyhow::Result<Results> {
    let suite = Instant::now();
    let temp = tempfile::Builder::new()
        .prefix("partner-ledger-bench")
        .tempdir_in(options.work.clone().unwrap_or_else(std::env::temp_dir))?;
    let work = temp.path();
    let step = |what: &str| eprintln!("[{:>6.1} s] {what}", suite.elapsed().as_secs_f64());
    let stories = workload::stories(options.commands, 11);
    let single = workload::stories((options.commands / 10).max(200), 12);
    let mut by_concurrency: Vec<Vec<throughput::Run>> = vec![Vec::new(); CONCURRENCY.len()];
    let mut http_runs: Vec<Vec<throughput::Run>> = vec![Vec::new(); CONCURRENCY.len()];
    let mut baselines = Vec::new();
    let mut baseline_runs = Vec::new();
    let mut run_no = 0;
    for round in 0..options.rounds {
        for (i, n) in CONCURRENCY.iter().enumerate() {
            step(&format!(
                "round {}: in process, {n} submitter(s)",
                round + 1
            ));
            run_no += 1;
            let dir = work.join(format!("tp-{run_no}"));
            let st = if *n == 1 { &single } else { &stories };
            let (run, ledger) = throughput::in_process(&dir, st, *n)?;
            let envelopes = if *n == 256 {
                throughput::envelopes(ledger.store(), usize::MAX)?
            } else {
                Vec::new()
            };
            // The ledger (and sled with it) must be gone before its folder is: sled waits forever to flush into
            // files that no longer exist.
            ledger.close();
            drop(ledger);
            let _ = std::fs::remove_dir_all(&dir);
            if *n == 256 {
                step(&format!("round {}: raw sled baseline", round + 1));
                let bdir = work.join(format!("baseline-{run_no}"));
                let b = throughput::baseline(&bdir, &envelopes)?;
                let _ = std::fs::remove_dir_all(&bdir);
                baselines.push(b.batch_events_per_s);
                baseline_runs.push(b);
            }
            by_concurrency[i].push(run);
        }
        for (i, n) in CONCURRENCY.iter().enumerate() {
            step(&format!("round {}: HTTP, {n} client(s)", round + 1));
            run_no += 1;
            let dir = work.join(format!("http-{run_no}"));
            let st = if *n == 1 { &single } else { &stories };
            http_runs[i].push(throughput::over_http(&dir, st, *n)?);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    baseline_runs.sort_by(|a, b| a.batch_events_per_s.total_cmp(&b.batch_events_per_s));
    let baseline = baseline_runs
        .get(baseline_runs.len() / 2)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no baseline was measured"))?;
    let in_process: Vec<_> = by_concurrency.into_iter().filter_map(median_run).collect();
    let http: Vec<_> = http_runs.into_iter().filter_map(median_run).collect();

    let big_dir = work.join("large");
    step(&format!("building a ledger of {} commands", options.big));
    let (build, customers) = big::build(&big_dir, options.big, 13)?;
    step("bytes on disk");
    let disk = big::disk(&big_dir)?;
    step("scan + decode, then rebuild of every projection");
    let rebuild = big::rebuild(&big_dir)?;
    step("server: open, first command, views over HTTP, streams");
    let (open, now_http, as_of_http, streams) = big::serve(&big_dir, &customers, options.queries)?;
    step("views in process");
    let (now_in_process, as_of_in_process) =
        big::queries_in_process(&big_dir, &customers, options.queries)?;
    let results = Results {
        command: options.command.clone(),
        date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        machine: Machine::describe(work),
        rounds: options.rounds,
        throughput_commands: stories.commands(),
        in_process,
        http,
        baseline,
        baselines,
        build,
        disk,
        rebuild,
        open,
        queries: big::Queries {
            now_in_process,
            as_of_in_process,
            now_http,
            as_of_http,
        },
        customers: customers.len(),
        streams,
        suite_seconds: suite.elapsed().as_secs_f64(),
    };
    if let Some(out) = &options.out {
        let svg = out.with_extension("svg");
        let svg_name = svg
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        report::plot(&results, &svg)?;
        // A growth section written by `--growth` is kept.
        let old = std::fs::read_to_string(out).unwrap_or_default();
        let mut page = growth_report::keeping_section(&old, report::markdown(&results, &svg_name));
        // So is the PostgreSQL section written by `bench --postgres`.
        if let Some(pg) = postgres::section_of(&old) {
            page = format!("{}\n\n{pg}", page.trim_end());
        }
        // And the JetStream section written by `bench --relay`.
        if let Some(js) = relay::section_of(&old) {
            page = format!("{}\n\n{js}", page.trim_end());
        }
        std::fs::write(out, page)?;
        step(&format!("wrote {} and {}", out.display(), svg.display()));
    }
    Ok(results)
}
