//! `cargo +nightly fuzz run analyze_line`: see `abgate_fuzz::checks::analyze_line` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| abgate_fuzz::checks::analyze_line(data));
