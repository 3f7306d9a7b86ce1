//! Conformance tests for `Store` backends (`src/store/seam.rs`), and a model test: the store behaves like a `Vec` of
//! events even across close and reopen (sled tests its trees against a `BTreeMap` the same way). A second backend runs
//! the same checks by adding its `open` function to `backends()`.

use std::path::Path;
use std::sync::Arc;

use partner_ledger::domain::{
    Actor, CommandId, CustomerId, EntityRef, Event, EventId, PartnerId, Position, Role, Timestamp,
};
use partner_ledger::store::{
    check, CommitEntry, NewEvent, SealedBatch, Store, StoreError, StoreOptions, GENESIS_HASH,
};
use proptest::prelude::*;

type Opener = fn(&Path) -> Arc<dyn Store>;

fn open_sled(dir: &Path) -> Arc<dyn Store> {
    partner_ledger::store::open(dir, &StoreOptions::default())
        .unwrap_or_else(|e| panic!("opening the store at {}: {e} ({e:?})", dir.display()))
}

/// The ledger in PostgreSQL standing for the folder `dir` (the same folder, the same schema), as the runtime role.
fn open_postgres(dir: &Path) -> Arc<dyn Store> {
    let options = StoreOptions {
        postgres: Some(crate::pg::runtime_target(&crate::pg::schema_for(dir))),
        ..StoreOptions::default()
    };
    let store = partner_ledger::store::open(dir, &options).unwrap_or_else(|e| {
        panic!(
            "opening the PostgreSQL store for {}: {e} ({e:?})",
            dir.display()
        )
    });
    // A store writes only under the writer's lease (what `Ledger::open` takes).
    store
        .shared()
        .expect("a PostgreSQL store")
        .take_lease_for_cli(partner_ledger::store::postgres::DEFAULT_LEASE)
        .unwrap();
    store
}

fn backends() -> Vec<(&'static str, Opener)> {
    vec![
        ("sled", open_sled as Opener),
        ("postgres", open_postgres as Opener),
    ]
}

fn id<T: std::str::FromStr>(n: u64, prefix: u32) -> T
where
    T::Err: std::fmt::Debug,
{
    format!("{prefix:08x}-0000-4000-8000-{n:012x}")
        .parse()
        .unwrap()
}

fn event(customer: u64, partner: u64) -> Event {
    if partner == 0 {
        Event::CustomerAgreementAccepted {
            customer: id(customer + 1, 0xc0),
            accepted_by: id(customer + 1, 0xc0),
        }
    } else {
        Event::AzurePlanCreated {
            billing_partner: id::<PartnerId>(partner, 0xb0),
            customer: id::<CustomerId>(customer + 1, 0xc0),
        }
    }
}

fn entry(command: u64, events: &[(u64, u64)]) -> CommitEntry {
    let command_id: CommandId = id(command + 1, 0xcc);
    CommitEntry {
        command_id,
        fingerprint: [u8::try_from(command % 251).unwrap(); 16],
        events: events
            .iter()
            .map(|(c, p)| NewEvent {
                event_id: EventId::new(uuid::Uuid::new_v4()).unwrap(),
                event: event(*c, *p),
                at: "2024-01-01T00:00:00Z".parse::<Timestamp>().unwrap(),
                recorded_at: "2026-11-24T00:00:00Z".parse().unwrap(),
                command_id,
                correlation_id: None,
                actor: Actor {
                    tenant: id(1, 0xff),
                    user: "ops".into(),
                    role: Role::Operator,
                },
            })
            .collect(),
    }
}

#[test]
fn an_empty_store_has_the_genesis_head_and_nothing_to_read() {
    for (name, open) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert_eq!(store.head().position, Position(0), "{name}");
        assert_eq!(store.head().hash, GENESIS_HASH, "{name}");
        assert_eq!(store.read(Position(0), None).count(), 0, "{name}");
        assert!(store.get(Position(1)).unwrap().is_none(), "{name}");
        assert!(store.command(id(1, 0xcc)).unwrap().is_none(), "{name}");
    }
}

