//! Downstream consumers and auditors never skip, never rewind and never get an answer for a position that does not
//! exist: acks are an atomic maximum, a deleted consumer stays deleted, resume and as-of points beyond the head are
//! refused naming the head, and every `unknown` answer names the command id to retry with. Real server processes.

use crate::common;

use std::path::Path;

use serde_json::{json, Value};

const CONTOSO: &str = "c0000000-0000-4000-8000-00000000000c";
const A: &str = "a0000000-0000-4000-8000-00000000000a";
const A_LICENCE: &str = "5a000000-0000-4000-8000-000000000001";

/// A ledger with the sample data (the seed story, then a generated workload): its head.
fn ledger(data: &Path) -> u64 {
    common::serve(data, None, &["--sample-data"])
        .stop()
        .unwrap();
    let head = common::run(data, &["checkpoint"], None).stdout;
    let head: u64 = String::from_utf8(head)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(head > 5_000, "{head}");
    head
}

async fn status_and_json(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_acks_never_move_a_checkpoint_back_and_a_deleted_consumer_stays_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let head = ledger(dir.path());
    let server = common::serve(dir.path(), None, &[]);
    let u = server.url();
    let c = reqwest::Client::new();
    let (s, _) = status_and_json(c.put(format!("{u}/v1/consumers/billing")).json(&json!({}))).await;
    assert_eq!(s, 201);
    let mut checkpoint = 0u64;
    for round in 0..12u64 {
        // 24 acks at once, at positions spread over what is left of the log.
        let acks = (0..24u64).map(|i| {
            let p = checkpoint + 1 + (i * 7919 + round * 104_729) % (head - checkpoint).max(1);
            let p = p.min(head);
            let c = c.clone();
            let u = u.clone();
            tokio::spawn(async move {
                let r = c
                    .post(format!("{u}/v1/consumers/billing/ack"))
                    .json(&json!({ "position": p }))
                    .send()
                    .await
                    .unwrap();
                (p, r.status().as_u16())
            })
        });
        let answers = futures_util::future::join_all(acks).await;
        let mut best = checkpoint;
        for a in answers {
            let (p, status) = a.unwrap();
            assert!(status == 200 || status == 409, "ack {p}: {status}");
            if status == 200 {
                best = best.max(p);
            }
        }
        let (_, v) = status_and_json(c.get(format!("{u}/v1/consumers/billing"))).await;
        assert_eq!(
            v["checkpoint"], best,
            "round {round}: the checkpoint must be the largest position acknowledged 200"
        );
        checkpoint = best;
        if checkpoint >= head {
            break;
        }
    }
    // An ack racing a delete never brings the consumer back.
    for round in 0..10 {
        let name = format!("race-{round}");
        let (s, _) =
            status_and_json(c.put(format!("{u}/v1/consumers/{name}")).json(&json!({}))).await;
        assert_eq!(s, 201);
        let acks = (1..=16u64).map(|p| {
            let c = c.clone();
            let url = format!("{u}/v1/consumers/{name}/ack");
            tokio::spawn(async move {
                let r = c
                    .post(url)
                    .json(&json!({ "position": p * 10 }))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        });
        let delete = {
            let c = c.clone();
            let url = format!("{u}/v1/consumers/{name}");
            tokio::spawn(async move { c.delete(url).send().await.unwrap().status().as_u16() })
        };
        let acks = futures_util::future::join_all(acks).await;
        assert_eq!(delete.await.unwrap(), 204);
        for a in acks {
            let (s, body) = a.unwrap();
            assert!(s == 200 || s == 404 || s == 409, "{s} {body}");
        }
        let (s, v) = status_and_json(c.get(format!("{u}/v1/consumers/{name}"))).await;
        assert_eq!(s, 404, "deleted consumer {name} came back: {v}");
    }
    let (_, list) = status_and_json(c.get(format!("{u}/v1/consumers"))).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resume_point_beyond_the_head_is_refused_naming_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let head = ledger(dir.path());
    let server = common::serve(dir.path(), None, &[]);
    let u = server.url();
    let c = reqwest::Client::new();
    let beyond = head + 2;
    for request in [
        c.get(format!("{u}/v1/events?from={beyond}")),
        c.get(format!("{u}/v1/events"))
            .header("last-event-id", beyond.to_string()),
        c.get(format!("{u}/v1/events?from=0"))
            .header("last-event-id", beyond.to_string()),
    ] {
        let (s, v) = status_and_json(request.header("accept", "application/x-ndjson")).await;
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["error"], "beyond_head");
        assert_eq!(v["head"], head);
    }
    // Creating a consumer that starts beyond the head is refused the same way, and creates nothing.
    let (s, v) = status_and_json(
        c.put(format!("{u}/v1/consumers/crm"))
            .json(&json!({ "from": beyond })),
    )
    .await;
    assert_eq!(
        (s, &v["error"], &v["head"]),
        (400, &json!("beyond_head"), &json!(head))
    );
    let (s, _) = status_and_json(c.get(format!("{u}/v1/consumers/crm"))).await;
    assert_eq!(s, 404);
    // At the head exactly is fine, for both.
    let (s, v) = status_and_json(
        c.put(format!("{u}/v1/consumers/crm"))
            .json(&json!({ "from": head })),
    )
    .await;
    assert_eq!((s, &v["checkpoint"]), (201, &json!(head)));
    let r = c
        .get(format!("{u}/v1/consumers/crm/events"))
        .header("last-event-id", beyond.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["head"], head);
    let r = c
        .get(format!("{u}/v1/events?from={head}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    // An ack beyond the head names the head too.
    let (s, v) = status_and_json(
        c.post(format!("{u}/v1/consumers/crm/ack"))
            .json(&json!({ "position": beyond })),
    )
    .await;
    assert_eq!(
        (s, &v["error"], &v["head"]),
        (400, &json!("ack_beyond_head"), &json!(head))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn as_of_a_position_beyond_the_head_is_an_error_naming_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let head = ledger(dir.path());
    {
        let server = common::serve(dir.path(), None, &[]);
        let u = server.url();
        let c = reqwest::Client::new();
        for path in [
            format!("/v1/customers/{CONTOSO}"),
            format!("/v1/partners/{A}"),
            format!("/v1/subscriptions/{A_LICENCE}"),
        ] {
            let (s, v) = status_and_json(c.get(format!("{u}{path}?as_of={}", head + 1))).await;
            assert_eq!(s, 400, "{path}: {v}");
            assert_eq!(v["error"], "as_of_beyond_head");
            assert_eq!(v["head"], head);
            let (s, v) = status_and_json(c.get(format!("{u}{path}?as_of={head}"))).await;
            assert_eq!(s, 200, "{path}: {v}");
            assert_eq!(v["as_of"]["position"], head);
        }
        // An instant after the last business time answers the head, evaluated at that instant.
        let (s, v) = status_and_json(c.get(format!(
            "{u}/v1/customers/{CONTOSO}?as_of=2999-01-01T00:00:00Z"
        )))
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["as_of"]["position"], head);
        assert_eq!(v["as_of"]["at"], "2999-01-01T00:00:00Z");
        server.stop().unwrap();
    }
    // The CLI refuses the same typo instead of answering at the head (read again: the server may have advanced the
    // clock).
    let head: u64 = String::from_utf8(common::run(dir.path(), &["checkpoint"], None).stdout)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let beyond = (head + 1).to_string();
    for args in [
        vec!["customer", CONTOSO, "--as-of", &beyond],
        vec!["partner", A, "--as-of", &beyond],
        vec!["subscription", A_LICENCE, "--as-of", &beyond],
        vec!["customer", CONTOSO, "--diff", "1", &beyond],
    ] {
        let out = common::run(dir.path(), &args, None);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("head is {head}")), "{args:?}: {err}");
    }
    let out = common::run(
        dir.path(),
        &["customer", CONTOSO, "--as-of", &head.to_string()],
        None,
    );
    assert!(out.status.success());
}

#[test]
fn an_unknown_answer_names_the_command_id_to_retry_with() {
    use partner_ledger::domain::parse_line;
    use partner_ledger::ledger::{Ledger, LedgerConfig, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerConfig::new(dir.path())).unwrap();
    let with_id = r#"{"type":"RegisterCustomer","command_id":"1d000000-0000-4000-8000-000000000001","actor":{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops","role":"operator"},"customer":"c1000000-0000-4000-8000-000000000001","company_name":"Fabrikam","domain":"fabrikam.example","country":"NL","cloud":"public"}"#;
    let without_id = with_id.replace(
        r#""command_id":"1d000000-0000-4000-8000-000000000001","#,
        "",
    );
    // A command without an id gets it when it is submitted, and the answer names that id.
    let other = without_id.replace(
        "c1000000-0000-4000-8000-000000000001",
        "c1000000-0000-4000-8000-000000000002",
    );
    let ticket = ledger.submit(parse_line(&other).unwrap());
    let assigned = ticket.command_id();
    let outcome = ticket.wait();
    assert!(matches!(outcome, Outcome::Committed { .. }), "{outcome:?}");
    assert_eq!(outcome.command_id(), Some(assigned));
    ledger.close();
    // The writer is gone: every answer is unknown, and names the id to retry with.
    match ledger.execute(parse_line(with_id).unwrap()) {
        Outcome::Unknown { command_id, .. } => {
            assert_eq!(
                command_id.to_string(),
                "1d000000-0000-4000-8000-000000000001"
            )
        }
        other => panic!("{other:?}"),
    }
    let ticket = ledger.submit(parse_line(&without_id).unwrap());
    let assigned = ticket.command_id();
    match ticket.wait() {
        Outcome::Unknown { command_id, .. } => assert_eq!(command_id, assigned),
        other => panic!("{other:?}"),
    }
}
