//! The crash loop: 20 rounds of start the server → 8 concurrent HTTP writers → `kill -9` at a random moment after at
//! least 1,000 acknowledgements, with requests in flight → reopen, and check that every acknowledged command is in the
//! log at the positions it was told, positions are contiguous, the chain verifies, and the write model equals a
//! rebuild from the log.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use partner_ledger::domain::{CommandId, Position, State};
use partner_ledger::ledger::{replay_onto, Ledger, LedgerConfig};
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 20;
const WRITERS: usize = 8;
const OP: &str =
    r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops","role":"operator"}"#;
const A: &str = "a0000000-0000-4000-8000-00000000000a";

/// A customer registration and partner A's relationship request for it: one NDJSON request of two dependent commands.
fn pair(round: usize, writer: usize, n: usize) -> (Vec<String>, String) {
    let tag = format!("{round:02x}{writer:02x}{:04x}-{:04x}", n >> 16, n & 0xffff);
    let ids = vec![
        format!("{tag}-4000-8000-000000000001"),
        format!("{tag}-4000-8000-000000000002"),
    ];
    let customer = format!("{tag}-4000-8000-00000000000c");
    let body = format!(
        "{{\"type\":\"RegisterCustomer\",\"command_id\":\"{}\",\"actor\":{OP},\"customer\":\"{customer}\",\"company_name\":\"Customer {tag}\",\"domain\":\"c{tag}.onmicrosoft.com\",\"country\":\"NL\",\"cloud\":\"public\"}}\n\
         {{\"type\":\"RequestRelationship\",\"command_id\":\"{}\",\"actor\":{{\"tenant\":\"{A}\",\"user\":\"sales\",\"role\":\"partner_sales_agent\"}},\"request\":\"{tag}-4000-8000-0000000000aa\",\"partner\":\"{A}\",\"customer\":\"{customer}\"}}\n",
        ids[0], ids[1]
    );
    (ids, body)
}

/// One round: writers until the kill; returns the acknowledged command ids with their positions.
fn round(data: &std::path::Path, round: usize, rng: &mut impl Rng) -> HashMap<String, Vec<u64>> {
    let mut served = common::serve(data, Some(&data.with_extension("stderr")), &[]);
    let url = served.url();
    let kill_after = 1_000 + rng.random_range(0..1_500);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acked: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let at_kill = rt.block_on(async {
        let c = reqwest::Client::new();
        if round == 0 {
            let seed =
                std::fs::read_to_string(common::fixtures().join("seed-story/commands.ndjson"))
                    .unwrap();
            let r = c
                .post(format!("{url}/v1/commands"))
                .header("content-type", "application/x-ndjson")
                .body(seed)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            let text = r.text().await.unwrap();
            let mut acked = acked.lock().unwrap();
            for o in text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            {
                assert_eq!(o["outcome"], "committed", "{o}");
                acked.insert(o["command_id"].as_str().unwrap().into(), positions(&o));
            }
        }
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (c, url, acked, in_flight, stop) = (
                    c.clone(),
                    url.clone(),
                    Arc::clone(&acked),
                    Arc::clone(&in_flight),
                    Arc::clone(&stop),
                );
                tokio::spawn(async move {
                    for n in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let (ids, body) = pair(round, w, n);
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        let r = c
                            .post(format!("{url}/v1/commands"))
                            .header("content-type", "application/x-ndjson")
                            .body(body)
                            .send()
                            .await;
                        let Ok(r) = r else { break };
                        let Ok(text) = r.text().await else { break };
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        let mut acked = acked.lock().unwrap();
                        for (o, id) in text
                            .lines()
                            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                            .zip(&ids)
                        {
                            assert_eq!(o["command_id"].as_str(), Some(id.as_str()));
                            assert_eq!(o["outcome"], "committed", "{o}");
                            acked.insert(id.clone(), positions(&o));
                        }
                    }
                })
            })
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < kill_after {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: only {} acknowledged in 60 s (server log: {})",
                acked.lock().unwrap().len(),
                data.with_extension("stderr").display()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Kill without warning while the writers are mid-request.
        let in_flight_at_kill = in_flight.load(Ordering::SeqCst);
        served.kill().unwrap();
        let acked_at_kill = acked.lock().unwrap().len();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.await.unwrap();
        }
        (in_flight_at_kill, acked_at_kill)
    });
    let (in_flight_at_kill, acked_at_kill) = at_kill;
    assert!(
        acked_at_kill >= 1_000,
        "round {round}: {acked_at_kill} acknowledged"
    );
    assert!(
        in_flight_at_kill > 0,
        "round {round}: requests were in flight at the kill"
    );
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

fn positions(o: &serde_json::Value) -> Vec<u64> {
    o["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect()
}

/// Reopens the ledger in this process and checks everything; returns the head.
fn check(data: &std::path::Path, round: usize, acked: &HashMap<String, Vec<u64>>) -> u64 {
    let ledger = loop {
        match Ledger::open(LedgerConfig::new(data)) {
            Ok(l) => break l,
            Err(e) if e.to_string().contains("lock") => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("round {round}: the ledger does not open after kill -9: {e}"),
        }
    };
    let store = ledger.store();
    let head = store
        .verify_all(&mut |_| {})
        .unwrap_or_else(|e| panic!("round {round}: the chain does not verify: {e}"));
    let mut expected = 1;
    for e in store.read(Position(0), None) {
        assert_eq!(
            e.unwrap().position.0,
            expected,
            "round {round}: positions are contiguous"
        );
        expected += 1;
    }
    assert_eq!(expected - 1, head.position.0);
    for (id, positions) in acked {
        let id = id.parse::<CommandId>().unwrap();
        // A partner's or customer's command is journalled under its tenant's idempotency key, derived from the actor
        // its events record.
        let key = match positions.first() {
            Some(p) => {
                let actor = store
                    .get(Position(*p))
                    .unwrap()
                    .unwrap()
                    .envelope()
                    .unwrap()
                    .actor;
                partner_ledger::store::idempotency_key(&actor, id)
            }
            None => id,
        };
        let record = store.command(key).unwrap();
        let record =
            record.unwrap_or_else(|| panic!("round {round}: acknowledged command {id} was lost"));
        let got: Vec<u64> = record.positions.iter().map(|p| p.0).collect();
        assert_eq!(
            &got, positions,
            "round {round}: {id} at the positions it was told"
        );
    }
    let rebuilt = replay_onto(store, State::new(), Position(0), |_| {}).unwrap();
    ledger.live().read(|state, at| {
        assert_eq!(at, head.position);
        assert!(
            *state == rebuilt,
            "round {round}: the write model differs from a rebuild from the log"
        );
    });
    ledger.close();
    head.position.0
}

#[test]
fn twenty_rounds_of_kill_9_under_concurrent_http_writers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seed: u64 = std::env::var("CRASH_LOOP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash loop seed {seed} (CRASH_LOOP_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut all: HashMap<String, Vec<u64>> = HashMap::new();
    let mut head = 0;
    for r in 0..ROUNDS {
        all.extend(round(&data, r, &mut rng));
        let h = check(&data, r, &all);
        assert!(h >= head, "round {r}: the log shrank");
        head = h;
    }
    eprintln!("crash loop: {ROUNDS} rounds survived, {} commands acknowledged, {head} events, 0 lost (seed {seed})", all.len());
}
