//! The projector thread: installs the write model each durable batch left (the writer's copy, sharing everything with
//! the writer's own) as the live model that "now" views read, rewrites the
//! read-model documents of the entities that changed every `projection_interval` (and at close), and writes a
//! write-model snapshot every `snapshot_every` events (and at close, when enough came after the last one).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::writer::Settled;
use super::Live;
use crate::projection::{Projections, Touched};
use crate::store::Store;

/// Keeps the live model, the read models and the snapshot up with the log.
pub(super) struct Projector {
    pub(super) store: Arc<dyn Store>,
    pub(super) live: Arc<Live>,
    pub(super) interval: Duration,
    pub(super) snapshot_every: u64,
    pub(super) snapshot_at_close: u64,
    /// Events applied since the last snapshot.
    pub(super) since_snapshot: u64,
}

impl Projector {
    pub(super) fn run(mut self, rx: std::sync::mpsc::Receiver<Settled>) {
        let mut touched = Touched::default();
        let mut last_write = Instant::now();
        loop {
            let wait = self.interval.saturating_sub(last_write.elapsed());
            match rx.recv_timeout(wait) {
                Ok(settled) => {
                    let mut latest = settled;
                    while let Ok(more) = rx.try_recv() {
                        self.since_snapshot += latest.appended;
                        touched.merge(std::mem::take(&mut latest.touched));
                        latest = more;
                    }
                    self.since_snapshot += latest.appended;
                    touched.merge(std::mem::take(&mut latest.touched));
                    self.live.install(latest.state, latest.position);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if last_write.elapsed() >= self.interval {
                self.write_documents(&mut touched);
                last_write = Instant::now();
            }
            if self.since_snapshot >= self.snapshot_every {
                self.snapshot();
            }
        }
        self.write_documents(&mut touched);
        if self.since_snapshot >= self.snapshot_at_close {
            self.snapshot();
        }
    }

    /// Rewrites the documents of everything that changed since the last write. A failure loses nothing: the
    /// checkpoints stay behind, and the entities stay marked for the next round (or the next open).
    fn write_documents(&self, touched: &mut Touched) {
        if touched.is_empty() {
            return;
        }
        // Documents are small; a few MiB covers a second's worth, twice over for sled's log.
        if let Err(why) = self.store.room_for(8 * 1024 * 1024) {
            tracing::warn!(%why, "read models are not updated; they catch up once there is room, or at the next open");
            return;
        }
        let result = self.live.read(|state, position| {
            Projections::open(&*self.store).update(state, touched, position)
        });
        if let Err(e) = result {
            // Kept: the next round writes them with whatever changed since, so no document is left behind a
            // checkpoint that a later write moves past it.
            tracing::warn!(error = %e, "read models could not be updated; retrying with the next round");
            return;
        }
        *touched = Touched::default();
    }

    fn snapshot(&mut self) {
        // The new snapshot is written beside the old one before it replaces it.
        let previous = self.store.snapshot_size();
        if let Err(why) = self.store.room_for(2 * previous.max(16 * 1024 * 1024)) {
            tracing::warn!(%why, "the write-model snapshot is not written; the next open replays more");
            return;
        }
        let result = self.live.read(|state, position| {
            let hash = match self.store.get(position) {
                Ok(Some(e)) => e.envelope().map(|env| env.hash),
                Ok(None) => return Ok(0),
                Err(e) => Err(e),
            }?;
            crate::snapshot::write(&*self.store, state, position, &hash)
        });
        match result {
            Ok(_) => self.since_snapshot = 0,
            Err(e) => {
                tracing::warn!(error = %e, "the write-model snapshot could not be written; the next open replays more")
            }
        }
    }
}
