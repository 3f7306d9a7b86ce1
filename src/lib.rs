//! partner-ledger: an event-sourced, tamper-evident ledger of Cloud Solution Provider partner relationships.
//!
//! The crate is layered: [`domain`] holds every business rule and does no I/O; [`store`] owns the bytes on disk;
//! [`ledger`] is the single writer that sequences commands with group commit; [`query`] answers reads from the
//! log's indexes; [`cli`] is a thin adapter.

pub mod access;
pub mod api;
pub mod backup;
#[cfg(feature = "bench")]
pub mod bench;
pub mod cli;
pub mod domain;
pub mod fuzz;
pub mod ledger;
pub mod projection;
pub mod query;
pub mod relay;
pub mod replay;
pub mod snapshot;
pub mod store;
pub mod workload;
