//! The background thread that writes the history index's pending entries every `index_interval`, or when woken
//! because enough of them wait in memory, and once more at close.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::index::Index;
use super::io;
use super::reserve::Room;
use crate::store::StoreError;

/// The background thread that flushes the history index, and how to wake or stop it.
pub(super) struct Flusher {
    signal: Arc<(Mutex<FlusherState>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct FlusherState {
    wake: bool,
    stop: bool,
}

impl Flusher {
    pub(super) fn start(
        index: Arc<Index>,
        interval: Duration,
        room: Room,
    ) -> Result<Flusher, StoreError> {
        let signal = Arc::new((Mutex::new(FlusherState::default()), Condvar::new()));
        let theirs = Arc::clone(&signal);
        let thread = std::thread::Builder::new()
            .name("ledger-index".into())
            .spawn(move || {
                let (lock, cv) = &*theirs;
                loop {
                    let stop = {
                        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                        if !st.wake && !st.stop {
                            st = cv
                                .wait_timeout(st, interval)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                        st.wake = false;
                        st.stop
                    };
                    // About 8 bytes per position in the tail, twice over for sled's log.
                    let bytes = 16 * index.tail_len() as u64;
                    if let Err(why) = room.check(bytes) {
                        tracing::warn!(%why, "the history index is not flushed; it stays in memory and is retried");
                    } else if let Err(e) = index.flush() {
                        tracing::warn!(error = %e, "the history index could not be flushed; it stays in memory and is retried");
                    }
                    if stop {
                        return;
                    }
                }
            })
            .map_err(io("cannot start the index thread"))?;
        Ok(Flusher {
            signal,
            thread: Some(thread),
        })
    }

    pub(super) fn wake(&self) {
        let (lock, cv) = &*self.signal;
        lock.lock().unwrap_or_else(|e| e.into_inner()).wake = true;
        cv.notify_one();
    }

    /// Flushes one last time and waits for the thread.
    pub(super) fn stop(&mut self) {
        let (lock, cv) = &*self.signal;
        lock.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        cv.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
