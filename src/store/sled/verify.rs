//! Verification of the chain as sled stores it: contiguous positions, each envelope linked to the previous hash and
//! its own hash matching, and the end of the log matching the head marker and the `HEAD` file.

use super::SledStore;
use crate::domain::Position;
use crate::store::verify::{check_chain, ends_at_head, link_before};
use crate::store::{Head, StoreError};

impl SledStore {
    /// Verifies events `from..=to`: contiguous positions, each linked to the previous hash, each hash matching
    /// (`crate::store::verify::check_chain`, in parallel pieces).
    pub(super) fn verify_range(
        &self,
        from: Position,
        to: Position,
        progress: &mut dyn FnMut(Position),
    ) -> Result<(), StoreError> {
        let prev = link_before(from, |p| self.log.get(p))?;
        let events = self.log.events(Position(from.0 - 1), Some(to));
        check_chain(prev, events, from, to, progress)
    }

    /// Walks the whole chain and checks it against the head marker. `progress` as for [`SledStore::verify_range`].
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
        ends_at_head(last, head.position, "the head marker")?;
        Ok(head)
    }
}
