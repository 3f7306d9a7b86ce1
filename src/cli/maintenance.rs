//! `rebuild` and `verify`: the read models rebuilt from the log, and the whole chain walked (optionally against a
//! checkpoint kept elsewhere).

use std::process::ExitCode;

use super::{open_existing, progress_bar};
use crate::domain::Position;
use crate::store::{ReadModel, StoreError, StoreOptions};

pub(super) fn rebuild(dir: &std::path::Path, name: Option<&str>) -> anyhow::Result<ExitCode> {
    let store = open_existing(dir)?;
    let _lease = crate::store::postgres::hold_lease(&store)?;
    let projections = crate::projection::Projections::open(&*store);
    let models: Vec<ReadModel> = match name {
        Some(n) => vec![ReadModel::named(n).ok_or_else(|| {
            anyhow::anyhow!(
                "`{n}` is not a read model; the read models are {}",
                ReadModel::NAMES.join(", ")
            )
        })?],
        None => ReadModel::ALL.to_vec(),
    };
    let names: Vec<&str> = models.iter().map(|m| m.name()).collect();
    let total = store.head().position.0;
    let bar = progress_bar(total, "rebuilding");
    let started = std::time::Instant::now();
    projections.rebuild(&models, |p| {
        if p.0 % 4096 == 0 {
            bar.set_position(p.0);
        }
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rebuilt {} from {total} events in {secs:.2} s ({:.0} events/s)",
        names.join(", "),
        total as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn verify(dir: &std::path::Path, against: Option<&str>) -> anyhow::Result<ExitCode> {
    let checkpoint = match against {
        None => None,
        Some(s) => {
            let (p, h) = s.split_once(':').ok_or_else(|| {
                anyhow::anyhow!("--against takes POSITION:HASH, as printed by `checkpoint`")
            })?;
            let p: u64 = p
                .parse()
                .map_err(|_| anyhow::anyhow!("--against: `{p}` is not a position"))?;
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!("--against: `{h}` is not a 64-character hex hash");
            }
            Some((Position(p), h.to_ascii_lowercase()))
        }
    };
    let store = match crate::store::open(
        dir,
        &StoreOptions {
            create: false,
            check_on_open: false,
            ..StoreOptions::default()
        },
    ) {
        Ok(s) => s,
        Err(StoreError::Corrupt { position, message }) => {
            match position {
                Some(p) => println!("FAILED at position {p}: {message}"),
                None => println!("FAILED: {message}"),
            }
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let total = store.head().position.0;
    let bar = progress_bar(total, "verifying");
    let mut furthest = 0;
    let result = store.verify_all(&mut |p| {
        furthest = furthest.max(p.0);
        bar.set_position(furthest);
    });
    bar.finish_and_clear();
    if let (Ok(head), Some((position, hash))) = (&result, &checkpoint) {
        if *position > head.position {
            println!(
                "FAILED at position {}: the log ends at {} but the checkpoint was taken at {position}: events were removed",
                head.position.next(),
                head.position
            );
            return Ok(ExitCode::from(1));
        }
        let stored = match store.get(*position)? {
            Some(e) => e.envelope()?.hash,
            None => crate::store::GENESIS_HASH.to_string(),
        };
        if stored != *hash {
            println!(
                "FAILED at position {position}: the log's hash there is {stored} but the checkpoint recorded {hash}: history up to {position} was rewritten"
            );
            return Ok(ExitCode::from(1));
        }
    }
    match result {
        Ok(head) => {
            match checkpoint {
                Some((p, _)) => println!(
                    "ok: {} events, the chain verifies and extends the checkpoint at {p}; head hash {}",
                    head.position, head.hash
                ),
                None => println!(
                    "ok: {} events, the chain verifies; head hash {}",
                    head.position, head.hash
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(StoreError::Corrupt { position, message }) => {
            match position {
                Some(p) => println!("FAILED at position {p}: {message}"),
                None => println!("FAILED: {message}"),
            }
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
