//! `partner-ledger serve`: checks the configuration and binds before it touches the data folder, loads sample data
//! only when asked, advances the clock once, prints what a newcomer needs, and serves until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use super::{CONTOSO, SEED_STORY};
use crate::domain::{CustomerId, Position};
use crate::ledger::{Ledger, LedgerConfig};

/// How this process shares a PostgreSQL ledger with other `serve` processes (docs/operations.md).
pub(super) struct Shared {
    pub advertise: Option<String>,
    pub lease: std::time::Duration,
}

/// How connections are protected: `--tls-cert`/`--tls-key`, or `--insecure-http` beyond loopback.
pub(super) struct Transport {
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    pub insecure_http: bool,
}

/// The URL other processes forward commands to: `--advertise`, or http:// and the bound address.
fn advertised(given: Option<String>, addr: std::net::SocketAddr) -> anyhow::Result<String> {
    if let Some(url) = given {
        let parsed: axum::http::Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("--advertise `{url}` is not a URL: {e}"))?;
        if parsed.scheme_str() != Some("http")
            || parsed.host().is_none()
            || parsed.path() != "/" && !parsed.path().is_empty()
        {
            anyhow::bail!("--advertise `{url}` must be http://HOST:PORT, where other processes reach this one");
        }
        return Ok(url.trim_end_matches('/').to_string());
    }
    Ok(if addr.ip().is_unspecified() {
        format!(
            "http://{}:{}",
            crate::store::postgres::hostname(),
            addr.port()
        )
    } else {
        format!("http://{addr}")
    })
}

