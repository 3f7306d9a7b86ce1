//! The benchmark suite's smoke run: every part of `partner-ledger bench` runs end to end with small sizes and writes
//! its report and plot, so the suite never rots. No figure is checked: timing belongs to the suite, not to tests.

use crate::common;

use common::BIN;

/// Runs `partner-ledger bench <args> --out <out> --work <work>` and asserts that it succeeded.
fn bench(args: &[&str], out: &std::path::Path, work: &std::path::Path) {
    let run = std::process::Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--work")
        .arg(work)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn the_benchmark_suite_runs_every_part_and_writes_its_report() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("performance.md");
    bench(&["--quick"], &out, work.path());
    let page = std::fs::read_to_string(&out).unwrap();
    for section in [
        "## Durable command throughput",
        "| in process | 256 |",
        "| HTTP | 64 |",
        "**Baseline**",
        "rebuild of every projection",
        "opening it",
        "stream catch-up",
        "bytes on disk",
        "## Against the targets",
    ] {
        assert!(
            page.contains(section),
            "the report lacks {section:?}:\n{page}"
        );
    }
    let svg = std::fs::read_to_string(work.path().join("performance.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Durable throughput"));
}

#[test]
fn the_growth_suite_rewrites_only_its_own_section_of_the_page() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("performance.md");
    std::fs::write(&out, "# Performance\n\nwritten by the standard run\n").unwrap();
    bench(&["--growth", "--quick"], &out, work.path());
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(
        page.starts_with("# Performance\n\nwritten by the standard run"),
        "a growth run rewrites only its own section:\n{page}"
    );
    for part in [
        "## Growth with history",
        "| 2000 commands | 5000 commands |",
        "| customers |",
        "| server memory, peak of the whole run |",
        "| `verify` above open |",
        "| verification (events/s, share of raw) |",
        "not comparable with the targets",
        "not judged (`--quick`)",
    ] {
        assert!(
            page.contains(part),
            "the growth section lacks {part:?}:\n{page}"
        );
    }
    let svg = std::fs::read_to_string(work.path().join("performance-growth.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Server resident memory"));
    let bad = std::process::Command::new(BIN)
        .args(["bench", "--growth"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--growth needs sizes"));
}
