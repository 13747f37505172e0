//! Replays the committed fuzz corpora on stable Rust: every file of
//! `fuzz/corpus/<target>/` goes through the same check as the fuzz target of that name
//! (`fuzz/src/checks.rs`, included here by path), so CI catches a parser change that
//! breaks an invariant on a known input without nightly or libFuzzer. Fuzzing itself is
//! described in docs/development.md#fuzzing.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

/// The files of one target's corpus, sorted; fails on a missing or empty corpus.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no input", dir.display());
    files
}

/// Run `check` on every input of `target`, naming the input that fails.
fn replay(target: &str, check: fn(&[u8])) {
    for file in corpus(target) {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            let rel = file
                .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                .unwrap_or(&file);
            panic!(
                "{}: the `{target}` check failed; to reproduce, from the repository root: \
                 cargo +nightly fuzz run {target} {}",
                rel.display(),
                rel.display()
            );
        }
    }
}

#[test]
fn identity_corpus_keeps_the_cookie_and_header_invariants() {
    replay("identity", checks::identity);
}

#[test]
fn outcome_corpus_keeps_the_outcome_body_invariants() {
    replay("outcome", checks::outcome);
}

#[test]
fn config_corpus_is_refused_with_located_errors_or_compiles_consistently() {
    replay("config", checks::config);
}

#[test]
fn analyze_line_corpus_is_read_by_the_scanner_exactly_as_by_serde() {
    replay("analyze_line", checks::analyze_line);
}