#[test]
fn a_batch_gets_contiguous_positions_records_and_index_entries() {
    for (name, open) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let positions = store
            .commit(&[
                entry(0, &[(1, 7), (1, 0)]),
                entry(1, &[]),
                entry(2, &[(2, 7)]),
            ])
            .unwrap();
        assert_eq!(
            positions,
            vec![vec![Position(1), Position(2)], vec![], vec![Position(3)]],
            "{name}"
        );
        assert_eq!(store.head().position, Position(3));
        assert_eq!(
            store.command(id(2, 0xcc)).unwrap().unwrap().positions,
            Vec::<Position>::new(),
            "{name}: empty commands are remembered"
        );
        assert_eq!(
            store.command(id(1, 0xcc)).unwrap().unwrap().fingerprint,
            Some([0; 16])
        );
        let partner = EntityRef::Partner(id(7, 0xb0));
        assert_eq!(
            store.history(&partner, Position(0)).unwrap(),
            vec![Position(1), Position(3)],
            "{name}"
        );
        assert_eq!(
            store.history(&partner, Position(1)).unwrap(),
            vec![Position(3)],
            "{name}: history is after `after`"
        );
        assert_eq!(
            store
                .history(&EntityRef::Customer(id(2, 0xc0)), Position(0))
                .unwrap(),
            vec![Position(1), Position(2)],
            "{name}"
        );
        let read: Vec<u64> = store
            .read(Position(1), Some(Position(2)))
            .map(|e| e.unwrap().position.0)
            .collect();
        assert_eq!(read, vec![2], "{name}: from is exclusive, to inclusive");
        let mut prev = GENESIS_HASH.to_string();
        for e in store.read(Position(0), None) {
            let e = e.unwrap();
            let env = check(&e.raw, e.position, &prev).unwrap();
            prev = env.hash;
        }
        assert_eq!(prev, store.head().hash, "{name}: the head is the last hash");
        let c = store.counters();
        assert_eq!(
            (c.batches, c.flushes, c.fdatasyncs, c.events, c.commands),
            (1, 1, 1, 3, 3),
            "{name}"
        );
    }
}

#[test]
fn a_staged_batch_is_invisible_until_settled_and_one_settle_covers_several() {
    for (name, open) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let first = SealedBatch::seal(&[entry(0, &[(1, 7)])], &store.head());
        let second = SealedBatch::seal(&[entry(1, &[(2, 7), (2, 0)])], first.head());
        let a = store.stage(first).unwrap();
        let b = store.stage(second).unwrap();
        assert_eq!(store.staged_head().position, Position(3), "{name}");
        assert_eq!(
            store.head().position,
            Position(0),
            "{name}: staged is not durable"
        );
        assert_eq!(store.read(Position(0), None).count(), 0, "{name}");
        assert!(store.command(id(1, 0xcc)).unwrap().is_none(), "{name}");
        store.settle(vec![a, b]).unwrap();
        assert_eq!(store.head(), store.staged_head(), "{name}");
        assert_eq!(store.read(Position(0), None).count(), 3, "{name}");
        assert_eq!(
            store.command(id(2, 0xcc)).unwrap().unwrap().positions,
            vec![Position(2), Position(3)],
            "{name}"
        );
        assert_eq!(
            store
                .history(&EntityRef::Partner(id(7, 0xb0)), Position(0))
                .unwrap(),
            vec![Position(1), Position(2)],
            "{name}"
        );
        // A batch sealed on a head that is no longer the staged one is refused, and nothing of it is written.
        let stale = SealedBatch::seal(
            &[entry(2, &[(3, 7)])],
            &partner_ledger::store::Head::genesis(),
        );
        assert!(store.stage(stale).is_err(), "{name}");
        assert_eq!(store.staged_head().position, Position(3), "{name}");
        assert!(
            !store.is_failed(),
            "{name}: a stale batch is the caller's bug, not a storage failure"
        );
        let journal: Vec<_> = store.journal().map(Result::unwrap).collect();
        assert_eq!(journal.len(), 2, "{name}");
        assert!(store.verify_all(&mut |_| {}).is_ok(), "{name}");
    }
}

