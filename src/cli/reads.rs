//! The reading commands' output: raw events (optionally about some entities) and a customer's view.

use std::io::Write;
use std::process::ExitCode;

use super::{out, render};
use crate::domain::{CustomerId, EntityRef, Position};
use crate::query::{self, AsOfSpec};
use crate::store::Store;

pub(super) fn events(
    store: &dyn Store,
    from: Position,
    to: Option<Position>,
    filters: &[EntityRef],
) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    if filters.is_empty() {
        for item in store.read(from, to) {
            if !out(&mut w, &item?.raw)? {
                return Ok(ExitCode::SUCCESS);
            }
        }
    } else {
        let positions = crate::query::positions_about_all(store, filters, from, to)?;
        for p in positions {
            if let Some(e) = store.get(p)? {
                if !out(&mut w, &e.raw)? {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
    match w.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

pub(super) fn customer(
    store: &dyn Store,
    id: CustomerId,
    json: bool,
    as_of: Option<AsOfSpec>,
) -> anyhow::Result<ExitCode> {
    match query::customer(store, id, as_of)? {
        None => {
            eprintln!(
                "error: customer {id} is not registered in this ledger{}",
                if as_of.is_some() {
                    " at that point"
                } else {
                    ""
                }
            );
            Ok(ExitCode::from(3))
        }
        Some(answer) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&answer.view)?);
            } else {
                print!("{}", render::customer_table(&answer.view));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
