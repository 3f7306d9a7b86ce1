//! Folding the log into the write model: from the start, after a position, or from the snapshot when it belongs to
//! the log. Below both the ledger (which opens with it) and the projections (which rebuild with it).

use crate::domain::{Position, State};
use crate::store::{EventStore, StoreError};

/// Failures to open a ledger.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event does not replay: the log is damaged or was written by an incompatible version.
    #[error("event {position} does not replay: {message}")]
    Replay { position: Position, message: String },
}

/// Folds the whole log into the write model.
pub fn replay(store: &dyn EventStore, progress: impl FnMut(Position)) -> Result<State, OpenError> {
    replay_onto(store, State::new(), Position(0), progress)
}

/// Folds the log after `after` into `state`.
pub fn replay_onto(
    store: &dyn EventStore,
    mut state: State,
    after: Position,
    mut progress: impl FnMut(Position),
) -> Result<State, OpenError> {
    for item in store.read(after, None) {
        let stored = item?;
        let (at, event) = stored.decode().map_err(|e| OpenError::Replay {
            position: stored.position,
            message: e.to_string(),
        })?;
        state.apply(at, &event);
        progress(stored.position);
    }
    Ok(state)
}

/// The write model at the head: from the snapshot when it belongs to this log, plus the events after it; otherwise
/// replayed from the start. Returns the state and the position the snapshot covered (0 without one).
pub fn load_state(
    store: &dyn crate::store::Store,
    progress: impl FnMut(Position),
) -> Result<(State, Position), OpenError> {
    let (state, from) = match crate::snapshot::load(store) {
        Ok((state, position)) => (state, position),
        Err(crate::snapshot::Unusable::Missing) => (State::new(), Position(0)),
        Err(crate::snapshot::Unusable::Rejected(why)) => {
            tracing::warn!(reason = %why, "the write-model snapshot is not used; replaying the whole log");
            (State::new(), Position(0))
        }
    };
    Ok((replay_onto(store, state, from, progress)?, from))
}
