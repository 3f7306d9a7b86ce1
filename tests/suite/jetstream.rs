//! The JetStream relay against a real `nats-server` 2.15 (a throwaway one per test, file storage, `sync_interval:
//! always`; `relay::throwaway`): stream sequence N is ledger position N, each message's event id, hash, subject and
//! CloudEvents attributes match the ledger's, through relay kills, broker restarts, a deleted stream and a foreign
//! message; and a consumer written with a plain NATS client (Python's `nats-py`) reads one customer's events in order
//! across its own restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use partner_ledger::relay::throwaway::Nats;
use rand::Rng;
use serde_json::Value;

use crate::common::{run, serve, BIN};

const OP: &str = r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops@ledger.example","role":"operator"}"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One message as the stream holds it.
struct Held {
    sequence: u64,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
}

/// Every message of `stream`, in sequence order, read in batches by an ephemeral pull consumer without acks.
async fn stream_messages(url: &str, stream: &str) -> Vec<Held> {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.unwrap();
    let last = s.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return out;
    }
    let consumer = s
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .unwrap();
    while (out.len() as u64) < last {
        let mut batch = consumer
            .batch()
            .max_messages(1000)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .unwrap();
        let before = out.len();
        while let Some(m) = batch.next().await {
            let m = m.unwrap();
            let sequence = m.info().unwrap().stream_sequence;
            out.push(Held {
                sequence,
                subject: m.subject.to_string(),
                headers: m.headers.clone().unwrap_or_default(),
                payload: m.payload.clone(),
            });
        }
        assert!(
            out.len() > before,
            "the stream delivered nothing after sequence {}",
            out.len()
        );
    }
    out
}

/// Whether the stream ends at the server's head.
async fn stream_at_head(nats: &str, c: &reqwest::Client, server: &str) -> bool {
    stream_end(nats).await == head_of(c, server).await
}

/// The stream's last sequence (0 when it does not exist).
async fn stream_end(url: &str) -> u64 {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    match js.get_stream("PARTNER_LEDGER").await {
        Ok(mut s) => s.info().await.unwrap().state.last_sequence,
        Err(_) => 0,
    }
}

/// The lines of an NDJSON response.
async fn ndjson(c: &reqwest::Client, url: &str) -> Vec<bytes::Bytes> {
    let body = c
        .get(url)
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"{\"heartbeat\""))
        .map(bytes::Bytes::copy_from_slice)
        .collect()
}

async fn head_of(c: &reqwest::Client, server: &str) -> u64 {
    crate::common::get_json(c, format!("{server}/healthz")).await["head"]
        .as_u64()
        .unwrap()
}

/// The subject an envelope belongs on, worked out from its `data` alone: its customer's, else its partner's (the
/// provider's for a two-tier link).
fn expected_subject(envelope: &Value) -> String {
    let data = &envelope["data"];
    let t = envelope["type"].as_str().unwrap();
    if let Some(c) = data["customer"].as_str() {
        return format!("ledger.customer.{c}.{t}");
    }
    let p = data["partner"]
        .as_str()
        .or(data["provider"].as_str())
        .unwrap_or_else(|| panic!("event names neither customer nor partner: {envelope}"));
    format!("ledger.partner.{p}.{t}")
}

