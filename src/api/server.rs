//! Serving connections: hyper directly (header timeout, accept errors survived, graceful shutdown with a grace
//! period), and the clock scheduler that issues `AdvanceClock` at start-up and every `clock_interval` (R36).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{router, AppState};
use crate::ledger::Ledger;

/// The most streams one HTTP/2 connection may have open at once.
pub const MAX_STREAMS: u32 = 100;
/// The largest header list an HTTP/2 request may send, in bytes.
pub const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Streams a client may reset before the server accepted them; more and the connection is closed.
const MAX_PENDING_RESETS: usize = 20;
/// Streams the server may reset because of a client's errors on one connection before it closes it.
const MAX_ERROR_RESETS: usize = 1024;

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
    // HTTP/1.1 and HTTP/2 on every connection: over TLS as ALPN agreed, in plain text by the client's first bytes
    // (HTTP/2 by prior knowledge, h2c); `connection.rs`. HTTP/2's limits keep one connection from exhausting the
    // server: streams at once, the size of a header list, and resets (a client resetting streams as fast as it opens
    // them, CVE-2023-44487, gets its connection closed).
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(state.config.header_timeout);
    let mut http2 = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    http2
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
        .max_local_error_reset_streams(Some(MAX_ERROR_RESETS))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let protocols = Arc::new(super::connection::Protocols {
        http1,
        http2,
        idle: state.config.header_timeout,
    });
    let tls = state.tls.clone();
    let grace = state.config.shutdown_grace;
    let stopping = state.stopping.clone();
    let app = router(state);
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
                let acceptor = tls.as_ref().map(|t| t.acceptor());
                connections.spawn(super::connection::serve(
                    stream,
                    acceptor,
                    Arc::clone(&protocols),
                    app.clone(),
                    stopping.clone(),
                ));
            }
            // Finished connections are reaped as they end, so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    // Every connection is asked to finish what it is doing and close; those still open after the grace are closed.
    let _ = stop.send(true);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
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
