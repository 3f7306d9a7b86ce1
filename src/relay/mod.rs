//! The JetStream relay: the log, in order, into a NATS JetStream stream whose sequence N is ledger position N, each
//! event a CloudEvent in binary mode (docs/streams.md). The ledger stays the source of truth: the stream can be
//! deleted and rebuilt from it at any time.
//!
//! - `stream.rs` creates or checks the stream and finds where to continue: its last sequence, once that message is
//!   shown to be the ledger's event at that position (same event id, same hash).
//! - `lease.rs`: one relay publishes into a stream at a time.
//! - `source.rs`: where the log is read (this server's ledger, or a running server over HTTP).
//! - `cloudevents.rs`: subjects, headers and the structured form the HTTP streams share.
//!
//! Exactness comes from the stream, not from this process: each publish carries `Nats-Msg-Id` (the event id) and
//! `Nats-Expected-Last-Sequence` (position − 1), so the stream refuses a gap, a repeat or a reordering whatever
//! happens to the relay. The relay never slows the writer: it reads what is already durable, and falls behind when the
//! broker is slow or away.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tokio::sync::{mpsc, watch};

use crate::domain::Position;

pub mod cloudevents;
pub mod lease;
pub mod source;
mod stream;
pub mod throwaway;

pub use cloudevents::Described;
pub use source::{Server, Source};

/// How the relay reaches the broker and what it publishes.
#[derive(Clone, Debug)]
pub struct Config {
    /// The NATS server (`nats://HOST:PORT`, credentials allowed in the URL; never logged).
    pub url: String,
    /// The JetStream stream's name.
    pub stream: String,
    /// The subjects' first token(s): events go to `PREFIX.customer.…` and `PREFIX.partner.…`.
    pub prefix: String,
    /// The CloudEvents `source` attribute.
    pub source_uri: String,
    /// How long the relay lease lasts unless renewed.
    pub lease: Duration,
    /// The most publishes awaiting the broker's acknowledgement at once.
    pub window: usize,
    /// The stream's replicas when the relay creates it (1 on a single server; 3 on a cluster).
    pub replicas: usize,
}

impl Config {
    /// The defaults, for `url`.
    pub fn new(url: impl Into<String>) -> Config {
        Config {
            url: url.into(),
            stream: DEFAULT_STREAM.into(),
            prefix: cloudevents::DEFAULT_PREFIX.into(),
            source_uri: cloudevents::DEFAULT_SOURCE.into(),
            lease: Duration::from_secs(5),
            window: 256,
            replicas: 1,
        }
    }

    /// Checks what an operator gave, naming the option at fault.
    pub fn check(&self) -> Result<(), String> {
        if self.stream.is_empty()
            || !self
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "--nats-stream `{}`: a stream name is letters, digits, - and _",
                self.stream
            ));
        }
        if !cloudevents::valid_prefix(&self.prefix) {
            return Err(format!(
                "--nats-subject-prefix `{}`: dot-separated tokens of letters, digits, - and _ (no wildcards)",
                self.prefix
            ));
        }
        if self.source_uri.is_empty() || self.source_uri.chars().any(char::is_whitespace) {
            return Err(format!(
                "--cloudevents-source `{}` is not a URI reference",
                self.source_uri
            ));
        }
        Ok(())
    }

    /// The NATS server without credentials, for logs, errors and `/healthz`.
    pub fn place(&self) -> String {
        redact(&self.url)
    }
}

/// The default stream name (`--nats-stream`).
pub const DEFAULT_STREAM: &str = "PARTNER_LEDGER";

/// A NATS URL with any `user:password@` or `token@` taken out.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(a)) if a > s => format!("{}{}", &u[..s + 3], &u[a + 1..]),
            (None, Some(a)) => u[a + 1..].to_string(),
            _ => u.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What the relay is doing, for `/healthz`, `/metrics` and the relay's own progress lines.
pub struct Status {
    /// The last position the stream holds (confirmed by the broker).
    relayed: watch::Sender<Position>,
    phase: Mutex<String>,
    error: Mutex<Option<String>>,
    /// From reading an event off the log to the broker's acknowledgement.
    latency: crate::ledger::LatencyHistogram,
    pub config: Config,
}

impl Status {
    pub fn new(config: Config) -> Status {
        Status {
            relayed: watch::channel(Position(0)).0,
            phase: Mutex::new("starting".into()),
            error: Mutex::new(None),
            latency: Default::default(),
            config,
        }
    }

