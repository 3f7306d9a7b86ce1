//! The syncer thread: makes every staged batch durable with one settle for all that are queued (group commit),
//! files their refusals, and only then answers every command of those batches, in order, publishes the head and
//! hands the projector the write model the last of them left. A failed group is answered `unknown` after the groups before it are durable.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::watch;

use super::committer::{take_queued, Handoff};
use super::writer::Settled;
use super::writer::{Decided, Draft};
use super::{Outcome, Shared};
use crate::domain::Position;
use crate::store::StagedBatch;

/// How an `unknown` answer ends when the batch may have reached the disk.
const RETRY: &str =
    "it may or may not be committed: reopen the ledger and retry with the same command_id";

/// Makes staged batches durable with one settle (on sled: one `flush()` + `fdatasync`) for all that are queued, files their refusals,
/// answers their commands in order, and hands the projector the write model they left.
pub(super) struct Syncer {
    pub(super) shared: Arc<Shared>,
    pub(super) head: std::sync::Arc<watch::Sender<Position>>,
    pub(super) project: std::sync::mpsc::Sender<Settled>,
    /// Refusals the audit trail could not take (its database was away), filed with the next batch's.
    pub(super) unfiled:
        std::sync::Mutex<Vec<(crate::domain::RefusalRecord, Vec<crate::domain::EntityRef>)>>,
}

impl Syncer {
    pub(super) fn run(self, rx: std::sync::mpsc::Receiver<Handoff>) {
        while let Some(groups) = take_queued(&rx) {
            self.sync(groups);
        }
    }

    /// Syncs and answers the groups in order: runs of written groups share one sync; a failed group is answered
    /// `unknown` after the groups before it are durable.
    fn sync(&self, groups: Vec<Handoff>) {
        const RETRY_NOW: &str = "nothing of it was written; retry with the same command_id";
        let mut run = Vec::new();
        for g in groups {
            match g {
                Handoff::Staged { batches, staged } => run.push((batches, staged)),
                Handoff::Voided { batches, error } => {
                    self.sync_run(std::mem::take(&mut run));
                    if self.shared.failed.load(Ordering::SeqCst) {
                        self.answer_unknown(batches, &format!("{error}; {RETRY}"));
                    } else {
                        self.answer_unknown(batches, &format!("{error}; {RETRY_NOW}"));
                    }
                }
                Handoff::Failed { batches, error } => {
                    self.sync_run(std::mem::take(&mut run));
                    self.shared.failed.store(true, Ordering::SeqCst);
                    self.answer_unknown(batches, &format!("{error}; {RETRY}"));
                }
            }
        }
        self.sync_run(run);
    }

    /// Makes a run of staged groups durable with one settle, then answers them in order.
    fn sync_run(&self, groups: Vec<(Vec<Decided>, Option<StagedBatch>)>) {
        if groups.is_empty() {
            return;
        }
        if self.shared.failed.load(Ordering::SeqCst) {
            let batches = groups.into_iter().flat_map(|(b, _)| b).collect();
            return self.answer_unknown(batches, &self.shared.stopped_message());
        }
        let mut batches = Vec::new();
        let mut written = Vec::new();
        for (b, staged) in groups {
            batches.extend(b);
            written.extend(staged);
        }
        let appended = !written.is_empty();
        if appended {
            if let Err(e) = self.shared.store.settle(written) {
                self.shared.failed.store(true, Ordering::SeqCst);
                return self.answer_unknown(
                    batches,
                    &format!("storage failed while this command was in flight ({e}); {RETRY}"),
                );
            }
        }
        let c = &self.shared.counters;
        // Filed before answering, so a client that was refused finds the refusal in the history right away.
        let mut unfiled = self.unfiled.lock().unwrap_or_else(|e| e.into_inner());
        let mut refusals = std::mem::take(&mut *unfiled);
        refusals.extend(
            batches
                .iter_mut()
                .flat_map(|b| std::mem::take(&mut b.refusals)),
        );
        match self.shared.store.refusals().append(&refusals) {
            Ok(()) => {}
            // The database was away, so nothing was filed: kept for the next batch.
            Err(e @ crate::store::StoreError::Unreachable { .. }) => {
                tracing::warn!(error = %e, waiting = refusals.len(), "refused commands could not be recorded in the audit trail yet; they are filed with the next batch");
                *unfiled = refusals;
            }
            Err(e) => {
                tracing::warn!(error = %e, "refused commands could not be recorded in the audit trail")
            }
        }
        drop(unfiled);
        let oldest = batches.iter().map(|b| b.started).min();
        let entries: usize = batches.iter().map(|b| b.positions.len()).sum();
        let mut settled: Option<Settled> = None;
        let mut last_seq = 0;
        for b in batches {
            last_seq = b.seq;
            if let Some(next) = b.settled {
                settled = Some(match settled {
                    None => next,
                    Some(mut so_far) => {
                        so_far.touched.merge(next.touched);
                        Settled {
                            touched: so_far.touched,
                            appended: so_far.appended + next.appended,
                            ..next
                        }
                    }
                });
            }
            let positions = b.positions;
            for (reply, draft) in b.drafts {
                let outcome = match draft {
                    Draft::Done(o) => o,
                    Draft::Entry(n, command_id) => Outcome::Committed {
                        command_id,
                        positions: positions[n].clone(),
                        duplicate: false,
                    },
                    Draft::DuplicateOfEntry(n, command_id) => Outcome::Committed {
                        command_id,
                        positions: positions[n].clone(),
                        duplicate: true,
                    },
                    Draft::Duplicate(positions, command_id) => Outcome::Committed {
                        command_id,
                        positions,
                        duplicate: true,
                    },
                };
                let counter = match &outcome {
                    Outcome::Committed {
                        duplicate: false, ..
                    } => &c.committed,
                    Outcome::Committed {
                        duplicate: true, ..
                    } => &c.duplicates,
                    Outcome::Refused { .. } => &c.refused,
                    // The writer never answers `invalid`: lines that are not commands never reach it.
                    Outcome::Unknown { .. } | Outcome::Invalid { .. } => &c.unknown,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(outcome);
            }
        }
        self.shared.durable.store(last_seq, Ordering::SeqCst);
        if appended {
            c.largest_batch.fetch_max(entries as u64, Ordering::Relaxed);
            if let Some(t) = oldest {
                c.record_batch(t.elapsed(), entries);
            }
            self.head.send_replace(self.shared.store.head().position);
            if let Some(settled) = settled {
                let _ = self.project.send(settled);
            }
        }
    }

    fn answer_unknown(&self, batches: Vec<Decided>, message: &str) {
        for b in batches {
            for (reply, draft) in b.drafts {
                let command_id = match &draft {
                    Draft::Done(o) => match o.command_id() {
                        Some(id) => id,
                        // An answer about no command (never made by the writer) is passed on as it is.
                        None => {
                            let _ = reply.send(o.clone());
                            continue;
                        }
                    },
                    Draft::Entry(_, id)
                    | Draft::DuplicateOfEntry(_, id)
                    | Draft::Duplicate(_, id) => *id,
                };
                self.shared.counters.unknown.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Outcome::Unknown {
                    command_id,
                    message: message.to_string(),
                });
            }
        }
    }
}
