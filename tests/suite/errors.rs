//! Every error the HTTP API gives, the framework's own included (a malformed query string, a wrong content type, an
//! unknown field, an unknown route or method, an unacceptable `Accept`, a body too large or too slow), is JSON with
//! a stable `error` code and a message naming the problem. (Errors of storage and of several processes need their
//! fault: disk_full.rs (507), postgres.rs (`storage_unavailable`), replicas.rs and many_processes.rs.)

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
        expect_error(r, &format!("{method} {path}"), status, code).await;
    }
}

/// Checks an error answer: its status, JSON, its `error` code and a message; returns the body.
async fn expect_error(r: reqwest::Response, what: &str, status: u16, code: &str) -> Value {
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
    v
}

/// The rest of the catalogue, on a server with a tokens file and a short body timeout: authentication (401, 403),
/// negotiation (406), limits (408, 413), bad headers, and the consumer errors that need a request before them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_of_authentication_negotiation_limits_and_headers_have_the_same_shape() {
    use crate::auth::{token, tokens_file, PRINCIPALS};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CONTOSO: &str = "c0000000-0000-4000-8000-00000000000c";
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path(), PRINCIPALS);
    let server = common::serve(
        &dir.path().join("data"),
        None,
        &[
            "--sample-data",
            "--tokens",
            tokens.to_str().unwrap(),
            "--body-timeout-ms",
            "500",
        ],
    );
    let u = server.url();
    // A connection each: the one a 413 was answered on, its body unread, is closed by the server.
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let ops = format!("Bearer {}", token("ops"));
    let partner = format!("Bearer {}", token("a_admin"));
    let send =
        |method: Method, path: &str, auth: &str, headers: &[(&str, &str)], body: Option<&str>| {
            let mut req = c
                .request(method, format!("{u}{path}"))
                .header("authorization", auth);
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            if let Some(body) = body {
                req = req
                    .header("content-type", "application/json")
                    .body(body.to_string());
            }
            req.send()
        };
    // A consumer with no filter, acknowledged up to 10.
    let r = send(Method::PUT, "/v1/consumers/billing", &ops, &[], None)
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = send(
        Method::POST,
        "/v1/consumers/billing/ack",
        &ops,
        &[],
        Some(r#"{"position":10}"#),
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(17 * 1024 * 1024));
    let view = format!("/v1/customers/{CONTOSO}");
    type Case<'a> = (
        Method,
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Option<&'a str>,
        u16,
        &'a str,
    );
    let catalogue: Vec<Case> = vec![
        (Method::GET, &view, "", vec![], None, 401, "unauthorized"),
        (
            Method::GET,
            &view,
            "Bearer plt_no_such_token_0123456789",
            vec![],
            None,
            401,
            "unauthorized",
        ),
        (
            Method::GET,
            "/metrics",
            &partner,
            vec![],
            None,
            403,
            "forbidden",
        ),
        (
            Method::GET,
            &view,
            &ops,
            vec![("accept", "text/html")],
            None,
            406,
            "not_acceptable",
        ),
        (
            Method::GET,
            &view,
            &ops,
            vec![("accept", "application/json;q=0, */*;q=0")],
            None,
            406,
            "not_acceptable",
        ),
        (
            Method::GET,
            "/v1/events?to=5",
            &ops,
            vec![("accept", "application/json")],
            None,
            406,
            "not_acceptable",
        ),
        (
            Method::POST,
            "/v1/commands",
            &ops,
            vec![],
            Some(&big),
            413,
            "too_large",
        ),
        (
            Method::GET,
            "/v1/customers/c0000000-0000-4000-8000-00000000000c?as_of=yesterday",
            &ops,
            vec![],
            None,
            400,
            "invalid_as_of",
        ),
        (
            Method::GET,
            "/v1/events",
            &ops,
            vec![("last-event-id", "abc")],
            None,
            400,
            "invalid_last_event_id",
        ),
        (
            Method::GET,
            "/v1/events?types=NoSuchEvent",
            &ops,
            vec![],
            None,
            400,
            "invalid_type",
        ),
        (
            Method::GET,
            &view,
            &ops,
            vec![("ledger-min-position", "abc")],
            None,
            400,
            "invalid_header",
        ),
        (
            Method::GET,
            &view,
            &ops,
            vec![("ledger-min-position", "99999999")],
            None,
            400,
            "beyond_head",
        ),
        (
            Method::PUT,
            "/v1/consumers/billing",
            &ops,
            vec![],
            Some(r#"{"types":["CustomerRegistered"]}"#),
            409,
            "consumer_exists",
        ),
        (
            Method::PUT,
            "/v1/consumers/crm",
            &ops,
            vec![],
            Some("[null]"),
            400,
            "invalid_body",
        ),
        (
            Method::POST,
            "/v1/consumers/billing/ack",
            &ops,
            vec![],
            Some(r#"{"position":99999999}"#),
            400,
            "ack_beyond_head",
        ),
        (
            Method::POST,
            "/v1/consumers/billing/ack",
            &ops,
            vec![],
            Some(r#"{"position":5}"#),
            409,
            "ack_backwards",
        ),
    ];
    for (method, path, auth, headers, body, status, code) in catalogue {
        let what = format!("{method} {path} {headers:?}");
        let r = send(method, path, auth, &headers, body).await.unwrap();
        let v = expect_error(r, &what, status, code).await;
        if status == 401 || status == 403 {
            assert!(v["reason"].is_string(), "{what}: {v}");
        }
    }
    // What `Accept` takes is answered as before, and a write is answered whatever `Accept` says.
    for accept in [
        "application/json",
        "application/*",
        "*/*;q=0.1, text/html",
        "",
    ] {
        let r = send(Method::GET, &view, &ops, &[("accept", accept)], None)
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "Accept: {accept}");
    }
    // A body dribbled too slowly (a raw socket; a client library would send it at once): 408.
    let addr = u.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/commands HTTP/1.1\r\nHost: x\r\nAuthorization: {ops}\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\nConnection: close\r\n\r\n{{\"type\":"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_end(&mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{answer}"
    );
    let json = &answer[answer.find('{').unwrap()..=answer.rfind('}').unwrap()];
    let v: Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["error"], "request_timeout", "{answer}");
}
