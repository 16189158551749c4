//! `cargo fuzz run import_rocprofv3`: see `svmsim::fuzz::import_rocprofv3`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| svmsim::fuzz::import_rocprofv3(data));
