//! The committer thread: stages decided batches in the store (everything queued so far as one atomic write) while
//! the syncer makes the previous ones durable, and tells the syncer what became of each group.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::writer::Decided;
use super::Shared;
use crate::store::{SealedBatch, StagedBatch, StoreError};

/// What became of a group of decided batches, on its way to the syncer.
pub(super) enum Handoff {
    /// Staged in the store (`None`: there was nothing to stage, every command was refused or a duplicate); the
    /// syncer makes it durable and answers.
    Staged {
        batches: Vec<Decided>,
        staged: Option<StagedBatch>,
    },
    /// Not written and nothing of it reached the store (decided on top of a failed write, or a write that failed
    /// without a trace): answered `unknown`, to retry now, and writing goes on (unless writes were stopped
    /// meanwhile: then the answer says to retry after reopening).
    Voided {
        batches: Vec<Decided>,
        error: String,
    },
    /// Writing stopped (fail-stop): answered `unknown`; it may or may not be on disk.
    Failed {
        batches: Vec<Decided>,
        error: String,
    },
}

/// Waits for the next item, then takes every other one already queued behind it (group commit). `None` once the
/// sender is gone and the queue is empty.
pub(super) fn take_queued<T>(rx: &std::sync::mpsc::Receiver<T>) -> Option<Vec<T>> {
    let first = rx.recv().ok()?;
    let mut all = vec![first];
    all.extend(rx.try_iter());
    Some(all)
}

/// Stages decided batches in the store while the syncer makes the previous ones durable.
pub(super) struct Committer {
    pub(super) shared: Arc<Shared>,
    pub(super) sync: std::sync::mpsc::SyncSender<Handoff>,
}

impl Committer {
    pub(super) fn run(self, rx: std::sync::mpsc::Receiver<Decided>) {
        while let Some(mut batches) = take_queued(&rx) {
            // Batches decided on top of a write that failed are never written (they come first: the writer starts
            // the new epoch only after it rewound).
            let epoch = self.shared.epoch.load(Ordering::SeqCst);
            let fresh = batches
                .iter()
                .position(|b| b.epoch == epoch)
                .unwrap_or(batches.len());
            let rest = batches.split_off(fresh);
            if !batches.is_empty() {
                let void = Handoff::Voided {
                    batches,
                    error: "an earlier write in its group commit failed".into(),
                };
                if self.sync.send(void).is_err() {
                    return;
                }
            }
            if rest.is_empty() {
                continue;
            }
            let handoff = self.stage(rest);
            if self.sync.send(handoff).is_err() {
                return;
            }
        }
    }

    /// Merges the batches' sealed events and stages them as one write.
    fn stage(&self, mut batches: Vec<Decided>) -> Handoff {
        if self.shared.failed.load(Ordering::SeqCst) {
            let error = self.shared.stopped_message();
            return Handoff::Failed { batches, error };
        }
        let mut merged: Option<SealedBatch> = None;
        for b in &mut batches {
            let Some(p) = b.prepared.take() else { continue };
            b.positions = p.positions().to_vec();
            match merged.as_mut() {
                None => merged = Some(p),
                Some(m) => {
                    if m.append(p).is_err() {
                        // The writer chains every batch on the previous one; anything else is a bug.
                        self.shared.failed.store(true, Ordering::SeqCst);
                        let error = "internal error: batches out of order".into();
                        return Handoff::Failed { batches, error };
                    }
                }
            }
        }
        let Some(merged) = merged else {
            // Nothing to write (refusals, duplicates): answered only once the store confirms that no other process
            // has written since (PostgreSQL's lease; nothing to do on sled).
            return match self.shared.store.confirm() {
                Ok(()) => Handoff::Staged {
                    batches,
                    staged: None,
                },
                Err(e @ StoreError::Deposed { .. }) => {
                    self.shared.failed.store(true, Ordering::SeqCst);
                    Handoff::Failed {
                        batches,
                        error: e.to_string(),
                    }
                }
                // The database could not be asked: answered `unknown`, and the writer goes on.
                Err(e) => Handoff::Voided {
                    batches,
                    error: format!("the answer could not be confirmed ({e})"),
                },
            };
        };
        match self.shared.store.stage(merged) {
            Ok(staged) => Handoff::Staged {
                batches,
                staged: Some(staged),
            },
            Err(e @ StoreError::WriteFailed { .. }) => {
                self.shared.epoch.fetch_add(1, Ordering::SeqCst);
                Handoff::Voided {
                    batches,
                    error: e.to_string(),
                }
            }
            Err(e) => {
                self.shared.failed.store(true, Ordering::SeqCst);
                Handoff::Failed {
                    batches,
                    error: format!("storage failed while this command was in flight ({e})"),
                }
            }
        }
    }
}
