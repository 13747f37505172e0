//! `[identity]`: where the unit id of a request comes from (trusted header, cookie,
//! minted), and the cookies abgate sets.

use super::values::{dur, header_name};
use crate::config::raw::RawIdentity;
use crate::config::CookieName;
use crate::config::{Diagnostics, IdentitySettings};

/// `[identity]`, with defaults for what is left out.
pub(super) fn compile_identity(d: &mut Diagnostics, raw: &RawIdentity) -> IdentitySettings {
    let header = raw
        .header
        .as_deref()
        .and_then(|h| header_name(d, "identity.header", h));
    let cookie = cookie_name(d, "identity.cookie", &raw.cookie, "abgate_uid");
    let session_cookie = cookie_name(
        d,
        "identity.session_cookie",
        &raw.session_cookie,
        "abgate_sid",
    );
    IdentitySettings {
        header,
        cookie: CookieName::new(&cookie),
        session_cookie: CookieName::new(&session_cookie),
        mint: raw.mint.unwrap_or(true),
        max_age: dur(d, "identity.max_age", &raw.max_age, "365d"),
        secure: raw.secure.unwrap_or(false),
    }
}

/// A cookie name (an RFC 6265 token), or `default` when absent. An invalid name is
/// recorded and still returned: nothing is built from it, since the config is rejected.
fn cookie_name(d: &mut Diagnostics, path: &str, v: &Option<String>, default: &str) -> String {
    let name = v.clone().unwrap_or_else(|| default.into());
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        d.push(path, format!("`{name}` is not a valid cookie name"));
    }
    name
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, parse, MINIMAL};
    use std::time::Duration;

    #[test]
    fn identity_defaults_mint_a_year_long_cookie_without_a_header() {
        let id = parse(MINIMAL).unwrap().identity;
        assert!(id.header.is_none());
        assert_eq!(id.cookie.as_str(), "abgate_uid");
        assert_eq!(id.session_cookie.as_str(), "abgate_sid");
        assert!(id.mint && !id.secure);
        assert_eq!(id.max_age, Duration::from_secs(365 * 86_400));
    }

    #[test]
    fn identity_header_is_lowercased_and_cookie_names_kept() {
        let id = parse(&format!(
            "{MINIMAL}[identity]\nheader = \"X-User-Id\"\ncookie = \"uid\"\n\
             session_cookie = \"sid\"\nmint = false\nmax_age = \"1d\"\nsecure = true\n"
        ))
        .unwrap()
        .identity;
        assert_eq!(id.header.unwrap().as_str(), "x-user-id");
        assert_eq!(id.cookie.as_str(), "uid");
        assert_eq!(id.session_cookie.as_str(), "sid");
        assert!(!id.mint && id.secure);
        assert_eq!(id.max_age, Duration::from_secs(86_400));
    }

    #[test]
    fn bad_identity_values_are_each_reported_at_their_line() {
        let e = errors(&format!(
            "{MINIMAL}[identity]\nheader = \"bad header\"\ncookie = \"\"\n\
             session_cookie = \"a;b\"\nmax_age = \"x\"\n"
        ));
        let at: Vec<_> = e.iter().map(|(l, p, _)| (*l, p.as_str())).collect();
        assert_eq!(
            at,
            [
                (6, "identity.header"),
                (7, "identity.cookie"),
                (8, "identity.session_cookie"),
                (9, "identity.max_age"),
            ]
        );
        assert_eq!(e[1].2, "`` is not a valid cookie name");
        assert_eq!(e[2].2, "`a;b` is not a valid cookie name");
    }
}
