//! Durable command throughput in process against the number of concurrent submitters.
//!
//! `cargo run --release --example group_commit -- [COMMANDS_PER_RUN]` prints, for 1, 16, 64 and 256 submitters,
//! commands/s, commands per fdatasync and p50/p99 commit latency, each on a fresh ledger in a temp folder.

use std::sync::Arc;
use std::time::Instant;

use partner_ledger::domain::parse_line;
use partner_ledger::ledger::{Ledger, LedgerConfig};

fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    println!("submitters  commands/s  per-fdatasync  p50 ms  p99 ms");
    for submitters in [1usize, 16, 64, 256] {
        let dir = tempfile::tempdir().expect("a temp folder");
        let ledger =
            Arc::new(Ledger::open(LedgerConfig::new(dir.path())).expect("the ledger opens"));
        let each = (total / submitters).max(1);
        let started = Instant::now();
        let threads: Vec<_> = (0..submitters)
            .map(|_| {
                let ledger = Arc::clone(&ledger);
                std::thread::spawn(move || {
                    let mut latencies = Vec::with_capacity(each);
                    for _ in 0..each {
                        let line = format!(
                            r#"{{"type":"RegisterCustomer","actor":{{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops","role":"operator"}},"customer":"{}","company_name":"Contoso","domain":"contoso.onmicrosoft.com","country":"NL","cloud":"public"}}"#,
                            uuid::Uuid::new_v4()
                        );
                        let t = Instant::now();
                        ledger.execute(parse_line(&line).expect("a valid line"));
                        latencies.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies: Vec<f64> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("a submitter"))
            .collect();
        let secs = started.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let pct = |per_mille: usize| latencies[(latencies.len() - 1) * per_mille / 1000];
        let s = ledger.stats();
        println!(
            "{submitters:>10}  {:>10.0}  {:>13.1}  {:>6.2}  {:>6.2}",
            latencies.len() as f64 / secs,
            s.committed as f64 / s.fdatasyncs.max(1) as f64,
            pct(500),
            pct(990)
        );
    }
}
