//! The background verification of the whole chain, and what it found so far (`/healthz`, `GET /`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{spawn, Ledger};
use crate::domain::Position;
use crate::store::StoreError;

/// Where the background verification stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegrityStatus {
    /// Still walking the chain; nothing wrong found so far.
    Verifying,
    /// The whole chain up to the head at open verifies.
    Verified,
    /// Damage found: writes are refused.
    Damaged,
}

/// The background verification's state (see [`Ledger::verify_in_background`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Integrity {
    pub status: IntegrityStatus,
    /// The chain is verified from position 1 up to here.
    pub verified_upto: Position,
    /// With `damaged`: the first bad position (when known) and what is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_position: Option<Position>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<String>,
}

impl Ledger {
    /// Verifies the whole chain up to the current head on a background thread (the tail and the head marker were
    /// checked at open; what is appended from now on is written by this process). On damage it refuses every later
    /// write, naming the first bad position ([`Ledger::integrity`], `/healthz`); docs/recovery.md says what to do.
    pub fn verify_in_background(&self) -> Result<(), StoreError> {
        const CHUNK: u64 = 65_536;
        let shared = Arc::clone(&self.shared);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let to = self.store().head().position;
        let thread = spawn("ledger-verify", move || {
            let mut from = 1;
            while from <= to.0 && !stopping.load(Ordering::SeqCst) {
                let upto = (from + CHUNK - 1).min(to.0);
                match shared
                    .store
                    .verify_range(Position(from), Position(upto), &mut |_| {})
                {
                    Ok(()) => shared.verified.store(upto, Ordering::SeqCst),
                    Err(e) => {
                        let (position, message) = match e {
                            StoreError::Corrupt { position, message } => (position, message),
                            other => (None, other.to_string()),
                        };
                        tracing::error!(position = ?position, %message, "the background verification found damage: writes are refused (docs/recovery.md)");
                        *shared.damage.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((position, message));
                        shared.failed.store(true, Ordering::SeqCst);
                        return;
                    }
                }
                from = upto + 1;
            }
            if from > to.0 {
                tracing::info!(events = to.0, "background verification: the chain verifies");
                shared.verify_done.store(true, Ordering::SeqCst);
            }
        })?;
        *self.verifier.lock().unwrap_or_else(|e| e.into_inner()) = Some((stop, thread));
        Ok(())
    }

    /// What the background verification found so far.
    pub fn integrity(&self) -> Integrity {
        let s = &self.shared;
        let damage = s.damage.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let verified_upto = Position(s.verified.load(Ordering::SeqCst));
        match damage {
            Some((position, message)) => Integrity {
                status: IntegrityStatus::Damaged,
                verified_upto,
                first_bad_position: position,
                damage: Some(message),
            },
            None => Integrity {
                status: if s.verify_done.load(Ordering::SeqCst) {
                    IntegrityStatus::Verified
                } else {
                    IntegrityStatus::Verifying
                },
                verified_upto,
                first_bad_position: None,
                damage: None,
            },
        }
    }
}
