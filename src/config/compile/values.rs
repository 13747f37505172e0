//! Validators of single values shared by every section: durations, names, header
//! names, shares of traffic. Each records its own message and returns what the caller
//! goes on with, so one bad value never stops the rest of the file from being checked.

use crate::config::Diagnostics;
use http::HeaderName;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// The longest duration a config may give: ten years. Timers and deadlines add a
/// duration to the current time; a larger one could overflow that sum and crash the
/// process at runtime after `check` accepted it.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Parse a duration such as `200ms`, `1s`, `5m`, `365d` (at most [`MAX_DURATION`]).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|_| {
        format!("`{s}` is not a duration; write a number and a unit, e.g. \"200ms\", \"5s\", \"5m\", \"365d\"")
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "`{s}` is longer than the largest duration abgate accepts (10 years, \"3650d\")"
        ));
    }
    Ok(d)
}

/// A size: a whole number of bytes, or a string with a unit (`"64MiB"`, `"1GiB"`,
/// `"500MB"`; binary `KiB`/`MiB`/`GiB`/`TiB`, decimal `KB`/`MB`/`GB`/`TB`, or `B`).
pub fn parse_size(v: &toml::Value) -> Result<u64, String> {
    let err = |s: &str| {
        format!(
            "`{s}` is not a size; write bytes or a number and a unit, e.g. \"512MiB\", \"1GiB\""
        )
    };
    match v {
        toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
        toml::Value::String(s) => {
            let t = s.trim();
            let split = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let n: f64 = num.parse().map_err(|_| err(s))?;
            let mult: u64 = match unit.trim() {
                "" | "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                "TiB" => 1 << 40,
                "KB" | "kB" => 1_000,
                "MB" => 1_000_000,
                "GB" => 1_000_000_000,
                "TB" => 1_000_000_000_000,
                _ => return Err(err(s)),
            };
            let bytes = n * mult as f64;
            if !(bytes.is_finite() && (0.0..1.8e19).contains(&bytes)) {
                return Err(err(s));
            }
            Ok(bytes as u64)
        }
        other => Err(err(&other.to_string())),
    }
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

/// A valid `name` of a `what` that must be unique among `seen`: a bad name is reported
/// and `?` stands in for it (so the rest is still checked); a repeated one is reported
/// with the message `duplicate` makes from the name.
pub(super) fn unique_name(
    d: &mut Diagnostics,
    path: &str,
    v: &Option<String>,
    what: &str,
    seen: &mut HashSet<String>,
    duplicate: impl FnOnce(&str) -> String,
) -> Arc<str> {
    let name = name_ok(d, path, v, what).unwrap_or_else(|| Arc::from("?"));
    if !seen.insert(name.to_string()) {
        d.push(&format!("{path}.name"), duplicate(&name));
    }
    name
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::messages;

    #[test]
    fn parse_duration_accepts_units_and_spaces_and_explains_a_bad_value() {
        assert_eq!(parse_duration(" 200ms "), Ok(Duration::from_millis(200)));
        assert_eq!(
            parse_duration("365d"),
            Ok(Duration::from_secs(365 * 86_400))
        );
        let e = parse_duration("soon").unwrap_err();
        assert!(e.starts_with("`soon` is not a duration; write a number and a unit"));
    }

    #[test]
    fn durations_past_ten_years_are_rejected_not_left_to_overflow_at_runtime() {
        assert_eq!(parse_duration("3650d").unwrap(), MAX_DURATION);
        let e = parse_duration("18446744073709551615s").unwrap_err();
        assert!(e.contains("longer than the largest duration"), "{e}");
        let mut d = Diagnostics::default();
        dur(
            &mut d,
            "server.shutdown_timeout",
            &Some("3651d".into()),
            "30s",
        );
        assert_eq!(messages(d).len(), 1);
    }

    #[test]
    fn dur_uses_the_default_when_absent_or_invalid_and_rejects_zero() {
        let mut d = Diagnostics::default();
        assert_eq!(dur(&mut d, "a", &None, "5s"), Duration::from_secs(5));
        assert!(d.is_empty());
        assert_eq!(
            dur(&mut d, "b", &Some("0s".into()), "5s"),
            Duration::from_secs(5)
        );
        assert_eq!(
            dur(&mut d, "c", &Some("x".into()), "5s"),
            Duration::from_secs(5)
        );
        assert_eq!(
            messages(d),
            [
                ("b".to_string(), "`0s` must be longer than zero".to_string()),
                ("c".to_string(), parse_duration("x").unwrap_err()),
            ]
        );
    }

    #[test]
    fn name_ok_accepts_letters_digits_underscore_dash_and_rejects_missing_or_others() {
        let mut d = Diagnostics::default();
        assert_eq!(
            name_ok(&mut d, "p", &Some("a_B-9".into()), "layer").as_deref(),
            Some("a_B-9")
        );
        assert!(d.is_empty());
        assert_eq!(name_ok(&mut d, "p", &None, "layer"), None);
        assert_eq!(name_ok(&mut d, "p", &Some("".into()), "layer"), None);
        assert_eq!(name_ok(&mut d, "p", &Some("a b".into()), "layer"), None);
        let m: Vec<_> = messages(d).into_iter().map(|(_, m)| m).collect();
        assert_eq!(m[0], "missing: every layer needs a `name`");
        assert_eq!(
            m[1],
            "`` is not a valid name; use letters, digits, `_` and `-`"
        );
        assert_eq!(
            m[2],
            "`a b` is not a valid name; use letters, digits, `_` and `-`"
        );
    }

    #[test]
    fn header_name_lowercases_a_valid_name_and_rejects_spaces() {
        let mut d = Diagnostics::default();
        assert_eq!(
            header_name(&mut d, "h", "X-Team").unwrap().as_str(),
            "x-team"
        );
        assert!(header_name(&mut d, "h", "x team").is_none());
        assert_eq!(messages(d).len(), 1);
    }

    #[test]
    fn share_accepts_zero_to_one_and_rejects_outside_or_nan() {
        let mut d = Diagnostics::default();
        assert_eq!(share(&mut d, "t", Some(0.0), "traffic"), Some(0.0));
        assert_eq!(share(&mut d, "t", Some(1.0), "traffic"), Some(1.0));
        assert_eq!(share(&mut d, "t", None, "traffic"), None);
        assert!(d.is_empty());
        assert_eq!(share(&mut d, "t", Some(1.5), "traffic"), None);
        assert_eq!(share(&mut d, "t", Some(f64::NAN), "traffic"), None);
        let m: Vec<_> = messages(d).into_iter().map(|(_, m)| m).collect();
        assert_eq!(
            m,
            [
                "traffic 1.5 must be between 0 and 1 (e.g. 0.5)",
                "traffic NaN must be between 0 and 1 (e.g. 0.5)"
            ]
        );
    }
}
