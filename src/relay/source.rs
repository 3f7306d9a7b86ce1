//! Where the relay reads the log: the ledger this process serves (`serve --nats`), or a running server over HTTP
//! (`partner-ledger relay`, since sled lets one process open a folder). Either way it delivers every position after
//! a given one, in order, then the new ones as they commit.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::domain::Position;
use crate::ledger::Ledger;

/// One event read from the log, with when it was read (for the commit-to-broker latency).
pub struct Read {
    pub position: Position,
    pub raw: Bytes,
    pub read_at: Instant,
}

/// The most events read from the store in one go.
const CHUNK: u64 = 1024;

/// How long a request to the server may take to be answered.
const ANSWER: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a stream from the server may stay silent: it sends a heartbeat at least every 15 s by default
/// (`serve --heartbeat-ms`), so a minute of nothing is a dead connection, and the relay reads again.
const SILENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Where the relay reads the log.
#[derive(Clone)]
pub enum Source {
    /// The ledger this process serves.
    Local(Arc<Ledger>),
    /// A running server, read over HTTP with an operator's (or auditor's) token.
    Server(Server),
}

/// A running server: its base URL (`http://host:port`) and the bearer token to read with.
#[derive(Clone)]
pub struct Server {
    pub url: String,
    pub token: Option<String>,
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

/// One client (and connection pool) for every request of this process.
fn client() -> &'static Client {
    static CLIENT: std::sync::OnceLock<Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector)
    })
}

impl Server {
    /// Checks a `--server` URL: `http://HOST:PORT` (HTTPS is not spoken by the relay yet: see docs/streams.md).
    pub fn parse(url: &str, token: Option<String>) -> Result<Server, String> {
        let parsed: axum::http::Uri = url
            .parse()
            .map_err(|e| format!("--server `{url}` is not a URL: {e}"))?;
        match parsed.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "--server `{url}`: the relay reads over plain HTTP only; run it on the server's host against its loopback address, or run the relay inside the server (`serve --nats`)"
                ))
            }
            _ => return Err(format!("--server `{url}` must be http://HOST:PORT")),
        }
        if parsed.host().is_none() || parsed.path() != "/" && !parsed.path().is_empty() {
            return Err(format!("--server `{url}` must be http://HOST:PORT"));
        }
        Ok(Server {
            url: url.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// GET `path`, taking the answer as `accept` (the server answers 406 to a media type it would not send).
    async fn get(
        &self,
        client: &Client,
        path: &str,
        accept: &str,
    ) -> Result<hyper::body::Incoming, String> {
        let mut request =
            hyper::Request::get(format!("{}{path}", self.url)).header("accept", accept);
        if let Some(t) = &self.token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let request = request
            .body(http_body_util::Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(ANSWER, client.request(request))
            .await
            .map_err(|_| {
                format!(
                    "the server at {} did not answer GET {path} within {ANSWER:?}",
                    self.url
                )
            })?
            .map_err(|e| format!("cannot reach the server at {}: {e}", self.url))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.into_body().collect().await.map(|b| b.to_bytes());
            let body = body
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            return Err(format!(
                "the server at {} answered {status} to GET {path}: {body}",
                self.url
            ));
        }
        Ok(response.into_body())
    }

    /// The event lines of the NDJSON at `path` (heartbeats skipped).
    async fn lines(&self, client: &Client, path: &str) -> Result<Lines, String> {
        Ok(Lines {
            body: self.get(client, path, "application/x-ndjson").await?,
            pending: Vec::new(),
            url: self.url.clone(),
        })
    }
}

/// Lines of an NDJSON response, read as they arrive.
struct Lines {
    body: hyper::body::Incoming,
    pending: Vec<u8>,
    url: String,
}

impl Lines {
    /// The next event line; `None` when the response ended.
    async fn next(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            if let Some(end) = memchr::memchr(b'\n', &self.pending) {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let line = &line[..line.len() - 1];
                if line.is_empty() || line.starts_with(b"{\"heartbeat\"") {
                    continue;
                }
                return Ok(Some(Bytes::copy_from_slice(line)));
            }
            let frame = tokio::time::timeout(SILENCE, self.body.frame())
                .await
                .map_err(|_| {
                    format!("the stream from {} sent nothing for {SILENCE:?}", self.url)
                })?;
            let Some(frame) = frame else {
                return Ok(None);
            };
            let frame = frame.map_err(|e| format!("the stream from {} broke: {e}", self.url))?;
            if let Ok(data) = frame.into_data() {
                self.pending.extend_from_slice(&data);
            }
        }
    }
}

