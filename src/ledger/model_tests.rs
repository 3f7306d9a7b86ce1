//! The write model is held once: the live model readers see is the writer's own, copied after each batch, sharing
//! every entity with it (`domain/table.rs`), not a second model kept up by applying the events again.

use crate::domain::parse_line;
use crate::ledger::{Ledger, LedgerConfig, Outcome, CATCH_UP_TIMEOUT};

const OP: &str =
    r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops","role":"operator"}"#;

fn register(n: u32) -> String {
    format!(
        r#"{{"type":"RegisterCustomer","actor":{OP},"customer":"c{n:07x}-0000-4000-8000-00000000000c","company_name":"Customer {n}","domain":"c{n}.example","country":"NL","cloud":"public"}}"#
    )
}

fn rename(n: u32) -> String {
    format!(
        r#"{{"type":"UpdateCustomer","actor":{OP},"customer":"c{n:07x}-0000-4000-8000-00000000000c","company_name":"Renamed {n}"}}"#
    )
}

#[test]
fn readers_and_the_writer_share_one_write_model() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerConfig::new(dir.path())).unwrap();
    for n in 0..300 {
        let outcome = ledger.execute(parse_line(&register(n)).unwrap());
        assert!(matches!(outcome, Outcome::Committed { .. }), "{outcome:?}");
    }
    let head = ledger.store().head().position;
    assert_eq!(ledger.live().wait_for(head, CATCH_UP_TIMEOUT), head);
    let before = ledger.live().read(|s, _| s.clone());
    let outcome = ledger.execute(parse_line(&rename(7)).unwrap());
    assert!(matches!(outcome, Outcome::Committed { .. }), "{outcome:?}");
    let head = ledger.store().head().position;
    assert_eq!(ledger.live().wait_for(head, CATCH_UP_TIMEOUT), head);
    let writer = ledger
        .shared
        .writer_model
        .lock()
        .unwrap()
        .clone()
        .expect("the writer decided a batch");
    ledger.live().read(|live, _| {
        assert_eq!(live.customers.len(), 300);
        assert_eq!(live, &writer, "the live model is the writer's");
        for id in live.customers.keys() {
            assert!(
                live.customers.shares(&writer.customers, id),
                "customer {id} is held twice: once by the readers, once by the writer"
            );
        }
        // The model before the last command shares every customer that command did not change.
        let renamed = "c0000007-0000-4000-8000-00000000000c".parse().unwrap();
        assert!(!live.customers.shares(&before.customers, &renamed));
        assert_eq!(
            live.customers
                .keys()
                .filter(|id| live.customers.shares(&before.customers, id))
                .count(),
            299
        );
    });
    ledger.close();
}
