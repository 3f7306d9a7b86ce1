//! `partner-ledger relay`: the JetStream relay beside a running server, reading the log over HTTP (docs/streams.md).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::args::NatsArgs;
use crate::relay::{Server, Source, Status};

/// Relays until SIGTERM or Ctrl-C (exit 0), or until the stream is found not to be this ledger's copy (exit 1,
/// naming the sequence). Prints a progress line every few seconds while it has work.
pub(super) fn relay(server: &str, nats: &NatsArgs) -> anyhow::Result<ExitCode> {
    let Some(config) = nats.relay()? else {
        anyhow::bail!("relay needs --nats nats://HOST:PORT (or PARTNER_LEDGER_NATS): the NATS server to relay into");
    };
    let token = std::env::var("PARTNER_LEDGER_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let server = Server::parse(server, token).map_err(|e| anyhow::anyhow!(e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let source = Source::Server(server);
        // Fail fast on an unreachable server or a refused token, before anything is published.
        let head = source.head().await.map_err(|e| anyhow::anyhow!(e))?;
        let status = Arc::new(Status::new(config.clone()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut relay = tokio::spawn(crate::relay::run(
            Arc::clone(&status),
            source.clone(),
            stop_rx,
            true,
        ));
        let _ = writeln!(
            std::io::stderr(),
            "relaying {} (head {head}) into stream {} at {}, subjects {}.>",
            source.describe(),
            config.stream,
            config.place(),
            config.prefix
        );
        let mut shown = None;
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        // One signal listener for the whole run, so a SIGTERM arriving while a progress line is made is not lost.
        let shutdown = super::serve::shutdown_signal();
        tokio::pin!(shutdown);
        let result = loop {
            tokio::select! {
                r = &mut relay => break r.map_err(|e| e.to_string()).and_then(|r| r),
                () = &mut shutdown => {
                    let _ = stop_tx.send(true);
                    break (&mut relay).await.map_err(|e| e.to_string()).and_then(|r| r);
                }
                _ = tick.tick() => {
                    let (phase, error) = status.phase();
                    let head = source.head().await.ok();
                    let now = (status.relayed(), phase.clone(), error.clone(), head);
                    if shown.as_ref() != Some(&now) {
                        let lag = head.map(|h| h.0.saturating_sub(status.relayed().0));
                        let _ = writeln!(
                            std::io::stderr(),
                            "{phase}: stream at position {}{}{}",
                            status.relayed(),
                            lag.map(|l| format!(", {l} behind the head")).unwrap_or_default(),
                            error.map(|e| format!(" (last error: {e})")).unwrap_or_default()
                        );
                        shown = Some(now);
                    }
                }
            }
        };
        match result {
            Ok(()) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "stopped; the stream holds positions 1..{}",
                    status.relayed()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => anyhow::bail!(e),
        }
    })
}
