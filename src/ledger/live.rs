//! The live write model: what "now" views, histories, command authorisation and confined streams read, and how a
//! reader waits for it to reach a position (read-your-writes).

use std::sync::{Condvar, Mutex, RwLock};
use std::time::Duration;

use crate::domain::{Event, Position, State, Timestamp};
use crate::projection::Touched;

/// The write model as of the last durable batch, kept by the projector thread: what "now" views read.
///
/// It is a second copy of the write model. The writer's own copy runs ahead of the disk (it already holds the batch
/// being made durable), so readers must not see it; this one only ever holds durable events.
pub struct Live {
    state: RwLock<State>,
    /// The position `state` reflects, with a condition variable for readers waiting to see their own writes.
    position: Mutex<Position>,
    moved: Condvar,
    /// Held by [`Ledger::pause_projector`] (tests): the projector takes it before applying a batch.
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

    pub(super) fn apply(&self, events: &[(Position, Timestamp, Event)], touched: &mut Touched) {
        let Some(last) = events.last().map(|e| e.0) else {
            return;
        };
        let _running = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            for (_, at, event) in events {
                touched.before(&state, event);
                state.apply(*at, event);
                touched.add(&state, event);
            }
            // Moved while the state is still locked, so a reader never pairs the new state with the old position.
            *self.position.lock().unwrap_or_else(|e| e.into_inner()) = last;
        }
        self.moved.notify_all();
    }
}
