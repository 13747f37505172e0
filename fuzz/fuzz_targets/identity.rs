//! `cargo +nightly fuzz run identity`: see `abgate_fuzz::checks::identity` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| abgate_fuzz::checks::identity(data));
