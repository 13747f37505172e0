//! `cargo +nightly fuzz run outcome`: see `abgate_fuzz::checks::outcome` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| abgate_fuzz::checks::outcome(data));
