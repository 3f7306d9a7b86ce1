//! Failure paths of the writer with injected storage faults: a batch whose write or fdatasync fails is never
//! acknowledged as committed (its outcome is `unknown`), the ledger stops writing (fail-stop) until it is reopened,
//! and after reopening the log is whole and a retry with the same command_id lands exactly once.

use partner_ledger::domain::{parse_line, EntityRef, Position};
use partner_ledger::ledger::{Ledger, LedgerConfig, Outcome};
use partner_ledger::store::{EventStore, Fault};

const OP: &str =
    r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops","role":"operator"}"#;

fn register(n: u32, command_id: &str) -> String {
    format!(
        r#"{{"type":"RegisterCustomer","command_id":"{command_id}","actor":{OP},"customer":"c{n:07x}-0000-4000-8000-00000000000c","company_name":"Customer {n}","domain":"c{n}.example","country":"NL","cloud":"public"}}"#
    )
}

fn id(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-0000000000aa")
}

fn reopen(dir: &std::path::Path) -> Ledger {
    for _ in 0..100 {
        match Ledger::open(LedgerConfig::new(dir)) {
            Ok(l) => return l,
            Err(e) if e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the ledger stayed locked");
}

fn run_fault(fault: Fault) -> (Outcome, Outcome, Option<bool>) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerConfig::new(dir.path())).unwrap();
    assert!(matches!(
        ledger.execute(parse_line(&register(1, &id(1))).unwrap()),
        Outcome::Committed { .. }
    ));
    ledger.store().inject_fault(fault);
    let failed = ledger.execute(parse_line(&register(2, &id(2))).unwrap());
    let after = ledger.execute(parse_line(&register(3, &id(3))).unwrap());
    assert_eq!(ledger.stats().unknown, 2);
    ledger.close();
    drop(ledger);
    // Reopen (sled may let go of its file lock a moment after the drop): the log is whole, and the retry of the
    // failed command lands exactly once.
    let ledger = reopen(dir.path());
    let mut prev = partner_ledger::store::GENESIS_HASH.to_string();
    for e in ledger.store().read(Position(0), None) {
        let e = e.unwrap();
        prev = partner_ledger::store::check(&e.raw, e.position, &prev)
            .unwrap()
            .hash;
    }
    let retry = ledger.execute(parse_line(&register(2, &id(2))).unwrap());
    let duplicate = match &retry {
        Outcome::Committed { duplicate, .. } => Some(*duplicate),
        other => panic!("the retry must commit: {other:?}"),
    };
    let customer = EntityRef::Customer("c0000002-0000-4000-8000-00000000000c".parse().unwrap());
    assert_eq!(
        ledger
            .store()
            .history(&customer, Position(0))
            .unwrap()
            .len(),
        1,
        "exactly once"
    );
    (failed, after, duplicate)
}

#[test]
fn a_failed_fdatasync_answers_unknown_stops_writes_and_a_retry_lands_once() {
    let (failed, after, duplicate) = run_fault(Fault::Sync);
    let j = failed.to_json();
    assert_eq!(j["outcome"], "unknown", "{j}");
    assert!(
        j["message"]
            .as_str()
            .unwrap()
            .contains("retry with the same command_id"),
        "{j}"
    );
    let j = after.to_json();
    assert_eq!(j["outcome"], "unknown", "fail-stop: {j}");
    assert!(
        j["message"]
            .as_str()
            .unwrap()
            .contains("writes are stopped"),
        "{j}"
    );
    // sled flushed before the failed sync, so the batch may well be on disk: the retry is then a duplicate.
    assert!(duplicate.is_some());
}

#[test]
fn a_failed_write_answers_unknown_leaves_nothing_half_written_and_the_retry_commits_fresh() {
    let (failed, after, duplicate) = run_fault(Fault::Write);
    assert_eq!(failed.to_json()["outcome"], "unknown");
    assert_eq!(after.to_json()["outcome"], "unknown");
    assert_eq!(
        duplicate,
        Some(false),
        "nothing of the failed batch reached the log"
    );
}

#[test]
fn refusals_decided_in_a_failed_batch_are_not_reported_as_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerConfig::new(dir.path())).unwrap();
    ledger.store().inject_fault(Fault::Write);
    // Queued together: the second is refused only because of the first (duplicate customer), which never landed.
    let t1 = ledger.submit(parse_line(&register(5, &id(5))).unwrap());
    let t2 = ledger.submit(parse_line(&register(5, &id(6))).unwrap());
    let (o1, o2) = (t1.wait(), t2.wait());
    assert_eq!(o1.to_json()["outcome"], "unknown");
    assert_ne!(
        o2.to_json()["outcome"],
        "refused",
        "a refusal decided against state that never landed is not an answer"
    );
}
