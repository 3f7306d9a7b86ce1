//! The command-line adapter: parses arguments and calls the library. No business logic lives here.

mod args;
mod audit;
mod demo;
mod exec;
mod maintenance;
mod reads;
mod relay;
mod render;
mod serve;

use std::io::Write;
use std::process::ExitCode;

pub use args::{exit, Cli, Command, LogFormat};
use demo::demo;
pub(crate) use demo::{CONTOSO, SEED_STORY};
use maintenance::{rebuild, verify};
use reads::{customer, events};

use crate::domain::{EntityRef, Position};
use crate::query;
use crate::store::{Store, StoreError, StoreOptions};

/// The process's peak resident memory so far (`VmHWM`), in KiB; logged at info when a command ends.
pub fn peak_rss_kib() -> Option<u64> {
    crate::ledger::resident_kib("VmHWM:")
}

/// Runs the CLI; errors that are not business answers come back for `main` to print.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let postgres = match &cli.store {
        None => None,
        Some(url) => Some(
            crate::store::postgres::PgTarget::parse(url, &cli.pg_schema)
                .map_err(|why| anyhow::anyhow!("--store: {why}"))?,
        ),
    };
    crate::store::set_default_postgres(postgres.clone());
    match cli.command {
        Command::MigrateSchema { runtime_role } => {
            let Some(target) = postgres else {
                anyhow::bail!(
                    "migrate-schema works on a PostgreSQL ledger: name it with --store postgres://… (a data folder needs no migration)"
                );
            };
            let (before, after) =
                crate::store::postgres::migrate_schema(&target, runtime_role.as_deref())?;
            match before {
                0 => println!("created the ledger schema at {target} (version {after})"),
                b if b == after => {
                    println!("the ledger schema at {target} is at version {after} already")
                }
                b => println!("migrated the ledger schema at {target} from version {b} to {after}"),
            }
            if let Some(role) = runtime_role {
                println!("granted {role} what the ledger may do (read; append to the log; never change or remove an event)");
            }
            Ok(ExitCode::SUCCESS)
        }
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
            advertise,
            lease_seconds,
            tls_cert,
            tls_key,
            insecure_http,
            cors_origins,
            nats,
        } => serve::serve(
            &cli.data,
            &listen,
            serve::Shared {
                advertise,
                lease: std::time::Duration::from_secs(lease_seconds),
            },
            serve::Transport {
                cert: tls_cert,
                key: tls_key,
                insecure_http,
            },
            crate::api::ServeConfig {
                relay: nats.relay()?,
                cloudevents_source: nats.cloudevents_source.clone(),
                heartbeat: std::time::Duration::from_millis(heartbeat_ms.max(1)),
                clock_interval: std::time::Duration::from_secs(clock_interval.max(1)),
                header_timeout: std::time::Duration::from_millis(header_timeout_ms.max(1)),
                body_timeout: std::time::Duration::from_millis(body_timeout_ms.max(1)),
                shutdown_grace: std::time::Duration::from_millis(shutdown_grace_ms),
                cors_origins: crate::api::cors_origins(&cors_origins)?,
                ..Default::default()
            },
            sample_data,
            tokens.as_deref(),
        ),
        Command::Relay { server, nats } => relay::relay(&server, &nats),
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
            let from = match at {
                Some(t) => t,
                None => query::resolve(&*store, None)?.at,
            };
            let to = from.plus_days(i64::from(days));
            let projections = crate::projection::Projections::open(&*store);
            let rows = if projections.oldest_checkpoint()? == store.head().position {
                projections.expiring(from, to)?
            } else if store.shared().is_some() {
                // On PostgreSQL the read models are the writer's to write (it may be running): computed in memory.
                let state = crate::ledger::replay(&*store, |_| {})?;
                crate::projection::expiring_in(&state, from, to)
            } else {
                current_projections(&*store)?.expiring(from, to)?
            };
            if !json {
                println!(
                    "{} admin relationship(s) ending between {from} and {to}",
                    rows.len()
                );
            }
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            for r in rows {
                let line = if json {
                    serde_json::to_string(&r)?
                } else {
                    format!(
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
                    )
                };
                // A closed pipe (`| head`) ends the listing quietly.
                if !out(&mut w, line.as_bytes())? {
                    break;
                }
            }
            match w.flush() {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
                _ => {}
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
            growth,
            postgres: on_postgres,
            relay,
        } => {
            if relay {
                let (commands, rounds, live) = if quick {
                    (big.unwrap_or(2_000), 1, 50)
                } else {
                    (big.unwrap_or(98_000), 3, 1_000)
                };
                crate::bench::relay::run(commands, rounds, live, out.as_deref())?;
                return Ok(ExitCode::SUCCESS);
            }
            if on_postgres {
                // Without --store, a throwaway server of this machine's PostgreSQL, for as long as the run.
                let target = match postgres {
                    Some(t) => t,
                    None => {
                        use crate::store::postgres::{throwaway, PgTarget};
                        PgTarget::parse(&throwaway::server().url("postgres"), "partner_ledger")
                            .map_err(anyhow::Error::msg)?
                    }
                };
                let (commands, big) = if quick {
                    (commands.unwrap_or(2_000), big.unwrap_or(5_000))
                } else {
                    (commands.unwrap_or(20_000), big.unwrap_or(1_000_000))
                };
                crate::bench::postgres::run(&target, commands, big, out.as_deref())?;
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(mut sizes) = growth {
                if sizes.is_empty() {
                    anyhow::ensure!(
                        quick,
                        "--growth needs sizes, for example --growth 1000000,3000000,10000000"
                    );
                    sizes = vec![2_000, 5_000];
                }
                anyhow::ensure!(
                    sizes.iter().all(|n| *n > 0),
                    "--growth: every size is a number of commands above 0"
                );
                let command = std::env::args()
                    .skip(1)
                    .fold("partner-ledger".to_string(), |acc, a| acc + " " + &a);
                crate::bench::growth::run(&sizes, quick, work.as_deref(), out.as_deref(), command)?;
                return Ok(ExitCode::SUCCESS);
            }
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
