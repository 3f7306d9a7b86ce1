//! The benchmark suite's smoke run: every part of `partner-ledger bench` runs end to end with small sizes and writes
//! its report and plot, so the suite never rots. No figure is checked: timing belongs to the suite, not to tests.

use crate::common;

use common::BIN;

#[test]
fn the_benchmark_suite_runs_every_part_and_writes_its_report() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("performance.md");
    let run = std::process::Command::new(BIN)
        .args(["bench", "--quick", "--out"])
        .arg(&out)
        .arg("--work")
        .arg(work.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
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