/// Asserts that `stream` holds exactly positions 1..head of the server's ledger: sequence N is position N, body the
/// stored envelope byte for byte, `Nats-Msg-Id` and `ce-id` its event id, `ce-ledgerhash` its hash, the subject
/// its customer's or partner's, and every `ce-` header equal to the attribute of the same name in the HTTP stream's
/// CloudEvents form. Returns the head.
async fn assert_exact(nats: &str, stream: &str, server: &str) -> u64 {
    let c = reqwest::Client::new();
    let head = head_of(&c, server).await;
    let envelopes = ndjson(&c, &format!("{server}/v1/events?to={head}")).await;
    let structured = ndjson(
        &c,
        &format!("{server}/v1/events?to={head}&format=cloudevents"),
    )
    .await;
    assert_eq!(envelopes.len() as u64, head);
    assert_eq!(structured.len() as u64, head);
    let held = stream_messages(nats, stream).await;
    assert_eq!(
        held.len() as u64,
        head,
        "the stream holds {} messages, the ledger {head} events",
        held.len()
    );
    for ((m, raw), ce) in held.iter().zip(&envelopes).zip(&structured) {
        let e: Value = serde_json::from_slice(raw).unwrap();
        let position = e["position"].as_u64().unwrap();
        assert_eq!(
            m.sequence, position,
            "stream sequence {} holds position {position}",
            m.sequence
        );
        assert_eq!(
            &m.payload, raw,
            "the body at sequence {} is not the stored envelope",
            m.sequence
        );
        let header = |n: &str| m.headers.get(n).map(|v| v.as_str().to_string());
        assert_eq!(header("Nats-Msg-Id").as_deref(), e["event_id"].as_str());
        assert_eq!(header("ce-ledgerhash").as_deref(), e["hash"].as_str());
        assert_eq!(m.subject, expected_subject(&e));
        let ce: Value = serde_json::from_slice(ce).unwrap();
        assert_eq!(ce["data"], e, "the CloudEvents form's data is the envelope");
        for attribute in [
            "specversion",
            "id",
            "source",
            "type",
            "time",
            "subject",
            "ledgerposition",
            "ledgerhash",
            "ledgerprevhash",
            "ledgerrecordedtime",
        ] {
            let over_http = match &ce[attribute] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(
                header(&format!("ce-{attribute}")).as_deref(),
                Some(over_http.as_str()),
                "ce-{attribute} at sequence {}",
                m.sequence
            );
        }
        assert_eq!(
            header("Content-Type").as_deref(),
            ce["datacontenttype"].as_str()
        );
    }
    head
}

/// Waits until `check` holds, polling; panics naming `what` after `limit`.
async fn until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The relay in `serve` has caught up with the head.
async fn relay_caught_up(c: &reqwest::Client, server: &str) -> bool {
    let h = crate::common::get_json(c, format!("{server}/healthz")).await;
    h["relay"]["phase"] == "relaying"
        && h["relay"]["relayed"] == h["head"]
        && h["relay"]["lag"] == 0
}

/// `n` commands registering customers, as NDJSON.
fn registrations(tag: u32, n: u32) -> String {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"type":"RegisterCustomer","command_id":"{tag:08x}-0000-4000-8000-{i:012x}","actor":{OP},"customer":"{tag:08x}-1111-4000-8000-{i:012x}","company_name":"Relay {tag} {i}","domain":"r{tag}x{i}.onmicrosoft.com","country":"NL","cloud":"public"}}"#
            ) + "\n"
        })
        .collect()
}