    /// The last position the stream is known to hold.
    pub fn relayed(&self) -> Position {
        *self.relayed.borrow()
    }

    /// Follows [`Status::relayed`].
    pub fn watch_relayed(&self) -> watch::Receiver<Position> {
        self.relayed.subscribe()
    }

    /// What it is doing, and the last error since it last made progress.
    pub fn phase(&self) -> (String, Option<String>) {
        (
            self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            self.error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        )
    }

    /// The latency histogram: cumulative bucket counts (the last is the total) and the sum in seconds.
    pub fn latency(&self) -> (Vec<u64>, f64) {
        self.latency.read()
    }

    fn set_phase(&self, phase: impl Into<String>) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase.into();
    }

    fn set_error(&self, error: Option<String>) {
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    fn record(&self, position: Position, read_at: Instant) {
        self.relayed.send_replace(position);
        self.latency.record(read_at.elapsed());
    }
}

/// Why relaying stopped.
#[derive(Debug)]
enum Fault {
    /// Worth trying again (the broker or the server away, the lease lost, the stream moved): resynchronise.
    Passing(String),
    /// The stream is not this ledger's copy, or is configured so it cannot stay one: an operator must act.
    Fatal(String),
}

/// Relays until `stop` turns true. Passing faults are retried with a growing pause; a fatal one is returned when
/// `give_up` is set, and otherwise retried every 30 seconds (an operator may delete the stream to have it rebuilt).
pub async fn run(
    status: std::sync::Arc<Status>,
    source: Source,
    mut stop: watch::Receiver<bool>,
    give_up: bool,
) -> Result<(), String> {
    let config = status.config.clone();
    let holder = format!(
        "partner-ledger relay pid {} on {}",
        std::process::id(),
        crate::store::postgres::hostname()
    );
    status.set_phase(format!("connecting to {}", config.place()));
    let client = async_nats::ConnectOptions::new()
        .name(&holder)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(config.url.as_str());
    let client = tokio::select! {
        c = client => c.map_err(|e| format!("cannot connect to NATS at {}: {e}", config.place()))?,
        _ = stopped(&mut stop) => return Ok(()),
    };
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_ack_inflight(config.window.max(1) * 2)
        .backpressure_on_inflight(true)
        .build(client);
    let mut pause = Duration::from_millis(200);
    let mut held: Option<lease::Lease> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        if held.as_ref().is_none_or(|l| l.lost()) {
            status.set_phase("waiting for the relay lease");
            let taking = lease::Lease::acquire(&js, &config.stream, &holder, config.lease, |who| {
                status.set_phase(format!("waiting for the relay lease, held by {who}"));
            });
            held = tokio::select! {
                l = taking => match l {
                    Ok(l) => Some(l),
                    Err(e) => {
                        status.set_error(Some(e.clone()));
                        tracing::warn!(error = %e, "relay");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
                _ = stopped(&mut stop) => break,
            };
        }
        let Some(lease) = held.as_ref() else { continue };
        let before = status.relayed();
        let result = tokio::select! {
            r = relay(&js, &config, &source, &status, lease) => r,
            _ = stopped(&mut stop) => break,
        };
        let error = match result {
            Ok(()) => break,
            Err(Fault::Passing(e)) => e,
            Err(Fault::Fatal(e)) => {
                status.set_phase("stopped");
                status.set_error(Some(e.clone()));
                tracing::error!(error = %e, "the relay stopped");
                // Given up either way: another relay may find the stream fixed sooner.
                if let Some(l) = held.take() {
                    l.release().await;
                }
                if give_up {
                    return Err(e);
                }
                pause = Duration::from_secs(30);
                e
            }
        };
        if status.relayed() > before {
            pause = Duration::from_millis(200);
        }
        tracing::warn!(error = %error, relayed = %status.relayed(), "relay: trying again");
        status.set_error(Some(error));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped(&mut stop) => break,
        }
        pause = (pause * 2).clamp(Duration::from_millis(200), Duration::from_secs(30));
    }
    status.set_phase("stopped");
    if let Some(l) = held.take() {
        l.release().await;
    }
    Ok(())
}

/// How often an idle relay checks that the stream still ends where it left it.
const IDLE_LOOK: Duration = Duration::from_secs(2);

/// Creates `config`'s stream as the relay does, or checks an existing one (benchmarks and tools).
pub async fn create_stream(js: &jetstream::Context, config: &Config) -> Result<(), String> {
    stream::ensure(js, config)
        .await
        .map(|_| ())
        .map_err(|f| match f {
            Fault::Passing(e) | Fault::Fatal(e) => e,
        })
}

