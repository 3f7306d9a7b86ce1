//! The HTTP side of the suite: the real server in a child process (`partner-ledger serve`), and clients on loopback,
//! each with its own keep-alive connection.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// A server process on a data folder.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// How long from starting the process until it listened.
    pub started_in: Duration,
}

impl Server {
    /// Starts `partner-ledger serve` (this very binary) on an ephemeral loopback port, without clock ticks (and, as
    /// always unless asked, without sample data).
    pub fn start(data: &Path) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("cannot find the partner-ledger binary")?;
        let started = Instant::now();
        let mut child = Command::new(exe)
            .arg("--data")
            .arg(data)
            .envs(
                crate::store::default_postgres()
                    .map(|t| t.child_env().to_vec())
                    .unwrap_or_default(),
            )
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--clock-interval",
                "86400",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the server")?;
        let stdout = child.stdout.take().context("no server output")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                let _ = child.wait();
                anyhow::bail!("the server stopped before listening");
            };
            let line = line?;
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                break addr.parse().context("the server printed no address")?;
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server {
            child,
            addr,
            started_in: started.elapsed(),
        })
    }

    /// Its base URL, `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server gracefully (SIGTERM) and waits for it; its exit status.
    pub fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        Ok(self.child.wait()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Client {
    send: SendRequest<Full<Bytes>>,
    host: String,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Client {
            send,
            host: addr.to_string(),
        })
    }

    /// Sends a request and reads the whole answer: the status and the body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(Full::new(body))?;
        self.send.ready().await?;
        let res = self.send.send_request(req).await?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// `POST /v1/commands` with one JSON command.
    pub async fn command(&mut self, line: &str) -> anyhow::Result<(u16, Bytes)> {
        self.request(
            "POST",
            "/v1/commands",
            Some("application/json"),
            Bytes::copy_from_slice(line.as_bytes()),
        )
        .await
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(u16, Bytes)> {
        self.request("GET", path, None, Bytes::new()).await
    }

    /// Opens a streaming `GET` and returns its body as it arrives.
    pub async fn stream(&mut self, path: &str) -> anyhow::Result<hyper::body::Incoming> {
        let req = hyper::Request::builder()
            .method("GET")
            .uri(path)
            .header("host", &self.host)
            .header("accept", "application/x-ndjson")
            .body(Full::new(Bytes::new()))?;
        self.send.ready().await?;
        let res = self.send.send_request(req).await?;
        anyhow::ensure!(
            res.status().is_success(),
            "the stream answered {}",
            res.status()
        );
        Ok(res.into_body())
    }
}

/// The resident memory of a process (its high-water mark and now), in bytes, from `/proc`.
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// The log's head position, from `/healthz`.
pub async fn head(c: &mut Client) -> anyhow::Result<u64> {
    let (_, body) = c.get("/healthz").await?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v["head"].as_u64().context("/healthz gave no head")
}
