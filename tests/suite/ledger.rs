//! The writer through the library API on a real sled folder: group commit, idempotency, reopen, atomic commands.

use std::sync::Arc;

use partner_ledger::domain::{parse_line, Position, Submitted};
use partner_ledger::ledger::{Ledger, LedgerConfig, Outcome};
use serde_json::json;

const OP: &str = r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops@ledger.example","role":"operator"}"#;

fn register(customer: uuid::Uuid, command_id: Option<uuid::Uuid>, company: &str) -> Submitted {
    let mut v = json!({"type": "RegisterCustomer", "actor": serde_json::from_str::<serde_json::Value>(OP).unwrap(),
        "customer": customer.to_string(), "company_name": company, "domain": "example.onmicrosoft.com", "country": "NL", "cloud": "public"});
    if let Some(id) = command_id {
        v["command_id"] = json!(id.to_string());
    }
    parse_line(&v.to_string()).unwrap()
}

fn positions(o: &Outcome) -> Vec<Position> {
    match o {
        Outcome::Committed { positions, .. } => positions.clone(),
        other => panic!("expected a commit, got {other:?}"),
    }
}

#[test]
fn group_commit_batches_concurrent_submitters_with_one_fdatasync_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(LedgerConfig::new(dir.path())).unwrap());
    const SUBMITTERS: usize = 64;
    const EACH: usize = 40;
    let threads: Vec<_> = (0..SUBMITTERS)
        .map(|_| {
            let ledger = Arc::clone(&ledger);
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    let o = ledger.execute(register(uuid::Uuid::new_v4(), None, "Contoso"));
                    assert_eq!(positions(&o).len(), 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = ledger.stats();
    let total = (SUBMITTERS * EACH) as u64;
    assert_eq!(s.committed, total);
    assert_eq!(s.events, total);
    assert_eq!(
        s.fdatasyncs, s.batches,
        "exactly one fdatasync per acknowledged batch"
    );
    assert_eq!(s.flushes, s.batches);
    let per_flush = total as f64 / s.batches as f64;
    eprintln!(
        "group commit with {SUBMITTERS} submitters: {per_flush:.1} commands per flush; {s:?}"
    );
    assert!(
        per_flush >= 8.0,
        "on average {per_flush:.1} commands per flush ({s:?})"
    );
    assert_eq!(ledger.store().head().position, Position(total));
}

#[test]
fn a_single_submitter_still_gets_one_fdatasync_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerConfig::new(dir.path())).unwrap();
    for _ in 0..20 {
        ledger.execute(register(uuid::Uuid::new_v4(), None, "Contoso"));
    }
    let s = ledger.stats();
    assert_eq!((s.batches, s.fdatasyncs, s.committed), (20, 20, 20));
}

/// On both backends: the same idempotency, and the same refusal of another body under a used id.
#[test]
fn a_resubmitted_command_id_returns_the_original_outcome_and_appends_nothing_even_after_reopen() {
    crate::pg::on_both_backends(resubmitted_command_ids);
}

fn resubmitted_command_ids() {
    let dir = crate::pg::folder();
    let id = uuid::Uuid::new_v4();
    let customer = uuid::Uuid::new_v4();
    {
        let ledger = Ledger::open(crate::pg::config_for(dir.path())).unwrap();
        let first = ledger.execute(register(customer, Some(id), "Contoso"));
        assert_eq!(positions(&first), vec![Position(1)]);
        let again = ledger.execute(register(customer, Some(id), "Contoso"));
        assert_eq!(
            again.to_json(),
            json!({"command_id": id.to_string(), "outcome": "committed", "positions": [1], "duplicate": true})
        );
        // The same id with another body is refused; so is a fresh command that the rules would now refuse.
        let reused = ledger.execute(register(customer, Some(id), "Contoso Group"));
        assert_eq!(reused.to_json()["code"], "command_id_reused");
        assert_eq!(ledger.store().head().position, Position(1));
    }
    let ledger = Ledger::open(crate::pg::config_for(dir.path())).unwrap();
    let again = ledger.execute(register(customer, Some(id), "Contoso"));
    assert_eq!(again.to_json()["duplicate"], true);
    assert_eq!(positions(&again), vec![Position(1)]);
    // The write model was rebuilt: registering the same customer under a new id is refused.
    let dup = ledger.execute(register(customer, None, "Contoso"));
    assert_eq!(dup.to_json()["code"], "invalid_state");
    assert_eq!(ledger.store().head().position, Position(1));
}

