//! Reading a backup (or a file of bare envelopes) line by line and checking each: the header, the chain, the journal
//! entries against the events they cover, the refusals and consumers, and the closing counts.

use super::{BackupError, CommandLine, Counts, Header, FORMAT};
use crate::domain::{CommandId, Position, RefusalRecord};
use crate::store::journal::Committed;
use crate::store::{check, Envelope, Head, GENESIS_HASH};

/// One line of a backup file, read and checked.
pub(super) enum Item {
    Event(Envelope),
    Command(Committed),
    Refusal(Box<RefusalRecord>),
    Consumer(String, Vec<u8>),
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Section {
    Start,
    Events,
    Refusals,
    Consumers,
    Ended,
}

/// Reads a backup (or a file of bare envelopes) line by line and checks it: the hash chain from position 1, each
/// journal entry against the events just before it, the section order, and the closing counts.
pub(super) struct Reader {
    pub(super) backup: Option<Header>,
    pub(super) section: Section,
    pub(super) expected: Position,
    pub(super) prev: String,
    /// Events since the last journal entry (a backup's only), with their command ids and idempotency keys.
    pub(super) unattributed: Vec<(Position, CommandId, CommandId)>,
    pub(super) counts: Counts,
}

impl Reader {
    pub(super) fn new() -> Reader {
        Reader {
            backup: None,
            section: Section::Start,
            expected: Position(1),
            prev: GENESIS_HASH.to_string(),
            unattributed: Vec::new(),
            counts: Counts::default(),
        }
    }

    pub(super) fn read(&mut self, text: &str, n: u64) -> Result<Option<Item>, BackupError> {
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

    pub(super) fn finish(&self, n: u64) -> Result<(), BackupError> {
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
