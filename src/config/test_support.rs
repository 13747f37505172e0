//! Helpers for unit tests that need a compiled config or its diagnostics.

use super::{parse_str, Config, ConfigError, Diagnostic, Diagnostics};
use std::path::Path;

/// The smallest valid config: one upstream `a`, the default route to it.
pub(crate) const MINIMAL: &str =
    "[upstream.a]\naddrs = [\"127.0.0.1:1\"]\n[routing]\ndefault_upstream = \"a\"\n";

/// Validate `toml` as the file `t.toml`.
pub(crate) fn parse(toml: &str) -> Result<Config, ConfigError> {
    parse_str(toml, Path::new("t.toml"))
}

/// The located diagnostics of an invalid `toml`; panics if it is valid.
pub(crate) fn diagnostics(toml: &str) -> Vec<Diagnostic> {
    match parse(toml) {
        Ok(_) => panic!("expected errors, the config is valid:\n{toml}"),
        Err(e) => e.diagnostics,
    }
}

/// The diagnostics of an invalid `toml` as `(line, key path, message)`.
pub(crate) fn errors(toml: &str) -> Vec<(usize, String, String)> {
    diagnostics(toml)
        .into_iter()
        .map(|d| (d.line.unwrap_or(0), d.path, d.message))
        .collect()
}

/// What was recorded in `d`, as `(key path, message)` in order.
pub(crate) fn messages(d: Diagnostics) -> Vec<(String, String)> {
    d.located("")
        .into_iter()
        .map(|d| (d.path, d.message))
        .collect()
}
