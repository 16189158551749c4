//! `cargo fuzz run import_sqlite`: see `svmsim::fuzz::import_sqlite`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| svmsim::fuzz::import_sqlite(data));
