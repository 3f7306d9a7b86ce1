//! Backups: everything a ledger holds that is not derived from its log, as one NDJSON file, and its restore.
//!
//! A backup holds the events (the stored envelopes, byte for byte), the command journal (every committed command
//! with its idempotency fingerprint, commands that appended nothing included), the refusal audit trail, and the
//! durable consumers with their checkpoints. Read models, indexes and the snapshot are derived: a restore rebuilds
//! them. The layout (docs/audit.md):
//!
//! - a header, `{"partner_ledger_backup": {"format": 1, "head": {"position": n, "hash": h}, "from": 0}}`, naming the
//!   consistent cut the backup was taken at;
//! - in commit order, each command's events followed by its journal entry, `{"command": {...}}`;
//! - `{"refusal": {...}}` lines, oldest first; `{"consumer": {...}}` lines;
//! - last, `{"end": {"events": n, "commands": n, "refusals": n, "consumers": n}}`, whose counts prove the file whole.
//!
//! A file of bare envelopes (the `events` command's output, or an export from before backups existed) restores too:
//! its commands then get journal entries without fingerprints.

use std::io::Write;

mod read;
mod restore;

pub use restore::{check_file, restore, Restored};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::domain::{CommandId, Position};
use crate::store::journal::Committed;
use crate::store::{Head, Store, StoreError, GENESIS_HASH};

/// The backup format this version writes and reads.
pub const FORMAT: u32 = 1;

/// The first line of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    /// The cut: the last event the backup holds.
    pub head: Head,
    /// The backup holds the events after this position (0: all of them; only such a backup can be restored).
    pub from: Position,
}

/// What a backup holds, as counted in its last line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub events: u64,
    pub commands: u64,
    pub refusals: u64,
    pub consumers: u64,
}

/// A journal entry as a backup line.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandLine {
    command_id: CommandId,
    /// The idempotency fingerprint in hex (null for a command restored from an export without journal).
    fingerprint: Option<String>,
    /// The first position it appended (for a command that appended nothing: the head when it committed).
    first: Position,
    count: u32,
}

impl CommandLine {
    fn of(c: &Committed) -> CommandLine {
        CommandLine {
            command_id: c.command_id,
            fingerprint: c.fingerprint.map(hex::encode),
            first: c.first,
            count: c.count,
        }
    }

    fn committed(&self) -> Result<Committed, String> {
        let fingerprint = match &self.fingerprint {
            None => None,
            Some(h) => Some(
                hex::decode(h)
                    .ok()
                    .and_then(|b| <[u8; 16]>::try_from(b).ok())
                    .ok_or_else(|| format!("fingerprint `{h}` is not 32 hex digits"))?,
            ),
        };
        Ok(Committed {
            command_id: self.command_id,
            fingerprint,
            first: self.first,
            count: self.count,
        })
    }
}

/// Why a backup could not be written or restored. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading the ledger failed; run `verify` (docs/recovery.md).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the file or writing the output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is not a whole, valid backup; nothing was written. Use another copy.
    #[error("line {line}: {message}; nothing was written")]
    Invalid {
        line: u64,
        /// The first bad position, when the problem is in the events.
        position: Option<Position>,
        message: String,
    },
    /// The target ledger is not empty; restore into a new folder.
    #[error("{0}")]
    NotEmpty(String),
}

fn line(out: &mut (impl Write + ?Sized), bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(bytes)?;
    out.write_all(b"\n")
}

fn json_line(out: &mut impl Write, v: &serde_json::Value) -> std::io::Result<()> {
    line(out, serde_json::to_string(v).unwrap_or_default().as_bytes())
}

/// The head of the log cut at `cut` (a position at or before the head).
fn head_at(store: &dyn Store, cut: Position) -> Result<Head, StoreError> {
    if cut == store.head().position {
        return Ok(store.head());
    }
    Ok(Head {
        position: cut,
        hash: match store.get(cut)? {
            Some(e) => e.envelope()?.hash,
            None => GENESIS_HASH.to_string(),
        },
    })
}

