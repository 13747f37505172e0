//! Configuration: one TOML file, parsed into plain serde structs ([`raw`]) and validated
//! once into the immutable [`Config`] that the request path reads through `arc-swap`.
//!
//! `abgate check`, start-up and every hot reload call the same [`load_file`] /
//! [`parse_str`], so they print the same messages. Validation reports *every* problem at
//! once; each names the file, the line, the key path (`layer[0].experiment[1].variant`)
//! and what would be valid. Unknown keys are errors.

mod compile;
mod locate;
mod model;
pub mod raw;

pub use model::*;

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// 1-based line in the file, when the key could be found.
    pub line: Option<usize>,
    /// Key path such as `layer[0].experiment[1].traffic`.
    pub path: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

/// Every problem of a config file, with the file name.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The file the errors refer to.
    pub file: PathBuf,
    /// All problems found, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        writeln!(
            f,
            "{}: {} error{} in config",
            self.file.display(),
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.diagnostics {
            match d.line {
                Some(line) => write!(f, "  {}:{}: ", self.file.display(), line)?,
                None => write!(f, "  {}: ", self.file.display())?,
            }
            if d.path.is_empty() {
                writeln!(f, "{}", d.message)?;
            } else {
                writeln!(f, "{}: {}", d.path, d.message)?;
            }
        }
        Ok(())
    }
}

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
    let de = match toml::de::Deserializer::parse(text) {
        Ok(de) => de,
        Err(e) => return Err(fail(vec![toml_error(text, &e)])),
    };
    let mut unknown = Vec::new();
    let raw: raw::RawConfig =
        match serde_ignored::deserialize(de, |p| unknown.push(path_string(&p))) {
            Ok(r) => r,
            Err(e) => return Err(fail(vec![toml_error(text, &e)])),
        };
    let mut diags = Diagnostics::default();
    for key in unknown {
        let (parent, leaf) = match key.rsplit_once('.') {
            Some((p, l)) => (p.to_string(), l.to_string()),
            None => (String::new(), key.clone()),
        };
        diags.push(
            &key,
            format!(
                "unknown key `{leaf}`{}; see the README's config reference for the valid keys",
                if parent.is_empty() {
                    " at the top level".to_string()
                } else {
                    format!(" in `{parent}`")
                }
            ),
        );
    }
    let version = config_version(text);
    let compiled = compile::compile(raw, file, version, &mut diags);
    if diags.items.is_empty() {
        Ok(compiled.expect("compile returns a config when it reports no error"))
    } else {
        let mut list = locate::locate_all(text, diags.items);
        list.sort_by_key(|d| d.line.unwrap_or(usize::MAX));
        Err(fail(list))
    }
}

/// A short, stable identifier of a config text (first 12 hex digits of its xxh3).
pub fn config_version(text: &str) -> String {
    format!("{:012x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()) >> 16)
}

fn toml_error(text: &str, e: &toml::de::Error) -> Diagnostic {
    let line = e.span().map(|s| locate::line_of(text, s.start));
    Diagnostic {
        line,
        path: String::new(),
        message: e.message().trim().to_string(),
    }
}

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

/// Problems collected during validation, by key path; lines are found afterwards.
#[derive(Debug, Default)]
pub struct Diagnostics {
    items: Vec<(String, String)>,
}

impl Diagnostics {
    /// Record a problem at `path`.
    pub fn push(&mut self, path: &str, message: impl Into<String>) {
        self.items.push((path.to_string(), message.into()));
    }
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Parse a duration such as `200ms`, `1s`, `5m`, `365d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|_| {
        format!("`{s}` is not a duration; write a number and a unit, e.g. \"200ms\", \"5s\", \"5m\", \"365d\"")
    })
}