/// Returns once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Relays from where the stream ends until something fails (or forever).
async fn relay(
    js: &jetstream::Context,
    config: &Config,
    source: &Source,
    status: &Status,
    lease: &lease::Lease,
) -> Result<(), Fault> {
    status.set_phase("checking the stream");
    let mut stream = stream::ensure(js, config).await?;
    // The first publish after the check carries no `Nats-Expected-Last-Msg-Id`: the check has just matched the last
    // message's id and hash, and the relay does not depend on the broker remembering that id across its restarts
    // (nats-server 2.15.1 does, even past the duplicate window; the server's code rebuilds it from the duplicate
    // window's entries, which other versions may not). `Nats-Expected-Last-Sequence` still guards that publish.
    let last = stream::check(&mut stream, source, config).await?;
    let mut previous: Option<String> = None;
    status.relayed.send_replace(last);
    status.set_phase("relaying");
    let (tx, mut rx) = mpsc::channel(config.window.max(1) * 4);
    let reader = source.follow(last, tx);
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _reader = Abort(reader);
    let mut batch = Vec::with_capacity(config.window);
    let mut looked = Instant::now();
    loop {
        if lease.lost() {
            return Err(Fault::Passing("the relay lease was lost".into()));
        }
        // Every two seconds, idle or not, look at the stream: deleted, or published into by something else, it no
        // longer ends where this relay left it, and the relay resynchronises (rebuilding it, or stopping to say why).
        if looked.elapsed() >= IDLE_LOOK {
            looked = Instant::now();
            let end = stream
                .info()
                .await
                .map_err(|e| Fault::Passing(format!("reading stream {}: {e}", config.stream)))?
                .state
                .last_sequence;
            if end != status.relayed().0 {
                return Err(Fault::Passing(format!(
                    "stream {} ends at sequence {end}, not at position {} where this relay left it",
                    config.stream,
                    status.relayed()
                )));
            }
        }
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = tokio::time::sleep(IDLE_LOOK) => continue,
        };
        let Some(first) = first else {
            return Err(Fault::Passing(format!(
                "reading {} stopped",
                source.describe()
            )));
        };
        batch.clear();
        batch.push(first.map_err(Fault::Passing)?);
        while batch.len() < config.window {
            match rx.try_recv() {
                Ok(r) => batch.push(r.map_err(Fault::Passing)?),
                Err(_) => break,
            }
        }
        let mut pending = Vec::with_capacity(batch.len());
        for read in &batch {
            let described = Described::of(&read.raw)
                .map_err(|e| Fault::Passing(format!("position {}: {e}", read.position)))?;
            let message = message(
                &described,
                previous.as_deref(),
                &config.source_uri,
                read.raw.clone(),
            );
            let subject = described.subject(&config.prefix);
            previous = Some(described.event_id);
            let ack = js.send_publish(subject, message).await.map_err(|e| {
                Fault::Passing(format!("publishing position {}: {e}", read.position))
            })?;
            pending.push(ack);
        }
        for (read, ack) in batch.iter().zip(pending) {
            match ack.await {
                Ok(ack) if ack.sequence == read.position.0 => {
                    status.record(read.position, read.read_at);
                    status.set_error(None);
                }
                Ok(ack) => {
                    return Err(Fault::Fatal(format!(
                        "stream {} took position {} as a duplicate of its sequence {}: the stream holds this ledger's event {} at another sequence; delete the stream to have it rebuilt",
                        config.stream, read.position, ack.sequence, read.position
                    )))
                }
                Err(e) => {
                    return Err(Fault::Passing(format!(
                        "the broker did not take position {}: {e}",
                        read.position
                    )))
                }
            }
        }
    }
}

/// A JetStream publish of one event: its envelope as the body, CloudEvents attributes and JetStream conditions as
/// headers; `previous` is the event id of the position before (none for position 1).
pub fn message(
    described: &Described,
    previous: Option<&str>,
    source_uri: &str,
    raw: bytes::Bytes,
) -> jetstream::message::PublishMessage {
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in described.headers(source_uri) {
        headers.insert(name, value.as_str());
    }
    // The stream must end with this ledger's previous event, not merely at its sequence: a message published into
    // the stream by something else fails every later publish of a pipelined batch, instead of being stepped over.
    if let Some(id) = previous {
        headers.insert("Nats-Expected-Last-Msg-Id", id);
    }
    jetstream::message::PublishMessage::build()
        .payload(raw)
        .headers(headers)
}
