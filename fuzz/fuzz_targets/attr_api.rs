//! `cargo fuzz run attr_api`: see `svmsim::fuzz::attr_api`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| svmsim::fuzz::attr_api(data));
