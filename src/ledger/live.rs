//! The live write model: what "now" views, histories, command authorisation and confined streams read, and how a
//! reader waits for it to reach a position (read-your-writes).

use std::sync::{Condvar, Mutex, RwLock};
use std::time::Duration;

use crate::domain::{Position, State};

/// The write model as of the last durable batch, kept by the projector thread: what "now" views read.
///
/// The writer's own model runs ahead of the disk (it already holds the batch being made durable), so readers must
/// not see it. After each batch the writer hands over a copy, which this installs once the batch is durable. The
/// maps are persistent (`domain/table.rs`): the copy shares every entity with the writer's model except those the
/// writer changed since, so the write model is held once, not twice.
pub struct Live {
    state: RwLock<State>,
    /// The position `state` reflects, with a condition variable for readers waiting to see their own writes.
    position: Mutex<Position>,
    moved: Condvar,
    /// Held by [`Ledger::pause_projector`] (tests): the projector takes it before installing a model.
    pub(super) paused: Mutex<()>,
}

/// How long a read waits for the live model to reach the head before it answers from what it has.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

impl Live {
    pub(super) fn new(state: State, position: Position) -> Live {
        Live {
            state: RwLock::new(state),
            position: Mutex::new(position),
            moved: Condvar::new(),
            paused: Mutex::new(()),
        }
    }

    /// The position the live state reflects.
    pub fn position(&self) -> Position {
        *self.position.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (up to `timeout`) until the live state reflects at least `position`; returns the position it reflects.
    pub fn wait_for(&self, position: Position, timeout: Duration) -> Position {
        let guard = self.position.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .moved
            .wait_timeout_while(guard, timeout, |p| *p < position)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }

    /// Reads the live state and the position it reflects.
    pub fn read<R>(&self, f: impl FnOnce(&State, Position) -> R) -> R {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let position = self.position();
        f(&state, position)
    }

    /// Makes `state`, the write model as of durable position `position`, what readers see.
    pub(super) fn install(&self, state: State, position: Position) {
        let _running = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        let old = {
            let mut current = self.state.write().unwrap_or_else(|e| e.into_inner());
            let old = std::mem::replace(&mut *current, state);
            // Moved while the state is still locked, so a reader never pairs the new state with the old position.
            *self.position.lock().unwrap_or_else(|e| e.into_inner()) = position;
            old
        };
        self.moved.notify_all();
        // What the old copy alone still held is freed here, outside the lock.
        drop(old);
    }
}
