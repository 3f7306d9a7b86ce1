//! Read-model benchmark on a ledger of at least 1M events: one customer with 10,000 events answered as of a past
//! instant (folded from its indexed history) and now (from the projection), plus a rebuild of every projection beside
//! a raw scan + decode of the same log.
//!
//! `cargo run --release --example read_models -- [DATA_DIR] [COMMANDS]` (defaults: /tmp/partner-ledger-1m, 1,000,000).
//! The ledger is built on the first run and reused afterwards.

use std::time::Instant;

use partner_ledger::domain::{parse_line, CustomerId, Position};
use partner_ledger::ledger::{replay, Ledger, LedgerConfig};
use partner_ledger::projection::{Projections, NAMES};
use partner_ledger::query::{self, AsOfSpec};
use partner_ledger::store::EventStore;
use partner_ledger::workload::{generate, WorkloadSpec};

const BIG: &str = "c0ffee00-0000-4000-8000-00000000b16c";
const BIG_PARTNER: &str = "b1600000-0000-4000-8000-00000000b160";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .cloned()
            .unwrap_or_else(|| "/tmp/partner-ledger-1m".into()),
    );
    let commands: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let started = Instant::now();
    let ledger = Ledger::open(LedgerConfig::new(&dir)).expect("the ledger opens");
    println!(
        "opened {} in {:.2} s ({} events)",
        dir.display(),
        started.elapsed().as_secs_f64(),
        ledger.store().head().position
    );
    if ledger.store().head().position.0 == 0 {
        build(&ledger, commands);
    }
    let store = ledger.store();
    let head = store.head().position;
    let big: CustomerId = BIG.parse().expect("an id");
    println!("ledger: {head} events");

    // As of an instant in the middle of the big customer's history.
    let mid = query::resolve(store, Some(AsOfSpec::Position(Position(head.0 - 5_000))))
        .expect("resolves")
        .at;
    let mut times = Vec::new();
    let mut read = 0;
    for _ in 0..25 {
        let t = Instant::now();
        let a = query::customer(store, big, Some(AsOfSpec::Time(mid)))
            .expect("a query")
            .expect("the customer");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        read = a.events_read;
    }
    let total_big = store
        .history(
            &partner_ledger::domain::EntityRef::Customer(big),
            Position(0),
        )
        .expect("history")
        .len();
    report(
        &format!("customer --as-of {mid} (reads {read} events; the customer has {total_big})"),
        &mut times,
    );

    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let a = query::customer(store, big, None)
            .expect("a query")
            .expect("the customer");
        assert_eq!(a.events_read, 0, "served from the projection");
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report("customer now (projection)", &mut times);

    let t = Instant::now();
    let mut n = 0u64;
    for e in store.read(Position(0), None) {
        e.expect("an event").decode().expect("an event");
        n += 1;
    }
    let scan = n as f64 / t.elapsed().as_secs_f64();
    println!("raw scan + decode: {n} events at {scan:.0} events/s");
    let t = Instant::now();
    let _ = replay(store, |_| {}).expect("replay");
    println!(
        "write-model replay: {:.0} events/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    let projections = Projections::open(store).expect("projections");
    let t = Instant::now();
    projections.rebuild(store, &NAMES, |_| {}).expect("rebuild");
    let rebuild = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "rebuild of every projection: {rebuild:.0} events/s ({:.0}% of the raw scan + decode)",
        100.0 * rebuild / scan
    );
    ledger.close();
}

fn report(what: &str, times: &mut [f64]) {
    times.sort_by(f64::total_cmp);
    let p = |per_mille: usize| times[(times.len() - 1) * per_mille / 1000];
    println!(
        "{what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p(500),
        p(990),
        times[times.len() - 1]
    );
}

fn build(ledger: &Ledger, commands: usize) {
    let t = Instant::now();
    let spec = WorkloadSpec {
        commands,
        seed: 42,
        ..WorkloadSpec::default()
    };
    let mut last_at = String::new();
    let mut pending = Vec::new();
    for line in generate(spec) {
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        last_at = v["at"]
            .as_str()
            .or(v["to"].as_str())
            .unwrap_or_default()
            .to_string();
        pending.push(ledger.submit(parse_line(&line).expect("a command")));
        if pending.len() >= 20_000 {
            pending.drain(..).for_each(|t| {
                t.wait();
            });
        }
    }
    pending.drain(..).for_each(|t| {
        t.wait();
    });
    println!(
        "built {commands} workload commands in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // The big customer: 10,000 events of its own, after the workload.
    let start: partner_ledger::domain::Timestamp = last_at.parse().expect("a time");
    let op = r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops","role":"operator"}"#;
    let agent =
        format!(r#"{{"tenant":"{BIG_PARTNER}","user":"agent","role":"partner_admin_agent"}}"#);
    let ga = format!(r#"{{"tenant":"{BIG}","user":"admin","role":"customer_global_admin"}}"#);
    let mut k = 0i64;
    let mut at = || {
        k += 1;
        start.plus_seconds(k * 60).to_string()
    };
    let mut lines = vec![
        format!(
            r#"{{"type":"EnrollPartner","at":"{}","actor":{op},"partner":"{BIG_PARTNER}","partner_id":"9990001","name":"Big Partner","kind":"direct_bill","cloud":"public","country":"NL"}}"#,
            at()
        ),
        format!(
            r#"{{"type":"RegisterCustomer","at":"{}","actor":{op},"customer":"{BIG}","company_name":"Big Customer","domain":"big.onmicrosoft.com","country":"NL","cloud":"public"}}"#,
            at()
        ),
        format!(
            r#"{{"type":"RequestRelationship","at":"{}","actor":{agent},"request":"b1600000-0000-4000-8000-000000000001","partner":"{BIG_PARTNER}","customer":"{BIG}"}}"#,
            at()
        ),
        format!(
            r#"{{"type":"AcceptRelationship","at":"{}","actor":{ga},"request":"b1600000-0000-4000-8000-000000000001","customer":"{BIG}"}}"#,
            at()
        ),
    ];
    // 100 subscriptions, then 9,896 suspensions and reactivations among them: 10,000 events for the customer.
    let sub = |i: u64| format!("5b160000-0000-4000-8000-{i:012x}");
    for i in 0..100u64 {
        lines.push(format!(r#"{{"type":"AddSubscription","at":"{}","actor":{agent},"subscription":"{}","partner":"{BIG_PARTNER}","customer":"{BIG}","offer":"O365_E3","quantity":5}}"#, at(), sub(i)));
    }
    for k in 0..9_896u64 {
        let kind = if (k / 100) % 2 == 0 {
            "SuspendSubscription"
        } else {
            "ReactivateSubscription"
        };
        lines.push(format!(r#"{{"type":"{kind}","at":"{}","actor":{agent},"subscription":"{}","partner":"{BIG_PARTNER}"}}"#, at(), sub(k % 100)));
    }
    let tickets: Vec<_> = lines
        .iter()
        .map(|l| ledger.submit(parse_line(l).expect("a command")))
        .collect();
    for t in tickets {
        t.wait();
    }
}
