//! TLS, HTTP/2 and h2c against the real binary: a certificate made by the test (rcgen), clients that trust only it
//! (tokio-rustls and hyper's own HTTP/2 and HTTP/1.1 connections, so that "one connection" is exactly one).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

const OP: &str = r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops@ledger.example","role":"operator"}"#;

fn register(n: usize) -> String {
    format!(
        r#"{{"type":"RegisterCustomer","actor":{OP},"customer":"c0000000-0000-4000-8000-{n:012x}","company_name":"Customer {n}","domain":"c{n}.onmicrosoft.com","country":"NL","cloud":"public"}}"#
    )
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files in `dir`: its DER and the paths.
fn certificate(dir: &Path, name: &str) -> (Vec<u8>, std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert.der().to_vec(), cert_path, key_path)
}

/// A TLS client configuration trusting only `trusted` (DER), offering `alpn`.
fn client_config(trusted: &[u8], alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(trusted.to_vec()))
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to `addr` trusting only `trusted`: the stream, or the handshake's error.
async fn connect(addr: std::net::SocketAddr, trusted: &[u8], alpn: &[u8]) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(client_config(trusted, alpn));
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await
}

/// The certificate the server presented on `stream`.
fn presented(stream: &Tls) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// One HTTP/2 connection over any stream.
async fn h2<S>(io: S) -> Sender
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(sender: &mut Sender, path: &str) -> (u16, hyper::HeaderMap, Value) {
    let req = Request::get(format!("https://127.0.0.1{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = sender.send_request(req).await.unwrap();
    let (parts, body) = r.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn post(sender: &mut Sender, line: &str) -> (u16, Value) {
    let req = Request::post("https://127.0.0.1/v1/commands")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(line.to_string())))
        .unwrap();
    let r = sender.send_request(req).await.unwrap();
    let status = r.status().as_u16();
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// Opens a live NDJSON stream of events after `from` on `sender`; the body, to read from.
async fn stream(sender: &mut Sender, from: u64) -> hyper::body::Incoming {
    let req = Request::get(format!("https://127.0.0.1/v1/events?from={from}"))
        .header("accept", "application/x-ndjson")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = sender.send_request(req).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.into_body()
}

/// The next event's position on a stream (heartbeats skipped).
async fn next_position(body: &mut hyper::body::Incoming, buf: &mut String) -> u64 {
    loop {
        if let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                if let Some(p) = v["position"].as_u64() {
                    if v.get("type").is_some() || v.get("event_id").is_some() {
                        return p;
                    }
                }
            }
            continue;
        }
        let frame = body.frame().await.unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            buf.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

/// Starts `serve` on `data` with `args` and `env`; the process and the address its banner gives for `scheme`.
fn launch(
    data: &Path,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
    scheme: &str,
    stderr: Option<&Path>,
) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_partner-ledger"))
        .env_remove("PARTNER_LEDGER_STORE")
        .envs(env.iter().copied())
        .arg("--data")
        .arg(data)
        .args(["serve", "--clock-interval", "86400"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(match stderr {
            Some(p) => std::process::Stdio::from(std::fs::File::create(p).unwrap()),
            None => std::process::Stdio::null(),
        })
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let marker = format!("listening on {scheme}://");
    let addr = loop {
        let line = lines
            .next()
            .expect("the server printed its address")
            .unwrap();
        if let Some(rest) = line.split(marker.as_str()).nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// Starts `serve` over TLS on loopback; its address.
fn serve_tls(
    data: &Path,
    cert: &Path,
    key: &Path,
    extra: &[&str],
) -> (std::process::Child, std::net::SocketAddr) {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--tls-cert".as_ref(),
    ];
    args.extend([cert.as_os_str(), "--tls-key".as_ref(), key.as_os_str()]);
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    launch(data, &args, &[], "https", None)
}

/// A certificate in `dir` and `serve` over TLS with it: the certificate's DER, the address, the process.
fn started(dir: &Path) -> (Vec<u8>, std::net::SocketAddr, Killed) {
    let (der, cert, key) = certificate(dir, "server");
    let (child, addr) = serve_tls(&dir.join("data"), &cert, &key, &[]);
    (der, addr, Killed(child))
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn over_https_commands_views_and_live_streams_work_with_http2_and_http1_and_an_untrusted_client_is_refused(
) {
    let dir = tempfile::tempdir().unwrap();
    let (der, addr, _server) = started(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // HTTP/2, as ALPN agreed.
        let tls = connect(addr, &der, b"h2").await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut h2 = h2(tls).await;
        let mut live = stream(&mut h2, 0).await;
        let (status, answer) = post(&mut h2, &register(1)).await;
        assert_eq!(status, 200, "{answer}");
        let mut buf = String::new();
        assert_eq!(
            next_position(&mut live, &mut buf).await,
            1,
            "the live stream sees the new event"
        );
        let (status, headers, view) = get(
            &mut h2,
            "/v1/customers/c0000000-0000-4000-8000-000000000001",
        )
        .await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(headers["strict-transport-security"], "max-age=31536000");
        let (_, _, health) = get(&mut h2, "/healthz").await;
        assert_eq!(health["tls"], true);

        // HTTP/1.1, as ALPN agreed.
        let tls = connect(addr, &der, b"http/1.1").await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (mut h1, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::post("/v1/commands")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(register(2))))
            .unwrap();
        let r = h1.send_request(req).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.version(), hyper::Version::HTTP_11);
        assert_eq!(
            next_position(&mut live, &mut buf).await,
            2,
            "and the command sent over HTTP/1.1"
        );

        // A client that does not trust this certificate fails the handshake.
        let (other, _, _) = certificate(dir.path(), "other");
        let refused = connect(addr, &other, b"h2").await;
        assert!(
            refused.is_err(),
            "a client trusting another certificate is refused"
        );
    });
}

#[test]
fn forty_live_streams_on_one_http2_connection_all_receive_a_new_event() {
    let dir = tempfile::tempdir().unwrap();
    let (der, addr, _server) = started(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut h2 = h2(connect(addr, &der, b"h2").await.unwrap()).await;
        let mut streams = Vec::new();
        for _ in 0..40 {
            streams.push(stream(&mut h2, 0).await);
        }
        let (status, answer) = post(&mut h2, &register(7)).await;
        assert_eq!(status, 200, "{answer}");
        let all = streams.into_iter().map(|mut s| {
            tokio::spawn(async move {
                let mut buf = String::new();
                tokio::time::timeout(Duration::from_secs(20), next_position(&mut s, &mut buf)).await
            })
        });
        for (i, seen) in futures_util::future::join_all(all)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(seen.unwrap().expect("within 20 s"), 1, "stream {i}");
        }
    });
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_file_keeps_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let (first, cert, key) = certificate(dir.path(), "server");
    let log = dir.path().join("stderr");
    let (child, addr) = launch(
        &dir.path().join("data"),
        &[
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ],
        &[],
        "https",
        Some(&log),
    );
    let pid = child.id();
    let _server = Killed(child);
    let hup = || {
        assert!(std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success());
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let before = connect(addr, &first, b"h2").await.unwrap();
        assert_eq!(presented(&before), first);
        // A new certificate in the same files.
        let (second, new_cert, new_key) = certificate(dir.path(), "renewed");
        std::fs::copy(&new_cert, &cert).unwrap();
        std::fs::copy(&new_key, &key).unwrap();
        hup();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = connect(addr, &second, b"h2").await {
                assert_eq!(presented(&s), second);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the new certificate was not served"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The connection made before keeps working.
        let mut old = h2(before).await;
        assert_eq!(get(&mut old, "/healthz").await.0, 200);
        // A damaged file: the reload fails, the second certificate stays.
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        hup();
        // Once the server has said it did not reload, the second certificate is still the one presented.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("TLS certificate not reloaded")
        {
            assert!(
                Instant::now() < deadline,
                "the failed reload was not logged"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let s = connect(addr, &second, b"h2").await.unwrap();
        assert_eq!(presented(&s), second);
    });
}

/// Waits until the server closes `stream` (a read returns nothing or fails); how long that took from `since`.
async fn closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, since: Instant) -> Duration {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => continue, // what the server sends before closing (HTTP/2 SETTINGS, GOAWAY)
            // Still open after 10 s: the caller names the stage that failed.
            Err(_) => return since.elapsed(),
        }
    }
}

