//! `cargo fuzz run profile`: see `svmsim::fuzz::profile_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| svmsim::fuzz::profile_file(data));
