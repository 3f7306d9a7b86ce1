//! Hostile and broken input over HTTP, against a real server process: each malformed command gets a precise 400 and
//! appends nothing, out-of-range values are refused by their rule, and the server stays up, keeps serving others and
//! keeps its memory bounded through a 50 MB body, 100,000 lines in one request, slow-loris clients and 1,000 idle
//! stream connections (issue 6's catalogue, HTTP side).

use crate::common;

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OP: &str = r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops@ledger.example","role":"operator"}"#;
const A: &str = r#"{"tenant":"a0000000-0000-4000-8000-00000000000a","user":"sales@adatum.example","role":"partner_admin_agent"}"#;
const NEW: &str = "cafe0000-0000-4000-8000-00000000000c";

fn register(customer: &str, extra: &str) -> String {
    format!(
        r#"{{"type":"RegisterCustomer","actor":{OP},"customer":"{customer}","company_name":"Fabrikam","domain":"fabrikam.onmicrosoft.com","country":"NL","cloud":"public"{extra}}}"#
    )
}

/// A server with the seed story, short client time limits, and a client.
async fn setup(dir: &std::path::Path) -> (common::Server, reqwest::Client) {
    let data = dir.join("data");
    let seed = common::fixtures().join("seed-story/commands.ndjson");
    assert!(common::run(&data, &["exec", seed.to_str().unwrap()], None)
        .status
        .success());
    let served = common::serve(
        &data,
        None,
        &[
            "--header-timeout-ms",
            "500",
            "--body-timeout-ms",
            "500",
            "--heartbeat-ms",
            "60000",
        ],
    );
    // The server closes idle keep-alive connections after the 500 ms header limit: a client that kept one longer could
    // send on a connection the server is closing at that moment. Real clients retry; this one simply lets go first.
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    (served, client)
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let r = c
        .post(format!("{url}/v1/commands"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn head(c: &reqwest::Client, url: &str) -> u64 {
    let v: Value = common::get_json(c, format!("{url}/healthz")).await;
    v["head"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_commands_get_a_precise_400_and_out_of_range_values_their_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (served, c) = setup(dir.path()).await;
    let u = served.url();
    let before = head(&c, &u).await;
    let nested = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let invalid: Vec<(Vec<u8>, &str)> = vec![
        (b"this is not json".to_vec(), "not a JSON document"),
        (
            register(NEW, "").as_bytes()[..70].to_vec(),
            "not a JSON document",
        ),
        (
            register(NEW, "").replace("\"Fabrikam\"", "42").into_bytes(),
            "invalid type: integer",
        ),
        (
            register(NEW, "")
                .replace("RegisterCustomer", "RegisterAlien")
                .into_bytes(),
            "unknown command type `RegisterAlien`",
        ),
        (
            register(NEW, r#","vip":true"#).into_bytes(),
            "unknown field `vip`",
        ),
        (
            register(NEW, "")
                .replace(r#","cloud":"public""#, "")
                .into_bytes(),
            "missing field `cloud`",
        ),
        (
            register("00000000-0000-0000-0000-000000000000", "").into_bytes(),
            "the nil UUID is not a valid id",
        ),
        (
            register("cafe-not-a-uuid", "").into_bytes(),
            "not a lowercase hyphenated UUID",
        ),
        (
            register(NEW, r#","at":"2024-13-01T00:00:00Z""#).into_bytes(),
            "not an RFC 3339 time",
        ),
        (
            register(NEW, r#","at":"+20000-01-01T00:00:00Z""#).into_bytes(),
            "not an RFC 3339 time",
        ),
        (
            register(NEW, "")
                .replace("Fabrikam\"", &format!("{}\"", "x".repeat(1_048_576)))
                .into_bytes(),
            "at most 65536 bytes",
        ),
        (
            register(NEW, r#","cloud":"public""#).into_bytes(),
            "duplicate field `cloud`",
        ),
        (nested.into_bytes(), "recursion limit exceeded"),
        (
            b"{\"type\":\"RegisterCustomer\",\"company_name\":\"\xff\xfe\"}".to_vec(),
            "not valid UTF-8",
        ),
    ];
    for (i, (body, expected)) in invalid.iter().enumerate() {
        let (status, text) = post(&c, &u, "application/json", body.clone()).await;
        assert_eq!(status, 400, "case {i}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(
            v["message"].as_str().unwrap().contains(expected),
            "case {i}: expected `{expected}` in {v}"
        );
        assert!(text.len() < 600, "case {i}: the answer stays short");
    }
    // Parsed but out of range: refused by the rule, never invalid.
    let sub = |q: &str| {
        format!(
            r#"{{"type":"AddSubscription","actor":{A},"subscription":"5a000000-0000-4000-8000-0000000000f1","partner":"a0000000-0000-4000-8000-00000000000a","customer":"c0000000-0000-4000-8000-00000000000c","offer":"O365_E3","quantity":{q}}}"#
        )
    };
    let gdap = |d: &str| {
        format!(
            r#"{{"type":"RequestDelegatedAdmin","actor":{A},"admin_relationship":"ad000000-0000-4000-8000-0000000000f1","partner":"a0000000-0000-4000-8000-00000000000a","customer":"c0000000-0000-4000-8000-00000000000c","name":"x","roles":["729827e3-9c14-49f7-bb1b-9608f156bbb8"],"duration_days":{d},"auto_extend":false}}"#
        )
    };
    let refused = [
        (
            register(NEW, r#","at":"1969-07-20T20:17:00Z""#),
            "time_out_of_range",
        ),
        (
            register(NEW, r#","at":"2999-01-01T00:00:00Z""#),
            "time_out_of_range",
        ),
        (
            register(NEW, "").replace("Fabrikam\"", "Fab\\u0007rikam\""),
            "invalid_text",
        ),
        (sub("0"), "invalid_quantity"),
        (sub("-5"), "invalid_quantity"),
        (gdap("0"), "invalid_duration"),
        (gdap("-30"), "invalid_duration"),
    ];
    for (body, code) in &refused {
        let (status, text) = post(&c, &u, "application/json", body.clone()).await;
        assert_eq!(status, 422, "{text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["code"],
            *code,
            "{text}"
        );
    }
    assert_eq!(head(&c, &u).await, before, "nothing was appended");
    // And the same body, well-formed, commits.
    let (status, text) = post(&c, &u, "application/json", register(NEW, "")).await;
    assert_eq!(status, 200, "{text}");
    eprintln!(
        "hostile HTTP: {} malformed and {} out-of-range commands, 0 appended",
        invalid.len(),
        refused.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_bodies_are_bounded_and_100000_lines_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (served, c) = setup(dir.path()).await;
    let u = served.url();
    let rss_start = common::rss_kib(&served);

    // 50 MB of NDJSON: refused at the 16 MiB limit, nothing submitted.
    let line = register(NEW, "");
    let mut big = String::with_capacity(50 * 1024 * 1024 + line.len());
    while big.len() < 50 * 1024 * 1024 {
        big.push_str(&line);
        big.push('\n');
    }
    let before = head(&c, &u).await;
    // The server answers 413 once it has read past the limit and closes the connection; a client still sending the
    // rest may see that as a broken pipe before it reads the answer. Either way nothing is submitted.
    let sent = c
        .post(format!("{u}/v1/commands"))
        .header("content-type", "application/x-ndjson")
        .body(big.clone())
        .send()
        .await;
    match sent {
        Ok(r) => assert_eq!(r.status().as_u16(), 413),
        Err(e) => assert!(
            format!("{e:?}").contains("BrokenPipe") || format!("{e:?}").contains("ConnectionReset"),
            "{e:?}"
        ),
    }
    // The answer itself, to a client that declares 50 MB and sends just past the limit before reading.
    let addr = u.strip_prefix("http://").unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("POST /v1/commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n", big.len()).as_bytes()).await.unwrap();
    s.write_all(&big.as_bytes()[..16 * 1024 * 1024 + 1])
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("split it into several requests"), "{text}");
    assert_eq!(head(&c, &u).await, before);
    let rss_50mb = common::rss_kib(&served);

    // 100,000 commands in one request (14 MB): one outcome per line, in order.
    let clock = format!(r#"{{"type":"AdvanceClock","to":"2024-03-01T00:00:00Z","actor":{OP}}}"#);
    let mut body = String::new();
    for i in 0..100_000 {
        if i % 1_000 == 999 {
            body.push_str("not json\n");
        } else {
            body.push_str(&clock);
            body.push('\n');
        }
    }
    let started = Instant::now();
    let (status, text) = post(&c, &u, "application/x-ndjson", body).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    let outcomes: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(outcomes.len(), 100_000);
    for (i, o) in outcomes.iter().enumerate() {
        if i % 1_000 == 999 {
            assert_eq!(
                (o["outcome"].as_str(), o["line"].as_u64()),
                (Some("invalid"), Some(i as u64 + 1)),
                "{o}"
            );
        } else {
            assert_eq!(o["outcome"], "committed", "{o}");
        }
    }
    let rss_100k = common::rss_kib(&served);
    assert_eq!(
        c.get(format!("{u}/healthz")).send().await.unwrap().status(),
        200,
        "still serving"
    );
    eprintln!(
        "server RSS: {} MiB at start, {} MiB after a 50 MB body (413), {} MiB after 100,000 lines in one request ({took:?})",
        rss_start / 1024,
        rss_50mb / 1024,
        rss_100k / 1024
    );
    assert!(
        rss_50mb < rss_start + 64 * 1024,
        "a 50 MB body does not grow the server by more than the limit"
    );
    assert!(rss_100k < rss_start + 256 * 1024, "{rss_100k} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_clients_are_cut_off_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (served, c) = setup(dir.path()).await;
    let u = served.url();
    let addr = u.strip_prefix("http://").unwrap().to_string();

    // Headers dribbled a byte every 100 ms: disconnected after the 500 ms header limit.
    let mut loris = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        loris.push(s);
    }
    let started = Instant::now();
    // Meanwhile others are served at once.
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(
            c.get(format!("{u}/healthz")).send().await.unwrap().status(),
            200
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "served while the slow clients wait: {:?}",
            t.elapsed()
        );
    }
    for s in &mut loris {
        let mut buf = [0u8; 256];
        let closed = loop {
            if s.write_all(b"X").await.is_err() {
                break true;
            }
            match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(_)) => break true, // an error response, then close
                Err(_) if started.elapsed() > Duration::from_secs(8) => break false,
                Err(_) => {}
            }
        };
        assert!(
            closed,
            "a slow-loris connection was kept open ({:?}, {:?})",
            started.elapsed(),
            s.local_addr()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "cut off after about the header limit: {:?}",
        started.elapsed()
    );

    // A body dribbled too slowly: 408, nothing submitted.
    let before = head(&c, &u).await;
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = register(NEW, "");
    s.write_all(format!("POST /v1/commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes()).await.unwrap();
    s.write_all(&body.as_bytes()[..20]).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("nothing of it was submitted"), "{answer}");
    assert_eq!(head(&c, &u).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_stream_connections_are_held_cheaply_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (served, c) = setup(dir.path()).await;
    let u = served.url();
    let addr = u.strip_prefix("http://").unwrap().to_string();
    let h = head(&c, &u).await;
    let rss_start = common::rss_kib(&served);
    let mut streams = Vec::new();
    for _ in 0..1_000 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(format!("GET /v1/events?from={h} HTTP/1.1\r\nHost: x\r\nAccept: application/x-ndjson\r\n\r\n").as_bytes())
            .await
            .unwrap();
        streams.push(s);
    }
    // Each got its response headers: the streams are open and idle.
    for s in &mut streams {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    let metrics = c
        .get(format!("{u}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("partner_ledger_stream_consumers 1000"),
        "{metrics}"
    );
    let rss_held = common::rss_kib(&served);
    // Others are still served, and a commit reaches the streams.
    let t = Instant::now();
    let (status, _) = post(&c, &u, "application/json", register(NEW, "")).await;
    assert_eq!(status, 200);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let mut delivered = 0;
    for s in &mut streams {
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            if String::from_utf8_lossy(&buf[..n]).contains("CustomerRegistered") {
                delivered += 1;
            }
        }
    }
    assert_eq!(delivered, 1_000, "every idle stream received the new event");
    eprintln!(
        "1,000 idle streams: server RSS {} MiB before, {} MiB while held ({} KiB per stream)",
        rss_start / 1024,
        rss_held / 1024,
        rss_held.saturating_sub(rss_start) / 1_000
    );
    assert!(rss_held < rss_start + 200 * 1024, "{rss_held} KiB");
    drop(streams);
    let mut gone = false;
    for _ in 0..100 {
        let m = c
            .get(format!("{u}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.contains("partner_ledger_stream_consumers 0") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "closed streams are let go");
}
