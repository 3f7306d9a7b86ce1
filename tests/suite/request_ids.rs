//! Every request has an id: the client's `X-Request-Id` (when usable) or a fresh one, echoed in the answer, and the
//! server's log lines for that request carry it, with the trace id of a W3C `traceparent`.

use std::time::Duration;

use serde_json::Value;

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_is_echoed_and_names_the_requests_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let data = dir.path().join("data");
    let server = common::serve(
        &data,
        Some(&log),
        &["--log-level", "info", "--log-format", "json"],
    );
    let u = server.url();
    let c = reqwest::Client::new();
    let id_of = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().unwrap().to_string();

    let r = c
        .get(format!("{u}/healthz"))
        .header("x-request-id", "ops-42")
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&r), "ops-42");
    let r = c.get(format!("{u}/healthz")).send().await.unwrap();
    assert!(
        uuid::Uuid::parse_str(&id_of(&r)).is_ok(),
        "a generated id: {}",
        id_of(&r)
    );
    let r = c
        .get(format!("{u}/healthz"))
        .header("x-request-id", "not usable")
        .send()
        .await
        .unwrap();
    assert!(
        uuid::Uuid::parse_str(&id_of(&r)).is_ok(),
        "an unusable id is replaced: {}",
        id_of(&r)
    );

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = c
        .get(format!("{u}/v1/customers/NOT-A-UUID"))
        .header("x-request-id", "trace-me")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(id_of(&r), "trace-me");
    // Its log line names the request and the trace.
    let mut found = None;
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| {
                v["span"]["request_id"] == "trace-me" && v["fields"]["message"] == "answered"
            });
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = found.expect("a log line for the request");
    assert_eq!(line["span"]["trace_id"], trace, "{line}");
    assert_eq!(line["fields"]["status"], 400, "{line}");
    assert_eq!(line["span"]["path"], "/v1/customers/NOT-A-UUID", "{line}");
}
