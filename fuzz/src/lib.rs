//! The checks behind the fuzz targets ([`checks`]), compiled once for the targets in
//! `fuzz_targets/`; `tests/fuzz_corpora.rs` includes the same file by path.

pub mod checks;
