//! Streams with an end: `to` (a position) and `limit` (a number of events) make `/v1/events` and consumer streams
//! finish, so a generic HTTP client can read them to the end; without them a stream follows the log forever.

use std::time::Duration;

use serde_json::Value;

use crate::common;

/// Reads a whole NDJSON stream (it must end within 20 s) and returns the positions of its events.
async fn positions(c: &reqwest::Client, url: String) -> Vec<u64> {
    let r = c
        .get(url.clone())
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let text = tokio::time::timeout(Duration::from_secs(20), r.text())
        .await
        .unwrap_or_else(|_| panic!("{url}: the stream did not end"))
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("heartbeat").is_none())
        .map(|v| v["position"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_to_or_limit_ends_there_and_one_without_follows_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve(dir.path(), None, &["--sample-data"]);
    let u = server.url();
    let c = reqwest::Client::new();
    let head = common::get_json(&c, format!("{u}/healthz")).await["head"]
        .as_u64()
        .unwrap();
    assert!(head > 10, "sample data: {head}");
    assert_eq!(
        positions(&c, format!("{u}/v1/events?to=5")).await,
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        positions(&c, format!("{u}/v1/events?from=3&limit=4")).await,
        vec![4, 5, 6, 7]
    );
    assert_eq!(
        positions(&c, format!("{u}/v1/events?from=3&to=3")).await,
        Vec::<u64>::new()
    );
    // With a filter, `limit` counts the events delivered, not the positions scanned.
    let registered = positions(
        &c,
        format!("{u}/v1/events?types=CustomerRegistered&limit=2"),
    )
    .await;
    assert_eq!(registered.len(), 2, "{registered:?}");
    // A `to` beyond the head waits for the log to get there.
    let later = tokio::spawn({
        let (c, u) = (c.clone(), u.clone());
        async move { positions(&c, format!("{u}/v1/events?from={head}&to={}", head + 1)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let command = r#"{"type":"RegisterCustomer","actor":{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops","role":"operator"},"customer":"c7777777-0000-4000-8000-000000000077","company_name":"Late Ltd","domain":"late.onmicrosoft.com","country":"NL","cloud":"public"}"#;
    let r = c
        .post(format!("{u}/v1/commands"))
        .header("content-type", "application/json")
        .body(command)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(later.await.unwrap(), vec![head + 1]);
    // Consumer streams take the same bounds.
    let r = c
        .put(format!("{u}/v1/consumers/billing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        positions(&c, format!("{u}/v1/consumers/billing/events?limit=3")).await,
        vec![1, 2, 3]
    );
    // Bounds that cannot be met are refused.
    for bad in ["from=5&to=2", "limit=0", "to=x"] {
        let r = c.get(format!("{u}/v1/events?{bad}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            "invalid_query",
            "{bad}"
        );
    }
    // Without a bound the stream stays open.
    let open = c
        .get(format!("{u}/v1/events?from={head}"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), open.text())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_framed_as_the_accept_header_prefers_and_nothing_acceptable_is_406() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve(dir.path(), None, &["--sample-data"]);
    let u = server.url();
    let c = reqwest::Client::new();
    for (accept, want) in [
        (None, Some("text/event-stream")),
        (Some("*/*"), Some("text/event-stream")),
        (Some("application/x-ndjson"), Some("application/x-ndjson")),
        (
            Some("text/event-stream;q=0.2, application/x-ndjson;q=0.9"),
            Some("application/x-ndjson"),
        ),
        (
            Some("application/x-ndjson;q=0, */*"),
            Some("text/event-stream"),
        ),
        (Some("application/*"), Some("application/x-ndjson")),
        (Some("application/json"), None),
        (Some("text/event-stream;q=0"), None),
    ] {
        let mut req = c.get(format!("{u}/v1/events?to=2"));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let r = req.send().await.unwrap();
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        match want {
            Some(framing) => {
                assert_eq!(r.status(), 200, "{accept:?}");
                assert_eq!(content_type, framing, "{accept:?}");
                let _ = r.text().await.unwrap();
            }
            None => {
                assert_eq!(r.status(), 406, "{accept:?}");
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["error"], "not_acceptable", "{accept:?}");
            }
        }
    }
}
