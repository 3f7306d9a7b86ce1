//! What HTTP clients expect beyond the command contract (docs/api.md): conditional reads of the views, compressed
//! answers and streams, cross-origin calls from browser apps. A real server on the seed story.

use std::io::Read;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::common::{self, fixtures, run};

const CONTOSO: &str = "c0000000-0000-4000-8000-00000000000c";
const OP: &str = r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops@ledger.example","role":"operator"}"#;
const ADATUM: &str = r#"{"tenant":"a0000000-0000-4000-8000-00000000000a","user":"sales@adatum.example","role":"partner_sales_agent"}"#;

/// A data folder holding the seed story.
fn seeded() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let seed = fixtures().join("seed-story/commands.ndjson");
    let out = run(
        &dir.path().join("data"),
        &["exec", seed.to_str().unwrap()],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

async fn post(c: &reqwest::Client, url: &str, line: String) {
    let r = c
        .post(format!("{url}/v1/commands"))
        .header("content-type", "application/json")
        .body(line)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "committed", "{body}");
}

/// Every value of header `name`, joined with `, `.
fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_views_etag_changes_with_the_entity_not_with_the_head_and_a_match_is_304() {
    let dir = seeded();
    let server = common::serve(&dir.path().join("data"), None, &[]);
    let u = server.url();
    let c = reqwest::Client::new();
    let contoso = format!("{u}/v1/customers/{CONTOSO}");

    let first = c.get(&contoso).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let tag = header(&first, "etag");
    assert!(
        tag.starts_with("W/\"") && tag.ends_with('"'),
        "a weak tag: {tag}"
    );
    assert_eq!(header(&first, "cache-control"), "private, no-cache");
    assert!(header(&first, "vary")
        .to_ascii_lowercase()
        .contains("authorization"));
    let before: Value = first.json().await.unwrap();

    let cached = conditional(&c, &contoso, &tag).await;
    assert_eq!(cached.status(), 304);
    assert_eq!(header(&cached, "etag"), tag);
    assert!(
        cached.bytes().await.unwrap().is_empty(),
        "a 304 has no body"
    );

    // A command about another customer moves the head, not Contoso's tag.
    post(
        &c,
        &u,
        format!(
            r#"{{"type":"RegisterCustomer","actor":{OP},"customer":"c0000000-0000-4000-8000-0000000000f1","company_name":"Fabrikam","domain":"fabrikam.onmicrosoft.com","country":"NL","cloud":"public"}}"#
        ),
    )
    .await;
    let now: Value = common::get_json(&c, &contoso).await;
    assert!(
        now["as_of"]["position"].as_u64() > before["as_of"]["position"].as_u64(),
        "the head moved: {} then {}",
        before["as_of"],
        now["as_of"]
    );
    let r = conditional(&c, &contoso, &tag).await;
    assert_eq!(r.status(), 304, "Contoso did not change");

    // A command about Contoso changes its tag: the old one gets the new view.
    post(
        &c,
        &u,
        format!(
            r#"{{"type":"AddSubscription","actor":{ADATUM},"subscription":"5a000000-0000-4000-8000-0000000000f2","partner":"a0000000-0000-4000-8000-00000000000a","customer":"{CONTOSO}","offer":"O365_E5","quantity":3}}"#
        ),
    )
    .await;
    let r = conditional(&c, &contoso, &tag).await;
    assert_eq!(r.status(), 200, "Contoso changed");
    let new_tag = header(&r, "etag");
    assert_ne!(new_tag, tag);
    let after: Value = r.json().await.unwrap();
    assert!(
        after["subscriptions"].to_string().contains("O365_E5"),
        "{after}"
    );
    // Several tags, one of them current; and `*`.
    for asked in [format!("\"nope\", {new_tag}"), "*".to_string()] {
        let r = c
            .get(&contoso)
            .header("if-none-match", asked.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "If-None-Match: {asked}");
    }
    // The history and an as-of view are tagged too.
    for url in [format!("{contoso}/history"), format!("{contoso}?as_of=5")] {
        let r = c.get(&url).send().await.unwrap();
        let t = header(&r, "etag");
        assert!(t.starts_with("W/\""), "{url}: {t}");
        let again = conditional(&c, &url, &t).await;
        assert_eq!(again.status(), 304, "{url}");
    }
}

/// GET `url` with `If-None-Match: tags`.
async fn conditional(c: &reqwest::Client, url: &str, tags: &str) -> reqwest::Response {
    c.get(url)
        .header("if-none-match", tags)
        .send()
        .await
        .unwrap()
}

fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap(),
        "br" => brotli::Decompressor::new(bytes, 4096)
            .read_to_end(&mut out)
            .unwrap(),
        other => panic!("unexpected coding {other}"),
    };
    out
}