/// Runs the HTTP service on `dir` (docs/api.md).
pub(super) fn serve(
    dir: &std::path::Path,
    listen: &str,
    shared: Shared,
    transport: Transport,
    config: crate::api::ServeConfig,
    sample_data: bool,
    tokens: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    use crate::api::auth::{
        Auth, DEFAULT_OPERATOR_TENANT, OPERATOR_TENANT_ENV, OPERATOR_TOKEN_ENV,
    };
    use std::io::Write;
    // Everything that can be checked is checked, and the listener bound, before the data folder is created or
    // written: a failed start leaves no trace.
    let env_token = std::env::var(OPERATOR_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty());
    let env_tenant =
        std::env::var(OPERATOR_TENANT_ENV).unwrap_or_else(|_| DEFAULT_OPERATOR_TENANT.to_string());
    let auth = std::sync::Arc::new(if tokens.is_none() && env_token.is_none() {
        Auth::local()
    } else {
        Auth::with_tokens(
            tokens,
            env_token.as_deref().map(|t| (t, env_tenant.as_str())),
        )
        .map_err(|e| anyhow::anyhow!(e))?
    });
    let tls = match (&transport.cert, &transport.key) {
        (Some(cert), Some(key)) => Some(std::sync::Arc::new(
            crate::api::tls::Tls::load(cert, key).map_err(|e| anyhow::anyhow!(e))?,
        )),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together: give both, or neither"),
    };
    if tls.is_some() && crate::store::default_postgres().is_some() {
        // Processes sharing a PostgreSQL ledger forward commands to each other over plain HTTP (docs/operations.md).
        anyhow::bail!(
            "--tls-cert with a PostgreSQL ledger is not supported yet: the processes sharing it forward commands to each other over plain HTTP, which a TLS port would refuse. Terminate TLS in front of them (a load balancer) and give --insecure-http on a trusted network (docs/operations.md)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listener = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        if !auth.is_local() && !addr.ip().is_loopback() && tls.is_none() {
            if !transport.insecure_http {
                anyhow::bail!(
                    "refusing to listen on {addr} over plain HTTP: bearer tokens would cross the network in cleartext. Give --tls-cert FILE and --tls-key FILE, or --insecure-http when a TLS-terminating proxy is in front (docs/security.md)"
                );
            }
            tracing::warn!(%addr, "listening beyond loopback over plain HTTP (--insecure-http): bearer tokens cross the network in cleartext unless a TLS-terminating proxy is in front");
        }
        if auth.is_local() && !addr.ip().is_loopback() {
            anyhow::bail!(
                "refusing to listen on {addr}: without a tokens file (--tokens, or {OPERATOR_TOKEN_ENV}) the server runs in local mode, where every caller is an operator, so it listens on loopback only (127.0.0.1 or ::1); see docs/security.md"
            );
        }
        Ok::<_, anyhow::Error>(listener)
    })?;
    let addr = listener.local_addr()?;
    let mut ledger_config = LedgerConfig::new(dir);
    ledger_config.sharing = Some(crate::ledger::Sharing {
        address: advertised(shared.advertise, addr)?,
        lease: shared.lease,
    });
    let ledger = std::sync::Arc::new(Ledger::open(ledger_config)?);
    let writing = ledger.role() == crate::ledger::Role::Writer;
    if !writing {
        tracing::info!(writer = ?ledger.role(), "another process writes this ledger: this one serves reads and forwards commands to it");
    }
    let loaded = if sample_data && writing && ledger.store().head().position.0 == 0 {
        load_sample_data(&ledger)?;
        Some(ledger.store().head().position)
    } else {
        None
    };
    // The first clock advance runs before the banner, so the banner's count is current and says what it recorded.
    let advanced = crate::api::clock_advance()
        .filter(|_| writing)
        .map(|cmd| ledger.execute(cmd));
    // The tail and the head marker were checked at open; the rest of the chain is verified while the server runs.
    ledger.verify_in_background()?;
    let result = runtime.block_on(async {
        let mut relay_task = None;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut state = crate::api::AppState::new(std::sync::Arc::clone(&ledger), config, stop_rx)?
            .with_auth(std::sync::Arc::clone(&auth))
            .with_tls(tls.clone());
        state.insecure_http = transport.insecure_http && tls.is_none() && !addr.ip().is_loopback();
        state.cleartext_forwarding = transport.insecure_http;
        // The JetStream relay reads what is durable and publishes it; it never makes the writer wait.
        if let Some(relay) = state.config.relay.clone() {
            let status = std::sync::Arc::new(crate::relay::Status::new(relay));
            state.relay = Some(std::sync::Arc::clone(&status));
            let source = crate::relay::Source::Local(std::sync::Arc::clone(&ledger));
            relay_task = Some(tokio::spawn(crate::relay::run(
                status,
                source,
                state.stopping.clone(),
                false,
            )));
        }
        // SIGHUP reloads the tokens file and the certificate; listened for in every mode, before the banner, so that
        // a HUP (a renewal hook, say) never ends the server.
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            let (reload, certificate) = (std::sync::Arc::clone(&auth), tls.clone());
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    if reload.is_local() && certificate.is_none() {
                        tracing::info!("SIGHUP: nothing to reload (no tokens file, no certificate)");
                    }
                    if !reload.is_local() {
                        match reload.reload() {
                            Ok(n) => tracing::info!(principals = n, "tokens file reloaded"),
                            Err(e) => tracing::error!(error = %e, "tokens file not reloaded; the previous one stays in force"),
                        }
                    }
                    if let Some(t) = &certificate {
                        match t.reload() {
                            Ok(()) => tracing::info!("TLS certificate reloaded; new connections use it"),
                            Err(e) => tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays in force"),
                        }
                    }
                }
            });
        }
        // Written with errors ignored: a server whose stdout was closed (`serve | head -1`) keeps serving.
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            banner(
                &ledger,
                dir,
                &format!("{}://{addr}", if tls.is_some() { "https" } else { "http" }),
                loaded,
                sample_data,
                auth.is_local(),
                advanced.as_ref(),
            )
        );
        std::io::stdout().flush().ok();
        crate::api::serve(listener, state, stop_tx, shutdown_signal()).await?;
        // The relay ends with the server (its stop signal is the server's): waited for, briefly, so that it gives its
        // lease up for another server's relay to take at once.
        if let Some(task) = relay_task {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), task).await;
        }
        Ok::<(), anyhow::Error>(())
    });
    ledger.close();
    // Tasks still running (a connection closed at the end of the grace period) are given a moment, not forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result?;
    let _ = writeln!(
        std::io::stdout(),
        "stopped cleanly at position {}",
        ledger.store().head().position
    );
    Ok(ExitCode::SUCCESS)
}

