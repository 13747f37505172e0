//! What a config check reports: every problem at once, each with the line of the file
//! and the key path it refers to.
//!
//! Validation only records (key path, message) pairs in [`Diagnostics`]; lines are
//! looked up afterwards from the text ([`locate`]), so the validating code never
//! carries spans around.

mod locate;

use std::fmt;
use std::path::PathBuf;

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

impl Diagnostic {
    /// A TOML syntax or type error, at the line of its span.
    pub(super) fn from_toml(text: &str, e: &toml::de::Error) -> Self {
        Diagnostic {
            line: e.span().map(|s| locate::line_of(text, s.start)),
            path: String::new(),
            message: e.message().trim().to_string(),
        }
    }
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
    /// How many problems were recorded.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Record a key serde did not use (`key` is its full path).
    pub(super) fn push_unknown_key(&mut self, key: &str) {
        let (parent, leaf) = match key.rsplit_once('.') {
            Some((p, l)) => (p.to_string(), l.to_string()),
            None => (String::new(), key.to_string()),
        };
        self.push(
            key,
            format!(
                "unknown key `{leaf}`{}; see docs/configuration.md for the valid keys",
                if parent.is_empty() {
                    " at the top level".to_string()
                } else {
                    format!(" in `{parent}`")
                }
            ),
        );
    }

    /// The problems with their lines in `text`, in file order; problems whose key
    /// cannot be found go last. The sort is stable, so problems on one line keep the
    /// order they were found in.
    pub(super) fn located(self, text: &str) -> Vec<Diagnostic> {
        let mut list = locate::locate_all(text, self.items);
        list.sort_by_key(|d| d.line.unwrap_or(usize::MAX));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_counts_errors_and_prints_line_and_path_when_known() {
        let err = ConfigError {
            file: PathBuf::from("a.toml"),
            diagnostics: vec![
                Diagnostic {
                    line: Some(3),
                    path: "server.threads".into(),
                    message: "0 must be between 1 and 256".into(),
                },
                Diagnostic {
                    line: None,
                    path: String::new(),
                    message: "cannot read the file".into(),
                },
            ],
        };
        assert_eq!(
            err.to_string(),
            "a.toml: 2 errors in config\n  a.toml:3: server.threads: 0 must be between 1 and 256\n  a.toml: cannot read the file\n"
        );
    }

    #[test]
    fn display_says_error_in_the_singular_for_one() {
        let err = ConfigError {
            file: PathBuf::from("a.toml"),
            diagnostics: vec![Diagnostic {
                line: Some(1),
                path: "x".into(),
                message: "m".into(),
            }],
        };
        assert!(err.to_string().starts_with("a.toml: 1 error in config\n"));
    }

    #[test]
    fn unknown_key_names_its_table_or_the_top_level() {
        let mut d = Diagnostics::default();
        d.push_unknown_key("layer[0].colour");
        d.push_unknown_key("colour");
        let list = d.located("");
        assert_eq!(list[0].path, "layer[0].colour");
        assert!(list[0]
            .message
            .starts_with("unknown key `colour` in `layer[0]`;"));
        assert!(list[1]
            .message
            .starts_with("unknown key `colour` at the top level;"));
    }

    #[test]
    fn located_sorts_by_line_keeps_order_within_a_line_and_puts_unlocated_last() {
        let text = "[server]\nthreads = 0\n[admin]\nlisten = \"x\"\n";
        let mut d = Diagnostics::default();
        d.push("routing", "no line");
        d.push("admin.listen", "second");
        d.push("server.threads", "first a");
        d.push("server.threads", "first b");
        let got: Vec<_> = d
            .located(text)
            .into_iter()
            .map(|d| (d.line, d.message))
            .collect();
        assert_eq!(
            got,
            [
                (Some(2), "first a".to_string()),
                (Some(2), "first b".to_string()),
                (Some(4), "second".to_string()),
                (None, "no line".to_string()),
            ]
        );
    }
}
