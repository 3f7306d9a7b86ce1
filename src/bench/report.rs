//! docs/performance.md and its plot, written from one run's results.

use std::fmt::Write;
use std::path::Path;

use plotters::prelude::*;

use super::Results;

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn n0(v: f64) -> String {
    let s = format!("{v:.0}");
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// The Markdown page.
pub fn markdown(r: &Results, svg_name: &str) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "# Performance\n");
    let _ = writeln!(
        t,
        "Every figure on this page was measured by one run of `{}` on the machine below, {}; each is measured beside \
         its own baseline in the same run. Regenerate it with that command (it rewrites this page and \
         [{svg_name}]({svg_name})). Runs on this machine vary by about ±15% from one to the next (shared disk and \
         CPU), so compare a figure with the baseline of the same run, not with another run's.\n",
        r.command, r.date
    );
    let _ = writeln!(t, "## The machine\n");
    let _ = writeln!(t, "- {}", r.machine.cpus);
    let _ = writeln!(t, "- {}", r.machine.memory);
    let _ = writeln!(t, "- {}", r.machine.kernel);
    let _ = writeln!(t, "- data on {}", r.machine.disk);
    let _ = writeln!(
        t,
        "- durability: every acknowledged batch is written in one sled transaction, then `flush()` and `fdatasync` of \
         `sled/db` (STORAGE.md); `Config::temporary` is never used\n"
    );

    let _ = writeln!(t, "## Durable command throughput\n");
    let _ = writeln!(
        t,
        "Realistic commands (the workload generator: partners of all three kinds, customers in both clouds, relationship \
         requests and acceptances, GDAP lifecycles, licence and Azure subscriptions, about 5% refused by a rule), one \
         customer's story per submitter at a time, each submitter waiting for its answer before the next command. \
         {} commands per run at 16 and more submitters, {} with one; the median of {} runs on fresh ledgers, \
         interleaved with the baselines. Latency is from submitting a command to its answer.\n",
        n0(r.throughput_commands as f64),
        n0((r.throughput_commands / 10) as f64),
        r.rounds
    );
    let _ = writeln!(
        t,
        "![throughput and p99 latency against concurrency]({svg_name})\n"
    );
    let _ = writeln!(
        t,
        "| where | submitters | commands/s | events/s | p50 ms | p99 ms | p99.9 ms | commands per fdatasync |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (label, runs) in [("in process", &r.in_process), ("HTTP", &r.http)] {
        for run in runs.iter() {
            let _ = writeln!(
                t,
                "| {label} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} |",
                run.submitters,
                n0(run.commands_per_s),
                n0(run.events_per_s),
                run.latency.p50_ms,
                run.latency.p99_ms,
                run.latency.p999_ms,
                run.commands_per_fdatasync
            );
        }
    }
    let b = &r.baseline;
    let _ = writeln!(
        t,
        "\n**Baseline** (raw sled, no ledger): the envelopes of the 256-submitter run written into a fresh sled \
         database in batches of 1,000 (`apply_batch`, `flush()`, `fdatasync`): **{} events/s** (median of {}: {}). One \
         envelope per insert + `flush()` + `fdatasync`: p50 **{:.3} ms**, p99 {:.3} ms.\n",
        n0(b.batch_events_per_s),
        r.baselines.len(),
        r.baselines
            .iter()
            .map(|v| n0(*v))
            .collect::<Vec<_>>()
            .join(", "),
        b.single.p50_ms,
        b.single.p99_ms
    );
    let _ = writeln!(t, "## Large ledger\n");
    let big = &r.build;
    let _ = writeln!(
        t,
        "Built from {} generated commands ({} events) the way `exec` runs them, in {:.1} s ({} commands/s).\n",
        n0(big.commands as f64),
        n0(big.events as f64),
        big.seconds,
        n0(big.commands_per_s)
    );
    let d = &r.disk;
    let rb = &r.rebuild;
    let o = &r.open;
    let q = &r.queries;
    let s = &r.streams;
    let _ = writeln!(t, "| measure | value | beside |");
    let _ = writeln!(t, "|---|---:|---|");
    let _ = writeln!(
        t,
        "| rebuild of every projection | {} events/s ({:.2} s) | raw scan + decode of the same log: {} events/s ({:.2} s); ratio {:.0}% |",
        n0(rb.rebuild_per_s),
        rb.rebuild_seconds,
        n0(rb.scan_decode_per_s),
        rb.scan_decode_seconds,
        rb.ratio * 100.0
    );
    let _ = writeln!(
        t,
        "| opening it: server start until the first command is committed | {:.2} s | listening after {:.2} s |",
        o.until_first_command_s, o.until_listening_s
    );
    let _ = writeln!(
        t,
        "| server resident memory after that command | {} | peak while opening: {} |",
        mb(o.rss_bytes),
        mb(o.peak_rss_bytes)
    );
    let _ = writeln!(
        t,
        "| customer view now, in process | p50 {:.3} ms, p99 {:.3} ms | {} reads of {} customers |",
        q.now_in_process.p50_ms,
        q.now_in_process.p99_ms,
        n0(q.now_in_process.count as f64),
        n0(r.customers as f64)
    );
    let _ = writeln!(
        t,
        "| customer view as of the middle of the log, in process | p50 {:.2} ms, p99 {:.2} ms | folded from the customer's indexed history |",
        q.as_of_in_process.p50_ms, q.as_of_in_process.p99_ms
    );
    let _ = writeln!(
        t,
        "| customer view now, over HTTP | p50 {:.3} ms, p99 {:.3} ms | one keep-alive connection |",
        q.now_http.p50_ms, q.now_http.p99_ms
    );
    let _ = writeln!(
        t,
        "| customer view as of, over HTTP | p50 {:.2} ms, p99 {:.2} ms | |",
        q.as_of_http.p50_ms, q.as_of_http.p99_ms
    );
    let _ = writeln!(
        t,
        "| stream catch-up over HTTP (NDJSON from position 0) | {} events/s | {} events in {:.2} s |",
        n0(s.catch_up_per_s),
        n0(s.catch_up_events as f64),
        s.catch_up_seconds
    );
    let _ = writeln!(
        t,
        "| live commit-to-consumer latency | p50 {:.3} ms, p99 {:.3} ms after the answer | p50 {:.3} ms, p99 {:.3} ms after sending the command |",
        s.live_after_answer.p50_ms,
        s.live_after_answer.p99_ms,
        s.live_after_send.p50_ms,
        s.live_after_send.p99_ms
    );
    let _ = writeln!(
        t,
        "| bytes on disk (`du -sb` of the data folder) | {} ({:.0} bytes/event) | the events as NDJSON: {}; ratio {:.2}; of which the write-model snapshot {} |",
        mb(d.folder_bytes),
        d.bytes_per_event,
        mb(d.raw_json_bytes),
        d.ratio,
        mb(d.snapshot_bytes)
    );
    let _ = writeln!(t, "\n## Against the targets (issue 5)\n");
    let _ = writeln!(t, "| target | measured | |");
    let _ = writeln!(t, "|---|---|---|");
    let at = |runs: &[super::throughput::Run], n: usize| {
        runs.iter().find(|x| x.submitters == n).cloned()
    };
    if let Some(run) = at(&r.in_process, 256) {
        let ratio = run.events_per_s / b.batch_events_per_s;
        let _ = writeln!(
            t,
            "| in process, 256 submitters ≥ 70% of the raw batch baseline | {:.0}% ({} of {} events/s) | {} |",
            ratio * 100.0,
            n0(run.events_per_s),
            n0(b.batch_events_per_s),
            verdict(ratio >= 0.7)
        );
    }
    if let Some(run) = at(&r.in_process, 1) {
        let ratio = run.latency.p50_ms / b.single.p50_ms;
        let _ = writeln!(
            t,
            "| in process, 1 submitter: p50 ≤ 1.5 × one raw insert + flush + fdatasync | {:.2} × ({:.3} ms against {:.3} ms) | {} |",
            ratio,
            run.latency.p50_ms,
            b.single.p50_ms,
            verdict(ratio <= 1.5)
        );
    }
    if let Some(run) = at(&r.http, 64) {
        let _ = writeln!(
            t,
            "| HTTP, 64 clients: ≥ 19,000 commands/s with p99 ≤ 10 ms | {} commands/s, p99 {:.2} ms | {} |",
            n0(run.commands_per_s),
            run.latency.p99_ms,
            verdict(run.commands_per_s >= 19_000.0 && run.latency.p99_ms <= 10.0)
        );
    }
    let _ = writeln!(
        t,
        "| rebuild ≥ 60% of raw scan + decode | {:.0}% | {} |",
        rb.ratio * 100.0,
        verdict(rb.ratio >= 0.6)
    );
    let _ = writeln!(
        t,
        "| open a {}-event ledger and accept a command in ≤ 2 s | {:.2} s | {} |",
        n0(o.events as f64),
        o.until_first_command_s,
        verdict(o.until_first_command_s <= 2.0)
    );
    let _ = writeln!(
        t,
        "| customer view p99 ≤ 100 µs in process | {:.0} µs | {} |",
        q.now_in_process.p99_ms * 1000.0,
        verdict(q.now_in_process.p99_ms <= 0.1)
    );
    let _ = writeln!(
        t,
        "| stream catch-up ≥ 300,000 events/s over loopback HTTP | {} events/s | {} |",
        n0(s.catch_up_per_s),
        verdict(s.catch_up_per_s >= 300_000.0)
    );
    let _ = writeln!(
        t,
        "| live commit-to-consumer p99 ≤ 10 ms | {:.2} ms | {} |",
        s.live_after_answer.p99_ms,
        verdict(s.live_after_answer.p99_ms <= 10.0)
    );
    let _ = writeln!(
        t,
        "| disk ≤ 3 × the raw JSON bytes of the events | {:.2} × | {} |",
        d.ratio,
        verdict(d.ratio <= 3.0)
    );
    let _ = writeln!(
        t,
        "| resident memory for a {}-event ledger ≤ 500 MB | {} (peak {}) | {} |",
        n0(o.events as f64),
        mb(o.rss_bytes),
        mb(o.peak_rss_bytes),
        verdict(o.peak_rss_bytes <= 500_000_000)
    );
    let _ = writeln!(t, "\n## What limits it\n");
    let _ = writeln!(t, "{}", super::LIMITS.trim());
    let _ = writeln!(t, "\nThe whole suite took {:.0} s.", r.suite_seconds);
    t
}

