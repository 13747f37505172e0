//! The checks behind the fuzz targets ([`checks`]), compiled once for the targets in
//! `fuzz_targets/`; `tests/fuzz_corpora.rs` includes the same files by path.

// The analysis line scanner is private to the library (`abgate::analyze` keeps `scan`
// to itself), so its source file is compiled here as it is.
#[allow(dead_code)]
#[path = "../../src/analyze/scan.rs"]
mod scan;

pub mod checks;
