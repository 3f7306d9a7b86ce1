//! The read models' property test, through the real writer on a real sled folder (and, 200 cases, on PostgreSQL): random valid and invalid command
//! sequences (ids from small pools, so most commands meet existing entities), submitted in groups so they share
//! batches. After each case:
//! - the projections maintained batch by batch equal a rebuild from scratch, byte for byte;
//! - every view they serve equals the view derived from the write model (a full replay) and the view folded from the
//!   indexes (the as-of path);
//!   and across the run every event type and every refusal code occurred.

use std::collections::BTreeSet;
use std::sync::Mutex;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use super::Projections;
use crate::domain::proptests::{make, prelude, WEIGHTED};
use crate::domain::view::{customer_view, partner_view, subscription_view};
use crate::domain::{parse_line, Code, Event, Position, Timestamp};
use crate::ledger::{replay, Ledger, LedgerConfig, Outcome};
use crate::query::{self, AsOfSpec};
use crate::store::ReadModel;

fn cases() -> u32 {
    std::env::var("PROJECTION_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn projections_rebuilt_from_scratch_equal_incremental_ones_and_the_write_models_views() {
    let (types, codes) = check(cases(), &|dir| LedgerConfig::new(dir));
    let missing_types: Vec<&str> = Event::TYPE_NAMES
        .iter()
        .copied()
        .filter(|t| !types.contains(*t))
        .collect();
    assert!(
        missing_types.is_empty(),
        "event types that never occurred: {missing_types:?}"
    );
    let missing_codes: Vec<String> = Code::ALL
        .iter()
        .map(Code::as_str)
        .filter(|c| !codes.contains(c))
        .collect();
    if cases() >= 1000 {
        assert!(
            missing_codes.is_empty(),
            "refusal codes that never occurred: {missing_codes:?}"
        );
    }
}

/// The same property on PostgreSQL: 200 cases (`PROJECTION_PG_CASES` sets another number), each ledger in a schema of
/// its own on a throwaway server, run as the runtime role.
#[test]
fn the_same_property_holds_on_postgres() {
    use crate::store::postgres::{throwaway, PgTarget};
    let cases = std::env::var("PROJECTION_PG_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let pg = throwaway::server();
    let (types, _) = check(cases, &|dir| {
        let mut config = LedgerConfig::new(dir);
        let schema = throwaway::fresh_schema_on(pg);
        config.store.postgres =
            Some(PgTarget::parse(&pg.url(throwaway::RUNTIME_ROLE), &schema).unwrap());
        config
    });
    assert!(
        types.len() > 20,
        "the cases reached most event types: {types:?}"
    );
}

/// Runs `cases` random cases, each on the ledger `config` describes for a fresh folder; returns the event types and
/// refusal codes that occurred.
fn check(
    cases: u32,
    config: &dyn Fn(&std::path::Path) -> LedgerConfig,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let types = Mutex::new(BTreeSet::<String>::new());
    let codes = Mutex::new(BTreeSet::<String>::new());
    // A fixed seed (PROJECTION_SEED picks another): which event types and refusal codes 1,000 random cases reach
    // is itself asserted below, and with a fresh seed each run a rare one (DelegatedAdminTerminated) was seen missing
    // once, failing the suite by chance.
    let seed: u64 = std::env::var("PROJECTION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_130);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            ..Config::default()
        },
        proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha,
            &seed_bytes,
        ),
    );
    let step = (any::<u8>(), any::<[u8; 4]>(), 0i64..40, 0u8..24, 1usize..8);
    let result = runner.run(&prop::collection::vec(step, 50..110), |steps| {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(config(dir.path())).unwrap();
        let mut t: Timestamp = "2023-06-01T00:00:00Z".parse().unwrap();
        for mut v in prelude() {
            v["at"] = json!(t.to_string());
            ledger.execute(parse_line(&v.to_string()).unwrap());
        }
        let mut pending = Vec::new();
        let mut last_id: Option<String> = None;
        let mut outcomes = Vec::new();
        for (kind, picks, hours, disturb, group) in steps {
            t = t.plus_minutes(hours * 60 * 6 - 60).max(t);
            let mut v = make(WEIGHTED[usize::from(kind) % WEIGHTED.len()], picks);
            let at = match disturb {
                0 => t.plus_days(-2).to_string(),
                1 => "2099-01-01T00:00:00Z".to_string(),
                2 => "1999-12-31T00:00:00Z".to_string(),
                _ => t.to_string(),
            };
            if v["type"] == "AdvanceClock" {
                v["to"] = json!(at);
            } else {
                v["at"] = json!(at);
            }
            let id = match (&last_id, disturb) {
                (Some(previous), 3) => previous.clone(),
                _ => uuid::Uuid::new_v4().to_string(),
            };
            v["command_id"] = json!(id);
            last_id = Some(id);
            pending.push(ledger.submit(parse_line(&v.to_string()).unwrap()));
            if pending.len() >= group {
                outcomes.extend(pending.drain(..).map(|t| t.wait()));
            }
        }
        outcomes.extend(pending.drain(..).map(|t| t.wait()));
        for o in &outcomes {
            match o {
                Outcome::Refused { refusal, .. } => {
                    codes.lock().unwrap().insert(refusal.code.as_str());
                }
                Outcome::Unknown { message, .. } => prop_assert!(false, "storage failed: {message}"),
                Outcome::Invalid { message, .. } => prop_assert!(false, "invalid: {message}"),
                Outcome::Committed { .. } => {}
            }
        }
        // Projections are written right after each batch is acknowledged; let the writer finish.
        ledger.close();
        let store = ledger.store();
        for e in store.read(Position(0), None) {
            types.lock().unwrap().insert(e.unwrap().envelope().unwrap().event_type);
        }

        let projections: Projections = ledger.projections();
        let head = store.head().position;
        for model in ReadModel::ALL {
            prop_assert_eq!(projections.checkpoint(model).unwrap(), head);
        }
        let incremental: Vec<_> = ReadModel::ALL.iter().map(|m| projections.dump(*m).unwrap()).collect();
        let state = replay(store, |_| {}).unwrap();
        let as_of = query::resolve(store, None).unwrap();
        let at_head = Some(AsOfSpec::Position(head));
        // The live write model that "now" views read in a running ledger is the replayed one.
        prop_assert_eq!(ledger.live().position(), head);
        prop_assert!(ledger.live().read(|live, _| live == &state), "the live state differs from a replay");
        for id in state.customers.keys() {
            let from_model = customer_view(&state, *id, as_of);
            let served = query::customer(store, *id, None).unwrap().map(|a| a.view);
            let folded = query::customer(store, *id, at_head).unwrap().map(|a| a.view);
            let live = query::customer_in(&ledger, *id, None).unwrap().map(|a| a.view);
            prop_assert_eq!(&served, &from_model);
            prop_assert_eq!(&folded, &from_model);
            prop_assert_eq!(&live, &from_model);
        }
        for id in state.partners.keys() {
            let from_model = partner_view(&state, *id, as_of);
            prop_assert_eq!(&query::partner(store, *id, None).unwrap().map(|a| a.view), &from_model);
            prop_assert_eq!(&query::partner(store, *id, at_head).unwrap().map(|a| a.view), &from_model);
            prop_assert_eq!(&query::partner_in(&ledger, *id, None).unwrap().map(|a| a.view), &from_model);
        }
        for id in state.subscriptions.keys() {
            let from_model = subscription_view(&state, *id, as_of);
            prop_assert_eq!(&query::subscription(store, *id, None).unwrap().map(|a| a.view), &from_model);
            prop_assert_eq!(&query::subscription(store, *id, at_head).unwrap().map(|a| a.view), &from_model);
            prop_assert_eq!(&query::subscription_in(&ledger, *id, None).unwrap().map(|a| a.view), &from_model);
        }
        // The expiring list equals the active admin relationships of the write model, soonest first.
        let mut active: Vec<_> = state
            .admin
            .values()
            .filter(|a| a.status == crate::domain::state::AdminStatus::Active)
            .filter_map(|a| a.ends_at.map(|e| (e, a.id)))
            .collect();
        active.sort();
        let listed: Vec<_> = projections
            .expiring(
                "2000-01-01T00:00:00Z".parse().unwrap(),
                "2200-01-01T00:00:00Z".parse().unwrap(),
            )
            .unwrap()
            .into_iter()
            .map(|e| (e.ends_at, e.admin_relationship))
            .collect();
        prop_assert_eq!(listed, active);
        projections.rebuild(&ReadModel::ALL, |_| {}).unwrap();
        let rebuilt: Vec<_> = ReadModel::ALL.iter().map(|m| projections.dump(*m).unwrap()).collect();
        for (i, name) in ReadModel::NAMES.iter().enumerate() {
            let (a, b) = (&incremental[i], &rebuilt[i]);
            if a != b {
                let ka: BTreeSet<_> = a.iter().map(|(k, _)| hex::encode(k)).collect();
                let kb: BTreeSet<_> = b.iter().map(|(k, _)| hex::encode(k)).collect();
                let first = a.iter().zip(b.iter()).find(|(x, y)| x != y).map(|(x, y)| {
                    (String::from_utf8_lossy(&x.1).to_string(), String::from_utf8_lossy(&y.1).to_string())
                });
                prop_assert!(
                    false,
                    "projection {name}: a rebuild differs from the incremental one; keys only incremental {:?}, only rebuilt {:?}; first differing values {:?}",
                    ka.difference(&kb).collect::<Vec<_>>(),
                    kb.difference(&ka).collect::<Vec<_>>(),
                    first
                );
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    (types.into_inner().unwrap(), codes.into_inner().unwrap())
}
