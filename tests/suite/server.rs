//! The HTTP service on a real socket: status codes, views, streams that never miss, repeat or reorder, resumption,
//! durable consumers, a stalled consumer, and kill -9 of the server process.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use partner_ledger::api::{serve, AppState, ServeConfig};
use partner_ledger::ledger::{Ledger, LedgerConfig};
use serde_json::{json, Value};

const CONTOSO: &str = "c0000000-0000-4000-8000-00000000000c";
const A: &str = "a0000000-0000-4000-8000-00000000000a";
const OP: &str =
    r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops","role":"operator"}"#;

struct Server {
    url: String,
    ledger: Arc<Ledger>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start(dir: &std::path::Path, config: ServeConfig) -> Server {
        // sled's background flusher lets go of its file lock a moment after a ledger in this process was closed.
        let mut attempt = 0;
        let ledger = loop {
            // Opening may block on a database (the PostgreSQL backend's client): off the runtime's worker.
            match tokio::task::block_in_place(|| Ledger::open(crate::pg::config_for(dir))) {
                Ok(l) => break Arc::new(l),
                Err(e) if attempt < 100 && e.to_string().contains("lock") => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let state = AppState::new(Arc::clone(&ledger), config, stop_rx).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, state, stop_tx, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Server {
            url,
            ledger,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server and waits until every handle on the ledger is gone, so the folder can be opened again.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
        self.ledger.close();
        for _ in 0..500 {
            if Arc::strong_count(&self.ledger) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            Arc::strong_count(&self.ledger),
            1,
            "a stream task outlived the server"
        );
    }
}

fn quick() -> ServeConfig {
    ServeConfig {
        heartbeat: Duration::from_millis(200),
        clock_interval: Duration::from_secs(3600),
        ..ServeConfig::default()
    }
}

fn seed() -> String {
    std::fs::read_to_string(common::fixtures().join("seed-story/commands.ndjson")).unwrap()
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: String,
) -> reqwest::Response {
    client
        .post(format!("{url}/v1/commands"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_views_and_errors_have_the_documented_status_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        ServeConfig {
            body_limit: 64 * 1024,
            ..quick()
        },
    )
    .await;
    let c = reqwest::Client::new();
    let u = &server.url;
    // NDJSON batch: one outcome line per input line, a bad line in the middle drops nothing.
    let mut body = seed();
    body.push_str("not json\n");
    let r = post(&c, u, "application/x-ndjson", body).await;
    assert_eq!(r.status(), 200);
    let lines: Vec<Value> = r
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 11);
    assert!(lines[..10].iter().all(|l| l["outcome"] == "committed"));
    assert_eq!(lines[10]["outcome"], "invalid");
    // A single refused command: 422 with the refusal body.
    let cancel = json!({"type": "CancelSubscription", "actor": {"tenant": "b0000000-0000-4000-8000-00000000000b", "user": "b", "role": "partner_admin_agent"},
        "subscription": "5a000000-0000-4000-8000-000000000001", "partner": "b0000000-0000-4000-8000-00000000000b"});
    let r = post(&c, u, "application/json", cancel.to_string()).await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["code"].as_str(), v["rule"].as_str()),
        (Some("not_partner_of_record"), Some("R27"))
    );
    // Malformed: 400 naming the problem. Wrong media type: 415. Too big: 413.
    let r = post(
        &c,
        u,
        "application/json",
        r#"{"type":"CancelSubscription","colour":1}"#.into(),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("unknown field `colour`"));
    assert_eq!(post(&c, u, "text/plain", "{}".into()).await.status(), 415);
    assert_eq!(
        post(&c, u, "application/x-ndjson", "x".repeat(100 * 1024))
            .await
            .status(),
        413
    );
    // Views.
    let r = c
        .get(format!("{u}/v1/customers/{CONTOSO}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["partners"].as_array().unwrap().len(), 2);
    let v: Value = common::get_json(&c, format!("{u}/v1/customers/{CONTOSO}?as_of=7")).await;
    assert_eq!(v["partners"].as_array().unwrap().len(), 1);
    assert_eq!(
        c.get(format!(
            "{u}/v1/customers/c9000000-0000-4000-8000-0000000000c9"
        ))
        .send()
        .await
        .unwrap()
        .status(),
        404
    );
    assert_eq!(
        c.get(format!("{u}/v1/customers/not-an-id"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        c.get(format!("{u}/v1/customers/{CONTOSO}?as_of=soon"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        c.get(format!("{u}/v1/partners/{A}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!(
            "{u}/v1/subscriptions/5a000000-0000-4000-8000-000000000001"
        ))
        .send()
        .await
        .unwrap()
        .status(),
        200
    );
    let h: Value = c
        .get(format!(
            "{u}/v1/customers/{CONTOSO}/history?include_refusals=true"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["events"].as_array().unwrap().len(), 9);
    assert_eq!(h["refusals"][0]["code"], "not_partner_of_record");
    let health: Value = common::get_json(&c, format!("{u}/healthz")).await;
    assert_eq!(health["status"], "ok");
    let metrics = c
        .get(format!("{u}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "partner_ledger_commands_total{outcome=\"refused\"} 1",
        "partner_ledger_head_position",
        "partner_ledger_commit_latency_seconds_bucket",
        "partner_ledger_commit_batch_size_bucket",
        "partner_ledger_stream_consumers",
        "partner_ledger_entities{kind=\"customers\"}",
        "partner_ledger_entities{kind=\"subscriptions\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let openapi: Value = common::get_json(&c, format!("{u}/v1/openapi.json")).await;
    assert!(openapi["paths"]["/v1/events"].is_object());
    server.stop().await;
}

/// Reads an SSE or NDJSON stream until `done` says so; returns (positions of events, last heartbeat position).
async fn read_stream(
    resp: reqwest::Response,
    sse: bool,
    mut done: impl FnMut(&[u64]) -> bool,
) -> Vec<u64> {
    let mut positions = Vec::new();
    let mut buf = String::new();
    let mut stream = resp.bytes_stream();
    let mut pending_id: Option<u64> = None;
    let mut is_event = false;
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            let line = line.trim_end();
            if sse {
                if let Some(id) = line.strip_prefix("id: ") {
                    pending_id = id.parse().ok();
                } else if let Some(ev) = line.strip_prefix("event: ") {
                    is_event = ev != "heartbeat";
                } else if line.is_empty() {
                    if let (Some(p), true) = (pending_id.take(), is_event) {
                        positions.push(p);
                    }
                    is_event = false;
                }
            } else if !line.is_empty() {
                let v: Value = serde_json::from_str(line).unwrap();
                if let Some(p) = v["position"].as_u64() {
                    positions.push(p);
                }
            }
            if done(&positions) {
                return positions;
            }
        }
    }
    positions
}

fn register_line(n: usize) -> String {
    format!(
        r#"{{"type":"RegisterCustomer","actor":{OP},"customer":"{}","company_name":"Customer {n}","domain":"c{n}.onmicrosoft.com","country":"NL","cloud":"public"}}"#,
        uuid::Uuid::new_v4()
    )
}

fn contoso_licence(n: usize) -> String {
    format!(
        r#"{{"type":"AddSubscription","actor":{{"tenant":"{A}","user":"a","role":"partner_sales_agent"}},"subscription":"{}","partner":"{A}","customer":"{CONTOSO}","offer":"O365_E3","quantity":{}}}"#,
        uuid::Uuid::new_v4(),
        n % 50 + 1
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_and_three_streams_see_every_position_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    sixteen_writers_and_three_streams(&dir).await;
}

/// The same on PostgreSQL: the streams read the log page by page from the database while the writers commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_and_three_streams_see_every_position_once_in_order_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    tokio::task::block_in_place(|| crate::pg::schema_for(dir.path()));
    sixteen_writers_and_three_streams(&dir).await;
}

async fn sixteen_writers_and_three_streams(dir: &tempfile::TempDir) {
    let server = Server::start(dir.path(), quick()).await;
    let c = reqwest::Client::new();
    let u = server.url.clone();
    assert_eq!(
        post(&c, &u, "application/x-ndjson", seed()).await.status(),
        200
    );
    const WRITERS: usize = 16;
    const TOTAL: usize = 20_000;
    // Three consumers from position 0: SSE, NDJSON, and NDJSON filtered by customer.
    let sse = c.get(format!("{u}/v1/events?from=0")).send().await.unwrap();
    let nd = c
        .get(format!("{u}/v1/events?from=0"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    let filtered = c
        .get(format!("{u}/v1/events?from=0&customer={CONTOSO}"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    let expected_head = 11 + TOTAL as u64;
    let readers = vec![
        tokio::spawn(read_stream(sse, true, move |p| {
            p.len() as u64 >= expected_head
        })),
        tokio::spawn(read_stream(nd, false, move |p| {
            p.len() as u64 >= expected_head
        })),
    ];
    let contoso_expected = 9 + TOTAL / WRITERS;
    let filtered = tokio::spawn(read_stream(filtered, false, move |p| {
        p.len() >= contoso_expected
    }));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (c, u) = (c.clone(), u.clone());
            tokio::spawn(async move {
                for chunk in 0..(TOTAL / WRITERS / 25) {
                    let body: String = (0..25)
                        .map(|k| if w == 0 { contoso_licence(chunk * 25 + k) } else { register_line(w * 100_000 + chunk * 25 + k) } + "\n")
                        .collect();
                    let r = post(&c, &u, "application/x-ndjson", body).await;
                    assert_eq!(r.status(), 200);
                    for l in r.text().await.unwrap().lines() {
                        assert!(l.contains("\"committed\""), "{l}");
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let head = server.ledger.store().head().position.0;
    assert_eq!(head, expected_head);
    for r in readers {
        let got = tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            got,
            (1..=head).collect::<Vec<_>>(),
            "every position, once, in order"
        );
    }
    // A store read may block on a database: off the runtime's worker.
    let want: Vec<u64> = tokio::task::block_in_place(|| {
        server
            .ledger
            .store()
            .history(
                &partner_ledger::domain::EntityRef::Customer(CONTOSO.parse().unwrap()),
                partner_ledger::domain::Position(0),
            )
            .unwrap()
    })
    .into_iter()
    .map(|p| p.0)
    .collect();
    let got = tokio::time::timeout(Duration::from_secs(60), filtered)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got, want,
        "the filtered stream carries exactly the customer's events"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resumed_sse_stream_loses_nothing_and_heartbeats_carry_the_scanned_position() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), quick()).await;
    let c = reqwest::Client::new();
    let u = server.url.clone();
    assert_eq!(
        post(&c, &u, "application/x-ndjson", seed()).await.status(),
        200
    );
    let first = read_stream(
        c.get(format!("{u}/v1/events")).send().await.unwrap(),
        true,
        |p| p.len() >= 4,
    )
    .await;
    assert_eq!(first, vec![1, 2, 3, 4]);
    let rest = read_stream(
        c.get(format!("{u}/v1/events"))
            .header("Last-Event-ID", "4")
            .send()
            .await
            .unwrap(),
        true,
        |p| p.len() >= 7,
    )
    .await;
    assert_eq!(rest, (5..=11).collect::<Vec<_>>());
    // A stream filtered to a quiet customer still reports how far it scanned.
    let quiet = c
        .get(format!(
            "{u}/v1/events?partner=b0000000-0000-4000-8000-00000000000b&types=SubscriptionAdded"
        ))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    let mut s = quiet.bytes_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let line: Value = serde_json::from_slice(chunk.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line, json!({"heartbeat": {"position": 11}}));
    assert_eq!(
        c.get(format!("{u}/v1/events?types=Nonsense"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn durable_consumers_resume_from_their_checkpoint_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let c = reqwest::Client::new();
    {
        let server = Server::start(dir.path(), quick()).await;
        let u = server.url.clone();
        assert_eq!(
            post(&c, &u, "application/x-ndjson", seed()).await.status(),
            200
        );
        let r = c
            .put(format!("{u}/v1/consumers/billing"))
            .json(&json!({"customer": CONTOSO}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(
            c.put(format!("{u}/v1/consumers/billing"))
                .json(&json!({"customer": CONTOSO}))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            c.put(format!("{u}/v1/consumers/billing"))
                .json(&json!({"partner": A}))
                .send()
                .await
                .unwrap()
                .status(),
            409
        );
        let got = read_stream(
            c.get(format!("{u}/v1/consumers/billing/events"))
                .header("accept", "application/x-ndjson")
                .send()
                .await
                .unwrap(),
            false,
            |p| p.len() >= 9,
        )
        .await;
        assert_eq!(got, vec![3, 4, 5, 6, 7, 8, 9, 10, 11]);
        let r = c
            .post(format!("{u}/v1/consumers/billing/ack"))
            .json(&json!({"position": 7}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            c.post(format!("{u}/v1/consumers/billing/ack"))
                .json(&json!({"position": 5}))
                .send()
                .await
                .unwrap()
                .status(),
            409
        );
        assert_eq!(
            c.post(format!("{u}/v1/consumers/billing/ack"))
                .json(&json!({"position": 99}))
                .send()
                .await
                .unwrap()
                .status(),
            400
        );
        server.stop().await;
    }
    let server = Server::start(dir.path(), quick()).await;
    let u = server.url.clone();
    let list: Value = common::get_json(&c, format!("{u}/v1/consumers")).await;
    assert_eq!(list[0]["name"], "billing");
    assert_eq!(list[0]["checkpoint"], 7);
    let head = server.ledger.store().head().position.0;
    assert_eq!(list[0]["lag"], head - 7);
    let got = read_stream(
        c.get(format!("{u}/v1/consumers/billing/events"))
            .header("accept", "application/x-ndjson")
            .send()
            .await
            .unwrap(),
        false,
        |p| p.len() >= 4,
    )
    .await;
    assert_eq!(got, vec![8, 9, 10, 11]);
    assert_eq!(
        c.delete(format!("{u}/v1/consumers/billing"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        c.get(format!("{u}/v1/consumers/billing"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_that_stops_reading_never_blocks_the_writer_and_later_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), quick()).await;
    let c = reqwest::Client::new();
    let u = server.url.clone();
    // Connect, read nothing while 20,000 commands commit.
    let stalled = c
        .get(format!("{u}/v1/events"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (c, u) = (c.clone(), u.clone());
            tokio::spawn(async move {
                for chunk in 0..25 {
                    let body: String = (0..100)
                        .map(|k| register_line(w * 10_000 + chunk * 100 + k) + "\n")
                        .collect();
                    assert_eq!(
                        post(&c, &u, "application/x-ndjson", body).await.status(),
                        200
                    );
                }
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(120), async {
        for w in writers {
            w.await.unwrap();
        }
    })
    .await
    .expect("the writers finish although a consumer reads nothing");
    assert_eq!(server.ledger.store().head().position.0, 20_000);
    let got = read_stream(stalled, false, |p| p.len() >= 20_000).await;
    assert_eq!(got, (1..=20_000).collect::<Vec<_>>());
    server.stop().await;
}

#[test]
fn every_committed_answer_survives_kill_9_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // The rest of its output stays open, so the server never writes into a closed pipe.
    let (mut child, _out, _, url) = common::spawn_serve(dir.path(), &["--no-sample-data"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let committed: HashMap<String, Vec<u64>> = rt.block_on(async {
        let c = reqwest::Client::new();
        let acked = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let (c, url, acked) = (c.clone(), url.clone(), Arc::clone(&acked));
                tokio::spawn(async move {
                    for n in 0..100_000 {
                        let id = uuid::Uuid::new_v4().to_string();
                        let mut v: Value = serde_json::from_str(&register_line(n)).unwrap();
                        v["command_id"] = json!(id);
                        let Ok(r) = c
                            .post(format!("{url}/v1/commands"))
                            .header("content-type", "application/json")
                            .body(v.to_string())
                            .send()
                            .await
                        else {
                            return;
                        };
                        let Ok(body) = r.json::<Value>().await else {
                            return;
                        };
                        if body["outcome"] == "committed" {
                            let ps = body["positions"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|p| p.as_u64().unwrap())
                                .collect();
                            acked.lock().unwrap().insert(id, ps);
                        }
                    }
                })
            })
            .collect();
        while acked.lock().unwrap().len() < 1_000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Requests are in flight: kill without warning.
        child.kill().unwrap();
        child.wait().unwrap();
        for w in writers {
            let _ = w.await;
        }
        let map = acked.lock().unwrap().clone();
        map
    });
    assert!(committed.len() >= 1_000);
    let events = common::stdout_lines(&common::run(dir.path(), &["events"], None));
    let by_position: HashMap<u64, String> = events
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["command_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (id, ps) in &committed {
        for p in ps {
            assert_eq!(
                by_position.get(p),
                Some(id),
                "acknowledged command {id} lost at {p}"
            );
        }
    }
    let positions: Vec<u64> = events
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (1..=positions.len() as u64).collect::<Vec<_>>());
    assert!(common::run(dir.path(), &["verify"], None).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduler_advances_the_clock_at_start_up_so_relationships_extend_on_time() {
    let dir = tempfile::tempdir().unwrap();
    // A GDAP relationship granted in 2024 for 30 days with auto-extend: by now (2026) it has been extended many times.
    let lines: String =
        std::fs::read_to_string(common::fixtures().join("gdap-lifecycle/commands.ndjson"))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with('{'))
            .take(6)
            .map(|l| format!("{l}\n"))
            .collect();
    let path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let ledger = Ledger::open(LedgerConfig::new(&path)).unwrap();
        for l in lines.lines() {
            ledger.execute(partner_ledger::domain::parse_line(l).unwrap());
        }
    })
    .await
    .unwrap();
    let server = Server::start(
        dir.path(),
        ServeConfig {
            clock_interval: Duration::from_secs(3600),
            ..quick()
        },
    )
    .await;
    let c = reqwest::Client::new();
    let mut extended = 0;
    for _ in 0..100 {
        let h: Value =
            common::get_json(&c, format!("{}/v1/customers/{CONTOSO}/history", server.url)).await;
        extended = h["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "DelegatedAdminExtended")
            .count();
        if extended > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        extended >= 4,
        "one AdvanceClock at start-up records every extension due ({extended})"
    );
    let v: Value = common::get_json(&c, format!("{}/v1/customers/{CONTOSO}", server.url)).await;
    assert_eq!(
        v["partners"][0]["delegated_admin"]["admin_relationships"][0]["status"],
        "active"
    );
    server.stop().await;
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, out, first, url) = common::spawn_serve(dir.path(), &["--sample-data"]);
    assert!(first.contains("listening on http://127.0.0.1:"), "{first}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let head_before: u64 = rt.block_on(async {
        let v: Value = reqwest::get(format!("{url}/healthz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["head"].as_u64().unwrap()
    });
    assert!(
        head_before > 5_000,
        "sample data was loaded into the empty ledger, as asked"
    );
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let rest: Vec<String> = out.lines().map(|l| l.unwrap()).collect();
    assert!(
        rest.iter()
            .any(|l| l.starts_with("stopped cleanly at position")),
        "{rest:?}"
    );
    assert!(common::run(dir.path(), &["verify"], None).status.success());
}
