//! A small, bounded pool of PostgreSQL connections for readers: a connection is taken for one statement or one page
//! and handed back, so readers on many threads (HTTP handlers, streams, the projector) never queue behind the
//! writer's connection. At most [`MAX`] are open at once (a burst of reads waits for one rather than exhausting the
//! server's `max_connections`, which the writer's reconnection also needs). A connection found closed is dropped, and
//! the next reader opens a new one.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use postgres::Client;

use super::PgTarget;
use crate::store::StoreError;

/// The readers' connections open at most.
pub(super) const MAX: usize = 16;
/// How long a reader waits for a connection when all are in use.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Slots {
    idle: Vec<Client>,
    /// Connections open: idle or taken.
    open: usize,
}

impl Drop for Slots {
    fn drop(&mut self) {
        for c in self.idle.drain(..) {
            close(c);
        }
    }
}

/// Closes a connection. The synchronous client closes through a runtime of its own, which cannot run on a thread that
/// drives asynchronous tasks (a server's last handle on the ledger may be dropped there): there it is closed on a
/// thread of its own.
pub(super) fn close(client: Client) {
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = std::thread::Builder::new()
            .name("pg-close".into())
            .spawn(move || drop(client));
    } else {
        drop(client);
    }
}

#[derive(Clone)]
pub(super) struct Pool {
    target: PgTarget,
    shared: Arc<(Mutex<Slots>, Condvar)>,
}

/// A connection taken from the pool; handed back when dropped, unless it is closed.
pub(super) struct Pooled {
    client: Option<Client>,
    shared: Arc<(Mutex<Slots>, Condvar)>,
}

impl Pool {
    pub(super) fn new(target: PgTarget) -> Pool {
        Pool {
            target,
            shared: Arc::default(),
        }
    }

    pub(super) fn target(&self) -> &PgTarget {
        &self.target
    }

    /// Drops the idle connections (after the database was found gone: they are as dead).
    pub(super) fn clear(&self) {
        let mut slots = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        let idle: Vec<Client> = slots.idle.drain(..).collect();
        slots.open -= idle.len();
        self.shared.1.notify_all();
        drop(slots);
        idle.into_iter().for_each(close);
    }

    /// An idle connection, or a new one when fewer than [`MAX`] are open; otherwise waits for one.
    pub(super) fn get(&self) -> Result<Pooled, StoreError> {
        let (lock, freed) = &*self.shared;
        let mut slots = lock.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(c) = slots.idle.pop() {
                if c.is_closed() {
                    slots.open -= 1;
                    close(c);
                    continue;
                }
                return Ok(self.pooled(c));
            }
            if slots.open < MAX {
                slots.open += 1;
                drop(slots);
                return match self.target.connect() {
                    Ok(c) => Ok(self.pooled(c)),
                    Err(e) => {
                        lock.lock().unwrap_or_else(|e| e.into_inner()).open -= 1;
                        freed.notify_one();
                        Err(e)
                    }
                };
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(StoreError::Unreachable {
                    place: self.target.to_string(),
                    message: format!(
                        "all {MAX} readers' connections stayed busy for {} s",
                        WAIT.as_secs()
                    ),
                });
            }
            slots = freed
                .wait_timeout(slots, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn pooled(&self, client: Client) -> Pooled {
        Pooled {
            client: Some(client),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl std::ops::Deref for Pooled {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a pooled connection is present until dropped")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("a pooled connection is present until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let (lock, freed) = &*self.shared;
        let mut slots = lock.lock().unwrap_or_else(|e| e.into_inner());
        match self.client.take() {
            Some(c) if !c.is_closed() => slots.idle.push(c),
            other => {
                slots.open -= 1;
                other.into_iter().for_each(close);
            }
        }
        freed.notify_one();
    }
}

/// Rows read a page at a time, in key order: `fetch(after)` returns the next page (at most `page` rows) after the key
/// `after`, each row with its key; a shorter page is the last. Constant memory whatever the table's length.
pub(super) fn paged<'a, T: 'a>(
    page: usize,
    mut fetch: impl FnMut(i64) -> Result<Vec<(i64, Result<T, StoreError>)>, StoreError> + 'a,
) -> Box<dyn Iterator<Item = Result<T, StoreError>> + 'a> {
    let mut after = 0i64;
    let mut buffer = std::collections::VecDeque::new();
    let mut done = false;
    Box::new(std::iter::from_fn(move || {
        if buffer.is_empty() && !done {
            match fetch(after) {
                Err(e) => {
                    done = true;
                    return Some(Err(e));
                }
                Ok(rows) => {
                    done = rows.len() < page;
                    for (key, item) in rows {
                        after = key;
                        buffer.push_back(item);
                    }
                }
            }
        }
        buffer.pop_front()
    }))
}
