//! The `partner-ledger` binary: parses arguments, sets up tracing, runs the CLI and maps errors to an exit code
//! (`cli::exit`, documented in the README).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use partner_ledger::cli::{exit, Cli, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    partner_ledger::store::set_default_cache_bytes(cli.cache_mb * 1024 * 1024);
    let result = partner_ledger::cli::run(cli);
    if let Some(kib) = partner_ledger::cli::peak_rss_kib() {
        tracing::info!(peak_rss_kib = kib, "peak resident memory of this process");
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::of_error(&e))
        }
    }
}