#[test]
fn a_refused_command_id_may_be_reused_by_a_corrected_retry() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerConfig::new(dir.path())).unwrap();
    let id = uuid::Uuid::new_v4();
    let bad = ledger.execute(register(uuid::Uuid::new_v4(), Some(id), &"x".repeat(300)));
    assert_eq!(bad.to_json()["code"], "invalid_text");
    let good = ledger.execute(register(uuid::Uuid::new_v4(), Some(id), "Contoso"));
    assert_eq!(positions(&good), vec![Position(1)]);
}

#[test]
fn duplicates_inside_one_batch_get_the_positions_of_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerConfig::new(dir.path())).unwrap();
    let id = uuid::Uuid::new_v4();
    let customer = uuid::Uuid::new_v4();
    // Queue both before waiting, so they very likely share a batch; the answer must be the same either way.
    let t1 = ledger.submit(register(customer, Some(id), "Contoso"));
    let t2 = ledger.submit(register(customer, Some(id), "Contoso"));
    let (o1, o2) = (t1.wait(), t2.wait());
    assert_eq!(positions(&o1), positions(&o2));
    assert_eq!(o2.to_json()["duplicate"], true);
    assert_eq!(ledger.store().head().position, Position(1));
}

#[test]
fn a_multi_event_command_gets_contiguous_positions_and_reopen_continues_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/seed-story/commands.ndjson"
    ))
    .unwrap();
    let lines: Vec<&str> = seed.lines().filter(|l| l.starts_with('{')).collect();
    {
        let ledger = Ledger::open(LedgerConfig::new(dir.path())).unwrap();
        for l in &lines[..lines.len() - 1] {
            positions(&ledger.execute(parse_line(l).unwrap()));
        }
    }
    let ledger = Ledger::open(LedgerConfig::new(dir.path())).unwrap();
    let last = ledger.execute(parse_line(lines[lines.len() - 1]).unwrap());
    assert_eq!(positions(&last), vec![Position(10), Position(11)]);
    let store = ledger.store();
    let all: Vec<u64> = store
        .read(Position(0), None)
        .map(|e| e.unwrap().position.0)
        .collect();
    assert_eq!(all, (1..=11).collect::<Vec<_>>());
}

#[test]
fn the_default_business_time_is_the_ledger_clock() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LedgerConfig::new(dir.path());
    let fixed: partner_ledger::domain::Timestamp = "2025-05-05T05:05:05Z".parse().unwrap();
    config.clock = Arc::new(move || fixed);
    let ledger = Ledger::open(config).unwrap();
    ledger.execute(register(uuid::Uuid::new_v4(), None, "Contoso"));
    let env = ledger
        .store()
        .get(Position(1))
        .unwrap()
        .unwrap()
        .envelope()
        .unwrap();
    assert_eq!(env.at, fixed);
    assert_eq!(env.recorded_at, fixed);
}

#[test]
fn the_generated_workload_commits_with_about_five_percent_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerConfig::new(dir.path())).unwrap();
    let spec = partner_ledger::workload::WorkloadSpec {
        commands: 5_000,
        ..Default::default()
    };
    let tickets: Vec<_> = partner_ledger::workload::generate(spec)
        .map(|l| ledger.submit(parse_line(&l).unwrap()))
        .collect();
    let mut codes = std::collections::BTreeMap::new();
    for t in tickets {
        if let Outcome::Refused { refusal, .. } = t.wait() {
            *codes.entry(refusal.code.as_str()).or_insert(0) += 1;
        }
    }
    let refused: u32 = codes.values().sum();
    assert!(
        (100..=500).contains(&refused),
        "{refused} of 5000 refused: {codes:?}"
    );
    let expected: std::collections::BTreeSet<&str> = [
        "duplicate_subscription",
        "invalid_duration",
        "not_authorized",
    ]
    .into();
    assert_eq!(
        codes
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        expected.iter().map(|s| s.to_string()).collect()
    );
}

