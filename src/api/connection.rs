//! One client connection, from accept to close: the TLS handshake (bounded), the protocol (ALPN over TLS; the first
//! bytes in plain text: the HTTP/2 preface means h2c), then hyper's HTTP/1.1 or HTTP/2 connection, closed gracefully
//! when the server shuts down and, for HTTP/2, when no stream has been open for `idle`. HTTP/1.1's own header timeout
//! closes a connection that sends no request within `idle`, the first or the next one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// The two protocols' settings, shared by every connection.
pub(super) struct Protocols {
    pub http1: hyper::server::conn::http1::Builder,
    pub http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    /// How long a connection may stay without a request (HTTP/2: without an open stream), and how long a TLS
    /// handshake or the first bytes may take.
    pub idle: Duration,
}

/// The HTTP/2 connection preface's first bytes.
const PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Serves one accepted connection until it ends.
pub(super) async fn serve(
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    protocols: Arc<Protocols>,
    app: axum::Router,
    mut stopping: watch::Receiver<bool>,
) {
    let idle = protocols.idle;
    match tls {
        Some(acceptor) => {
            let handshake = tokio::select! {
                done = tokio::time::timeout(idle, acceptor.accept(stream)) => done,
                _ = stopping.wait_for(|s| *s) => return,
            };
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => {
                    return tracing::debug!(
                        "TLS handshake not finished in time; connection dropped"
                    )
                }
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            drive(stream, h2, &protocols, app, stopping).await;
        }
        None => {
            // The first bytes tell HTTP/2 by prior knowledge (h2c) from HTTP/1.1, within the same bound.
            let mut first = [0u8; PREFACE.len()];
            let sniff = async {
                loop {
                    let n = stream.peek(&mut first).await?;
                    if n == 0 || n >= PREFACE.len() || first[..n] != PREFACE[..n] {
                        return Ok::<_, std::io::Error>(n >= PREFACE.len() && first == *PREFACE);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            let h2 = tokio::select! {
                seen = tokio::time::timeout(idle, sniff) => match seen {
                    Ok(Ok(h2)) => h2,
                    Ok(Err(_)) => return,
                    Err(_) => return tracing::debug!("no request in time; connection dropped"),
                },
                _ = stopping.wait_for(|s| *s) => return,
            };
            drive(stream, h2, &protocols, app, stopping).await;
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 on `io` until the connection ends, shutting it down gracefully when the server stops
/// or (HTTP/2) when it has been idle too long.
async fn drive<I>(
    io: I,
    h2: bool,
    protocols: &Protocols,
    app: axum::Router,
    mut stopping: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let guard = Open::new(Arc::clone(&activity));
            let answer = tower::ServiceExt::oneshot(app.clone(), req.map(Body::new));
            async move {
                let response = answer.await?;
                Ok::<_, std::convert::Infallible>(response.map(|b| {
                    Body::new(Tracked {
                        inner: b,
                        _open: guard,
                    })
                }))
            }
        })
    };
    let io = TokioIo::new(io);
    let ended = if h2 {
        let conn = protocols.http2.serve_connection(io, service);
        run(
            conn,
            &mut stopping,
            Some((&activity, protocols.idle)),
            |c| c.graceful_shutdown(),
        )
        .await
    } else {
        let conn = protocols.http1.serve_connection(io, service);
        run(conn, &mut stopping, None, |c| c.graceful_shutdown()).await
    };
    match ended {
        Some(Err(e)) => tracing::debug!(error = %e, "connection ended"),
        None => tracing::debug!("idle connection that did not close when asked; dropped"),
        Some(Ok(())) => {}
    }
}

/// Polls a connection to its end; asks it to shut down gracefully once the server stops, or once no stream has been
/// open for the idle bound (when given). A connection asked for being idle that has not closed one bound later (an
/// HTTP/2 client that never sent its preface) is dropped: `None`.
async fn run<C, T, E>(
    conn: C,
    stopping: &mut watch::Receiver<bool>,
    idle: Option<(&Arc<Activity>, Duration)>,
    shut: impl Fn(Pin<&mut C>),
) -> Option<Result<T, E>>
where
    C: Future<Output = Result<T, E>>,
{
    tokio::pin!(conn);
    // When the connection was asked to shut down, and whether for being idle.
    let mut asked: Option<(Instant, bool)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            ended = conn.as_mut() => return Some(ended),
            _ = stopping.wait_for(|s| *s), if asked.is_none() => {
                asked = Some((Instant::now(), false));
                shut(conn.as_mut());
            }
            _ = tick.tick(), if idle.is_some() => {
                let Some((activity, bound)) = idle else { continue };
                match asked {
                    None if activity.idle_for() > bound => {
                        asked = Some((Instant::now(), true));
                        shut(conn.as_mut());
                    }
                    Some((at, true)) if at.elapsed() > bound => return None,
                    _ => {}
                }
            }
        }
    }
}

/// Streams open on a connection (a request until its answer's body ends), and since when none is.
struct Activity {
    open: AtomicUsize,
    since: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            open: AtomicUsize::new(0),
            since: Mutex::new(Instant::now()),
        }
    }
}

impl Activity {
    /// How long no stream has been open (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.open.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        self.since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

/// One open stream, counted until dropped (with its answer's body).
struct Open(Arc<Activity>);

impl Open {
    fn new(activity: Arc<Activity>) -> Open {
        activity.open.fetch_add(1, Ordering::SeqCst);
        Open(activity)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        *self.0.since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An answer's body that keeps its stream counted as open until it ends or is dropped.
struct Tracked {
    inner: Body,
    _open: Open,
}

impl HttpBody for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