fn position_of(raw: &[u8]) -> Result<Position, String> {
    #[derive(serde::Deserialize)]
    struct P {
        position: Position,
    }
    serde_json::from_slice::<P>(raw)
        .map(|p| p.position)
        .map_err(|e| format!("the server sent a line that is not an event envelope: {e}"))
}

impl Source {
    /// What it is, for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Source::Local(_) => "this server's ledger".into(),
            Source::Server(s) => format!("the server at {}", s.url),
        }
    }

    /// The log's head.
    pub async fn head(&self) -> Result<Position, String> {
        match self {
            Source::Local(l) => Ok(l.store().head().position),
            Source::Server(s) => {
                let body = s.get(client(), "/healthz", "application/json").await?;
                let bytes = tokio::time::timeout(ANSWER, body.collect())
                    .await
                    .map_err(|_| {
                        format!("the server at {} did not finish /healthz in time", s.url)
                    })?
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                v["head"].as_u64().map(Position).ok_or_else(|| {
                    format!("the server at {} did not say its head in /healthz", s.url)
                })
            }
        }
    }

    /// The envelope stored at `position` (which must exist).
    pub async fn event_at(&self, position: Position) -> Result<Bytes, String> {
        match self {
            Source::Local(l) => {
                let l = Arc::clone(l);
                tokio::task::spawn_blocking(move || {
                    match l
                        .store()
                        .read(Position(position.0 - 1), Some(position))
                        .next()
                    {
                        Some(Ok(e)) => Ok(Bytes::from(e.raw)),
                        Some(Err(e)) => Err(e.to_string()),
                        None => Err(format!("the ledger has no position {position}")),
                    }
                })
                .await
                .map_err(|e| e.to_string())?
            }
            Source::Server(s) => {
                let path = format!("/v1/events?from={}&limit=1", position.0 - 1);
                let found = s.lines(client(), &path).await?.next().await?;
                found.ok_or_else(|| format!("the server at {} has no position {position}", s.url))
            }
        }
    }

    /// Sends every event after `after`, in order, then each new one as it commits, until `tx` is closed or the
    /// read fails (the error is sent last).
    pub fn follow(
        &self,
        after: Position,
        tx: mpsc::Sender<Result<Read, String>>,
    ) -> JoinHandle<()> {
        match self.clone() {
            Source::Local(l) => tokio::spawn(async move {
                if let Err(e) = follow_local(l, after, &tx).await {
                    let _ = tx.send(Err(e)).await;
                }
            }),
            Source::Server(s) => tokio::spawn(async move {
                if let Err(e) = follow_server(s, after, &tx).await {
                    let _ = tx.send(Err(e)).await;
                }
            }),
        }
    }
}

async fn follow_server(
    server: Server,
    after: Position,
    tx: &mpsc::Sender<Result<Read, String>>,
) -> Result<(), String> {
    let mut lines = server
        .lines(client(), &format!("/v1/events?from={}", after.0))
        .await?;
    let mut expected = after.0 + 1;
    while let Some(raw) = lines.next().await? {
        let position = position_of(&raw)?;
        if position.0 != expected {
            return Err(format!(
                "the server sent position {position} where {expected} was due"
            ));
        }
        expected += 1;
        let read = Read {
            position,
            raw,
            read_at: Instant::now(),
        };
        if tx.send(Ok(read)).await.is_err() {
            return Ok(());
        }
    }
    Err(format!("the server at {} ended the stream", server.url))
}

async fn follow_local(
    ledger: Arc<Ledger>,
    mut after: Position,
    tx: &mpsc::Sender<Result<Read, String>>,
) -> Result<(), String> {
    let mut head = ledger.watch_head();
    loop {
        let upto = *head.borrow_and_update();
        while after < upto {
            let l = Arc::clone(&ledger);
            let from = after;
            let chunk = tokio::task::spawn_blocking(move || {
                let end = Position((from.0 + CHUNK).min(upto.0));
                l.store()
                    .read(from, Some(end))
                    .map(|e| e.map(|e| (e.position, Bytes::from(e.raw))))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            let read_at = Instant::now();
            if chunk.is_empty() {
                return Err(format!(
                    "the log has no position {} though its head is {upto}",
                    after.0 + 1
                ));
            }
            for (position, raw) in chunk {
                after = position;
                if tx
                    .send(Ok(Read {
                        position,
                        raw,
                        read_at,
                    }))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
        if head.changed().await.is_err() {
            return Ok(());
        }
    }
}
