//! The history index: which positions are about which customer, partner or subscription.
//!
//! Writing one sled key per (entity, event) in the commit transaction cost more than the event itself (random keys
//! spread over many leaves; measured in docs/performance.md), so the index is kept out of the durable commit. It is
//! derived data, like a projection:
//! - a **tail** in memory holds the positions committed since the index checkpoint, per entity;
//! - a flush (from a background thread, every few seconds or when the tail grows large, and at close) writes one
//!   chunk key per entity it holds — kind ‖ entity id ‖ first position → the positions, 8 bytes each, big-endian —
//!   then the new checkpoint, then drops those positions from the tail. The keys are written one by one, not as one
//!   sled `Batch`: a batch holds sled's process-wide write lock for its whole length and would stall the commits
//!   meanwhile. After a crash in the middle of a flush, chunks past the stored checkpoint may exist; readers ignore
//!   positions past the checkpoint, and the same positions flushed again are read once (`history` drops repeats);
//! - at open, the events after the checkpoint are read again to rebuild the tail (after a crash that is at most one
//!   flush interval of events).
//!
//! A reader takes the checkpoint and its tail entries under one lock and reads chunk positions only up to that
//! checkpoint, so a flush running at the same time can neither hide a position nor show it twice.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::domain::{EntityRef, Position};
use crate::store::entity_prefix;
use crate::store::StoreError;

const CHECKPOINT: &[u8] = b"checkpoint";

/// The index tree and its in-memory tail.
pub struct Index {
    tree: sled::Tree,
    tail: RwLock<Tail>,
}

#[derive(Default)]
struct Tail {
    /// Everything up to here is in the tree.
    checkpoint: Position,
    /// The highest position added to the tail (or the checkpoint when the tail is empty).
    upto: Position,
    /// Positions after the checkpoint, per entity prefix, ascending.
    entries: HashMap<[u8; 18], Vec<u64>>,
    /// How many positions the tail holds, all entities together.
    len: usize,
}

impl Index {
    /// Opens the index tree; the tail starts empty at the stored checkpoint (see [`Index::catch_up`]).
    pub fn open(tree: sled::Tree) -> Result<Index, StoreError> {
        let checkpoint = tree
            .get(CHECKPOINT)?
            .and_then(|v| Position::from_key(&v))
            .unwrap_or_default();
        Ok(Index {
            tree,
            tail: RwLock::new(Tail {
                checkpoint,
                upto: checkpoint,
                ..Tail::default()
            }),
        })
    }

    /// The position up to which the tree holds the index.
    pub fn checkpoint(&self) -> Position {
        self.read().checkpoint
    }

    /// The highest position indexed so far (tree or tail).
    pub fn upto(&self) -> Position {
        self.read().upto
    }

    /// How many positions wait in memory for the next flush.
    pub fn tail_len(&self) -> usize {
        self.read().len
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tail> {
        self.tail.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tail> {
        self.tail.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds committed events: each position with the entities it is about, in ascending order after [`Index::upto`].
    pub fn add(&self, events: &[(Position, Vec<EntityRef>)]) {
        let mut t = self.write();
        for (position, entities) in events {
            if *position <= t.upto {
                continue;
            }
            for e in entities {
                t.entries
                    .entry(entity_prefix(e))
                    .or_default()
                    .push(position.0);
                t.len += 1;
            }
            t.upto = *position;
        }
    }

    /// Forgets everything: the tree and the tail (before a rebuild from the whole log).
    pub fn clear(&self) -> Result<(), StoreError> {
        let mut t = self.write();
        self.tree.clear()?;
        *t = Tail::default();
        Ok(())
    }

    /// Writes the tail to the tree as one chunk per entity, key by key (a sled `Batch` would hold sled's write lock and
    /// stall the commits), then the new checkpoint, then drops it from memory. Returns how many chunk keys were
    /// written.
    pub fn flush(&self) -> Result<usize, StoreError> {
        let (upto, chunks) = {
            let t = self.read();
            if t.upto == t.checkpoint {
                return Ok(0);
            }
            let chunks: Vec<([u8; 18], Vec<u64>)> =
                t.entries.iter().map(|(k, v)| (*k, v.clone())).collect();
            (t.upto, chunks)
        };
        let written = chunks.len();
        for (prefix, positions) in &chunks {
            let Some(first) = positions.first() else {
                continue;
            };
            let mut key = Vec::with_capacity(26);
            key.extend_from_slice(prefix);
            key.extend_from_slice(&first.to_be_bytes());
            let mut value = Vec::with_capacity(positions.len() * 8);
            for p in positions {
                value.extend_from_slice(&p.to_be_bytes());
            }
            self.tree.insert(key, value)?;
        }
        self.tree.insert(CHECKPOINT, &upto.to_key()[..])?;
        let mut t = self.write();
        let mut len = 0;
        t.entries.retain(|_, v| {
            v.retain(|p| *p > upto.0);
            len += v.len();
            !v.is_empty()
        });
        t.len = len;
        t.checkpoint = upto;
        Ok(written)
    }

    /// The positions of `entity`'s events after `after`, ascending.
    pub fn history(
        &self,
        entity: &EntityRef,
        after: Position,
    ) -> Result<Vec<Position>, StoreError> {
        let prefix = entity_prefix(entity);
        let (checkpoint, tail) = {
            let t = self.read();
            (
                t.checkpoint,
                t.entries.get(&prefix).cloned().unwrap_or_default(),
            )
        };
        let mut out = Vec::new();
        if after < checkpoint {
            for item in self.tree.scan_prefix(prefix) {
                let (_, v) = item?;
                for chunk in v.chunks_exact(8) {
                    let p = Position::from_key(chunk).unwrap_or_default();
                    if p > after && p <= checkpoint {
                        out.push(p);
                    }
                }
            }
        }
        // A flush interrupted by a crash may have left a chunk that a later flush wrote again with other bounds.
        out.sort_unstable();
        out.dedup();
        out.extend(
            tail.into_iter()
                .map(Position)
                .filter(|p| *p > after && *p > checkpoint),
        );
        Ok(out)
    }
}
