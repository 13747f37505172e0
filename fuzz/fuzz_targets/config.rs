//! `cargo +nightly fuzz run config`: see `abgate_fuzz::checks::config` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| abgate_fuzz::checks::config(data));
