//! Fault injection for the crate's own tests of the failure paths (`src/ledger/fault_tests.rs`): a write, flush or
//! fdatasync that fails after N operations, once or for good. Outside those tests [`Faults`] is empty and never
//! strikes, so no other build can arm it.

/// A fault to inject, for tests of the failure paths.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    /// The write transaction fails: nothing of the batch reaches sled. Survived: the ledger answers the batch (and any
    /// decided on top of it) `unknown` and goes on from the durable head.
    Write = 1,
    /// `fdatasync` fails after the batch was written and flushed: its fate on disk is unknown (fail-stop).
    Sync = 2,
    /// sled's `flush()` fails: the batch may be partly in sled's log (fail-stop).
    Flush = 3,
}

/// When an injected fault strikes: after `after` operations of its kind have succeeded, then once (`persistent:
/// false`: the store recovers) or on every later operation of that kind.
#[cfg(test)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FaultPlan {
    pub fault: Fault,
    pub after: u64,
    pub persistent: bool,
}

/// The armed fault of a store, if any.
#[derive(Default)]
pub(super) struct Faults {
    /// The armed fault, with how many more operations of its kind succeed first.
    #[cfg(test)]
    armed: std::sync::Mutex<Option<(FaultPlan, u64)>>,
    /// Faults struck so far.
    #[cfg(test)]
    struck: std::sync::atomic::AtomicU64,
}

impl Faults {
    /// Whether an operation of kind `fault` fails now.
    #[cfg(not(test))]
    #[inline]
    pub(super) fn strikes(&self, _fault: Fault) -> bool {
        false
    }

    /// Whether an operation of kind `fault` fails now.
    #[cfg(test)]
    pub(super) fn strikes(&self, fault: Fault) -> bool {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        let Some((plan, left)) = armed.as_mut() else {
            return false;
        };
        if plan.fault != fault {
            return false;
        }
        if *left > 0 {
            *left -= 1;
            return false;
        }
        if !plan.persistent {
            *armed = None;
        }
        self.struck
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        true
    }

    /// Arms `plan`, replacing any armed one.
    #[cfg(test)]
    pub(super) fn arm(&self, plan: FaultPlan) {
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = Some((plan, plan.after));
    }

    /// How many faults have struck.
    #[cfg(test)]
    pub(super) fn struck(&self) -> u64 {
        self.struck.load(std::sync::atomic::Ordering::SeqCst)
    }
}
