//! Serving connections: hyper directly (header timeout, accept errors survived, graceful shutdown with a grace
//! period), and the clock scheduler that issues `AdvanceClock` at start-up and every `clock_interval` (R36).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{router, AppState};
use crate::ledger::Ledger;

/// Serves `router` on `listener` until `shutdown` completes: then it stops accepting, ends the streams, lets in-flight
/// requests finish (their commands are acknowledged) for up to [`ServeConfig::shutdown_grace`], and returns; the
/// connections still open then are closed. Close the ledger afterwards to flush.
///
/// Connections are served by hyper directly (not `axum::serve`) so that a client slower than
/// [`ServeConfig::header_timeout`] to send its headers is disconnected, and a failed `accept` (out of file
/// descriptors) is logged and retried instead of ending the server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    stop: watch::Sender<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let scheduler = tokio::spawn(scheduler(
        Arc::clone(&state.ledger),
        state.config.clock_interval,
        state.stopping.clone(),
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(state.config.header_timeout);
    let grace = state.config.shutdown_grace;
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let conn = graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
                connections.spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended");
                    }
                });
            }
            // Finished connections are reaped as they end, so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop.send(true);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            grace_ms = grace.as_millis(),
            "connections still open after the shutdown grace period are closed"
        );
    }
    connections.abort_all();
    scheduler.abort();
    Ok(())
}

/// Issues `AdvanceClock` at start-up and then every `interval`, so time-driven transitions are recorded on time (R36).
/// After downtime the first one catches up, in steps of at most `domain::CLOCK_STEP_EVENTS` events that the writer
/// decides before any other command.
async fn scheduler(ledger: Arc<Ledger>, interval: Duration, mut stopping: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.changed() => return,
        }
        // Where several processes share a ledger, the one that writes advances the clock.
        if ledger.role() != crate::ledger::Role::Writer {
            continue;
        }
        if let Some(cmd) = clock_advance() {
            let outcome = ledger.submit_async(cmd).await.outcome().await;
            tracing::debug!(outcome = %outcome.to_json(), "clock advanced");
        }
    }
}

/// The scheduler's `AdvanceClock` to the current time (actor `system`, user `scheduler`).
pub fn clock_advance() -> Option<crate::domain::Submitted> {
    use crate::domain::command::{body, Actor, Body, Role};
    let tenant = "00000000-0000-4000-8000-00000000005c".parse().ok()?;
    Some(crate::domain::Submitted {
        command_id: None,
        at: None,
        actor: Actor {
            tenant,
            user: "scheduler".into(),
            role: Role::System,
        },
        correlation_id: None,
        body: Body::AdvanceClock(body::AdvanceClock {
            to: crate::domain::Timestamp::from_datetime(chrono::Utc::now()),
        }),
    })
}
