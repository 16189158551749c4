//! `cargo fuzz run import`: see `svmsim::fuzz::import_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| svmsim::fuzz::import_file(data));