/// What can be decoded so far from the first bytes of a compressed stream (a flushed prefix decodes whole).
fn decode_prefix(coding: &str, bytes: &[u8]) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut reader: Box<dyn Read> = match coding {
        "gzip" => Box::new(flate2::read::GzDecoder::new(bytes)),
        _ => Box::new(brotli::Decompressor::new(bytes, 4096)),
    };
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a compressed stream until what it has sent decodes to `lines` lines (20 s at most); the decoded text.
async fn read_until(
    coding: &str,
    body: &mut futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    received: &mut Vec<u8>,
    lines: usize,
) -> String {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let text = decode_prefix(coding, received);
            if text.lines().count() >= lines {
                return text;
            }
            received.extend_from_slice(&body.next().await.unwrap().unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{coding}: {lines} events did not arrive"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_and_streams_are_compressed_when_asked_and_a_stream_delivers_each_event_at_once() {
    let dir = seeded();
    let server = common::serve(&dir.path().join("data"), None, &["--heartbeat-ms", "60000"]);
    let u = server.url();
    let c = reqwest::Client::new();
    let contoso = format!("{u}/v1/customers/{CONTOSO}");
    let plain = c.get(&contoso).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain: Value = plain.json().await.unwrap();
    for coding in ["gzip", "br"] {
        let r = c
            .get(&contoso)
            .header("accept-encoding", coding)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "content-encoding"), coding);
        assert!(header(&r, "vary").contains("accept-encoding"));
        let body: Value =
            serde_json::from_slice(&decode(coding, &r.bytes().await.unwrap())).unwrap();
        assert_eq!(body, plain, "{coding}");
    }
    // q-values: brotli refused, gzip chosen.
    let r = c
        .get(&contoso)
        .header("accept-encoding", "br;q=0, gzip;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding"), "gzip");

    // A bounded stream decodes whole to what the uncompressed stream says.
    let bounded = format!("{u}/v1/events?limit=8");
    let identity = c
        .get(&bounded)
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(identity.iter().filter(|b| **b == b'\n').count(), 8);
    for coding in ["gzip", "br"] {
        let r = c
            .get(&bounded)
            .header("accept", "application/x-ndjson")
            .header("accept-encoding", coding)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "content-encoding"), coding);
        assert_eq!(
            decode(coding, &r.bytes().await.unwrap()),
            identity,
            "{coding}"
        );
    }

    // An endless compressed stream delivers the events already there, then a new one as it commits, without waiting
    // for more to fill a compression block (the heartbeat is a minute away).
    for coding in ["gzip", "br"] {
        let head: Value = common::get_json(&c, format!("{u}/v1/checkpoint")).await;
        let head = head["position"].as_u64().unwrap();
        let r = c
            .get(format!("{u}/v1/events?from={}", head - 2))
            .header("accept", "application/x-ndjson")
            .header("accept-encoding", coding)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "content-encoding"), coding);
        let mut body = r.bytes_stream().boxed();
        let mut received = Vec::new();
        let text = read_until(coding, &mut body, &mut received, 2).await;
        assert_eq!(text.lines().count(), 2, "{coding}: {text}");
        post(
            &c,
            &u,
            format!(
                r#"{{"type":"RegisterCustomer","actor":{OP},"customer":"c0000000-0000-4000-8000-0000000001{}","company_name":"Live {coding}","domain":"live{coding}.onmicrosoft.com","country":"NL","cloud":"public"}}"#,
                if coding == "gzip" { "01" } else { "02" }
            ),
        )
        .await;
        let text = read_until(coding, &mut body, &mut received, 3).await;
        let last: Value = serde_json::from_str(text.lines().nth(2).unwrap()).unwrap();
        assert_eq!(last["position"], head + 1, "{coding}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_apps_on_configured_origins_may_call_the_api_and_others_get_no_cors_headers() {
    let dir = seeded();
    let app = "http://app.example.com:5173";
    let with = common::serve(&dir.path().join("data"), None, &["--cors-origin", app]);
    let c = reqwest::Client::new();
    let u = with.url();

    let preflight = c
        .request(reqwest::Method::OPTIONS, format!("{u}/v1/events"))
        .header("origin", app)
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "authorization, last-event-id",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(header(&preflight, "access-control-allow-origin"), app);
    let allowed = header(&preflight, "access-control-allow-headers").to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("last-event-id"),
        "{allowed}"
    );
    assert!(header(&preflight, "access-control-allow-methods").contains("GET"));

    let r = c
        .get(format!("{u}/v1/customers/{CONTOSO}"))
        .header("origin", app)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), app);
    let exposed = header(&r, "access-control-expose-headers").to_ascii_lowercase();
    assert!(
        exposed.contains("etag") && exposed.contains("x-request-id"),
        "{exposed}"
    );

    let other = c
        .get(format!("{u}/v1/customers/{CONTOSO}"))
        .header("origin", "https://elsewhere.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    drop(with);

    // Off by default.
    let without = common::serve(&dir.path().join("data"), None, &[]);
    let r = c
        .get(format!("{}/v1/customers/{CONTOSO}", without.url()))
        .header("origin", app)
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    drop(without);

    // A value that is not an origin is refused at start, naming it; nothing is served.
    let out = run(
        &dir.path().join("data"),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cors-origin",
            "https://app.example.com/console",
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("https://app.example.com/console"), "{err}");
}
