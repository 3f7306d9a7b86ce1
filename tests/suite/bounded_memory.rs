//! Reading the whole log costs constant memory (docs/performance.md, "What limits it", and `src/store/sled/walk.rs`): `verify`, `export` and `events`
//! do not keep the pages they read. Real binary, real sled folder, a small page cache.
//!
//! sled keeps at least one page per cache shard (256 of them) whatever its capacity, so a scan's memory first
//! rises to that floor (a few tens of MB here) and must then stay flat. A scan that keeps what it reads grows with
//! every page instead: reading the whole log then costs about twice what reading its second half costs. The test
//! compares the two peaks (each above the peak of merely opening the ledger). `verify` reads the whole log or
//! nothing, so it is compared with itself: on the ledger at half its length, then at its full length.

use std::path::Path;
use std::process::Command;

use crate::common::{run, BIN};

/// The peak resident memory (KiB) of `partner-ledger --cache-mb 1 <args>` on `data`, as it logs it when it ends.
fn peak_kib(data: &Path, args: &[&str]) -> u64 {
    let mut all = vec!["--cache-mb", "1", "--log-level", "partner_ledger=info"];
    all.extend_from_slice(args);
    let out = run(data, &all, None);
    assert!(out.status.success(), "{args:?} failed");
    let logs = String::from_utf8_lossy(&out.stderr);
    logs.split("peak_rss_kib=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{args:?} did not log its peak memory: {logs}"))
}

#[test]
fn reading_the_whole_log_does_not_keep_what_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let commands = dir.path().join("commands.ndjson");
    let generated = Command::new(BIN)
        .args(["generate", "--commands", "400000", "--seed", "3"])
        .output()
        .unwrap();
    assert!(generated.status.success());
    let lines: Vec<&[u8]> = generated.stdout.split_inclusive(|&b| b == b'\n').collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    // Each peak is the least of three runs: one run's peak varies by several MiB with the allocator and thread
    // timing (a clean-clone CI run once measured 1.57 times for `export`), what a scan keeps does not.
    let least = |args: &[&str]| (0..3).map(|_| peak_kib(&data, args)).min().unwrap_or(0);
    let (mut verify_kib, mut opened) = (Vec::new(), 0);
    for part in [first, second] {
        std::fs::write(&commands, part.concat()).unwrap();
        let out = run(&data, &["exec", commands.to_str().unwrap()], None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        opened = least(&["checkpoint"]);
        verify_kib.push(least(&["verify"]).saturating_sub(opened));
    }
    let head: u64 = String::from_utf8_lossy(&run(&data, &["checkpoint"], None).stdout)
        .split(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap();
    let middle = (head / 2).to_string();
    for (whole, half) in [
        (vec!["events"], vec!["events", "--from", &middle]),
        (vec!["export"], vec!["export", "--from", &middle]),
    ] {
        let whole_kib = least(&whole).saturating_sub(opened);
        let half_kib = least(&half).saturating_sub(opened);
        assert!(
            whole_kib * 2 <= half_kib * 3,
            "reading the whole log ({whole:?}) took {whole_kib} KiB above the opened ledger, reading its second \
             half ({half:?}) {half_kib} KiB: the scan keeps what it read"
        );
    }
    let (half_kib, whole_kib) = (verify_kib[0], verify_kib[1]);
    assert!(
        whole_kib * 2 <= half_kib * 3,
        "verify of the whole log took {whole_kib} KiB above the opened ledger, verify of the ledger at half its \
         length {half_kib} KiB: verify keeps what it read"
    );
}
