//! Checking a whole backup file, and restoring it into an empty ledger.

use std::io::{BufRead, BufReader};
use std::path::Path;

use super::read::{Item, Reader};
use super::{BackupError, Counts};
use crate::domain::RefusalRecord;
use crate::store::journal::{self, Committed};
use crate::store::{Envelope, Head};

/// What a restore wrote.
#[derive(Clone, Debug)]
pub struct Restored {
    pub head: Head,
    pub counts: Counts,
    /// Whether the file was a backup (else bare envelopes: no journal, refusals or consumers).
    pub was_backup: bool,
}

fn lines(path: &Path) -> Result<impl Iterator<Item = std::io::Result<String>>, BackupError> {
    let f = std::fs::File::open(path).map_err(|e| {
        BackupError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot open {}: {e}", path.display()),
        ))
    })?;
    Ok(BufReader::new(f).lines())
}

/// Checks a whole backup file (or a file of bare envelopes) without writing anything.
pub fn check_file(path: &Path) -> Result<Counts, BackupError> {
    let mut r = Reader::new();
    let mut n = 0;
    for l in lines(path)? {
        n += 1;
        r.read(&l?, n)?;
    }
    r.finish(n)?;
    Ok(r.counts)
}

/// Restores a backup into the empty ledger at `data`: first checks the whole file (nothing is written if any line
/// is wrong), then writes the events with their journal, the refusals and the consumers, and makes them durable.
/// The caller rebuilds the read models by opening the ledger.
pub fn restore(
    data: &Path,
    path: &Path,
    mut progress: impl FnMut(u64),
) -> Result<Restored, BackupError> {
    check_file(path)?;
    let store = crate::store::open(data, &crate::store::StoreOptions::default())?;
    let _lease = crate::store::postgres::hold_lease(&store)?;
    let refusals = store.refusals();
    let consumers = store.consumers();
    if store.head().position.0 != 0 || !refusals.is_empty() || !consumers.all()?.is_empty() {
        return Err(BackupError::NotEmpty(format!(
            "import needs an empty ledger; {} already holds {} events{}",
            crate::store::describe(data),
            store.head().position,
            if refusals.is_empty() {
                ""
            } else {
                " and refusals"
            }
        )));
    }
    let mut r = Reader::new();
    let mut batch: Vec<Envelope> = Vec::with_capacity(4096);
    let mut entries: Vec<Committed> = Vec::new();
    let mut pending_refusals: Vec<RefusalRecord> = Vec::new();
    let flush_events = |batch: &mut Vec<Envelope>,
                        entries: &mut Vec<Committed>,
                        backup: bool|
     -> Result<(), BackupError> {
        if batch.is_empty() && entries.is_empty() {
            return Ok(());
        }
        let covered: u64 = entries.iter().map(|c| u64::from(c.count)).sum();
        let rest = usize::try_from(covered).unwrap_or(usize::MAX);
        let mut journal = std::mem::take(entries);
        let key = |e: &Envelope| {
            (
                e.position,
                crate::store::idempotency_key(&e.actor, e.command_id),
            )
        };
        if !backup {
            journal = journal::group(batch.iter().map(key));
        } else if rest < batch.len() {
            journal.extend(journal::group(batch[rest..].iter().map(key)));
        }
        store.import_with(batch, journal)?;
        batch.clear();
        Ok(())
    };
    let mut n = 0;
    for l in lines(path)? {
        n += 1;
        let l = l?;
        let Some(item) = r.read(&l, n)? else { continue };
        let backup = r.backup.is_some();
        match item {
            Item::Event(env) => {
                let boundary = if backup {
                    r.unattributed.len() == 1
                } else {
                    batch.last().is_some_and(|l| {
                        l.command_id != env.command_id || l.actor.tenant != env.actor.tenant
                    })
                };
                if batch.len() >= 4096 && boundary {
                    flush_events(&mut batch, &mut entries, backup)?;
                    progress(r.counts.events - 1);
                }
                batch.push(env);
            }
            Item::Command(c) => entries.push(c),
            Item::Refusal(rec) => {
                flush_events(&mut batch, &mut entries, backup)?;
                pending_refusals.push(*rec);
                if pending_refusals.len() >= 1024 {
                    refusals.restore(&pending_refusals)?;
                    pending_refusals.clear();
                }
            }
            Item::Consumer(name, bytes) => {
                flush_events(&mut batch, &mut entries, backup)?;
                refusals.restore(&pending_refusals)?;
                pending_refusals.clear();
                consumers.put(&name, &bytes)?;
            }
        }
    }
    flush_events(&mut batch, &mut entries, r.backup.is_some())?;
    refusals.restore(&pending_refusals)?;
    store.sync()?;
    progress(r.counts.events);
    Ok(Restored {
        head: store.head(),
        counts: r.counts,
        was_backup: r.backup.is_some(),
    })
}
