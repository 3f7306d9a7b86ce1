//! A small pool of PostgreSQL connections for readers: a connection is taken for one statement or one page and
//! handed back, so readers on many threads (HTTP handlers, streams, the projector) never queue behind the writer's
//! connection. A connection found closed is dropped, and the next reader opens a new one.

use std::sync::{Arc, Mutex};

use postgres::Client;

use super::PgTarget;
use crate::store::StoreError;

/// The connections kept idle at most.
const IDLE: usize = 8;

#[derive(Clone)]
pub(super) struct Pool {
    target: PgTarget,
    idle: Arc<Mutex<Vec<Client>>>,
}

/// A connection taken from the pool; handed back when dropped, unless it is closed.
pub(super) struct Pooled {
    client: Option<Client>,
    idle: Arc<Mutex<Vec<Client>>>,
}

impl Pool {
    pub(super) fn new(target: PgTarget) -> Pool {
        Pool {
            target,
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub(super) fn target(&self) -> &PgTarget {
        &self.target
    }

    /// Drops the idle connections (after the database was found gone: they are as dead).
    pub(super) fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// An idle connection, or a new one.
    pub(super) fn get(&self) -> Result<Pooled, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let client = match idle {
            Some(c) if !c.is_closed() => c,
            _ => self.target.connect()?,
        };
        Ok(Pooled {
            client: Some(client),
            idle: Arc::clone(&self.idle),
        })
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
        if let Some(c) = self.client.take() {
            if !c.is_closed() {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < IDLE {
                    idle.push(c);
                }
            }
        }
    }
}