/// The command index a clean close leaves (`commands.idx`) is what the next open reads; it never stands for a journal
/// that moved on, nor claims a record whose batch was staged but not settled (sled still writes that record at
/// close, and its commands must be found, or a retry of one would commit twice).
#[test]
fn on_sled_the_command_index_file_is_used_only_for_the_journal_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("commands.idx");
    let store = open_sled(dir.path());
    for n in 0..3 {
        store.commit(&[entry(n, &[(n, 7)])]).unwrap();
    }
    drop(store);
    assert!(file.exists(), "a clean close writes it");
    let store = open_sled(dir.path());
    assert_eq!(store.commands_remembered(), 3);
    for n in 0..3 {
        assert!(store.command(id(n + 1, 0xcc)).unwrap().is_some());
    }
    // Committed after the file was written: found, and the file is rewritten at close.
    store.commit(&[entry(3, &[(3, 7)])]).unwrap();
    // Staged, never settled: sled writes the record at close all the same.
    let staged = SealedBatch::seal(&[entry(4, &[(4, 7)])], &store.staged_head());
    let _kept = store.stage(staged).unwrap();
    drop(_kept);
    drop(store);
    let store = open_sled(dir.path());
    let head = store.head().position;
    for n in 0..4 {
        assert!(
            store.command(id(n + 1, 0xcc)).unwrap().is_some(),
            "command {n}"
        );
    }
    // Whatever sled kept of the staged batch, its command is known exactly when its event is in the log.
    assert_eq!(
        store.command(id(5, 0xcc)).unwrap().is_some(),
        head == Position(5),
        "head {head}"
    );
    drop(store);
    // A file from another journal (this one moved on since) is not used.
    let stale = std::fs::read(&file).unwrap();
    let store = open_sled(dir.path());
    store.commit(&[entry(9, &[(9, 7)])]).unwrap();
    drop(store);
    std::fs::write(&file, &stale).unwrap();
    let store = open_sled(dir.path());
    assert!(store.command(id(10, 0xcc)).unwrap().is_some());
}