/// Throughput and p99 latency against concurrency, in process and over HTTP, as an SVG.
pub fn plot(r: &Results, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(480);
    let series = [("in process", &r.in_process, BLUE), ("HTTP", &r.http, RED)];
    let max_tp = series
        .iter()
        .flat_map(|(_, runs, _)| runs.iter().map(|x| x.commands_per_s))
        .fold(1.0, f64::max);
    let max_p99 = series
        .iter()
        .flat_map(|(_, runs, _)| runs.iter().map(|x| x.latency.p99_ms))
        .fold(0.1, f64::max);
    let draw = |area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
                title: &str,
                y_desc: &str,
                y_max: f64,
                value: &dyn Fn(&super::throughput::Run) -> f64|
     -> anyhow::Result<()> {
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d((1u32..300u32).log_scale(), 0f64..y_max * 1.1)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("concurrent submitters (log scale)")
            .y_desc(y_desc)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (label, runs, color) in &series {
            let points: Vec<(u32, f64)> = runs
                .iter()
                .map(|x| (u32::try_from(x.submitters).unwrap_or(u32::MAX), value(x)))
                .collect();
            let color = *color;
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 4, color.filled())),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    };
    draw(&left, "Durable throughput", "commands/s", max_tp, &|x| {
        x.commands_per_s
    })?;
    draw(&right, "p99 commit latency", "ms", max_p99, &|x| {
        x.latency.p99_ms
    })?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// `page` with the block between the markers `begin` and `end` replaced by `section` (appended when it has none): the
