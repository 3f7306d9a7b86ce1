//! The growth suite (`partner-ledger bench --growth 1000000,3000000,10000000`): how a ledger's cost grows with its
//! history. For each size it builds a ledger from the workload generator the way `exec` does, then measures, on this
//! machine: the build rate, bytes on disk per event, the entities the write model holds, a server's start until its
//! first command is committed, the server's resident memory then and at its peak through the background verification
//! and a stream catching up from position 0, the memory `verify`, `export` and `events` take above merely opening the
//! ledger, verification and rebuild beside a raw scan + decode of the same log, and the as-of customer view's p99.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde::Serialize;

use super::big;
use super::http::{memory, Client, Server};

/// What one ledger size measured.
#[derive(Clone, Debug, Serialize)]
pub struct Size {
    pub commands: usize,
    pub events: u64,
    pub build_seconds: f64,
    pub build_commands_per_s: f64,
    pub disk_bytes_per_event: f64,
    /// The write model's entities by kind, from the server's `/metrics`.
    pub entities: Vec<(String, u64)>,
    pub until_listening_s: f64,
    pub until_first_command_s: f64,
    /// The server's resident memory once its first command was committed.
    pub rss_open_bytes: u64,
    /// The server's high-water mark over its whole run: opening, the background verification, a catch-up stream.
    pub rss_peak_bytes: u64,
    pub verification_seconds: f64,
    pub catch_up_events_per_s: f64,
    /// Peak memory of each whole-log command above the peak of `checkpoint` (which only opens the ledger); for
    /// `rebuild`, which folds the log into a write model, above an idle ledger holding its write model.
    pub scans_above_open_bytes: Vec<(String, u64)>,
    /// Peak memory of a process that opens the ledger with its write model and does nothing (`exec` of no input).
    pub idle_bytes: u64,
    pub scan_decode_per_s: f64,
    pub verify_per_s: f64,
    pub rebuild_per_s: f64,
    pub as_of_p99_ms: f64,
}

/// A growth run.
#[derive(Clone, Debug, Serialize)]
pub struct Growth {
    pub command: String,
    pub date: String,
    pub machine: super::Machine,
    /// A smoke run with small sizes: its figures are not comparable with the targets.
    pub quick: bool,
    pub sizes: Vec<Size>,
    /// The sizes asked for: the section is rewritten after each, so a run stopped early shows fewer.
    pub requested: Vec<usize>,
    pub seconds: f64,
}

/// Peak resident memory of `partner-ledger <args>` on `dir`, from the line it logs at info when it ends.
fn cli_peak(dir: &Path, args: &[&str]) -> anyhow::Result<u64> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .arg("--data")
        .arg(dir)
        .args(["--log-level", "partner_ledger=info"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()?;
    anyhow::ensure!(out.status.success(), "{args:?} failed");
    let logs = String::from_utf8_lossy(&out.stderr);
    let kib: u64 = logs
        .split("peak_rss_kib=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{args:?} logged no peak memory"))?;
    Ok(kib * 1024)
}

/// Raw scan + decode and a whole-chain verification of the closed ledger in `dir`, in events per second.
fn scan_and_verify(dir: &Path) -> anyhow::Result<(f64, f64)> {
    let store = big::open_store(dir)?;
    let started = Instant::now();
    let mut events = 0u64;
    for e in store.read(crate::domain::Position(0), None) {
        let _ = e?.decode()?;
        events += 1;
    }
    let scan = events as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let head = store.verify_all(&mut |_| {})?;
    let verify = head.position.0 as f64 / started.elapsed().as_secs_f64();
    Ok((scan, verify))
}

/// What the server run measured.
struct Served {
    listening: f64,
    first: f64,
    rss_open: u64,
    peak: u64,
    verification: f64,
    catch_up: f64,
    entities: Vec<(String, u64)>,
}

