//! The integration tests, one binary: each module drives the real binary, real data folders, real sockets or the
//! library, as its own opening comment says. One binary links the crate once instead of once per file.

mod architecture;
mod audit;
mod audit_recipe;
mod auth;
mod backup;
mod bench;
mod bounded_memory;
mod bounded_streams;
mod cli;
mod common;
mod confinement_property;
mod corruption;
mod coverage;
mod crash_loop;
mod disk_full;
mod docs;
mod durability;
mod errors;
mod fixtures;
mod golden;
mod hostile_http;
mod hostile_input;
mod ledger;
mod many_processes;
mod never_panic;
mod parties;
mod pg;
mod postgres;
mod request_ids;
mod resume_and_ack;
mod server;
mod snapshot;
mod start_and_stop;
mod store_conformance;
mod upgrade;