/// sections that separate runs write (`bench --postgres`, `bench --relay`).
pub fn with_section(page: &str, (begin, end): (&str, &str), section: &str) -> String {
    let block = format!("{begin}\n{section}\n{end}\n");
    match (page.find(begin), page.find(end)) {
        (Some(a), Some(b)) if b > a => {
            // What follows the section stays one blank line after it.
            let rest = page[b + end.len()..].trim_start_matches('\n');
            let gap = if rest.is_empty() { "" } else { "\n" };
            format!("{}{block}{gap}{rest}", &page[..a])
        }
        _ => format!("{}\n\n{block}", page.trim_end()),
    }
}

/// The block between `begin` and `end` in `page`, markers included, if it has one (for a run that rewrites the rest
/// of the page).
pub fn section_of(page: &str, (begin, end): (&str, &str)) -> Option<String> {
    let a = page.find(begin)?;
    let b = page.find(end)?;
    (b > a).then(|| format!("{}\n", &page[a..b + end.len()]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_section_replaced_keeps_a_blank_line_before_what_follows() {
        let markers = ("<!-- a -->", "<!-- end of a -->");
        let page = "# Page\n\n<!-- a -->\nold\n<!-- end of a -->\n\n<!-- b -->\nkept\n";
        assert_eq!(
            super::with_section(page, markers, "new"),
            "# Page\n\n<!-- a -->\nnew\n<!-- end of a -->\n\n<!-- b -->\nkept\n"
        );
        assert_eq!(
            super::with_section("# Page\n", markers, "new"),
            "# Page\n\n<!-- a -->\nnew\n<!-- end of a -->\n"
        );
    }
}
