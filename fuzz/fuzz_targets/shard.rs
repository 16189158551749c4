//! `cargo fuzz run shard`: see `svmsim::fuzz::shard_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| svmsim::fuzz::shard_file(data));