/// R36: a clock advance with more transitions due than one step holds (`CLOCK_STEP_EVENTS`) is recorded in steps of
/// at most that many events, at the same instant, and no other command is decided in between: a command submitted
/// right behind the advance lands after the whole catch-up.
#[test]
fn a_long_clock_catch_up_is_taken_in_bounded_steps_before_any_other_command() {
    use partner_ledger::domain::CLOCK_STEP_EVENTS;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerConfig::new(dir.path())).unwrap();
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/seed-story/commands.ndjson"
    ))
    .unwrap();
    // Partner A enrolled, Contoso registered, A's reseller relationship accepted.
    for line in seed.lines().filter(|l| l.starts_with('{')).take(5) {
        positions(&ledger.execute(parse_line(line).unwrap()));
    }
    // More GDAP requests than one step holds, never approved: all expire together 90 days later (R18).
    let requests = CLOCK_STEP_EVENTS + 7;
    let admin = json!({"tenant": "a0000000-0000-4000-8000-00000000000a", "user": "admin@adatum.example", "role": "partner_admin_agent"});
    let tickets: Vec<_> = (0..requests)
        .map(|i| {
            let v = json!({"type": "RequestDelegatedAdmin", "actor": admin, "at": "2024-02-01T09:00:00Z",
                "admin_relationship": format!("9d000000-0000-4000-8000-{i:012x}"),
                "partner": "a0000000-0000-4000-8000-00000000000a", "customer": "c0000000-0000-4000-8000-00000000000c",
                "name": format!("Helpdesk {i}"), "roles": ["729827e3-9c14-49f7-bb1b-9608f156bbb8"],
                "duration_days": 30, "auto_extend": false});
            ledger.submit(parse_line(&v.to_string()).unwrap())
        })
        .collect();
    for t in tickets {
        positions(&t.wait());
    }
    let head_before = ledger.store().head().position;
    let advance = json!({"type": "AdvanceClock", "actor": {"tenant": "00000000-0000-4000-8000-0000000000ff", "user": "scheduler", "role": "system"},
        "to": "2024-12-01T00:00:00Z"});
    let advance = ledger.submit(parse_line(&advance.to_string()).unwrap());
    let behind = ledger.submit(register(uuid::Uuid::new_v4(), None, "Fabrikam"));
    let first_step = positions(&advance.wait());
    let registered = positions(&behind.wait());
    assert_eq!(
        first_step.len(),
        CLOCK_STEP_EVENTS,
        "the answer carries the first step"
    );
    assert_eq!(first_step[0], head_before.next());
    // Every expiry precedes the command submitted behind the advance, and no command appended more than a step.
    let mut per_command: std::collections::BTreeMap<String, usize> = Default::default();
    let mut expired = 0;
    for e in ledger.store().read(head_before, None) {
        let env = e.unwrap().envelope().unwrap();
        if env.event_type == "DelegatedAdminRequestExpired" {
            expired += 1;
            assert!(
                env.position < registered[0],
                "an expiry after the next command"
            );
            assert_eq!(env.at.to_string(), "2024-12-01T00:00:00Z");
        }
        *per_command.entry(env.command_id.to_string()).or_default() += 1;
    }
    assert_eq!(expired, requests, "every due transition is recorded");
    assert_eq!(
        registered,
        vec![Position(head_before.0 + requests as u64 + 1)]
    );
    assert!(
        per_command.values().all(|n| *n <= CLOCK_STEP_EVENTS),
        "{per_command:?}"
    );
    assert_eq!(
        per_command.len(),
        3,
        "two steps and the registration: {per_command:?}"
    );
}
