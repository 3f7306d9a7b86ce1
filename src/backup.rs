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

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::domain::RefusalRecord;
use crate::domain::{CommandId, Position};
use crate::store::journal::{self, Committed};
use crate::store::{check, Envelope, Head, Store, StoreError, GENESIS_HASH};

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

/// One line of a backup file, read and checked.
enum Item {
    Event(Envelope),
    Command(Committed),
    Refusal(Box<RefusalRecord>),
    Consumer(String, Vec<u8>),
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Start,
    Events,
    Refusals,
    Consumers,
    Ended,
}

/// Reads a backup (or a file of bare envelopes) line by line and checks it: the hash chain from position 1, each
/// journal entry against the events just before it, the section order, and the closing counts.
struct Reader {
    backup: Option<Header>,
    section: Section,
    expected: Position,
    prev: String,
    /// Events since the last journal entry (a backup's only), with their command ids and idempotency keys.
    unattributed: Vec<(Position, CommandId, CommandId)>,
    counts: Counts,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            backup: None,
            section: Section::Start,
            expected: Position(1),
            prev: GENESIS_HASH.to_string(),
            unattributed: Vec::new(),
            counts: Counts::default(),
        }
    }

    fn read(&mut self, text: &str, n: u64) -> Result<Option<Item>, BackupError> {
        let bad = |message: String| BackupError::Invalid {
            line: n,
            position: None,
            message,
        };
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if self.section == Section::Ended {
            return Err(bad("there is more after the backup's end line".into()));
        }
        if text.starts_with('#') {
            return Err(bad("a `#` comment line: this looks like a file of commands, not a backup; execute it with `partner-ledger exec FILE`".into()));
        }
        let tagged = |tag: &str| text.starts_with(&format!("{{\"{tag}\":"));
        let inner = |tag: &str| -> Result<serde_json::Value, BackupError> {
            let mut v: serde_json::Value =
                serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
            let obj = v.as_object_mut().filter(|o| o.len() == 1);
            obj.and_then(|o| o.remove(tag))
                .ok_or_else(|| bad(format!("a `{tag}` line holds exactly one key")))
        };
        if tagged("partner_ledger_backup") {
            if self.section != Section::Start {
                return Err(bad("the backup header must be the first line".into()));
            }
            let h: Header = serde_json::from_value(inner("partner_ledger_backup")?)
                .map_err(|e| bad(format!("the backup header does not read: {e}")))?;
            if h.format != FORMAT {
                return Err(bad(format!(
                    "backup format {} is not known to this version (it reads format {FORMAT})",
                    h.format
                )));
            }
            if h.from.0 != 0 {
                return Err(bad(format!(
                    "this backup holds only the events after position {}; a restore needs one taken from the start",
                    h.from
                )));
            }
            self.backup = Some(h);
            self.section = Section::Events;
            return Ok(None);
        }
        let in_backup = |what: &str| {
            if self.backup.is_none() {
                Err(bad(format!(
                    "a `{what}` line outside a backup (the file has no backup header)"
                )))
            } else {
                Ok(())
            }
        };
        let moving_to = |to: Section, what: &str| {
            if self.section > to {
                Err(bad(format!(
                    "a `{what}` line after the section that follows them"
                )))
            } else {
                Ok(())
            }
        };
        if tagged("command") {
            in_backup("command")?;
            moving_to(Section::Events, "command")?;
            let c: CommandLine = serde_json::from_value(inner("command")?)
                .map_err(|e| bad(format!("the journal entry does not read: {e}")))?;
            let c = c.committed().map_err(bad)?;
            self.attribute(&c).map_err(bad)?;
            self.counts.commands += 1;
            return Ok(Some(Item::Command(c)));
        }
        if tagged("refusal") {
            in_backup("refusal")?;
            moving_to(Section::Refusals, "refusal")?;
            self.section = Section::Refusals;
            let r: RefusalRecord = serde_json::from_value(inner("refusal")?)
                .map_err(|e| bad(format!("the refusal does not read: {e}")))?;
            self.counts.refusals += 1;
            return Ok(Some(Item::Refusal(Box::new(r))));
        }
        if tagged("consumer") {
            in_backup("consumer")?;
            self.section = Section::Consumers;
            let c = inner("consumer")?;
            let name = c["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| bad("the consumer has no name".into()))?
                .to_string();
            let checkpoint = c["checkpoint"]
                .as_u64()
                .ok_or_else(|| bad(format!("consumer {name} has no checkpoint")))?;
            let head = self.expected.0 - 1;
            if checkpoint > head {
                return Err(bad(format!(
                    "consumer {name}'s checkpoint {checkpoint} is beyond the backup's last event {head}"
                )));
            }
            self.counts.consumers += 1;
            return Ok(Some(Item::Consumer(
                name,
                serde_json::to_vec(&c).unwrap_or_default(),
            )));
        }
        if tagged("end") {
            in_backup("end")?;
            let counts: Counts = serde_json::from_value(inner("end")?)
                .map_err(|e| bad(format!("the end line does not read: {e}")))?;
            if counts != self.counts {
                return Err(bad(format!(
                    "the end line counts {counts:?} but the file holds {:?}: it is damaged",
                    self.counts
                )));
            }
            let h = self.backup.as_ref().map(|b| b.head.clone());
            let last = Head {
                position: Position(self.expected.0 - 1),
                hash: self.prev.clone(),
            };
            if h.as_ref() != Some(&last) {
                return Err(bad(format!(
                    "the header names head {:?} but the events end at {}:{}",
                    h, last.position, last.hash
                )));
            }
            self.section = Section::Ended;
            return Ok(None);
        }
        // An event envelope.
        if self.section > Section::Events {
            return Err(bad("an event after the refusals or consumers".into()));
        }
        self.section = Section::Events;
        let env = check(text.as_bytes(), self.expected, &self.prev).map_err(|b| {
            let command = crate::domain::parse_line(text).is_ok();
            BackupError::Invalid {
                line: n,
                position: (!command).then_some(b.position),
                message: if command {
                    "this is a command, not a backup line: execute a file of commands with `partner-ledger exec FILE`".into()
                } else {
                    b.reason
                },
            }
        })?;
        self.prev = env.hash.clone();
        self.expected = self.expected.next();
        self.counts.events += 1;
        if self.backup.is_some() {
            let key = crate::store::idempotency_key(&env.actor, env.command_id);
            self.unattributed.push((env.position, env.command_id, key));
        }
        Ok(Some(Item::Event(env)))
    }

    /// Checks that a journal entry covers exactly the events read since the previous one.
    fn attribute(&mut self, c: &Committed) -> Result<(), String> {
        let head = Position(self.expected.0 - 1);
        if c.count == 0 {
            if !self.unattributed.is_empty() || c.first != head {
                return Err(format!(
                    "command {} appended nothing at position {}, but the events before it end at {head} or belong to no command",
                    c.command_id, c.first
                ));
            }
            return Ok(());
        }
        let ok = self.unattributed.len() == c.count as usize
            && self.unattributed.first().map(|u| u.0) == Some(c.first)
            && self
                .unattributed
                .iter()
                .all(|u| u.1 == c.command_id || u.2 == c.command_id);
        if !ok {
            return Err(format!(
                "the journal entry of command {} (positions {} to {}) does not match the events before it",
                c.command_id,
                c.first,
                c.first.0 + u64::from(c.count) - 1
            ));
        }
        self.unattributed.clear();
        Ok(())
    }

    fn finish(&self, n: u64) -> Result<(), BackupError> {
        if self.backup.is_some() && self.section != Section::Ended {
            return Err(BackupError::Invalid {
                line: n,
                position: None,
                message: "the backup ends without its end line: it is truncated".into(),
            });
        }
        Ok(())
    }
}

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
    let refusals = store.refusals();
    let consumers = store.consumers();
    if store.head().position.0 != 0 || !refusals.is_empty() || !consumers.all()?.is_empty() {
        return Err(BackupError::NotEmpty(format!(
            "import needs an empty ledger; {} already holds {} events{}",
            data.display(),
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