#[test]
fn silent_connections_are_closed_in_time_at_every_stage_while_others_are_served() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let (der, cert, key) = certificate(dir.path(), "server");
    let (child, addr) = serve_tls(
        &dir.path().join("data"),
        &cert,
        &key,
        &["--header-timeout-ms", "1000"],
    );
    let _server = Killed(child);
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = crate::common::serve(plain_dir.path(), None, &["--header-timeout-ms", "1000"]);
    let bound = Duration::from_secs(5);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let started = Instant::now();
        // Connected over TCP, and then nothing: no ClientHello.
        let mut no_hello = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The handshake done, and then no request.
        let mut no_request = connect(addr, &der, b"http/1.1").await.unwrap();
        let mut no_h2_request = connect(addr, &der, b"h2").await.unwrap();
        // Plain text: half of HTTP/2's preface, then nothing; and HTTP/2 set up (h2c) without a stream.
        let mut half_preface = tokio::net::TcpStream::connect(plain.addr).await.unwrap();
        half_preface.write_all(b"PRI * HT").await.unwrap();
        let idle_h2c = tokio::net::TcpStream::connect(plain.addr).await.unwrap();
        let (idle_h2c_client, idle_h2c_conn) = h2::client::handshake(idle_h2c).await.unwrap();
        let idle_h2c_closed = tokio::spawn(async move {
            let _keep = idle_h2c_client;
            let since = Instant::now();
            let _ = idle_h2c_conn.await;
            since.elapsed()
        });
        // Others are served meanwhile.
        let mut served = h2(connect(addr, &der, b"h2").await.unwrap()).await;
        assert_eq!(get(&mut served, "/healthz").await.0, 200);
        for (what, took) in [
            ("no ClientHello", closed(&mut no_hello, started).await),
            (
                "TLS, then no HTTP/1.1 request",
                closed(&mut no_request, started).await,
            ),
            (
                "TLS, then no HTTP/2 stream",
                closed(&mut no_h2_request, started).await,
            ),
            (
                "half an HTTP/2 preface",
                closed(&mut half_preface, started).await,
            ),
            ("h2c without a stream", idle_h2c_closed.await.unwrap()),
        ] {
            assert!(
                took < bound,
                "{what}: closed after {took:?}, the bound being 1 s"
            );
            eprintln!("{what}: closed after {took:?} (bound: 1 s)");
        }
    });
}

