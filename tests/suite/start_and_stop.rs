//! `serve` writes nothing nobody asked for, leaves no trace when it cannot start, and stops within its grace period
//! even while a stream client has stopped reading. Real processes on real sockets.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `serve` with `args` on `data`, returning the child and its first line (or all its output if it ended).
fn start(
    data: &std::path::Path,
    args: &[&str],
) -> (Child, BufReader<std::process::ChildStdout>, String) {
    let mut child = Command::new(common::BIN)
        .arg("--data")
        .arg(data)
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    (child, out, first)
}

fn url_of(first: &str) -> String {
    first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first}"))
        .to_string()
}

fn head(url: &str) -> u64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let v: serde_json::Value = reqwest::get(format!("{url}/healthz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["head"].as_u64().unwrap()
    })
}

fn terminate(child: &mut Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
}

/// Waits for the child to exit, up to `limit`; kills it and fails if it does not.
fn exits_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not stop within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_writes_sample_data_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    // No flag: an empty ledger stays empty, and the banner says how to get sample data.
    let (mut child, mut out, first) = start(
        &data,
        &["--listen", "127.0.0.1:0", "--clock-interval", "86400"],
    );
    let url = url_of(&first);
    assert_eq!(
        head(&url),
        0,
        "nothing was asked for, so nothing is written"
    );
    let mut banner = String::new();
    for _ in 0..4 {
        out.read_line(&mut banner).unwrap();
    }
    assert!(banner.contains("--sample-data"), "{banner}");
    terminate(&mut child);
    assert!(exits_within(&mut child, Duration::from_secs(30)).success());
    let events = common::run(&data, &["events"], None);
    assert!(events.status.success());
    assert!(
        events.stdout.is_empty(),
        "no events in a ledger nobody wrote to"
    );
    // The old flag is still accepted and still means nothing is loaded.
    let (mut child, _out, first) = start(&data, &["--listen", "127.0.0.1:0", "--no-sample-data"]);
    assert_eq!(head(&url_of(&first)), 0);
    terminate(&mut child);
    assert!(exits_within(&mut child, Duration::from_secs(30)).success());
    // Asked for: loaded, and said so plainly.
    let (mut child, mut out, first) = start(&data, &["--listen", "127.0.0.1:0", "--sample-data"]);
    let url = url_of(&first);
    assert!(head(&url) > 5_000, "the sample data was loaded");
    let mut said = String::new();
    while !said.contains("Try:") {
        out.read_line(&mut said).unwrap();
    }
    assert!(
        said.contains("Sample data loaded because --sample-data was given"),
        "{said}"
    );
    // The start-up clock advance ran before the banner, which says what it recorded and counts it.
    let recorded: u64 = said
        .split("The clock was advanced to now: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the clock advance is not announced: {said}"));
    let counted: u64 = first
        .split(", ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(
        counted,
        head(&url),
        "the banner's count is current: {first}"
    );
    assert!(recorded > 0 && counted > recorded);
    // GET / says where to go from here.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let index: serde_json::Value = rt.block_on(async {
        reqwest::get(format!("{url}/"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(index["openapi"], "/v1/openapi.json", "{index}");
    assert!(index["routes"]["events"]
        .as_str()
        .unwrap()
        .contains("/v1/events"));
    terminate(&mut child);
    assert!(exits_within(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn a_failed_start_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let tokens = dir.path().join("tokens.json");
    std::fs::write(
        &tokens,
        r#"{"principals": [{"name": "x", "role": "no_such_role"}]}"#,
    )
    .unwrap();
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "port in use",
            vec![
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--sample-data".into(),
            ],
        ),
        (
            "port in use, token mode",
            vec![
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--sample-data".into(),
            ],
        ),
        (
            "local mode off loopback",
            vec![
                "--listen".into(),
                "0.0.0.0:0".into(),
                "--sample-data".into(),
            ],
        ),
        (
            "a bad tokens file",
            vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--sample-data".into(),
                "--tokens".into(),
                tokens.display().to_string(),
            ],
        ),
    ];
    for (i, (what, args)) in cases.into_iter().enumerate() {
        let data = dir.path().join(format!("ledger-{i}"));
        let mut cmd = Command::new(common::BIN);
        cmd.arg("--data").arg(&data).arg("serve").args(&args);
        if what.contains("token mode") {
            cmd.env(
                "PARTNER_LEDGER_OPERATOR_TOKEN",
                "a-long-enough-operator-token-for-this-test",
            );
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(!out.status.success(), "{what}: started");
        assert!(
            !data.exists(),
            "{what}: the failed start created {} ({})",
            data.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(taken);
}

#[test]
fn sigterm_stops_within_the_grace_period_while_a_stream_client_has_stopped_reading() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    // Enough events that a stream from 0 fills every buffer between the server and a client that does not read.
    let work = common::run(
        &data,
        &["generate", "--commands", "20000", "--seed", "3"],
        None,
    )
    .stdout;
    assert!(common::run(&data, &["exec", "-"], Some(&work))
        .status
        .success());
    let (mut child, mut out, first) = start(
        &data,
        &[
            "--listen",
            "127.0.0.1:0",
            "--shutdown-grace-ms",
            "1000",
            "--clock-interval",
            "86400",
        ],
    );
    let addr: std::net::SocketAddr = url_of(&first)
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stalled = rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        s.write_all(b"GET /v1/events?from=0 HTTP/1.1\r\nHost: ledger\r\nAccept: application/x-ndjson\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 1024];
        let n = s.read(&mut first).await.unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
        // From here on the client reads nothing, and keeps its socket open.
        tokio::time::sleep(Duration::from_millis(500)).await;
        s
    });
    let asked = Instant::now();
    terminate(&mut child);
    let status = exits_within(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("stopped cleanly at position"), "{rest}");
    drop(stalled);
    eprintln!(
        "stopped {:?} after SIGTERM with a stalled stream open",
        asked.elapsed()
    );
    assert!(common::run(&data, &["verify"], None).status.success());
}
