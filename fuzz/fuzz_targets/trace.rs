//! `cargo fuzz run trace`: see `svmsim::fuzz::trace_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| svmsim::fuzz::trace_file(data));
