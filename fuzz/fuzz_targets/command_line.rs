#![no_main]
//! `cargo fuzz run command_line`: see docs/fuzzing.md.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    partner_ledger::fuzz::command_line(data);
});