/// Where a journal entry falls in the log: after its last event (a command that appended nothing: after the head it
/// committed at, and after any command whose events end there).
fn log_order(c: &Committed) -> (u64, bool) {
    let end = (c.first.0 + u64::from(c.count))
        .saturating_sub(1)
        .max(c.first.0);
    (end, c.count == 0)
}

/// The command journal in log order. A journal written by this version is in that order already; one rebuilt by the
/// format-1 upgrade is in command-id order, and is then sorted here, in memory (about 48 bytes a command).
fn journal_in_log_order(
    store: &dyn Store,
) -> Result<Box<dyn Iterator<Item = Result<Committed, StoreError>> + '_>, StoreError> {
    let mut previous = (0, false);
    let mut ordered = true;
    for c in store.journal() {
        let here = log_order(&c?);
        if here < previous {
            ordered = false;
            break;
        }
        previous = here;
    }
    if ordered {
        return Ok(Box::new(store.journal()));
    }
    let mut all = store.journal().collect::<Result<Vec<_>, _>>()?;
    all.sort_by_key(log_order);
    Ok(Box::new(all.into_iter().map(Ok)))
}

/// Writes a backup of the events after `from` up to `to` (default: the head when it starts) and of everything else
/// the ledger holds. Safe while the ledger is being written: the cut is the head read at the start, journal entries
/// and events are written together in one transaction, so the backup is consistent at that position.
pub fn write(
    store: &dyn Store,
    from: Position,
    to: Option<Position>,
    out: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> Result<Counts, BackupError> {
    let head = store.head();
    // Refusals carry no position: the backup holds those filed when it started.
    let refusals = store.refusals();
    let refusals_upto = refusals.filed();
    let cut = to.map_or(head.position, |t| t.min(head.position));
    let header = Header {
        format: FORMAT,
        head: head_at(store, cut)?,
        from,
    };
    json_line(out, &json!({ "partner_ledger_backup": header }))?;
    let mut counts = Counts::default();
    let mut log = store.read(from, Some(cut)).peekable();
    let mut emit_upto =
        |last: Position, counts: &mut Counts, out: &mut dyn Write| -> Result<(), BackupError> {
            while let Some(e) = log.next_if(|e| e.as_ref().map_or(true, |e| e.position <= last)) {
                let e = e?;
                line(out, &e.raw)?;
                counts.events += 1;
                if counts.events.is_multiple_of(4096) {
                    progress(counts.events);
                }
            }
            Ok(())
        };
    for entry in journal_in_log_order(store)? {
        let c = entry?;
        let last = Position(log_order(&c).0);
        if last > cut {
            break;
        }
        emit_upto(last, &mut counts, &mut *out)?;
        if c.first > from || (c.count == 0 && c.first == from) {
            json_line(out, &json!({ "command": CommandLine::of(&c) }))?;
            counts.commands += 1;
        }
    }
    // Events no complete journal entry covers (a command cut in two by `to`).
    emit_upto(cut, &mut counts, &mut *out)?;
    for r in refusals.upto(refusals_upto) {
        json_line(out, &json!({ "refusal": r? }))?;
        counts.refusals += 1;
    }
    for v in store.consumers().all()? {
        let mut consumer: serde_json::Value =
            serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                position: None,
                message: format!("a consumer record does not decode: {e}"),
            })?;
        // A checkpoint is never beyond the backup's head.
        if consumer["checkpoint"].as_u64().is_some_and(|c| c > cut.0) {
            consumer["checkpoint"] = json!(cut.0);
        }
        json_line(out, &json!({ "consumer": consumer }))?;
        counts.consumers += 1;
    }
    json_line(out, &json!({ "end": counts }))?;
    out.flush()?;
    Ok(counts)
}
