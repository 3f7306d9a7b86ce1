//! The growth section of docs/performance.md and its plot, written from one growth run. The section sits between two
//! markers, so a growth run rewrites only it and the standard run keeps it.

use std::fmt::Write;
use std::path::Path;

use plotters::prelude::*;

use super::growth::{Growth, Size};

const START: &str =
    "<!-- growth: written by `partner-ledger bench --growth`, kept by the standard run -->";
const END: &str = "<!-- end of growth -->";

/// The growth section of `page`, markers included, if it has one.
pub fn section(page: &str) -> Option<&str> {
    let start = page.find(START)?;
    let end = page[start..].find(END)? + start + END.len();
    Some(&page[start..end])
}

/// `page` with its growth section replaced by (or, without one, followed by) the section for `g`.
pub fn with_growth_section(page: &str, g: &Growth, svg_name: &str) -> String {
    let new = markdown(g, svg_name).trim_end().to_string();
    match section(page) {
        Some(old) => page.replacen(old, &new, 1),
        None if page.is_empty() => format!("# Performance\n\n{new}\n"),
        None => format!("{}\n\n{new}\n", page.trim_end()),
    }
}

/// The standard run's new `page`, followed by the growth section of the `old` page, if it had one.
pub fn keeping_section(old: &str, page: String) -> String {
    match section(old) {
        Some(growth) => format!("{}\n\n{growth}\n", page.trim_end()),
        None => page,
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

fn rate(v: f64) -> String {
    format!("{:.0}k/s", v / 1e3)
}

fn entity(s: &Size, kind: &str) -> u64 {
    s.entities
        .iter()
        .find(|(k, _)| k == kind)
        .map_or(0, |(_, n)| *n)
}

fn scan(s: &Size, what: &str) -> u64 {
    s.scans_above_open_bytes
        .iter()
        .find(|(k, _)| k == what)
        .map_or(0, |(_, n)| *n)
}

/// A row of the table: its name and how to read it off one size.
type Row = (&'static str, Box<dyn Fn(&Size) -> String>);

/// A line of the memory plot: its label, its value and its colour.
type Line = (&'static str, fn(&Size) -> f64, RGBColor);

/// The Markdown section.
pub fn markdown(g: &Growth, svg_name: &str) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{START}\n\n## Growth with history\n");
    let _ = writeln!(
        t,
        "Measured by one run of `{}` on {}: {}. Each ledger is built from the workload generator the way `exec` runs it \
         (its clock advanced to now at the end), closed, then measured. The generator never retires customers, so what \
         is live grows with history here. Resident memory is the server's: once its first command was committed, and \
         its high-water mark over the whole run (opening, the background verification of the whole chain and a stream \
         catching up from position 0). Whole-log commands are measured as their own processes, above the peak of \
         `checkpoint`, which only opens the ledger; `rebuild`, which folds the whole log into a write model to write \
         the read models from, above the peak of an idle ledger holding its write model (`exec` of an empty input). \
         The run took {:.0} s.\n",
        g.command, g.date, g.machine.cpus, g.seconds
    );
    if g.sizes.len() < g.requested.len() {
        let _ = writeln!(
            t,
            "**This section covers {} of the {} sizes the command asked for: the run was stopped (or is still running) \
             before the others.**\n",
            g.sizes.len(),
            g.requested.len()
        );
    }
    if g.quick {
        let _ = writeln!(
            t,
            "**A `--quick` run with small ledgers: its figures are not comparable with the targets below.**\n"
        );
    }
    let _ = writeln!(
        t,
        "![resident memory and start-up time against ledger size]({svg_name})\n"
    );
    let _ = write!(t, "| measure |");
    for s in &g.sizes {
        let _ = write!(t, " {} commands |", s.commands);
    }
    let _ = write!(t, "\n|---|");
    for _ in &g.sizes {
        let _ = write!(t, "---:|");
    }
    let _ = writeln!(t);
    let rows: Vec<Row> = vec![
        ("events", Box::new(|s| s.events.to_string())),
        (
            "build (commands/s)",
            Box::new(|s| format!("{:.0} ({:.0} s)", s.build_commands_per_s, s.build_seconds)),
        ),
        (
            "bytes on disk per event",
            Box::new(|s| format!("{:.0}", s.disk_bytes_per_event)),
        ),
        ("partners", Box::new(|s| entity(s, "partners").to_string())),
        (
            "customers",
            Box::new(|s| entity(s, "customers").to_string()),
        ),
        (
            "relationships",
            Box::new(|s| entity(s, "relationships").to_string()),
        ),
        (
            "admin relationships",
            Box::new(|s| entity(s, "admin_relationships").to_string()),
        ),
        (
            "subscriptions",
            Box::new(|s| entity(s, "subscriptions").to_string()),
        ),
        (
            "relationship requests",
            Box::new(|s| entity(s, "requests").to_string()),
        ),
        (
            "server resident memory per entity (bytes)",
            Box::new(|s| {
                let n: u64 = s.entities.iter().map(|(_, n)| n).sum();
                format!("{:.0}", s.rss_open_bytes as f64 / n.max(1) as f64)
            }),
        ),
        (
            "start until listening",
            Box::new(|s| format!("{:.2} s", s.until_listening_s)),
        ),
        (
            "start until a first command is committed",
            Box::new(|s| format!("{:.2} s", s.until_first_command_s)),
        ),
        ("server memory then", Box::new(|s| mb(s.rss_open_bytes))),
        (
            "an idle ledger with its write model (`exec` of nothing)",
            Box::new(|s| mb(s.idle_bytes)),
        ),
        (
            "server memory, peak of the whole run",
            Box::new(|s| mb(s.rss_peak_bytes)),
        ),
        (
            "background verification, after the first command",
            Box::new(|s| format!("{:.1} s", s.verification_seconds)),
        ),
        (
            "stream catch-up from 0 (events/s)",
            Box::new(|s| rate(s.catch_up_events_per_s)),
        ),
        ("`verify` above open", Box::new(|s| mb(scan(s, "verify")))),
        ("`export` above open", Box::new(|s| mb(scan(s, "export")))),
        ("`events` above open", Box::new(|s| mb(scan(s, "events")))),
        (
            "`rebuild` above an idle ledger with its write model",
            Box::new(|s| mb(scan(s, "rebuild"))),
        ),
        (
            "raw scan + decode (events/s)",
            Box::new(|s| rate(s.scan_decode_per_s)),
        ),
        (
            "verification (events/s, share of raw)",
            Box::new(|s| {
                format!(
                    "{} ({:.0}%)",
                    rate(s.verify_per_s),
                    100.0 * s.verify_per_s / s.scan_decode_per_s
                )
            }),
        ),
        (
            "rebuild (events/s, share of raw)",
            Box::new(|s| {
                format!(
                    "{} ({:.0}%)",
                    rate(s.rebuild_per_s),
                    100.0 * s.rebuild_per_s / s.scan_decode_per_s
                )
            }),
        ),
        (
            "customer view as of the middle, p99 in process",
            Box::new(|s| format!("{:.2} ms", s.as_of_p99_ms)),
        ),
    ];
    for (name, value) in &rows {
        let _ = write!(t, "| {name} |");
        for s in &g.sizes {
            let _ = write!(t, " {} |", value(s));
        }
        let _ = writeln!(t);
    }
    let _ = writeln!(t, "\n### Against the targets (issue 15)\n");
    let _ = writeln!(t, "| target | measured | |\n|---|---|---|");
    let judged = |ok: bool| {
        if g.quick {
            "not judged (`--quick`)"
        } else if ok {
            "met"
        } else {
            "**missed**"
        }
    };
    let ten_million = g.sizes.iter().rfind(|s| s.events >= 10_000_000);
    match ten_million {
        Some(s) => {
            let _ = writeln!(
                t,
                "| server memory ≤ 2 GB at every moment, at 10M events | {} peak ({} events) | {} |",
                mb(s.rss_peak_bytes),
                s.events,
                judged(s.rss_peak_bytes <= 2_000_000_000)
            );
            let _ = writeln!(
                t,
                "| start until a first command ≤ 3 s at 10M events | {:.2} s | {} |",
                s.until_first_command_s,
                judged(s.until_first_command_s <= 3.0)
            );
        }
        None => {
            let _ = writeln!(t, "| the 10M-event targets (memory ≤ 2 GB, start ≤ 3 s) | no ledger of 10M events in this run | not judged |");
        }
    }
    for s in &g.sizes {
        let worst = ["verify", "export", "events"]
            .iter()
            .map(|w| scan(s, w))
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            t,
            "| `verify`, `export`, `events` ≤ 200 MB above the opened ledger, {} events | {} at most | {} |",
            s.events,
            mb(worst),
            judged(worst <= 200_000_000)
        );
        let rebuild = scan(s, "rebuild");
        let _ = writeln!(
            t,
            "| `rebuild` ≤ 200 MB above an idle ledger holding its write model, {} events | {} | {} |",
            s.events,
            mb(rebuild),
            judged(rebuild <= 200_000_000)
        );
        let share = s.verify_per_s / s.scan_decode_per_s;
        let _ = writeln!(
            t,
            "| verification ≥ 80% of raw scan + decode, {} events | {:.0}% | {} |",
            s.events,
            100.0 * share,
            judged(share >= 0.8)
        );
    }
    let _ = writeln!(t, "\n{END}");
    t
}

/// Resident memory (once open, and peak) and start-up time against ledger size.
pub fn growth_plot(g: &Growth, path: &Path) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(480);
    let x_max = g
        .sizes
        .iter()
        .map(|s| s.events as f64 / 1e6)
        .fold(0.1, f64::max)
        * 1.05;
    let mem_max = g
        .sizes
        .iter()
        .map(|s| s.rss_peak_bytes as f64 / 1e6)
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&left)
        .caption("Server resident memory", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, 0f64..mem_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("events (millions)")
        .y_desc("MB")
        .draw()
        .map_err(|e| err(&e))?;
    let series: [Line; 2] = [
        (
            "after the first command",
            |s| s.rss_open_bytes as f64 / 1e6,
            BLUE,
        ),
        (
            "peak of the whole run",
            |s| s.rss_peak_bytes as f64 / 1e6,
            RED,
        ),
    ];
    for (label, value, color) in series {
        let points: Vec<(f64, f64)> = g
            .sizes
            .iter()
            .map(|s| (s.events as f64 / 1e6, value(s)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| err(&e))?;
    let open_max = g
        .sizes
        .iter()
        .map(|s| s.until_first_command_s)
        .fold(0.1, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&right)
        .caption(
            "Start until a first command is committed",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, 0f64..open_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("events (millions)")
        .y_desc("seconds")
        .draw()
        .map_err(|e| err(&e))?;
    let points: Vec<(f64, f64)> = g
        .sizes
        .iter()
        .map(|s| (s.events as f64 / 1e6, s.until_first_command_s))
        .collect();
    chart
        .draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(points.into_iter().map(|p| Circle::new(p, 4, BLUE.filled())))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growth_run_rewrites_only_its_own_section() {
        let g = Growth {
            command: "partner-ledger bench --growth 10".into(),
            date: "2026-11-30".into(),
            machine: crate::bench::Machine::describe(Path::new("/tmp")),
            quick: true,
            sizes: Vec::new(),
            requested: Vec::new(),
            seconds: 1.0,
        };
        let page = "# Performance\n\nthe standard run's text\n";
        let once = with_growth_section(page, &g, "p-growth.svg");
        assert!(once.starts_with(page.trim_end()));
        assert!(section(&once).is_some());
        let again = with_growth_section(&once, &g, "p-growth.svg");
        assert_eq!(
            again, once,
            "a second run replaces the section, it does not add one"
        );
        assert!(once.contains("not comparable with the targets"));
        let standard = keeping_section(&once, "# Performance\n\na new standard run\n".into());
        assert!(standard.starts_with("# Performance\n\na new standard run"));
        assert_eq!(
            section(&standard),
            section(&once),
            "the standard run keeps the growth section"
        );
    }
}
