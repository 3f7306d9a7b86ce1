//! Write-model snapshots are a cache: one that belongs to the log shortens opening, and one that does not (damaged,
//! foreign, beyond the head) is ignored, so the state after opening always equals a full replay of the log.

use partner_ledger::domain::parse_line;
use partner_ledger::ledger::{load_state, replay, Ledger, LedgerConfig};
use partner_ledger::snapshot;
use partner_ledger::store::{Store, StoreOptions};
use partner_ledger::workload::{generate, WorkloadSpec};

fn build(dir: &std::path::Path, commands: usize, seed: u64) {
    let mut config = LedgerConfig::new(dir);
    config.snapshot_at_close = 1;
    let ledger = Ledger::open(config).unwrap();
    let tickets: Vec<_> = generate(WorkloadSpec {
        commands,
        seed,
        ..WorkloadSpec::default()
    })
    .map(|l| ledger.submit(parse_line(&l).unwrap()))
    .collect();
    for t in tickets {
        t.wait();
    }
    ledger.close();
}

fn store(dir: &std::path::Path) -> std::sync::Arc<dyn Store> {
    partner_ledger::store::open(
        dir,
        &StoreOptions {
            create: false,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn a_snapshot_written_at_close_is_used_and_equals_a_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    // Enough commands that the larger tables span several frames of 4,096 entries.
    build(dir.path(), 30_000, 1);
    let owned = store(dir.path());
    let s = &*owned;
    let head = partner_ledger::store::EventStore::head(s).position;
    assert_eq!(snapshot::covered(s), Some(head));
    let (state, from) = load_state(s, |_| {}).unwrap();
    assert_eq!(from, head, "the snapshot covers the whole log");
    assert_eq!(state, replay(s, |_| {}).unwrap());
}

#[test]
fn a_snapshot_of_format_2_written_by_earlier_versions_is_still_read() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 2_000, 4);
    let owned = store(dir.path());
    let s = &*owned;
    let head = partner_ledger::store::EventStore::head(s);
    let replayed = replay(s, |_| {}).unwrap();
    // Format 2: magic, position, hash, the payload's SHA-256 and length, then the whole state in postcard.
    let payload = postcard::to_allocvec(&replayed).unwrap();
    let mut bytes = b"PLSNAP02".to_vec();
    bytes.extend_from_slice(&head.position.0.to_be_bytes());
    bytes.extend_from_slice(head.hash.as_bytes());
    bytes.extend_from_slice(&Sha256::digest(&payload));
    bytes.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    bytes.extend_from_slice(&payload);
    s.write_snapshot(&bytes).unwrap();
    assert_eq!(snapshot::covered(s), Some(head.position));
    let (state, from) = snapshot::load(s).unwrap();
    assert_eq!(from, head.position);
    assert_eq!(state, replayed);
    // The same bytes with one flipped in the payload are refused.
    let n = bytes.len();
    bytes[n - 3] ^= 0x01;
    s.write_snapshot(&bytes).unwrap();
    assert!(matches!(
        snapshot::load(s),
        Err(snapshot::Unusable::Rejected(why)) if why.contains("checksum")
    ));
}

#[test]
fn a_damaged_or_foreign_snapshot_is_ignored_and_the_log_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 2_000, 2);
    let path = dir.path().join(snapshot::FILE);
    let good = std::fs::read(&path).unwrap();

    // A flipped byte in the payload.
    let mut damaged = good.clone();
    let n = damaged.len();
    damaged[n - 10] ^= 0x01;
    std::fs::write(&path, &damaged).unwrap();
    let owned = store(dir.path());
    let s = &*owned;
    let (state, from) = load_state(s, |_| {}).unwrap();
    assert_eq!(from.0, 0, "a damaged snapshot is not used");
    assert_eq!(state, replay(s, |_| {}).unwrap());
    assert!(matches!(
        snapshot::load(s),
        Err(snapshot::Unusable::Rejected(why)) if why.contains("checksum")
    ));
    drop(owned);

    // A flipped byte inside a frame: the checksum says so, whatever the frame then decodes to.
    let mut damaged = good.clone();
    damaged[n / 2] ^= 0x01;
    std::fs::write(&path, &damaged).unwrap();
    let owned = store(dir.path());
    assert!(matches!(
        snapshot::load(&*owned),
        Err(snapshot::Unusable::Rejected(why)) if why.contains("checksum")
    ));
    drop(owned);

    // A truncated file.
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let owned = store(dir.path());
    let s = &*owned;
    assert!(matches!(
        snapshot::load(s),
        Err(snapshot::Unusable::Rejected(_))
    ));
    drop(owned);

    // A snapshot of another ledger: its position exists here but with another hash.
    let other = tempfile::tempdir().unwrap();
    build(other.path(), 2_000, 3);
    std::fs::copy(other.path().join(snapshot::FILE), &path).unwrap();
    let owned = store(dir.path());
    let s = &*owned;
    assert!(matches!(
        snapshot::load(s),
        Err(snapshot::Unusable::Rejected(why)) if why.contains("another hash") || why.contains("beyond")
    ));
    let (state, from) = load_state(s, |_| {}).unwrap();
    assert_eq!(from.0, 0);
    assert_eq!(state, replay(s, |_| {}).unwrap());
}

#[test]
fn a_ledger_reopened_from_its_snapshot_answers_its_earlier_commands_as_duplicates_and_appends_nothing(
) {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 2_000, 4);
    // Continue the same workload's ids: a re-run of the same seed repeats every command id, so every command is a
    // duplicate answered from the journal, decided against the snapshot-loaded state.
    let ledger = Ledger::open(LedgerConfig::new(dir.path())).unwrap();
    let head = partner_ledger::store::EventStore::head(ledger.store()).position;
    for line in generate(WorkloadSpec {
        commands: 2_000,
        seed: 4,
        ..WorkloadSpec::default()
    }) {
        match ledger.execute(parse_line(&line).unwrap()) {
            partner_ledger::ledger::Outcome::Committed { duplicate, .. } => assert!(duplicate),
            partner_ledger::ledger::Outcome::Refused { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        partner_ledger::store::EventStore::head(ledger.store()).position,
        head
    );
}
