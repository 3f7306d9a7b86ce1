#![no_main]
//! `cargo fuzz run stored_record`: see docs/fuzzing.md.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    partner_ledger::fuzz::stored_record(data);
});
