//! The command-line adapter: parses arguments and calls the library. No business logic lives here.

mod audit;
mod exec;
mod render;
mod serve;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::domain::{CustomerId, EntityRef, PartnerId, Position, SubscriptionId};
use crate::ledger::{Ledger, LedgerConfig};
use crate::query::{self, AsOfSpec};
use crate::store::{ReadModel, Store, StoreError, StoreOptions};

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
    /// What to log on standard error: a level (error, warn, info, debug, trace) or a filter such as
    /// `partner_ledger=debug,warn`.
    #[arg(
        long,
        global = true,
        env = "PARTNER_LEDGER_LOG",
        default_value = "warn"
    )]
    pub log_level: String,
    /// How to log: text for people, json for log collectors (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines; colours only when standard error is a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// The exit codes of every command (README, "Exit codes").
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// The input was refused or a check failed: an invalid command line, a damaged chain or backup, a bad argument.
    pub const INVALID: u8 = 1;
    /// Bad usage: an unknown command or flag (clap's own code).
    pub const USAGE: u8 = 2;
    /// What was asked for is not in the ledger.
    pub const NOT_FOUND: u8 = 3;
    /// Another process (a running server?) holds the data folder.
    pub const LOCKED: u8 = 4;
    /// Storage failed, or a command's outcome is unknown: retry (with the same command ids) once it is fixed.
    pub const STORAGE: u8 = 5;

    /// The code for an error that ended a command.
    pub fn of_error(e: &anyhow::Error) -> u8 {
        use crate::store::StoreError;
        for cause in e.chain() {
            let store = cause.downcast_ref::<StoreError>().or_else(|| {
                cause
                    .downcast_ref::<crate::ledger::OpenError>()
                    .and_then(|o| match o {
                        crate::ledger::OpenError::Store(s) => Some(s),
                        crate::ledger::OpenError::Replay { .. } => None,
                    })
            });
            match store {
                Some(StoreError::Locked { .. }) => return LOCKED,
                Some(StoreError::NoLedger(_)) => return NOT_FOUND,
                Some(StoreError::NotALedger(_)) => return INVALID,
                Some(_) => return STORAGE,
                None => {}
            }
            if cause.is::<std::io::Error>() || cause.is::<crate::ledger::OpenError>() {
                return STORAGE;
            }
        }
        INVALID
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Runs the HTTP service (docs/api.md). With --sample-data an empty ledger first gets sample data: the seed story
    /// and a generated workload.
    Serve {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
        /// Seconds between the scheduler's AdvanceClock commands.
        #[arg(long, default_value_t = 60)]
        clock_interval: u64,
        /// Milliseconds between heartbeats on idle or filtered streams.
        #[arg(long, default_value_t = 15_000)]
        heartbeat_ms: u64,
        /// Load sample data (the seed story of Contoso with partners Adatum and Bellows, then a generated workload of
        /// 5,000 commands) when the ledger is empty. Without it nothing is written that nobody asked for: an
        /// append-only ledger cannot take sample data back.
        #[arg(long)]
        sample_data: bool,
        /// Accepted for older scripts; an empty ledger stays empty unless --sample-data is given.
        #[arg(long, hide = true, conflicts_with = "sample_data")]
        no_sample_data: bool,
        /// Milliseconds shutdown (SIGTERM, Ctrl-C) waits for requests in flight before closing the connections left,
        /// such as a stream whose client stopped reading.
        #[arg(long, default_value_t = 5_000)]
        shutdown_grace_ms: u64,
        /// Milliseconds a client may take to send a request's headers (slower: disconnected).
        #[arg(long, default_value_t = 10_000)]
        header_timeout_ms: u64,
        /// Milliseconds a client may take to send a request's body (slower: 408).
        #[arg(long, default_value_t = 30_000)]
        body_timeout_ms: u64,
        /// The tokens file (docs/security.md). Without it (and without PARTNER_LEDGER_OPERATOR_TOKEN) the server runs
        /// in local mode: loopback only, every caller an operator.
        #[arg(long, env = "PARTNER_LEDGER_TOKENS")]
        tokens: Option<PathBuf>,
    },
    /// Prints a shell completion script: `partner-ledger completions bash > /etc/bash_completion.d/partner-ledger`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Prints the manual page (roff): `partner-ledger man > partner-ledger.1 && man ./partner-ledger.1`.
    Man,
    /// Makes a new random API token and prints the tokens-file entry holding its hash (docs/security.md).
    Token {
        /// A name for the principal (logs, audit).
        #[arg(long)]
        name: String,
        /// partner_admin_agent, partner_sales_agent, customer_global_admin, customer_user, operator, system or auditor.
        #[arg(long)]
        role: String,
        /// The principal's tenant (all roles but auditor).
        #[arg(long)]
        tenant: Option<String>,
        /// The user (principal name or application id).
        #[arg(long)]
        user: String,
    },
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
        /// Print the JSON view (docs/wire.md) instead of a table.
        #[arg(long)]
        json: bool,
        /// Answer as of a position (a number) or a business time (RFC 3339).
        #[arg(long, conflicts_with = "diff")]
        as_of: Option<AsOfSpec>,
        /// List what changed after FROM up to and including TO (positions or times).
        #[arg(long, num_args = 2, value_names = ["FROM", "TO"])]
        diff: Option<Vec<AsOfSpec>>,
    },
    /// Shows a partner: its customers with relationship, delegated admin and subscription counts.
    Partner {
        /// The partner's tenant id.
        id: PartnerId,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Answer as of a position or a business time.
        #[arg(long)]
        as_of: Option<AsOfSpec>,
    },
    /// Shows one subscription.
    Subscription {
        /// The subscription id.
        id: SubscriptionId,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Answer as of a position or a business time.
        #[arg(long)]
        as_of: Option<AsOfSpec>,
    },
    /// Lists active GDAP admin relationships that end within N days, soonest first.
    Expiring {
        /// The window in days.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Count from this business time instead of the ledger's latest.
        #[arg(long)]
        at: Option<crate::domain::Timestamp>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// A readable timeline of one customer, partner or subscription.
    History {
        /// customer, partner or subscription.
        #[arg(value_parser = ["customer", "partner", "subscription"])]
        kind: String,
        /// Its id.
        id: String,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
        /// Also show refused commands, from the audit trail.
        #[arg(long)]
        include_refusals: bool,
    },
    /// Drops read models and rebuilds them from the log (all, or the one named).
    Rebuild {
        /// customers, partners or expiring (a subscription is part of its customer's document); all when omitted.
        #[arg(value_parser = crate::store::ReadModel::NAMES)]
        name: Option<String>,
    },
    /// Prints the head position and hash (POSITION:HASH) for an auditor to keep elsewhere.
    Checkpoint,
    /// Walks the whole hash chain and the head marker; exits non-zero naming the first bad position.
    Verify {
        /// Also prove the log still extends a checkpoint printed earlier.
        #[arg(long, value_name = "POSITION:HASH")]
        against: Option<String>,
    },
    /// Writes a complete backup (NDJSON: events as stored, command journal, refusals, consumers) or the events as CSV.
    Export {
        /// Only events after this position.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Only events up to and including this position.
        #[arg(long)]
        to: Option<u64>,
        /// ndjson: a complete, restorable backup (events, command journal, refusals, consumers; docs/audit.md);
        /// csv: one row per event, for spreadsheets.
        #[arg(long, default_value = "ndjson", value_parser = ["ndjson", "csv"])]
        format: String,
    },
    /// Restores a backup (`export`, or GET /v1/backup from a running server) into an empty ledger: the identical
    /// chain, command journal, refusals and consumers. Checks the whole file first and writes nothing if any line is
    /// wrong. A file of bare envelopes (`events`) restores too, without journal fingerprints, refusals or consumers.
    Import {
        /// The backup file.
        file: String,
    },
    #[cfg(feature = "bench")]
    /// Runs the benchmark suite (docs/performance.md): throughput against concurrency in process and over HTTP beside
    /// raw sled baselines, then a large ledger's rebuild, open time, memory, views, streams and bytes on disk.
    Bench {
        /// A smoke run of every part with small sizes, in seconds (its figures mean nothing).
        #[arg(long)]
        quick: bool,
        /// Write the report to this Markdown file, and its plot beside it (`.svg`).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Build the benchmark ledgers under this folder (default: the system's temporary folder).
        #[arg(long, value_name = "DIR")]
        work: Option<PathBuf>,
        /// Commands generated into the large ledger.
        #[arg(long)]
        big: Option<usize>,
        /// Commands per throughput run.
        #[arg(long)]
        commands: Option<usize>,
    },
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
        Command::Serve {
            listen,
            clock_interval,
            heartbeat_ms,
            sample_data,
            no_sample_data: _,
            shutdown_grace_ms,
            header_timeout_ms,
            body_timeout_ms,
            tokens,
        } => serve::serve(
            &cli.data,
            &listen,
            crate::api::ServeConfig {
                heartbeat: std::time::Duration::from_millis(heartbeat_ms.max(1)),
                clock_interval: std::time::Duration::from_secs(clock_interval.max(1)),
                header_timeout: std::time::Duration::from_millis(header_timeout_ms.max(1)),
                body_timeout: std::time::Duration::from_millis(body_timeout_ms.max(1)),
                shutdown_grace: std::time::Duration::from_millis(shutdown_grace_ms),
                ..Default::default()
            },
            sample_data,
            tokens.as_deref(),
        ),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, "partner-ledger", &mut text);
            out(&mut std::io::stdout(), text.trim_ascii_end())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut text = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut text)?;
            out(&mut std::io::stdout(), text.trim_ascii_end())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            name,
            role,
            tenant,
            user,
        } => {
            let (token, entry) =
                crate::api::auth::new_token(&name, &role, tenant.as_deref(), &user)
                    .map_err(|e| anyhow::anyhow!(e))?;
            eprintln!("token (give it to {name}; it is not stored anywhere):\n{token}\n\nentry for the tokens file's `principals` list:");
            println!("{}", serde_json::to_string_pretty(&entry)?);
            Ok(ExitCode::SUCCESS)
        }
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
            events(&*store, Position(from), to.map(Position), &filters)
        }
        Command::Customer {
            id,
            json,
            as_of,
            diff,
        } => {
            let store = open_existing(&cli.data)?;
            for spec in diff.iter().flatten().copied().chain(as_of) {
                query::beyond_head(&*store, Some(spec)).map_err(|e| anyhow::anyhow!(e))?;
            }
            match diff.as_deref() {
                Some([from, to]) => audit::diff(&*store, id, *from, *to, json),
                _ => customer(&*store, id, json, as_of),
            }
        }
        Command::Partner { id, json, as_of } => {
            let store = open_existing(&cli.data)?;
            query::beyond_head(&*store, as_of).map_err(|e| anyhow::anyhow!(e))?;
            match query::partner(&*store, id, as_of)? {
                None => not_found("partner", &id.to_string()),
                Some(a) if json => print_json(&a.view),
                Some(a) => {
                    print!("{}", render::partner_table(&a.view));
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Subscription { id, json, as_of } => {
            let store = open_existing(&cli.data)?;
            query::beyond_head(&*store, as_of).map_err(|e| anyhow::anyhow!(e))?;
            match query::subscription(&*store, id, as_of)? {
                None => not_found("subscription", &id.to_string()),
                Some(a) if json => print_json(&a.view),
                Some(a) => {
                    let v = &a.view;
                    println!(
                        "{} {} of {} ({}): {}, partner of record {}, billed by {}{}",
                        v.kind,
                        v.subscription,
                        v.company_name,
                        v.customer,
                        v.status,
                        v.partner_of_record,
                        v.billing_partner,
                        v.azure_plan
                            .map(|p| format!(", Azure plan {p}"))
                            .unwrap_or_default()
                    );
                    println!("as of position {} ({})", v.as_of.position, v.as_of.at);
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Expiring { days, at, json } => {
            let store = open_existing(&cli.data)?;
            let projections = current_projections(&*store)?;
            let from = match at {
                Some(t) => t,
                None => query::resolve(&*store, None)?.at,
            };
            let to = from.plus_days(i64::from(days));
            let rows = projections.expiring(from, to)?;
            if !json {
                println!(
                    "{} admin relationship(s) ending between {from} and {to}",
                    rows.len()
                );
            }
            for r in rows {
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "  {}  \"{}\"  {} on {}  {}",
                        r.ends_at,
                        r.name,
                        r.partner_name,
                        r.company_name,
                        if r.auto_extend {
                            "auto-extends by 180 days"
                        } else {
                            "expires"
                        }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History {
            kind,
            id,
            json,
            include_refusals,
        } => {
            let store = open_existing(&cli.data)?;
            let parse_err = |e: crate::domain::ParseError| anyhow::anyhow!("{kind} id: {e}");
            let entity = match kind.as_str() {
                "customer" => EntityRef::Customer(id.parse().map_err(parse_err)?),
                "partner" => EntityRef::Partner(id.parse().map_err(parse_err)?),
                _ => EntityRef::Subscription(id.parse().map_err(parse_err)?),
            };
            audit::history(&*store, entity, json, include_refusals)
        }
        Command::Rebuild { name } => rebuild(&cli.data, name.as_deref()),
        Command::Checkpoint => {
            let store = open_existing(&cli.data)?;
            let head = store.head();
            println!("{}:{}", head.position, head.hash);
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { against } => verify(&cli.data, against.as_deref()),
        Command::Export { from, to, format } => {
            // Without the open-time checks, so that the good part of a damaged ledger can be exported for recovery
            // (docs/recovery.md); `import` verifies every event it restores.
            let store = crate::store::open(
                &cli.data,
                &StoreOptions {
                    create: false,
                    check_on_open: false,
                    ..StoreOptions::default()
                },
            )?;
            let head = store.head().position;
            if let Some(t) = to.filter(|t| *t > head.0) {
                anyhow::bail!(
                    "--to {t} is after the log's head {head}; there is no such position yet"
                );
            }
            audit::export(&*store, Position(from), to.map(Position), format == "csv")
        }
        Command::Import { file } => audit::import(&cli.data, &file),
        #[cfg(feature = "bench")]
        Command::Bench {
            quick,
            out,
            work,
            big,
            commands,
        } => {
            let mut options = if quick {
                crate::bench::Options::quick()
            } else {
                crate::bench::Options::full()
            };
            options.command = std::env::args()
                .skip(1)
                .fold("partner-ledger".to_string(), |acc, a| acc + " " + &a);
            options.out = out;
            options.work = work;
            if let Some(b) = big {
                options.big = b;
            }
            if let Some(c) = commands {
                options.commands = c;
            }
            crate::bench::run(&options)?;
            Ok(ExitCode::SUCCESS)
        }
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

fn open_existing(dir: &std::path::Path) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    crate::store::open(
        dir,
        &StoreOptions {
            create: false,
            ..StoreOptions::default()
        },
    )
}

/// Prints a line, treating a closed pipe (`| head`) as a normal end.
pub(crate) fn out(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<bool> {
    match w.write_all(bytes).and_then(|_| w.write_all(b"\n")) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

fn events(
    store: &dyn Store,
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
        let positions = crate::query::positions_about_all(store, filters, from, to)?;
        for p in positions {
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
    store: &dyn Store,
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

/// A progress bar on standard error (hidden when it is not a terminal) with a rate in events/s.
pub(crate) fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} events ({{per_sec}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn not_found(kind: &str, id: &str) -> anyhow::Result<ExitCode> {
    eprintln!("error: {kind} {id} is not in this ledger (at that point)");
    Ok(ExitCode::from(3))
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(ExitCode::SUCCESS)
}

/// The projections, caught up to the head if a crash left them behind.
fn current_projections(store: &dyn Store) -> anyhow::Result<crate::projection::Projections<'_>> {
    let projections = crate::projection::Projections::open(store);
    if projections.oldest_checkpoint()? != store.head().position {
        let state = crate::ledger::replay(store, |_| {})?;
        projections.catch_up(&state)?;
    }
    Ok(projections)
}

fn rebuild(dir: &std::path::Path, name: Option<&str>) -> anyhow::Result<ExitCode> {
    let store = open_existing(dir)?;
    let projections = crate::projection::Projections::open(&*store);
    let models: Vec<ReadModel> = match name {
        Some(n) => vec![ReadModel::named(n).ok_or_else(|| {
            anyhow::anyhow!(
                "`{n}` is not a read model; the read models are {}",
                ReadModel::NAMES.join(", ")
            )
        })?],
        None => ReadModel::ALL.to_vec(),
    };
    let names: Vec<&str> = models.iter().map(|m| m.name()).collect();
    let total = store.head().position.0;
    let bar = progress_bar(total, "rebuilding");
    let started = std::time::Instant::now();
    projections.rebuild(&models, |p| {
        if p.0 % 4096 == 0 {
            bar.set_position(p.0);
        }
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rebuilt {} from {total} events in {secs:.2} s ({:.0} events/s)",
        names.join(", "),
        total as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(dir: &std::path::Path, against: Option<&str>) -> anyhow::Result<ExitCode> {
    let checkpoint = match against {
        None => None,
        Some(s) => {
            let (p, h) = s.split_once(':').ok_or_else(|| {
                anyhow::anyhow!("--against takes POSITION:HASH, as printed by `checkpoint`")
            })?;
            let p: u64 = p
                .parse()
                .map_err(|_| anyhow::anyhow!("--against: `{p}` is not a position"))?;
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!("--against: `{h}` is not a 64-character hex hash");
            }
            Some((Position(p), h.to_ascii_lowercase()))
        }
    };
    let store = match crate::store::open(
        dir,
        &StoreOptions {
            create: false,
            check_on_open: false,
            ..StoreOptions::default()
        },
    ) {
        Ok(s) => s,
        Err(StoreError::Corrupt { position, message }) => {
            match position {
                Some(p) => println!("FAILED at position {p}: {message}"),
                None => println!("FAILED: {message}"),
            }
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let total = store.head().position.0;
    let bar = progress_bar(total, "verifying");
    let result = store.verify_all(&mut |p| {
        if p.0 % 4096 == 0 {
            bar.set_position(p.0);
        }
    });
    bar.finish_and_clear();
    if let (Ok(head), Some((position, hash))) = (&result, &checkpoint) {
        if *position > head.position {
            println!(
                "FAILED at position {}: the log ends at {} but the checkpoint was taken at {position}: events were removed",
                head.position.next(),
                head.position
            );
            return Ok(ExitCode::from(1));
        }
        let stored = match store.get(*position)? {
            Some(e) => e.envelope()?.hash,
            None => crate::store::GENESIS_HASH.to_string(),
        };
        if stored != *hash {
            println!(
                "FAILED at position {position}: the log's hash there is {stored} but the checkpoint recorded {hash}: history up to {position} was rewritten"
            );
            return Ok(ExitCode::from(1));
        }
    }
    match result {
        Ok(head) => {
            match checkpoint {
                Some((p, _)) => println!(
                    "ok: {} events, the chain verifies and extends the checkpoint at {p}; head hash {}",
                    head.position, head.hash
                ),
                None => println!(
                    "ok: {} events, the chain verifies; head hash {}",
                    head.position, head.hash
                ),
            }
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
pub(crate) const SEED_STORY: &str = include_str!("../../fixtures/seed-story/commands.ndjson");
pub(crate) const CONTOSO: &str = "c0000000-0000-4000-8000-00000000000c";

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
    let id: CustomerId = CONTOSO.parse()?;
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
