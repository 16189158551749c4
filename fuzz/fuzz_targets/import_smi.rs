//! `cargo fuzz run import_smi`: see `svmsim::fuzz::import_smi`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| svmsim::fuzz::import_smi(data));
