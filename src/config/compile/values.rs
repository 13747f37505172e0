//! Validators of single values shared by every section: durations, names, header
//! names, shares of traffic. Each records its own message and returns what the caller
//! goes on with, so one bad value never stops the rest of the file from being checked.

use crate::config::Diagnostics;
use http::HeaderName;
use std::sync::Arc;
use std::time::Duration;

/// Parse a duration such as `200ms`, `1s`, `5m`, `365d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|_| {
        format!("`{s}` is not a duration; write a number and a unit, e.g. \"200ms\", \"5s\", \"5m\", \"365d\"")
    })
}

/// A positive duration at `path`, or `default` when the key is absent (or invalid,
/// after recording why).
pub(super) fn dur(d: &mut Diagnostics, path: &str, v: &Option<String>, default: &str) -> Duration {
    let s = v.as_deref().unwrap_or(default);
    match parse_duration(s) {
        Ok(x) if x.is_zero() => {
            d.push(path, format!("`{s}` must be longer than zero"));
            parse_duration(default).unwrap_or(Duration::from_secs(1))
        }
        Ok(x) => x,
        Err(m) => {
            d.push(path, m);
            parse_duration(default).unwrap_or(Duration::from_secs(1))
        }
    }
}

/// The `name` of a `what` (layer, experiment, …): present and made of letters, digits,
/// `_` and `-`, since names end up in labels, metrics and file names.
pub(super) fn name_ok(
    d: &mut Diagnostics,
    path: &str,
    v: &Option<String>,
    what: &str,
) -> Option<Arc<str>> {
    match v.as_deref() {
        None => {
            d.push(path, format!("missing: every {what} needs a `name`"));
            None
        }
        Some(n)
            if n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            d.push(
                path,
                format!("`{n}` is not a valid name; use letters, digits, `_` and `-`"),
            );
            None
        }
        Some(n) => Some(Arc::from(n)),
    }
}

/// An HTTP header name, parsed once (lower-cased).
pub(super) fn header_name(d: &mut Diagnostics, path: &str, s: &str) -> Option<HeaderName> {
    match HeaderName::from_bytes(s.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            d.push(
                path,
                format!("`{s}` is not a valid HTTP header name; use letters, digits and `-`"),
            );
            None
        }
    }
}

/// A share in [0, 1]; `None` when absent or invalid (recorded).
pub(super) fn share(d: &mut Diagnostics, path: &str, v: Option<f64>, what: &str) -> Option<f64> {
    match v {
        Some(x) if x.is_finite() && (0.0..=1.0).contains(&x) => Some(x),
        Some(x) => {
            d.push(
                path,
                format!("{what} {x} must be between 0 and 1 (e.g. 0.5)"),
            );
            None
        }
        None => None,
    }
}