/// The server on `dir`: start until a first command is committed, memory then, the background verification, entity
/// counts and a catch-up stream from 0; the peak memory of the whole run.
fn serve(dir: &Path) -> anyhow::Result<Served> {
    let started = Instant::now();
    let server = Server::start(dir)?;
    let listening = server.started_in.as_secs_f64();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let addr = server.addr;
    let pid = server.pid();
    let mut served = runtime.block_on(async move {
        let mut c = Client::connect(addr).await?;
        let register = format!(
            r#"{{"type":"RegisterCustomer","actor":{{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"bench","role":"operator"}},"customer":"{}","company_name":"Growth","domain":"growth.example","country":"NL","cloud":"public"}}"#,
            uuid::Uuid::new_v4()
        );
        let (status, body) = c.command(&register).await?;
        anyhow::ensure!(status == 200, "the first command answered {status}: {body:?}");
        let first = started.elapsed().as_secs_f64();
        let rss_open = memory(pid).map_or(0, |(_, now)| now);
        let verifying = Instant::now();
        loop {
            let (_, body) = c.get("/healthz").await?;
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            match v["integrity"]["status"].as_str() {
                Some("verifying") => {}
                Some("verified") => break,
                other => anyhow::bail!("the background verification ended {other:?}: {v}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let verification = verifying.elapsed().as_secs_f64();
        let (_, metrics) = c.get("/metrics").await?;
        let entities = String::from_utf8_lossy(&metrics)
            .lines()
            .filter_map(|l| l.strip_prefix("partner_ledger_entities{kind=\""))
            .filter_map(|rest| {
                let (kind, n) = rest.split_once("\"} ")?;
                Some((kind.to_string(), n.trim().parse().ok()?))
            })
            .collect::<Vec<(String, u64)>>();
        let head = super::http::head(&mut c).await?;
        let mut s = Client::connect(addr).await?;
        let catching_up = Instant::now();
        let mut body = s.stream(&format!("/v1/events?from=0&to={head}")).await?;
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                seen += data.iter().filter(|b| **b == b'\n').count() as u64;
            }
        }
        let catch_up = seen as f64 / catching_up.elapsed().as_secs_f64();
        Ok::<_, anyhow::Error>(Served {
            listening,
            first,
            rss_open,
            peak: 0,
            verification,
            catch_up,
            entities,
        })
    })?;
    // The high-water mark of the whole run, read once everything above is done.
    served.peak = memory(pid).map_or(0, |(hwm, _)| hwm);
    server.stop()?;
    Ok(served)
}

/// Builds and measures one ledger of `commands` generated commands in `dir`.
fn measure(dir: &Path, commands: usize, step: &dyn Fn(&str)) -> anyhow::Result<Size> {
    step(&format!("{commands} commands: building the ledger"));
    let (build, customers) = big::build(dir, commands, 13)?;
    let disk = big::disk(dir)?;
    step(&format!(
        "{commands} commands: raw scan + decode, then verification"
    ));
    let (scan_decode_per_s, verify_per_s) = scan_and_verify(dir)?;
    step(&format!("{commands} commands: rebuild of every projection"));
    let rebuild = big::rebuild(dir)?;
    step(&format!("{commands} commands: whole-log commands' memory"));
    let open = cli_peak(dir, &["checkpoint"])?;
    let idle = cli_peak(dir, &["exec", "/dev/null"])?;
    let mut scans = Vec::new();
    for args in [&["verify"][..], &["export"], &["events"]] {
        scans.push((
            args[0].to_string(),
            cli_peak(dir, args)?.saturating_sub(open),
        ));
    }
    scans.push((
        "rebuild".to_string(),
        cli_peak(dir, &["rebuild"])?.saturating_sub(idle),
    ));
    step(&format!(
        "{commands} commands: server start, verification, catch-up stream"
    ));
    let served = serve(dir)?;
    step(&format!("{commands} commands: as-of views"));
    let (_, as_of) = big::queries_in_process(dir, &customers, 2_000)?;
    Ok(Size {
        commands,
        events: build.events,
        build_seconds: build.seconds,
        build_commands_per_s: build.commands_per_s,
        disk_bytes_per_event: disk.bytes_per_event,
        entities: served.entities,
        until_listening_s: served.listening,
        until_first_command_s: served.first,
        rss_open_bytes: served.rss_open,
        rss_peak_bytes: served.peak,
        verification_seconds: served.verification,
        catch_up_events_per_s: served.catch_up,
        scans_above_open_bytes: scans,
        idle_bytes: idle,
        scan_decode_per_s,
        verify_per_s,
        rebuild_per_s: rebuild.rebuild_per_s,
        as_of_p99_ms: as_of.p99_ms,
    })
}

/// Writes the growth section of `out` and its plot beside it.
fn write(growth: &Growth, out: &Path) -> anyhow::Result<()> {
    let svg = out.with_file_name(format!(
        "{}-growth.svg",
        out.file_stem()
            .map_or("performance".into(), |s| s.to_string_lossy())
    ));
    super::growth_report::growth_plot(growth, &svg)?;
    let page = std::fs::read_to_string(out).unwrap_or_default();
    let svg_name = svg
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    std::fs::write(
        out,
        super::growth_report::with_growth_section(&page, growth, &svg_name),
    )?;
    Ok(())
}

/// Runs the growth suite over `sizes` (commands per ledger), building under `work`; each ledger is deleted once
/// measured. Writes its section of the report into `out` when asked (`growth_report.rs`).
pub fn run(
    sizes: &[usize],
    quick: bool,
    work: Option<&Path>,
    out: Option<&Path>,
    command: String,
) -> anyhow::Result<Growth> {
    let suite = Instant::now();
    let temp = tempfile::Builder::new()
        .prefix("partner-ledger-growth")
        .tempdir_in(work.map_or_else(std::env::temp_dir, Path::to_path_buf))?;
    let step = |what: &str| eprintln!("[{:>7.1} s] {what}", suite.elapsed().as_secs_f64());
    let mut growth = Growth {
        command,
        date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        machine: super::Machine::describe(temp.path()),
        quick,
        sizes: Vec::new(),
        requested: sizes.to_vec(),
        seconds: 0.0,
    };
    for (i, commands) in sizes.iter().enumerate() {
        let dir = temp.path().join(format!("ledger-{i}"));
        growth.sizes.push(measure(&dir, *commands, &step)?);
        let _ = std::fs::remove_dir_all(&dir);
        growth.seconds = suite.elapsed().as_secs_f64();
        // Written after every size, so a long run stopped on its largest ledger keeps what it measured.
        if let Some(out) = out {
            write(&growth, out)?;
            step(&format!("wrote {}", out.display()));
        }
    }
    if out.is_none() {
        println!(
            "{}",
            super::growth_report::markdown(&growth, "(no plot without --out)")
        );
    }
    Ok(growth)
}
