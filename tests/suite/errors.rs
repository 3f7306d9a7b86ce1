//! Every error the HTTP API gives, the framework's own included (a malformed query string, a wrong content type, an
//! unknown field, an unknown route or method), is JSON with a stable `error` code and a message naming the problem.

use reqwest::Method;
use serde_json::Value;

use crate::common;

const UNKNOWN: &str = "c9999999-0000-4000-8000-000000000099";

/// A provoked error: method, path, body (content type, text), expected status and `error` code.
type Case = (
    Method,
    String,
    Option<(&'static str, &'static str)>,
    u16,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_with_a_stable_code_and_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve(dir.path(), None, &["--sample-data"]);
    let u = server.url();
    let c = reqwest::Client::new();
    // A consumer to acknowledge for.
    let r = c
        .put(format!("{u}/v1/consumers/billing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let catalogue: Vec<Case> = vec![
        (
            Method::GET,
            format!("/v1/customers/{UNKNOWN}/history?include_refusals=1"),
            None,
            400,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/events?from=abc".into(),
            None,
            400,
            "invalid_query",
        ),
        (
            Method::GET,
            format!("/v1/customers/{UNKNOWN}?as_of=1&as_of=2"),
            None,
            400,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/customers/NOT-A-UUID".into(),
            None,
            400,
            "invalid_id",
        ),
        (
            Method::GET,
            format!("/v1/customers/{UNKNOWN}"),
            None,
            404,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/customers/c0000000-0000-4000-8000-00000000000c?as_of=999999".into(),
            None,
            400,
            "as_of_beyond_head",
        ),
        (
            Method::GET,
            "/v1/events?from=999999".into(),
            None,
            400,
            "beyond_head",
        ),
        (
            Method::POST,
            "/v1/commands".into(),
            Some(("text/plain", "hello")),
            415,
            "unsupported_media_type",
        ),
        (
            Method::POST,
            "/v1/consumers/billing/ack".into(),
            Some(("text/plain", "{\"position\":1}")),
            415,
            "unsupported_media_type",
        ),
        (
            Method::POST,
            "/v1/consumers/billing/ack".into(),
            None,
            400,
            "invalid_body",
        ),
        (
            Method::POST,
            "/v1/consumers/billing/ack".into(),
            Some(("application/json", "{\"position\":\"one\"}")),
            400,
            "invalid_body",
        ),
        (
            Method::PUT,
            "/v1/consumers/crm".into(),
            Some(("application/json", "{\"customers\":\"x\"}")),
            400,
            "invalid_body",
        ),
        (
            Method::PUT,
            "/v1/consumers/bad%20name".into(),
            None,
            400,
            "invalid_name",
        ),
        (
            Method::GET,
            "/v1/consumers/unknown".into(),
            None,
            404,
            "not_found",
        ),
        (Method::GET, "/no/such/route".into(), None, 404, "no_route"),
        (
            Method::DELETE,
            "/healthz".into(),
            None,
            405,
            "method_not_allowed",
        ),
        (
            Method::POST,
            "/v1/customers/c0000000-0000-4000-8000-00000000000c".into(),
            None,
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, body, status, code) in catalogue {
        let mut req = c.request(method.clone(), format!("{u}{path}"));
        if let Some((content_type, text)) = body {
            req = req.header("content-type", content_type).body(text);
        }
        let r = req.send().await.unwrap();
        let what = format!("{method} {path}");
        assert_eq!(r.status().as_u16(), status, "{what}");
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(
            content_type.starts_with("application/json"),
            "{what}: {content_type}"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], code, "{what}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.len() > 10),
            "{what}: {v}"
        );
    }
}