async fn post(c: &reqwest::Client, server: &str, body: String) {
    let r = c
        .post(format!("{server}/v1/commands"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// `partner-ledger relay` against `server`, its stderr to `log`.
fn relay_process(server: &str, nats: &str, log: &Path) -> Child {
    Command::new(BIN)
        .args([
            "--log-level",
            "info",
            "relay",
            "--server",
            server,
            "--nats",
            nats,
            "--nats-lease-seconds",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// A ledger of about 100,000 events from the workload generator.
fn big_ledger(dir: &Path) {
    let commands = dir.join("commands.ndjson");
    let generated = Command::new(BIN)
        .args(["generate", "--commands", "98000", "--seed", "7"])
        .stdout(std::fs::File::create(&commands).unwrap())
        .status()
        .unwrap();
    assert!(generated.success());
    let data = dir.join("data");
    let out = run(&data, &["exec", commands.to_str().unwrap()], None);
    assert!(out.status.success());
}

#[test]
fn a_relay_killed_at_random_points_of_a_100k_event_catch_up_leaves_exactly_positions_1_to_head() {
    let dir = tempfile::tempdir().unwrap();
    big_ledger(dir.path());
    let server_log = dir.path().join("server.log");
    let server = serve(
        &dir.path().join("data"),
        Some(&server_log),
        &["--log-level", "info"],
    );
    let nats = Nats::start();
    let rt = runtime();
    let c = reqwest::Client::new();
    let head = rt.block_on(head_of(&c, &server.url()));
    assert!(head >= 100_000, "the ledger has {head} events");
    let mut rng = rand::rng();
    let log: PathBuf = dir.path().join("relay.log");
    let mut kills = Vec::new();
    for _ in 0..10 {
        let mut relay = relay_process(&server.url(), &nats.url(), &log);
        // Past the lease takeover from the relay killed before (about 1.25 s with a 1 s lease), so each kill lands
        // while this relay publishes; ten of them relay well under the whole log.
        std::thread::sleep(Duration::from_millis(rng.random_range(1800..3000)));
        relay.kill().unwrap();
        relay.wait().unwrap();
        kills.push(rt.block_on(stream_end(&nats.url())));
    }
    let mut relay = relay_process(&server.url(), &nats.url(), &log);
    let start = Instant::now();
    // Against the head of now: the server's start-up clock catch-up may still have been appending when the test began.
    while !rt.block_on(stream_at_head(&nats.url(), &c, &server.url())) {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the catch-up did not complete: {}\nthe server said: {}",
            std::fs::read_to_string(&log).unwrap(),
            std::fs::read_to_string(&server_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    relay.kill().unwrap();
    let _ = relay.wait();
    let head = rt.block_on(assert_exact(&nats.url(), "PARTNER_LEDGER", &server.url()));
    let landed = kills.iter().filter(|k| **k > 0 && **k < head).count();
    assert!(
        landed >= 5,
        "only {landed} kills landed in the middle of the catch-up: {kills:?}"
    );
    eprintln!("killed at stream positions {kills:?}, then completed 1..{head}");
}

#[test]
fn the_relay_in_serve_outlasts_a_stopped_broker_on_both_backends_and_never_slows_the_writer() {
    for (backend, dir) in crate::pg::ledger_folders() {
        let nats = Nats::start();
        let rt = runtime();
        // A stream made by the operator with a one-second duplicate window: the broker, restarted after more than
        // that, no longer knows the last message id, and the relay must go on all the same.
        rt.block_on(async {
            use async_nats::jetstream::stream;
            let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
            js.create_stream(stream::Config {
                name: "PARTNER_LEDGER".into(),
                subjects: vec!["ledger.>".into()],
                storage: stream::StorageType::File,
                max_messages: -1,
                max_bytes: -1,
                max_messages_per_subject: -1,
                duplicate_window: Duration::from_secs(1),
                deny_delete: true,
                deny_purge: true,
                ..Default::default()
            })
            .await
            .unwrap();
        });
        let server = serve(dir.path(), None, &["--sample-data", "--nats", &nats.url()]);
        let c = reqwest::Client::new();
        let url = server.url();
        rt.block_on(until(Duration::from_secs(60), "the first catch-up", || {
            relay_caught_up(&c, &url)
        }));
        let nats_down = {
            let mut nats = nats;
            nats.stop();
            nats
        };
        // Commands commit while the broker is away: the relay falls behind, the writer does not wait for it.
        rt.block_on(post(&c, &url, registrations(1, 200)));
        rt.block_on(async {
            let metrics = c
                .get(format!("{url}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let lag: u64 = metrics
                .lines()
                .find_map(|l| l.strip_prefix("partner_ledger_relay_lag_events "))
                .unwrap()
                .parse()
                .unwrap();
            assert!(lag >= 200, "{backend}: lag {lag} with the broker down");
        });
        std::thread::sleep(Duration::from_secs(2));
        let mut nats = nats_down;
        nats.resume();
        rt.block_on(until(
            Duration::from_secs(60),
            "the relay catching up after the broker came back",
            || relay_caught_up(&c, &url),
        ));
        rt.block_on(assert_exact(&nats.url(), "PARTNER_LEDGER", &url));
        drop(server);
    }
}

#[test]
fn a_deleted_stream_is_rebuilt_from_position_1() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let nats_url = nats.url();
    let server = serve(dir.path(), None, &["--sample-data", "--nats", &nats.url()]);
    let rt = runtime();
    let c = reqwest::Client::new();
    let url = server.url();
    rt.block_on(async {
        until(Duration::from_secs(60), "the first catch-up", || {
            relay_caught_up(&c, &url)
        })
        .await;
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        js.delete_stream("PARTNER_LEDGER").await.unwrap();
        until(Duration::from_secs(60), "the stream rebuilt", || {
            stream_at_head(&nats_url, &c, &url)
        })
        .await;
        assert_exact(&nats.url(), "PARTNER_LEDGER", &url).await;
    });
}

#[test]
fn a_foreign_message_in_the_stream_stops_the_relay_naming_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let nats_url = nats.url();
    let server = serve(dir.path(), None, &["--sample-data"]);
    let rt = runtime();
    let c = reqwest::Client::new();
    let url = server.url();
    let log = dir.path().join("relay.log");
    let mut relay = relay_process(&url, &nats.url(), &log);
    let head = rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        until(Duration::from_secs(60), "the catch-up", || {
            stream_at_head(&nats_url, &c, &url)
        })
        .await;
        let head = head_of(&c, &url).await;
        let ack = js
            .publish("ledger.customer.someone.Foreign", "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(ack.sequence, head + 1);
        post(&c, &url, registrations(2, 3)).await;
        head
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = relay.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the relay went on after a foreign message: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{said}");
    assert!(said.contains(&format!("sequence {}", head + 1)), "{said}");
    // The stream was left as it was: the relay published nothing after the foreign message.
    let held = rt.block_on(stream_messages(&nats.url(), "PARTNER_LEDGER"));
    assert_eq!(held.len() as u64, head + 1);
    // A relay inside a server finds it too, and says so in /healthz while the server serves on.
    drop(server);
    let server = serve(dir.path(), None, &["--nats", &nats.url()]);
    let url = server.url();
    rt.block_on(until(
        Duration::from_secs(30),
        "/healthz naming the foreign sequence",
        || async {
            let h = crate::common::get_json(&c, format!("{url}/healthz")).await;
            h["status"] == "ok"
                && h["relay"]["phase"] == "stopped"
                && h["relay"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(&format!("sequence {}", head + 1)))
        },
    ));
}

#[test]
fn one_relay_publishes_at_a_time_and_a_standby_takes_over_from_a_killed_one() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let nats_url = nats.url();
    let server = serve(dir.path(), None, &["--sample-data"]);
    let rt = runtime();
    let c = reqwest::Client::new();
    let url = server.url();
    let mut first = relay_process(&url, &nats.url(), &dir.path().join("first.log"));
    rt.block_on(until(
        Duration::from_secs(60),
        "the first relay's catch-up",
        || stream_at_head(&nats_url, &c, &url),
    ));
    let standby_log = dir.path().join("standby.log");
    let mut standby = relay_process(&url, &nats.url(), &standby_log);
    let holder = format!("pid {}", first.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&standby_log)
        .unwrap()
        .contains(&holder)
    {
        assert!(
            Instant::now() < deadline,
            "the standby never said who holds the lease: {}",
            std::fs::read_to_string(&standby_log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // While the first holds the lease, it relays new events, and the standby publishes nothing.
    rt.block_on(async {
        post(&c, &url, registrations(4, 20)).await;
        until(Duration::from_secs(30), "the first relay relaying", || {
            stream_at_head(&nats_url, &c, &url)
        })
        .await;
    });
    let standby_said = std::fs::read_to_string(&standby_log).unwrap();
    assert!(
        !standby_said.contains("relaying:") && !standby_said.contains("checking the stream"),
        "the standby went ahead while the lease was held: {standby_said}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    rt.block_on(async {
        post(&c, &url, registrations(3, 50)).await;
        until(Duration::from_secs(60), "the standby relaying", || {
            stream_at_head(&nats_url, &c, &url)
        })
        .await;
        assert_exact(&nats.url(), "PARTNER_LEDGER", &url).await;
    });
    standby.kill().unwrap();
    let _ = standby.wait();
}

/// A Python with `nats-py`: the one `.ci/run` installs under `.ci/venv`, else `python3` on PATH; the test fails,
/// naming what to install, when neither has it.
fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/python3");
    for candidate in [venv, PathBuf::from("python3")] {
        let ok = Command::new(&candidate)
            .args(["-c", "import nats"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return candidate;
        }
    }
    panic!("no Python with nats-py (PyPI): `python3 -m venv .ci/venv && .ci/venv/bin/pip install nats-py`, as .ci/run does");
}

#[test]
fn a_plain_nats_py_consumer_reads_one_customers_events_in_order_across_its_restart() {
    const CONTOSO: &str = "c0000000-0000-4000-8000-00000000000c";
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let server = serve(dir.path(), None, &["--sample-data", "--nats", &nats.url()]);
    let rt = runtime();
    let c = reqwest::Client::new();
    let url = server.url();
    rt.block_on(until(Duration::from_secs(60), "the catch-up", || {
        relay_caught_up(&c, &url)
    }));
    let head = rt.block_on(head_of(&c, &url));
    let expected: Vec<(u64, String)> = rt
        .block_on(ndjson(
            &c,
            &format!("{url}/v1/events?customer={CONTOSO}&to={head}"),
        ))
        .iter()
        .map(|l| {
            let e: Value = serde_json::from_slice(l).unwrap();
            (
                e["position"].as_u64().unwrap(),
                e["event_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(expected.len() > 5, "Contoso has {} events", expected.len());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jetstream_consumer.py");
    let consume = |most: usize| {
        let out = Command::new(python())
            .arg(&script)
            .args([
                &nats.url(),
                "PARTNER_LEDGER",
                "billing",
                &format!("ledger.customer.{CONTOSO}.>"),
                &most.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let mut f = l.split_whitespace();
                (
                    f.next().unwrap().parse::<u64>().unwrap(),
                    f.next().unwrap().to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    // The consumer stops after three events (acknowledged), then runs again and reads the rest.
    let mut got = consume(3);
    assert_eq!(got.len(), 3);
    got.extend(consume(1_000_000));
    assert_eq!(
        got, expected,
        "the durable consumer's events across its restart"
    );
}

#[test]
fn a_stream_that_could_lose_positions_is_refused_naming_its_settings_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let rt = runtime();
    rt.block_on(async {
        use async_nats::jetstream::stream;
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        js.create_stream(stream::Config {
            name: "PARTNER_LEDGER".into(),
            subjects: vec!["ledger.>".into(), "other.>".into()],
            max_age: Duration::from_secs(3600),
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let server = serve(dir.path(), None, &["--sample-data"]);
    let log = dir.path().join("relay.log");
    let status = relay_process(&server.url(), &nats.url(), &log)
        .wait()
        .unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{said}");
    for setting in [
        "its storage is not file",
        "its messages expire",
        "deny_delete and deny_purge must be set",
        "are not exactly ledger.>",
    ] {
        assert!(said.contains(setting), "`{setting}` not named: {said}");
    }
    assert_eq!(
        rt.block_on(stream_end(&nats.url())),
        0,
        "the relay published into it"
    );
}
