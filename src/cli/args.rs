//! The command line's shape: global options, the subcommands and their arguments (clap derive), and the exit codes.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::domain::{CustomerId, PartnerId, SubscriptionId};
use crate::query::AsOfSpec;

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
    /// The store's page cache, in MiB (sled keeps recently read pages of the data folder there). Reads of the whole
    /// log (verify, export, streams) keep at most this plus about one page per cache shard (some 25 MB) whatever the
    /// log's length; a larger cache speeds up reads of old history.
    #[arg(
        long,
        global = true,
        env = "PARTNER_LEDGER_CACHE_MB",
        default_value_t = 64,
        value_parser = clap::value_parser!(u64).range(1..=65_536)
    )]
    pub cache_mb: u64,
    /// Keep the ledger in PostgreSQL instead of the data folder: a connection URL (`postgres://user@host:port/db`) or
    /// a libpq `key=value` string. The password may come from PGPASSWORD or PGPASSFILE (~/.pgpass) rather than the
    /// URL; it is never printed. See docs/postgres.md.
    #[arg(
        long,
        global = true,
        env = "PARTNER_LEDGER_STORE",
        hide_env_values = true
    )]
    pub store: Option<String>,
    /// The PostgreSQL schema the ledger lives in (one ledger per schema; several can share a database).
    #[arg(
        long,
        global = true,
        env = "PARTNER_LEDGER_PG_SCHEMA",
        default_value = "partner_ledger"
    )]
    pub pg_schema: String,
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
    /// Another process (a running server?) holds the data folder or the writer's lease, or the database is a
    /// read-only standby.
    pub const LOCKED: u8 = 4;
    /// Storage failed, or a command's outcome is unknown: retry (with the same command ids) once it is fixed.
    pub const STORAGE: u8 = 5;
    /// The database (PostgreSQL) cannot be reached: the message names its host and port.
    pub const UNREACHABLE: u8 = 6;

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
                Some(
                    StoreError::Locked { .. }
                    | StoreError::LockedAt { .. }
                    | StoreError::ReadOnlyReplica { .. },
                ) => return LOCKED,
                Some(StoreError::NoLedger(_) | StoreError::NoLedgerAt { .. }) => return NOT_FOUND,
                Some(StoreError::NotALedger(_) | StoreError::NotALedgerAt { .. }) => {
                    return INVALID
                }
                Some(StoreError::Unreachable { .. }) => return UNREACHABLE,
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
    /// Creates the ledger's schema in PostgreSQL (--store, --pg-schema) or migrates it to this version, connected as
    /// the schema's owner, and grants the runtime role what the ledger may do: read everything, append to the log,
    /// never change or remove an event (docs/postgres.md). The ledger itself never migrates.
    MigrateSchema {
        /// The role the ledger will run as (it must exist): granted SELECT and INSERT on the log, never UPDATE,
        /// DELETE or TRUNCATE.
        #[arg(long)]
        runtime_role: Option<String>,
    },
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
        /// On PostgreSQL, where several `serve` processes share one ledger: the URL other processes forward
        /// commands to while this one writes (default: http:// and the address it listens on, with this machine's
        /// hostname when that address is 0.0.0.0 or ::). See docs/operations.md.
        #[arg(long, env = "PARTNER_LEDGER_ADVERTISE")]
        advertise: Option<String>,
        /// On PostgreSQL: seconds the writer's lease lasts unless renewed (it is renewed five times as often). A
        /// writer that stops renewing (paused, cut off) loses the right to write after this long.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
        lease_seconds: u64,
        /// Serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate chain, the server's certificate first;
        /// reloaded on SIGHUP. Needs --tls-key.
        #[arg(long, env = "PARTNER_LEDGER_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1); reloaded on SIGHUP.
        #[arg(long, env = "PARTNER_LEDGER_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// With a tokens file, listen beyond loopback over plain HTTP anyway: only behind a TLS-terminating proxy.
        #[arg(long)]
        insecure_http: bool,
        /// Let browser apps served from this origin (`https://app.example.com`, scheme, host and port, no path) call
        /// the API with their bearer token (CORS); repeat it, or give a comma-separated list. Off by default: a
        /// browser then refuses to show other origins any answer. See docs/api.md.
        #[arg(
            long = "cors-origin",
            env = "PARTNER_LEDGER_CORS_ORIGINS",
            value_delimiter = ','
        )]
        cors_origins: Vec<String>,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Relays the log of a running server into NATS JetStream (docs/streams.md): stream sequence N is ledger
    /// position N, each event a CloudEvent. Reads the server's event stream with the token in PARTNER_LEDGER_TOKEN
    /// (an operator's or an auditor's); runs until stopped. `serve --nats` runs the same relay inside the server.
    Relay {
        /// The running server to read the log from.
        #[arg(
            long,
            env = "PARTNER_LEDGER_SERVER",
            default_value = "http://127.0.0.1:7070"
        )]
        server: String,
        #[command(flatten)]
        nats: NatsArgs,
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
        /// Instead of the standard suite, the growth suite: one ledger per size (commands, comma-separated, for example
        /// 1000000,3000000,10000000 for about 1M, 3M and 10M events), each measured for memory, start-up, whole-log
        /// reads and verification (docs/performance.md, "Growth with history"). With --out it rewrites only that
        /// section of the page. With --quick and no sizes: 2000,5000. The 10M-event ledger alone takes about 15 minutes.
        #[arg(long, value_name = "SIZES", value_delimiter = ',', num_args = 0..)]
        growth: Option<Vec<usize>>,
        /// Instead of the standard suite, the PostgreSQL suite, on the database --store names (its role must be
        /// allowed to create schemas: each run's ledger gets one, dropped afterwards), or without --store on a
        /// throwaway server of this machine's PostgreSQL: throughput in process and over HTTP, the per-command
        /// baseline, catch-up and open time (--big commands, default 1,000,000; --quick: small sizes). With --out it
        /// rewrites only that section of the page.
        #[arg(long, conflicts_with = "growth")]
        postgres: bool,
        /// Instead of the standard suite, the JetStream relay's: catch-up from position 0 into a throwaway
        /// nats-server (file storage, sync_interval: always) beside a plain publisher of the same messages, then the
        /// live latency (--big commands, default 98,000: about 100,000 events; --quick: 2,000). With --out it
        /// rewrites only that section of the page.
        #[arg(long, conflicts_with_all = ["growth", "postgres"])]
        relay: bool,
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

