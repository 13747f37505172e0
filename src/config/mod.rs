//! Configuration: one TOML file, parsed into plain serde structs ([`raw`]) and validated
//! once into the immutable [`Config`] that the request path reads through `arc-swap`.
//!
//! What this module guarantees:
//! - A [`Config`] exists only if the whole file is valid; nothing in it changes after
//!   validation, and everything the request path needs (hash seeds, bucket ranges,
//!   variant thresholds, parsed header names, upstream indices) is computed once here.
//! - `abgate check`, start-up and every hot reload call the same [`load_file`] /
//!   [`parse_str`], so they accept the same files and print the same messages.
//! - Validation reports *every* problem at once, never only the first; each names the
//!   file, the line, the key path (`layer[0].experiment[1].variant`) and what would be
//!   valid. Unknown keys are errors.
//!
//! The keys and their defaults are described in `docs/configuration.md`.

mod compile;
mod diagnostics;
mod model;
pub mod raw;
#[cfg(test)]
pub(crate) mod test_support;

pub use compile::parse_duration;
pub use diagnostics::{ConfigError, Diagnostic, Diagnostics};
pub use model::*;

use std::path::Path;

/// Read and validate a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        diagnostics: vec![Diagnostic {
            line: None,
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    parse_str(&text, path)
}

/// Validate config text; `file` is used for messages and to resolve relative paths.
pub fn parse_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let fail = |diagnostics: Vec<Diagnostic>| ConfigError {
        file: file.to_path_buf(),
        diagnostics,
    };
    // A syntax error leaves nothing to validate: it is the only message. Type errors
    // are all reported (each at its line), and then there is nothing more to validate.
    let (raw, unknown) = deserialize(text).map_err(fail)?;
    let mut diags = Diagnostics::default();
    for key in &unknown {
        diags.push_unknown_key(key);
    }
    let compiled = compile::compile(raw, file, config_version(text), &mut diags);
    if diags.is_empty() {
        Ok(compiled.expect("compile returns a config when it reports no error"))
    } else {
        Err(fail(diags.located(text)))
    }
}

/// A short, stable identifier of a config text (first 12 hex digits of its xxh3).
pub fn config_version(text: &str) -> String {
    format!("{:012x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()) >> 16)
}

/// The raw structs of `text` and the key paths serde did not use, in file order.
///
/// serde stops at the first value of the wrong type. To report every one, each is
/// blanked out (its lines replaced by spaces, so later line numbers stay true) and the
/// text deserialized again, up to [`MAX_TYPE_ERRORS`] times.
fn deserialize(text: &str) -> Result<(raw::RawConfig, Vec<String>), Vec<Diagnostic>> {
    let mut masked = std::borrow::Cow::Borrowed(text);
    let mut errors = Vec::new();
    let in_file_order = |mut e: Vec<Diagnostic>| {
        e.sort_by_key(|d| d.line.unwrap_or(usize::MAX));
        e
    };
    for _ in 0..MAX_TYPE_ERRORS {
        let de = match toml::de::Deserializer::parse(&masked) {
            Ok(de) => de,
            // A syntax error (on the first pass; later passes only blank whole lines).
            Err(e) if errors.is_empty() => return Err(vec![Diagnostic::from_toml(text, &e)]),
            Err(_) => return Err(in_file_order(errors)),
        };
        let mut unknown = Vec::new();
        match serde_ignored::deserialize(de, |p| unknown.push(path_string(&p))) {
            Ok(raw) if errors.is_empty() => return Ok((raw, unknown)),
            Ok(_) => return Err(in_file_order(errors)),
            Err(e) => {
                errors.push(Diagnostic::from_toml(text, &e));
                let Some(span) = e.span() else {
                    return Err(in_file_order(errors));
                };
                masked = std::borrow::Cow::Owned(blank_lines(&masked, span));
            }
        }
    }
    Err(in_file_order(errors))
}

/// How many type errors one `check` reports at most.
const MAX_TYPE_ERRORS: usize = 50;

/// `text` with every line that `span` touches replaced by spaces (newlines kept).
fn blank_lines(text: &str, span: std::ops::Range<usize>) -> String {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end = text[span.end.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| span.end + i);
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    out.extend(
        text[start..end]
            .chars()
            .map(|c| if c == '\n' { c } else { ' ' }),
    );
    out.push_str(&text[end..]);
    out
}

/// A serde path as a config key path: `layer[0].experiment[1].colour`.
fn path_string(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match p {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", path_string(parent)),
        Path::Map { parent, key } => {
            let parent = path_string(parent);
            if parent.is_empty() {
                key.to_string()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_string(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{diagnostics, parse, MINIMAL};

    #[test]
    fn minimal_config_is_valid_with_defaults() {
        let cfg = parse(MINIMAL).unwrap();
        assert_eq!(cfg.version, super::config_version(MINIMAL));
        assert_eq!(cfg.server.listen, ["127.0.0.1:8080"]);
        assert!(cfg.layers.is_empty());
    }

    #[test]
    fn every_value_of_the_wrong_type_is_reported_at_its_line() {
        let d = diagnostics(&format!(
            "{MINIMAL}[server]\nthreads = \"two\"\ndebug_header = 1\n[admin]\nlisten = 1\n\
             [[layer]]\nname = \"l\"\n[[layer.experiment]]\nname = \"e\"\ntraffic = 1.0\n\
             [[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
             headers = {{ \"x-when\" = 1979-05-27T07:32:00Z }}\n\
             [layer.experiment.guardrails]\nalpha = 18446744073709551616\n"
        ));
        let lines: Vec<_> = d.iter().map(|d| d.line).collect();
        let base = MINIMAL.lines().count();
        assert_eq!(lines, [2, 3, 5, 14, 16].map(|l| Some(base + l)), "{d:#?}");
        assert!(d[0].message.contains("expected"), "{d:#?}");
    }

    #[test]
    fn syntax_error_is_the_only_message_located_at_its_line() {
        let d = diagnostics("[server]\nthreads = \n[admin]\nlisten = 1\n");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].line, Some(2));
        assert_eq!(d[0].path, "");
    }

    #[test]
    fn unknown_keys_are_errors_at_their_line_with_other_errors_in_file_order() {
        let d = diagnostics(&format!(
            "{MINIMAL}[server]\nthreads = 0\ncolour = \"blue\"\n"
        ));
        let got: Vec<_> = d.iter().map(|d| (d.line, d.path.as_str())).collect();
        assert_eq!(
            got,
            [(Some(6), "server.threads"), (Some(7), "server.colour")]
        );
        assert!(d[1].message.starts_with("unknown key `colour` in `server`"));
    }

    #[test]
    fn config_version_is_12_hex_digits_and_changes_with_the_text() {
        let a = super::config_version("a");
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, super::config_version("b"));
    }
}
