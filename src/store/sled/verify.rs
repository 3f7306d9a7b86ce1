//! Verification of the chain as sled stores it: contiguous positions, each envelope linked to the previous hash and
//! its own hash matching, and the end of the log matching the head marker and the `HEAD` file.

use super::recover::stored_hash;
use super::SledStore;
use crate::domain::Position;
use crate::store::envelope::check;
use crate::store::{Head, StoreError};

impl SledStore {
    /// Verifies events `from..=to`: contiguous positions, each linked to the previous hash, each hash matching.
    pub(super) fn verify_range(
        &self,
        from: Position,
        to: Position,
        progress: &mut dyn FnMut(Position),
    ) -> Result<(), StoreError> {
        let mut prev = if from.0 <= 1 {
            crate::store::GENESIS_HASH.to_string()
        } else {
            let before = Position(from.0 - 1);
            let raw = self.log.get(before)?.ok_or_else(|| StoreError::Corrupt {
                position: Some(before),
                message: format!("event {before} is missing"),
            })?;
            stored_hash(&raw, before)?
        };
        let mut expected = from;
        for item in self.log.events(Position(from.0 - 1), Some(to)) {
            let (pos, v) = item?;
            if pos != expected {
                return Err(StoreError::Corrupt {
                    position: Some(expected),
                    message: format!("event {expected} is missing"),
                });
            }
            let env = check(&v, expected, &prev).map_err(|b| StoreError::Corrupt {
                position: Some(b.position),
                message: b.reason,
            })?;
            prev = env.hash;
            progress(expected);
            expected = expected.next();
        }
        if expected != to.next() {
            return Err(StoreError::Corrupt {
                position: Some(expected),
                message: format!("event {expected} is missing"),
            });
        }
        Ok(())
    }

    /// Walks the whole chain and checks it against the head marker. Calls `progress` after each event.
    pub(super) fn verify_all(
        &self,
        progress: &mut dyn FnMut(Position),
    ) -> Result<Head, StoreError> {
        let head = self.marker()?.unwrap_or_else(Head::genesis);
        self.check_head_file(&head)?;
        let last = self.log.last()?.map(|(p, _)| p).unwrap_or_default();
        if last.0 > 0 {
            self.verify_range(Position(1), last, progress)?;
        }
        if last != head.position {
            return Err(StoreError::Corrupt {
                position: Some(Position(last.0.min(head.position.0) + 1)),
                message: format!(
                    "the log ends at position {last} but the head marker records {}: events were removed or lost",
                    head.position
                ),
            });
        }
        Ok(head)
    }
}
