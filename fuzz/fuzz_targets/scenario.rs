//! `cargo fuzz run scenario`: see `svmsim::fuzz::scenario_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| svmsim::fuzz::scenario_file(data));