#[test]
fn refusals_consumers_and_read_models_are_kept_across_reopen() {
    use partner_ledger::domain::{Code, Refusal, RefusalRecord};
    use partner_ledger::store::{DocumentWrite, ReadModel};
    for (name, open) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let customer: CustomerId = id(1, 0xc0);
        let partner: PartnerId = id(7, 0xb0);
        {
            let store = open(dir.path());
            let record = RefusalRecord::new(
                "2024-01-01T00:00:00Z".parse().unwrap(),
                "2024-01-01T00:00:00Z".parse().unwrap(),
                id(9, 0xcc),
                Actor {
                    tenant: id(1, 0xff),
                    user: "ops".into(),
                    role: Role::Operator,
                },
                "RemoveRelationship",
                &[EntityRef::Customer(customer)],
                &Refusal::new(Code::NoResellerRelationship, 31, "there is none"),
            );
            store
                .refusals()
                .append(&[(record, vec![EntityRef::Customer(customer)])])
                .unwrap();
            store
                .consumers()
                .put("billing", br#"{"name":"billing"}"#)
                .unwrap();
            store.consumers().put("crm", br#"{"name":"crm"}"#).unwrap();
            assert!(store.consumers().remove("crm").unwrap(), "{name}");
            assert!(!store.consumers().remove("crm").unwrap(), "{name}");
            store
                .read_models()
                .write(
                    ReadModel::Partners,
                    vec![DocumentWrite::PartnerCustomers {
                        partner,
                        block: 0,
                        customers: vec![customer],
                    }],
                    Position(4),
                )
                .unwrap();
            store.sync().unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.refusals().filed(), 1, "{name}");
        let of = store.refusals().of(&EntityRef::Customer(customer)).unwrap();
        assert_eq!(of.len(), 1, "{name}");
        assert_eq!(of[0].code, "no_reseller_relationship", "{name}");
        assert!(store
            .refusals()
            .of(&EntityRef::Partner(partner))
            .unwrap()
            .is_empty());
        assert_eq!(
            store.consumers().all().unwrap(),
            vec![br#"{"name":"billing"}"#.to_vec()],
            "{name}"
        );
        let models = store.read_models();
        assert_eq!(
            models.checkpoint(ReadModel::Partners).unwrap(),
            Position(4),
            "{name}"
        );
        assert_eq!(
            models.checkpoint(ReadModel::Customers).unwrap(),
            Position(0),
            "{name}"
        );
        assert_eq!(
            models.partner_customers(partner).unwrap(),
            vec![customer],
            "{name}"
        );
        models.clear(ReadModel::Partners).unwrap();
        assert_eq!(
            models.checkpoint(ReadModel::Partners).unwrap(),
            Position(0),
            "{name}"
        );
        assert!(
            models.partner_customers(partner).unwrap().is_empty(),
            "{name}"
        );
    }
}

#[derive(Clone, Debug)]
enum Op {
    Commit(Vec<Vec<(u64, u64)>>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(prop::collection::vec((0u64..4, 0u64..3), 0..4), 1..5).prop_map(Op::Commit),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn the_store_behaves_like_a_vec_across_reopen(ops in prop::collection::vec(op(), 1..12)) {
        for (_, open) in backends() {
            let dir = tempfile::tempdir().unwrap();
            let mut store = open(dir.path());
            let mut model: Vec<(u64, Event)> = Vec::new();
            let mut commands = 0u64;
            for op in &ops {
                match op {
                    Op::Reopen => {
                        drop(store);
                        store = open(dir.path());
                    }
                    Op::Commit(batch) => {
                        let entries: Vec<CommitEntry> = batch.iter().map(|evs| { commands += 1; entry(commands, evs) }).collect();
                        let got = store.commit(&entries).unwrap();
                        for (e, ps) in entries.iter().zip(&got) {
                            prop_assert_eq!(ps.len(), e.events.len());
                            for (ev, p) in e.events.iter().zip(ps) {
                                model.push((p.0, ev.event.clone()));
                            }
                        }
                    }
                }
                let stored: Vec<(u64, Event)> = store
                    .read(Position(0), None)
                    .map(|e| { let e = e.unwrap(); (e.position.0, e.envelope().unwrap().event().unwrap()) })
                    .collect();
                let expected: Vec<(u64, Event)> = model.iter().enumerate().map(|(i, (_, e))| (i as u64 + 1, e.clone())).collect();
                prop_assert_eq!(&stored, &expected);
                prop_assert_eq!(store.head().position.0, model.len() as u64);
                for c in 0..4u64 {
                    let customer = EntityRef::Customer(id(c + 1, 0xc0));
                    let want: Vec<Position> = model.iter().filter(|(_, e)| e.entities().contains(&customer)).map(|(p, _)| Position(*p)).collect();
                    prop_assert_eq!(store.history(&customer, Position(0)).unwrap(), want);
                }
            }
        }
    }
}

/// PostgreSQL's fencing, at the store: once another store took the writer's lease, the first one can neither append
/// (even though the head is still where it left it: only the epoch tells) nor confirm an answer that wrote nothing.
#[test]
fn on_postgres_a_store_whose_lease_was_taken_appends_nothing_even_at_the_same_head() {
    let dir = tempfile::tempdir().unwrap();
    let first = open_postgres(dir.path());
    first.commit(&[entry(0, &[(1, 0)])]).unwrap();
    first.confirm().unwrap();
    let second = open_postgres(dir.path());
    assert_eq!(
        second.head(),
        first.head(),
        "the new writer starts from the head"
    );
    let stale = first.stage(SealedBatch::seal(
        &[entry(1, &[(2, 0)])],
        &first.staged_head(),
    ));
    assert!(
        matches!(stale, Err(StoreError::Deposed { .. })),
        "{stale:?}"
    );
    assert!(matches!(first.confirm(), Err(StoreError::Deposed { .. })));
    assert_eq!(second.head().position, Position(1), "nothing was appended");
    second.commit(&[entry(1, &[(2, 0)])]).unwrap();
    second.confirm().unwrap();
    assert_eq!(
        second.read(Position(0), None).count(),
        2,
        "the new writer appends"
    );
}