#[test]
fn a_flood_of_reset_streams_closes_that_connection_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (der, addr, _server) = started(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Streams opened and reset at once (RST_STREAM CANCEL), as fast as the connection takes them.
        let tls = connect(addr, &der, b"h2").await.unwrap();
        let (mut client, conn) = h2::client::handshake(tls).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut reset = 0;
        for _ in 0..10_000 {
            let Ok(ready) = client.ready().await else {
                break;
            };
            client = ready;
            let req = hyper::Request::get("https://127.0.0.1/v1/events")
                .body(())
                .unwrap();
            match client.send_request(req, true) {
                Ok((_, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    reset += 1;
                }
                Err(_) => break,
            }
            tokio::task::yield_now().await;
        }
        let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
        assert!(
            ended.is_ok(),
            "the flooding connection was closed by the server"
        );
        assert!(
            reset < 10_000,
            "the server closed the connection before 10,000 resets ({reset})"
        );
        eprintln!("the server closed a connection after {reset} streams reset at once");
        // Another client is answered.
        let mut other = h2(connect(addr, &der, b"h2").await.unwrap()).await;
        let (status, _, _) =
            tokio::time::timeout(Duration::from_secs(10), get(&mut other, "/healthz"))
                .await
                .expect("answered after the flood");
        assert_eq!(status, 200);
    });
}

#[test]
fn h2c_by_prior_knowledge_is_served_on_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::common::serve(dir.path(), None, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let mut h2c = h2(tcp).await;
        // Many requests, one after the other, on the one connection.
        for _ in 0..50 {
            let req = Request::get("http://127.0.0.1/healthz")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let r = h2c.send_request(req).await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            assert_eq!(r.version(), hyper::Version::HTTP_2);
            assert!(
                r.headers().get("strict-transport-security").is_none(),
                "no HSTS over plain HTTP"
            );
            r.into_body().collect().await.unwrap();
        }
    });
}

#[test]
fn tokens_beyond_loopback_without_tls_are_refused_unless_insecure_http_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_partner-ledger"))
        .env_remove("PARTNER_LEDGER_STORE")
        .env(
            "PARTNER_LEDGER_OPERATOR_TOKEN",
            "a-token-of-some-length-0123456789",
        )
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("--tls-cert") && text.contains("--insecure-http"),
        "{text}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
    // With --insecure-http it starts, warns, and /healthz says so.
    let (child, addr) = launch(
        &dir.path().join("data"),
        &[
            "--listen".as_ref(),
            "0.0.0.0:0".as_ref(),
            "--insecure-http".as_ref(),
        ],
        &[(
            "PARTNER_LEDGER_OPERATOR_TOKEN",
            "a-token-of-some-length-0123456789",
        )],
        "http",
        None,
    );
    let _server = Killed(child);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let health: Value = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/healthz", addr.port()))
            .bearer_auth("a-token-of-some-length-0123456789")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(health["insecure_http"], true, "{health}");
}
