//! The command-line adapter: parses arguments and calls the library. No business logic lives here.

mod exec;
mod render;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::domain::{CustomerId, EntityRef, PartnerId, Position, SubscriptionId};
use crate::ledger::{Ledger, LedgerConfig};
use crate::query::{self, AsOfSpec};
use crate::store::{EventStore, SledStore, StoreError, StoreOptions};

/// An event-sourced, tamper-evident ledger of Cloud Solution Provider partner relationships.
#[derive(Parser, Debug)]
#[command(name = "partner-ledger", version, about, long_about = None)]
pub struct Cli {
    /// The ledger's data folder.
    #[arg(
        long,
        global = true,
        env = "PARTNER_LEDGER_DATA",
        default_value = "ledger-data"
    )]
    pub data: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Loads the seed story into an empty ledger and shows the customer it produces: a first look.
    Demo,
    /// Executes NDJSON commands (a file, or - for standard input) and prints one outcome per line, in input order.
    Exec {
        /// The command file, or - for standard input.
        file: String,
    },
    /// Prints stored event envelopes as NDJSON.
    Events {
        /// Only events after this position (0 = everything).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Only events up to and including this position.
        #[arg(long)]
        to: Option<u64>,
        /// Only events about this customer.
        #[arg(long)]
        customer: Option<CustomerId>,
        /// Only events about this partner.
        #[arg(long)]
        partner: Option<PartnerId>,
        /// Only events about this subscription.
        #[arg(long)]
        subscription: Option<SubscriptionId>,
    },
    /// Shows a customer: its partners, delegated admin and subscriptions.
    Customer {
        /// The customer's tenant id.
        id: CustomerId,
        /// Print the WIRE.md JSON view instead of a table.
        #[arg(long)]
        json: bool,
        /// Answer as of a position (a number) or a business time (RFC 3339).
        #[arg(long)]
        as_of: Option<AsOfSpec>,
    },
    /// Walks the whole hash chain and the head marker; exits non-zero naming the first bad position.
    Verify,
    /// Prints a realistic, deterministic workload of NDJSON commands (for trials and measurements).
    Generate {
        /// How many commands.
        #[arg(long, default_value_t = 10_000)]
        commands: usize,
        /// The random seed; the same seed gives the same commands.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// Runs the CLI; errors that are not business answers come back for `main` to print.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo => demo(&cli.data),
        Command::Exec { file } => exec::run(&cli.data, &file),
        Command::Events {
            from,
            to,
            customer,
            partner,
            subscription,
        } => {
            let store = open_existing(&cli.data)?;
            let mut filters = Vec::new();
            filters.extend(customer.map(EntityRef::Customer));
            filters.extend(partner.map(EntityRef::Partner));
            filters.extend(subscription.map(EntityRef::Subscription));
            events(&store, Position(from), to.map(Position), &filters)
        }
        Command::Customer { id, json, as_of } => {
            let store = open_existing(&cli.data)?;
            customer(&store, id, json, as_of)
        }
        Command::Verify => verify(&cli.data),
        Command::Generate { commands, seed } => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let spec = crate::workload::WorkloadSpec {
                commands,
                seed,
                ..Default::default()
            };
            for line in crate::workload::generate(spec) {
                if !out(&mut w, line.as_bytes())? {
                    break;
                }
            }
            w.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open_existing(dir: &std::path::Path) -> Result<SledStore, StoreError> {
    SledStore::open(
        dir,
        &StoreOptions {
            create: false,
            ..StoreOptions::default()
        },
    )
}

/// Prints a line, treating a closed pipe (`| head`) as a normal end.
fn out(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<bool> {
    match w.write_all(bytes).and_then(|_| w.write_all(b"\n")) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

fn events(
    store: &SledStore,
    from: Position,
    to: Option<Position>,
    filters: &[EntityRef],
) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    if filters.is_empty() {
        for item in store.read(from, to) {
            if !out(&mut w, &item?.raw)? {
                return Ok(ExitCode::SUCCESS);
            }
        }
    } else {
        let mut positions = store.history(&filters[0], from)?;
        for f in &filters[1..] {
            let other: std::collections::HashSet<Position> =
                store.history(f, from)?.into_iter().collect();
            positions.retain(|p| other.contains(p));
        }
        for p in positions
            .into_iter()
            .take_while(|p| to.is_none_or(|t| *p <= t))
        {
            if let Some(e) = store.get(p)? {
                if !out(&mut w, &e.raw)? {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
    match w.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn customer(
    store: &SledStore,
    id: CustomerId,
    json: bool,
    as_of: Option<AsOfSpec>,
) -> anyhow::Result<ExitCode> {
    match query::customer(store, id, as_of)? {
        None => {
            eprintln!(
                "error: customer {id} is not registered in this ledger{}",
                if as_of.is_some() {
                    " at that point"
                } else {
                    ""
                }
            );
            Ok(ExitCode::from(3))
        }
        Some(answer) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&answer.view)?);
            } else {
                print!("{}", render::customer_table(&answer.view));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let store = SledStore::open(
        dir,
        &StoreOptions {
            create: false,
            check_on_open: false,
            ..StoreOptions::default()
        },
    )?;
    let total = store.head().position.0;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "verifying {bar:40} {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let result = store.verify_all(|p| {
        if p.0 % 4096 == 0 {
            bar.set_position(p.0);
        }
    });
    bar.finish_and_clear();
    match result {
        Ok(head) => {
            println!(
                "ok: {} events, the chain verifies; head hash {}",
                head.position, head.hash
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(StoreError::Corrupt { position, message }) => {
            match position {
                Some(p) => println!("FAILED at position {p}: {message}"),
                None => println!("FAILED: {message}"),
            }
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

/// The seed story, shipped inside the binary so the demo works from any folder.
const SEED_STORY: &str = include_str!("../../fixtures/seed-story/commands.ndjson");
const CONTOSO: &str = "c0000000-0000-4000-8000-00000000000c";

fn demo(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::open(LedgerConfig::new(dir))?;
    if ledger.store().head().position.0 == 0 {
        println!(
            "Loading the seed story into a new ledger at {} …\n",
            dir.display()
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
            dir.display(),
            ledger.store().head().position
        );
    }
    let id: CustomerId = CONTOSO.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    match query::customer(ledger.store(), id, None)? {
        Some(answer) => print!("{}", render::customer_table(&answer.view)),
        None => println!("Contoso is not in this ledger."),
    }
    let data = dir.display();
    println!(
        "\nNext:\n  partner-ledger --data {data} customer {CONTOSO} --json\n  partner-ledger --data {data} customer {CONTOSO} --as-of 2024-03-01T00:00:00Z\n  partner-ledger --data {data} events --customer {CONTOSO}\n  partner-ledger --data {data} verify"
    );
    ledger.close();
    Ok(ExitCode::SUCCESS)
}
