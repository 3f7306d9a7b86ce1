//! Many `serve` processes sharing one ledger on PostgreSQL (a throwaway server, real processes on loopback ports):
//! one writes at a time under a lease, a paused writer is fenced off, a killed one is replaced within seconds,
//! commands sent to any process are forwarded to the writer, and a read carrying `Ledger-Min-Position` reflects
//! what another process answered.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{run, stdout_lines, Server};
use crate::pg;
use crate::shared_ledger::{http, register, runtime, send};

async fn health(client: &reqwest::Client, url: &str) -> Option<Value> {
    let r = client
        .get(format!("{url}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// Three processes on one fresh ledger; the first one started writes.
fn start(data: &Path, extra: &[&str]) -> Vec<Server> {
    pg::schema_for(data);
    (0..3)
        .map(|i| {
            let stderr = data.with_extension(format!("p{i}.stderr"));
            Server::launch(data, extra, Some(&stderr)).unwrap()
        })
        .collect()
}

/// The index of the process that writes, once exactly one says it does and the others name it.
async fn writer_of(client: &reqwest::Client, urls: &[String], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let mut writers = Vec::new();
        let mut named = 0;
        for (i, url) in urls.iter().enumerate() {
            if let Some(h) = health(client, url).await {
                if h["role"] == "writer" {
                    writers.push(i);
                } else if h["writer"]["address"].is_string() {
                    named += 1;
                }
            }
        }
        if writers.len() == 1 && named == urls.len() - 1 {
            return writers[0];
        }
        assert!(
            Instant::now() < deadline,
            "no single writer named by the others within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log as the CLI reads it: every position in order, and the events of each command.
fn check_log(data: &Path) -> (Vec<Value>, HashMap<String, usize>) {
    let verify = run(data, &["verify"], None);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let events = stdout_lines(&run(data, &["events"], None));
    let positions: Vec<u64> = events
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(
        positions,
        (1..=positions.len() as u64).collect::<Vec<_>>(),
        "gapless from 1"
    );
    let mut per_command = HashMap::new();
    for e in &events {
        *per_command
            .entry(e["command_id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    (events, per_command)
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

#[test]
fn a_paused_writer_is_fenced_off_and_appends_nothing_once_another_took_over() {
    let data = tempfile::tempdir().unwrap();
    let servers = start(data.path(), &["--lease-seconds", "2"]);
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let rt = runtime();
    let client = http();
    let old = rt.block_on(writer_of(&client, &urls, Duration::from_secs(15)));
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    // Sent to a follower: forwarded to the writer.
    let (a_id, _, a) = register(1, 1);
    let (status, answer, _) = rt.block_on(send(&client, &urls[others[0]], &a)).unwrap();
    assert_eq!(
        (status, &answer["outcome"]),
        (200, &Value::from("committed")),
        "{answer}"
    );

    signal(servers[old].pid(), "STOP");
    // A command sent to the paused writer waits in its socket's queue: the acceptance of the agreement of a customer
    // that the new writer registers meanwhile. From the paused writer's stale state it would be refused; it must
    // never be (it is answered `unknown`, or forwarded and committed).
    let (c_id, c_customer, c) = register(1, 3);
    let b_id = "0b000000-0000-4000-8000-000000000002".to_string();
    let b = format!(
        r#"{{"type":"AcceptCustomerAgreement","command_id":"{b_id}","actor":{{"tenant":"{c_customer}","user":"admin@c1x3.onmicrosoft.com","role":"customer_global_admin"}},"customer":"{c_customer}"}}"#
    );
    let in_flight = {
        let (client, url, b) = (client.clone(), urls[old].clone(), b.clone());
        rt.spawn(async move { send(&client, &url, &b).await })
    };
    let stopped = Instant::now();
    let new = rt.block_on(async {
        loop {
            for i in &others {
                if health(&client, &urls[*i])
                    .await
                    .is_some_and(|h| h["role"] == "writer")
                {
                    return *i;
                }
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(15),
                "nobody took over"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    eprintln!(
        "took over {:?} after the writer was paused",
        stopped.elapsed()
    );
    let (status, answer, _) = rt.block_on(send(&client, &urls[new], &c)).unwrap();
    assert_eq!(
        (status, &answer["outcome"]),
        (200, &Value::from("committed")),
        "{answer}"
    );

    signal(servers[old].pid(), "CONT");
    let (status, answer, _) = rt.block_on(in_flight).unwrap().unwrap();
    eprintln!(
        "the command in flight to the paused writer was answered {status} {}",
        answer["outcome"]
    );
    // Answered `unknown` (the deposed writer could not confirm its stale state), or forwarded and committed.
    match answer["outcome"].as_str() {
        Some("unknown") => {
            assert_eq!(status, 503, "{answer}");
            let (status, answer, _) = rt.block_on(send(&client, &urls[new], &b)).unwrap();
            assert_eq!(
                (status, &answer["outcome"]),
                (200, &Value::from("committed")),
                "{answer}"
            );
        }
        Some("committed") => {}
        _ => panic!("{status} {answer}"),
    }
    // The resumed process follows the new writer and forwards to it.
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let h = health(&client, &urls[old]).await.unwrap_or_default();
            if h["role"] == "follower" && h["writer"]["address"] == urls[new].as_str() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the old writer does not follow: {h}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let (d_id, _, d) = register(1, 4);
    let (status, answer, _) = rt.block_on(send(&client, &urls[old], &d)).unwrap();
    assert_eq!(
        (status, &answer["outcome"]),
        (200, &Value::from("committed")),
        "{answer}"
    );
    drop(servers);
    let (events, per_command) = check_log(data.path());
    // Each command once; nothing else (the start-up clock advances append nothing on an empty ledger).
    for id in [&a_id, &b_id, &c_id, &d_id] {
        assert_eq!(per_command.get(id.as_str()), Some(&1), "{id} once");
    }
    assert_eq!(events.len(), 4, "nothing else was appended");
}

#[test]
fn the_writer_killed_under_load_is_replaced_within_seconds_ten_times_and_nothing_is_lost_or_doubled(
) {
    const CLIENTS: usize = 6;
    const ROUNDS: usize = 10;
    let data = tempfile::tempdir().unwrap();
    let mut servers: Vec<Server> = start(data.path(), &[]);
    let schema = pg::schema_for(data.path());
    let mut sql =
        postgres::Client::connect(&pg::server().url("postgres"), postgres::NoTls).unwrap();
    let urls = Arc::new(Mutex::new(
        servers.iter().map(Server::url).collect::<Vec<_>>(),
    ));
    let rt = runtime();
    let client = http();
    let stop = Arc::new(AtomicBool::new(false));
    let acked_total = Arc::new(AtomicUsize::new(0));
    // When each command was acknowledged, for the failover times.
    let acks: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (client, urls, stop, total, acks) = (
                client.clone(),
                Arc::clone(&urls),
                Arc::clone(&stop),
                Arc::clone(&acked_total),
                Arc::clone(&acks),
            );
            rt.spawn(async move {
                let mut acked: Vec<(String, u64)> = Vec::new();
                let mut n = 0;
                let mut attempt = c;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let (id, _, line) = register(c + 1, n);
                    // Retried with the same command_id, on the next process each time, until answered.
                    loop {
                        let url = {
                            let urls = urls.lock().unwrap();
                            urls[attempt % urls.len()].clone()
                        };
                        match send(&client, &url, &line).await {
                            Ok((200, v, _)) if v["outcome"] == "committed" => {
                                let at = v["positions"][0].as_u64().unwrap();
                                acked.push((id.clone(), at));
                                total.fetch_add(1, Ordering::SeqCst);
                                acks.lock().unwrap().push((Instant::now(), at));
                                break;
                            }
                            Ok((status, v, _)) => {
                                assert!(status == 503 || v["outcome"] == "unknown", "{status} {v}");
                            }
                            Err(_) => {}
                        }
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                acked
            })
        })
        .collect();
    let mut failovers = Vec::new();
    for round in 0..ROUNDS {
        let now: Vec<String> = urls.lock().unwrap().clone();
        let w = rt.block_on(writer_of(&client, &now, Duration::from_secs(20)));
        // Load on the writer for a moment.
        let before = acked_total.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(20);
        while acked_total.load(Ordering::SeqCst) < before + 200 {
            assert!(Instant::now() < deadline, "round {round}: no load");
            std::thread::sleep(Duration::from_millis(20));
        }
        servers[w].kill().unwrap();
        let killed = Instant::now();
        // What the killed writer had committed (read at once: taking over takes longer than this query).
        let head: i64 = sql
            .query_one(&format!("SELECT position FROM {schema}.head"), &[])
            .unwrap()
            .get(0);
        let head = u64::try_from(head).unwrap();
        // The first command acknowledged beyond that: another process writes.
        let took = loop {
            if let Some((t, _)) = acks
                .lock()
                .unwrap()
                .iter()
                .find(|(t, at)| *t > killed && *at > head)
            {
                break *t - killed;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "round {round}: nobody wrote within 10 s of the kill"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        failovers.push(took);
        eprintln!("round {round}: a command was committed {took:?} after the writer was killed");
        // The killed process is started again, as a supervisor would.
        let stderr = data.path().with_extension(format!("r{round}.stderr"));
        servers[w] = Server::launch(data.path(), &[], Some(&stderr)).unwrap();
        urls.lock().unwrap()[w] = servers[w].url();
    }
    stop.store(true, Ordering::SeqCst);
    let acked: Vec<(String, u64)> = rt.block_on(async {
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.unwrap());
        }
        all
    });
    drop(servers);
    let (events, per_command) = check_log(data.path());
    for (id, at) in &acked {
        assert_eq!(per_command.get(id), Some(&1), "{id} committed exactly once");
        assert_eq!(
            events[usize::try_from(at - 1).unwrap()]["command_id"],
            id.as_str(),
            "{id} is where its answer said"
        );
    }
    failovers.sort();
    eprintln!(
        "failover over {ROUNDS} kill -9 rounds, {} commands acknowledged: min {:?}, median {:?}, max {:?}",
        acked.len(),
        failovers[0],
        failovers[ROUNDS / 2],
        failovers[ROUNDS - 1]
    );
}

#[test]
fn a_read_with_the_position_a_command_reached_on_another_process_sees_that_command() {
    let data = tempfile::tempdir().unwrap();
    let servers = start(data.path(), &[]);
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let rt = runtime();
    let client = http();
    let w = rt.block_on(writer_of(&client, &urls, Duration::from_secs(15)));
    let followers: Vec<usize> = (0..3).filter(|i| *i != w).collect();
    // Background load through every process.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..3)
        .map(|i| {
            let (client, url, stop) = (client.clone(), urls[i].clone(), Arc::clone(&stop));
            rt.spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let _ = send(&client, &url, &register(100 + i, n).2).await;
                }
            })
        })
        .collect();
    rt.block_on(async {
        for n in 0..300 {
            // Committed through one process (a follower or the writer), read at once on a follower.
            let (write_on, read_on) = match n % 3 {
                0 => (followers[0], followers[1]),
                1 => (followers[1], followers[0]),
                _ => (w, followers[n % 2]),
            };
            let (_, customer, line) = register(1, n);
            let (status, answer, position) = send(&client, &urls[write_on], &line).await.unwrap();
            assert_eq!(status, 200, "{answer}");
            let position = position.expect("a command's answer carries Ledger-Position");
            assert!(position >= answer["positions"][0].as_u64().unwrap());
            let r = client
                .get(format!("{}/v1/customers/{customer}", urls[read_on]))
                .header("ledger-min-position", position.to_string())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let view: Value = r.json().await.unwrap();
            assert_eq!(status, 200, "read {n} on process {read_on}: {view}");
            assert!(view.to_string().contains(&customer), "{view}");
        }
    });
    stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        for l in load {
            l.await.unwrap();
        }
        // A position the log itself has not reached, not even at the writer: 400 beyond_head after the follower's
        // wait, naming the writer's head (no answer could have given it); not a number: 400.
        let far = client
            .get(format!("{}/v1/events", urls[followers[0]]))
            .header("ledger-min-position", "999999999")
            .send()
            .await
            .unwrap();
        assert_eq!(far.status().as_u16(), 400);
        let body: Value = far.json().await.unwrap();
        assert_eq!(body["error"], "beyond_head", "{body}");
        assert!(body["head"].as_u64().unwrap() >= 300, "{body}");
        let bad = client
            .get(format!("{}/healthz", urls[followers[0]]))
            .header("ledger-min-position", "soon")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status().as_u16(), 400);
        // A stream read on one process and resumed on another goes on at the next position.
        let first: Vec<u64> = stream_positions(&client, &urls[followers[0]], None, 50).await;
        let rest = stream_positions(&client, &urls[followers[1]], first.last().copied(), 50).await;
        let expected: Vec<u64> = (1..=100).collect();
        assert_eq!([first, rest].concat(), expected);
    });
}

/// The first `n` positions of `/v1/events` as NDJSON, after `after`.
async fn stream_positions(
    client: &reqwest::Client,
    url: &str,
    after: Option<u64>,
    n: usize,
) -> Vec<u64> {
    use futures_util::StreamExt;
    let from = after.map(|p| format!("?from={p}")).unwrap_or_default();
    let r = client
        .get(format!("{url}/v1/events{from}"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut stream = r.bytes_stream();
    let (mut buf, mut out) = (String::new(), Vec::new());
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                if let Some(p) = v["position"].as_u64() {
                    out.push(p);
                    if out.len() == n {
                        return out;
                    }
                }
            }
        }
    }
    out
}

/// Each way forwarding a command to the writer can fail answers its own code, and none appends anything: a writer
/// address that takes the request and hangs up (`writer_unavailable`, naming the command ids to retry), one that
/// refuses connections (`no_writer`, after the lease's wait), a request another process already forwarded
/// (`not_the_writer`), and a bearer token that would cross the network in cleartext (`insecure_forward`).
#[test]
fn each_way_forwarding_fails_answers_its_code_and_appends_nothing() {
    let data = tempfile::tempdir().unwrap();
    pg::schema_for(data.path());
    let rt = runtime();
    let client = http();
    let stderr = |name: &str| data.path().with_extension(format!("{name}.stderr"));
    // Where the first writer says it is: something that reads one request and closes the connection unanswered,
    // then stops listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hangs_up = format!("http://{}", listener.local_addr().unwrap());
    let taker = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = [0u8; 8192];
        let _ = std::io::Read::read(&mut conn, &mut request);
    });
    let pair = |advertise: &str, name: &str| {
        let writer = Server::launch(
            data.path(),
            &["--lease-seconds", "2", "--advertise", advertise],
            Some(&stderr(&format!("{name}-writer"))),
        )
        .unwrap();
        let url = writer.url();
        rt.block_on(writer_of(&client, &[url], Duration::from_secs(15)));
        let follower = Server::launch(
            data.path(),
            &["--lease-seconds", "2"],
            Some(&stderr(&format!("{name}-follower"))),
        )
        .unwrap();
        let url = follower.url();
        rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(15);
            while health(&client, &url)
                .await
                .map(|h| h["writer"]["address"].clone())
                != Some(Value::from(advertise))
            {
                assert!(
                    Instant::now() < deadline,
                    "the follower never named {advertise}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        (writer, follower)
    };
    let post = |url: &str, line: &str, headers: &[(&str, &str)]| {
        rt.block_on(async {
            let mut r = client
                .post(format!("{url}/v1/commands"))
                .header("content-type", "application/json")
                .body(line.to_string());
            for (name, value) in headers {
                r = r.header(*name, *value);
            }
            let r = r.send().await.unwrap();
            let (status, headers) = (r.status().as_u16(), r.headers().clone());
            (status, headers, r.json::<Value>().await.unwrap())
        })
    };
    let mut tried = Vec::new();

    let (mut writer, mut follower) = pair(&hangs_up, "first");
    // Taken and hung up on: it may have been committed, so the answer names what to retry.
    let (id, _, line) = register(9, 1);
    let (status, headers, answer) = post(&follower.url(), &line, &[]);
    assert_eq!(
        (status, &answer["error"]),
        (503, &Value::from("writer_unavailable")),
        "{answer}"
    );
    assert_eq!(answer["command_ids"], serde_json::json!([id]), "{answer}");
    assert_eq!(headers["retry-after"], "1");
    tried.push(id);
    taker.join().unwrap();
    // Nothing listens there now: nothing was submitted, after waiting out the lease for a new writer.
    let (id, _, line) = register(9, 2);
    let (status, headers, answer) = post(&follower.url(), &line, &[]);
    assert_eq!(
        (status, &answer["error"]),
        (503, &Value::from("no_writer")),
        "{answer}"
    );
    assert_eq!(headers["retry-after"], "1");
    assert!(
        answer["message"].as_str().unwrap().contains(&hangs_up),
        "{answer}"
    );
    tried.push(id);
    // Already forwarded by another process: never forwarded again, and marked so its sender asks the lease again.
    let (id, _, line) = register(9, 3);
    let (status, headers, answer) = post(
        &follower.url(),
        &line,
        &[("ledger-forwarded-by", "another process")],
    );
    assert_eq!(
        (status, &answer["error"]),
        (503, &Value::from("not_the_writer")),
        "{answer}"
    );
    assert_eq!(headers["ledger-not-writer"], "1");
    assert_eq!(headers["retry-after"], "1");
    tried.push(id);
    writer.kill().unwrap();
    follower.kill().unwrap();

    // A writer beyond this host over plain HTTP: a bearer token is not sent there without --insecure-http.
    let beyond = "http://192.0.2.1:9";
    let (writer, follower) = pair(beyond, "second");
    let (id, _, line) = register(9, 4);
    let (status, headers, answer) = post(
        &follower.url(),
        &line,
        &[("authorization", "Bearer a-token-of-the-caller")],
    );
    assert_eq!(
        (status, &answer["error"]),
        (503, &Value::from("insecure_forward")),
        "{answer}"
    );
    assert!(
        answer["message"].as_str().unwrap().contains(beyond),
        "{answer}"
    );
    assert!(
        !headers.contains_key("retry-after"),
        "send it to the writer instead"
    );
    tried.push(id);
    drop((writer, follower));

    let (_, per_command) = check_log(data.path());
    for id in &tried {
        assert!(!per_command.contains_key(id), "{id} was appended");
    }
}