/// Where and how the log is relayed into NATS JetStream (docs/streams.md).
#[derive(clap::Args, Debug, Clone)]
pub struct NatsArgs {
    /// Relay the log into the JetStream of this NATS server: nats://HOST:PORT (several, comma-separated, for a
    /// cluster; user:password@ or token@ allowed, never logged).
    #[arg(long, env = "PARTNER_LEDGER_NATS")]
    pub nats: Option<String>,
    /// The JetStream stream (created when missing: file storage, no limits, deny_delete, deny_purge).
    #[arg(long, default_value = crate::relay::DEFAULT_STREAM)]
    pub nats_stream: String,
    /// The subjects' first token(s): events are published on PREFIX.customer.<id>.<EventType> and
    /// PREFIX.partner.<id>.<EventType>.
    #[arg(long, default_value = crate::relay::cloudevents::DEFAULT_PREFIX)]
    pub nats_subject_prefix: String,
    /// The CloudEvents `source` attribute of every event (on NATS and in the HTTP streams' CloudEvents form).
    #[arg(long, env = "PARTNER_LEDGER_CLOUDEVENTS_SOURCE", default_value = crate::relay::cloudevents::DEFAULT_SOURCE)]
    pub cloudevents_source: String,
    /// Seconds the relay lease lasts unless renewed (one relay publishes into a stream at a time).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub nats_lease_seconds: u64,
    /// Replicas of the stream when the relay creates it (3 on a JetStream cluster).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub nats_replicas: u64,
}

impl NatsArgs {
    /// The relay's configuration, when --nats is given; an unusable option is named.
    pub fn relay(&self) -> anyhow::Result<Option<crate::relay::Config>> {
        let Some(url) = &self.nats else {
            return Ok(None);
        };
        let mut c = crate::relay::Config::new(url.clone());
        c.stream = self.nats_stream.clone();
        c.prefix = self.nats_subject_prefix.clone();
        c.source_uri = self.cloudevents_source.clone();
        c.lease = std::time::Duration::from_secs(self.nats_lease_seconds);
        c.replicas = usize::try_from(self.nats_replicas).unwrap_or(1);
        c.check().map_err(|e| anyhow::anyhow!(e))?;
        Ok(Some(c))
    }
}
