//! `demo`: the seed story in a throwaway ledger, and what a newcomer can ask it.

use std::process::ExitCode;

use super::render;
use crate::domain::CustomerId;
use crate::ledger::{Ledger, LedgerConfig};
use crate::query;

/// The seed story, shipped inside the binary so the demo works from any folder.
pub(crate) const SEED_STORY: &str = include_str!("../../fixtures/seed-story/commands.ndjson");
pub(crate) const CONTOSO: &str = "c0000000-0000-4000-8000-00000000000c";

pub(super) fn demo(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::open(LedgerConfig::new(dir))?;
    if ledger.store().head().position.0 == 0 {
        println!(
            "Loading the seed story into a new ledger at {} …\n",
            crate::store::describe(dir)
        );
        let mut committed = 0;
        for (n, line) in SEED_STORY.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let submitted = crate::domain::parse_line(line)
                .map_err(|e| anyhow::anyhow!("seed line {}: {e}", n + 1))?;
            let kind = submitted.body.type_name();
            let outcome = ledger.execute(submitted);
            let json = outcome.to_json();
            println!("  {:<28} {}", kind, render::outcome_summary(&json));
            if json["outcome"] == "committed" {
                committed += 1;
            }
        }
        println!("\n{committed} commands committed durably.\n");
    } else {
        println!(
            "The ledger at {} already holds {} events; showing Contoso.\n",
            crate::store::describe(dir),
            ledger.store().head().position
        );
    }
    let id: CustomerId = CONTOSO.parse()?;
    match query::customer(ledger.store(), id, None)? {
        Some(answer) => print!("{}", render::customer_table(&answer.view)),
        None => println!("Contoso is not in this ledger."),
    }
    // On PostgreSQL the hints leave out where the ledger is: the URL may hold a password, never printed.
    let (next, data) = match crate::store::default_postgres() {
        Some(_) => (
            "Next (with the same --store and --pg-schema):",
            String::new(),
        ),
        None => ("Next:", format!("--data {} ", dir.display())),
    };
    println!(
        "\n{next}\n  partner-ledger {data}customer {CONTOSO} --json\n  partner-ledger {data}customer {CONTOSO} --as-of 2024-03-01T00:00:00Z\n  partner-ledger {data}events --customer {CONTOSO}\n  partner-ledger {data}verify"
    );
    ledger.close();
    Ok(ExitCode::SUCCESS)
}