/// What `serve` prints when it is ready: where it listens, what the ledger holds and how it got it, examples that
/// work in the mode it runs in, and the mode.
fn banner(
    ledger: &Ledger,
    dir: &std::path::Path,
    base: &str,
    loaded: Option<Position>,
    asked_for_sample: bool,
    local: bool,
    advanced: Option<&crate::ledger::Outcome>,
) -> String {
    let head = ledger.store().head().position;
    let mut t = format!(
        "partner-ledger listening on {base} (data: {}, {head} events)\n",
        crate::store::describe(dir)
    );
    match loaded {
        Some(n) => t.push_str(&format!(
            "\nSample data loaded because --sample-data was given: {n} events (the seed story of Contoso with partners Adatum and Bellows, then a generated workload). They are part of this ledger's history for good; use another --data folder for real data.\n"
        )),
        None if asked_for_sample => t.push_str(&format!(
            "\nSample data not loaded: the ledger already holds {head} events.\n"
        )),
        None if head.0 == 0 => t.push_str(
            "\nThe ledger is empty. Send commands to POST /v1/commands (docs/commands.md), or restart with --sample-data on a new --data folder to explore sample data.\n",
        ),
        None => {}
    }
    match advanced {
        Some(crate::ledger::Outcome::Committed { positions, .. })
            if positions.len() >= crate::domain::CLOCK_STEP_EVENTS =>
        {
            t.push_str(&format!(
                "\nThe clock is being advanced to now: at least {} transitions of admin relationships fell due since the last advance; they are recorded in steps of {} events before any other command (R36).\n",
                positions.len(),
                crate::domain::CLOCK_STEP_EVENTS
            ))
        }
        Some(crate::ledger::Outcome::Committed { positions, .. }) if !positions.is_empty() => {
            t.push_str(&format!(
                "\nThe clock was advanced to now: {} events recorded the admin relationships that expired or were extended since the last advance (R36).\n",
                positions.len()
            ))
        }
        Some(o @ (crate::ledger::Outcome::Refused { .. } | crate::ledger::Outcome::Unknown { .. })) => {
            t.push_str(&format!("\nThe clock could not be advanced: {}\n", o.to_json()))
        }
        _ => {}
    }
    let auth = if local {
        String::new()
    } else {
        "-H \"Authorization: Bearer $TOKEN\" ".to_string()
    };
    let contoso: Option<CustomerId> = CONTOSO.parse().ok();
    let has_contoso =
        contoso.is_some_and(|c| ledger.live().read(|st, _| st.customers.contains_key(&c)));
    t.push_str("\nTry:\n");
    if has_contoso {
        t.push_str(&format!("  curl {auth}{base}/v1/customers/{CONTOSO}\n  curl {auth}{base}/v1/partners/a0000000-0000-4000-8000-00000000000a\n  curl {auth}\"{base}/v1/customers/{CONTOSO}?as_of=2024-02-01T00:00:00Z\"\n  curl -N {auth}-H \"Accept: application/x-ndjson\" \"{base}/v1/events?customer={CONTOSO}\"\n"));
        if local {
            t.push_str(&format!("A refused command (partner B may not cancel the subscription of partner A: 422, R27):\n  curl -X POST -H \"Content-Type: application/json\" {base}/v1/commands -d '{{\"type\":\"CancelSubscription\",\"actor\":{{\"tenant\":\"b0000000-0000-4000-8000-00000000000b\",\"user\":\"you\",\"role\":\"partner_admin_agent\"}},\"subscription\":\"5a000000-0000-4000-8000-000000000001\",\"partner\":\"b0000000-0000-4000-8000-00000000000b\"}}'\n"));
        }
    } else {
        t.push_str(&format!("  curl {auth}{base}/healthz\n  curl -N {auth}-H \"Accept: application/x-ndjson\" {base}/v1/events\n  curl {auth}{base}/v1/openapi.json\n"));
    }
    t.push_str(&format!("  curl {auth}{base}/metrics\n\nCtrl-C (or SIGTERM) stops the server: it answers the commands in flight, waiting up to --shutdown-grace-ms, then flushes and exits.\n\n"));
    t.push_str(if local {
        "local mode: no tokens file, so every caller is treated as an operator and commands carry their own actor; listening on loopback only (docs/security.md)"
    } else {
        "authentication on: every request needs Authorization: Bearer <token> (docs/security.md); SIGHUP reloads the tokens file"
    });
    t
}

/// Completes on Ctrl-C or SIGTERM.
pub(super) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// The seed story, then a generated workload of 5,000 commands after it.
fn load_sample_data(ledger: &Ledger) -> anyhow::Result<()> {
    let mut tickets = Vec::new();
    for line in SEED_STORY
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
    {
        tickets
            .push(ledger.submit(
                crate::domain::parse_line(line).map_err(|e| anyhow::anyhow!("seed: {e}"))?,
            ));
    }
    let spec = crate::workload::WorkloadSpec {
        commands: 5_000,
        seed: 7,
        start: crate::domain::Timestamp::ymd_hms(2024, 2, 6, 0, 0, 0),
    };
    for line in crate::workload::generate(spec) {
        tickets.push(
            ledger.submit(
                crate::domain::parse_line(&line).map_err(|e| anyhow::anyhow!("sample: {e}"))?,
            ),
        );
    }
    for t in tickets {
        t.wait();
    }
    Ok(())
}
