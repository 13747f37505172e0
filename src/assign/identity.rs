//! Unit identity: the trusted header, then the identity cookie, then a minted id.
//!
//! Malformed values (empty, over 256 bytes, control characters, broken cookie syntax,
//! non-UTF-8) are treated as absent — never an error response — and reported to the
//! caller so they can be counted (`abgate_identity_invalid_total{source}`).

use crate::config::IdentitySettings;
use base64::Engine;
use http::HeaderMap;

/// Longest accepted unit id, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// Where a malformed identity value was found: the `source` label of
/// `abgate_identity_invalid_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidSource {
    /// The trusted header.
    Header,
    /// The identity cookie.
    Cookie,
    /// The session cookie.
    Session,
}

impl InvalidSource {
    /// The metric label word.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidSource::Header => "header",
            InvalidSource::Cookie => "cookie",
            InvalidSource::Session => "session",
        }
    }
}

/// The user id of a request: the trusted header (`identity.header`) if it carries a
/// valid value, else the identity cookie. Malformed values count as absent and are
/// reported to `invalid`. Minting is the caller's choice.
///
/// Hot path: called once per request.
#[inline]
pub fn user_id<'a>(
    settings: &IdentitySettings,
    headers: &'a HeaderMap,
    mut invalid: impl FnMut(InvalidSource),
) -> Option<&'a str> {
    if let Some(h) = &settings.header {
        match header_value(headers, h) {
            Lookup::Found(v) => return Some(v),
            Lookup::Invalid => invalid(InvalidSource::Header),
            Lookup::Absent => {}
        }
    }
    match cookie(headers, &settings.cookie) {
        Lookup::Found(v) => Some(v),
        Lookup::Invalid => {
            invalid(InvalidSource::Cookie);
            None
        }
        Lookup::Absent => None,
    }
}

/// Outcome of looking up one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// A valid value.
    Found(&'a str),
    /// Present but malformed (treated as absent, counted).
    Invalid,
    /// Not present.
    Absent,
}

/// Whether `v` is acceptable as a unit id: 1..=256 bytes of printable text — UTF-8
/// without control characters (C0, DEL and the C1 range U+0080–U+009F) or the line and
/// paragraph separators U+2028/U+2029, which would break a log line in some readers.
#[inline]
pub fn valid_id(v: &[u8]) -> bool {
    if v.is_empty() || v.len() > MAX_ID_LEN {
        return false;
    }
    if v.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        return true; // printable ASCII: the common case, decided without decoding
    }
    match std::str::from_utf8(v) {
        Ok(s) => s
            .chars()
            .all(|c| !c.is_control() && c != '\u{2028}' && c != '\u{2029}'),
        Err(_) => false,
    }
}

/// Look up a header value as a unit id.
///
/// Hot path: called once per request per identity-bearing header. Allocation-free.
#[inline]
pub fn header_value<'a>(headers: &'a HeaderMap, name: &http::HeaderName) -> Lookup<'a> {
    match headers.get(name) {
        None => Lookup::Absent,
        Some(v) => {
            let b = v.as_bytes();
            let t = trim(b);
            if valid_id(t) {
                // valid_id checked the UTF-8 already; this cannot fail
                match std::str::from_utf8(t) {
                    Ok(s) => Lookup::Found(s),
                    Err(_) => Lookup::Invalid,
                }
            } else {
                Lookup::Invalid
            }
        }
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// Characters RFC 6265 allows in a cookie value.
#[inline]
fn cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

pub use crate::config::CookieName;

/// Look up cookie `name` across all `Cookie` headers.
///
/// Hot path: called once per request. Allocation-free. A pair whose name matches but
/// whose value is empty, too long, quoted badly or has characters outside RFC 6265's
/// cookie-octets is `Invalid`; pairs of other cookies are never inspected beyond the name.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &CookieName) -> Lookup<'a> {
    let mut result = Lookup::Absent;
    let finder = name.finder();
    let name = finder.needle();
    for hv in headers.get_all(http::header::COOKIE) {
        let h = hv.as_bytes();
        // Find the name with a vectorized substring search instead of walking every
        // pair; an occurrence counts when it starts a pair (`name = value`).
        let mut from = 0;
        while let Some(p) = finder.find(&h[from..]) {
            let at = from + p;
            from = at + 1;
            let before = h[..at].trim_ascii_end();
            if !(before.is_empty() || before.ends_with(b";")) {
                continue;
            }
            let rest = &h[at + name.len()..];
            let pair = &rest[..memchr::memchr(b';', rest).unwrap_or(rest.len())];
            let Some(value) = trim(pair).strip_prefix(b"=") else {
                continue;
            };
            let mut v = trim(value);
            if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                v = &v[1..v.len() - 1];
            }
            if !v.is_empty() && v.len() <= MAX_ID_LEN && v.iter().all(|&b| cookie_octet(b)) {
                // cookie-octets are ASCII, so this cannot fail.
                if let Ok(s) = std::str::from_utf8(v) {
                    return Lookup::Found(s);
                }
            }
            result = Lookup::Invalid;
        }
    }
    result
}

/// A fresh random id: 128 bits, URL-safe base64 without padding (22 characters).
pub fn mint() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The `Set-Cookie` value for a minted identity.
pub fn set_cookie(
    name: &str,
    id: &str,
    max_age: Option<std::time::Duration>,
    secure: bool,
) -> String {
    let mut s = format!("{name}={id}; Path=/");
    if let Some(age) = max_age {
        s.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    s.push_str("; HttpOnly; SameSite=Lax");
    if secure {
        s.push_str("; Secure");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_cookie(v: &'static [u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, HeaderValue::from_bytes(v).unwrap());
        h
    }

    #[test]
    fn cookie_found_among_others() {
        let h = with_cookie(b"_ga=GA1.2.3; abgate_uid=u-123; theme=dark");
        assert_eq!(
            cookie(&h, &CookieName::new("abgate_uid")),
            Lookup::Found("u-123")
        );
        assert_eq!(cookie(&h, &CookieName::new("missing")), Lookup::Absent);
        // a longer name that starts with ours is another cookie; spaces around `=` are ok
        let h = with_cookie(b"abgate_uidx=no; abgate_ui=no;abgate_uid =u-9 ");
        assert_eq!(
            cookie(&h, &CookieName::new("abgate_uid")),
            Lookup::Found("u-9")
        );
        assert_eq!(
            cookie(
                &with_cookie(b"abgate_uidx=no"),
                &CookieName::new("abgate_uid")
            ),
            Lookup::Absent
        );
        // the name inside another cookie's value is not the cookie
        let h = with_cookie(b"x=abgate_uid=evil; abgate_uid=u-1");
        assert_eq!(
            cookie(&h, &CookieName::new("abgate_uid")),
            Lookup::Found("u-1")
        );
        let h = with_cookie(b"x=abgate_uid=evil");
        assert_eq!(cookie(&h, &CookieName::new("abgate_uid")), Lookup::Absent);
    }

    #[test]
    fn cookie_in_second_header_and_quoted() {
        let mut h = with_cookie(b"a=1");
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("abgate_uid=\"q1\""),
        );
        assert_eq!(
            cookie(&h, &CookieName::new("abgate_uid")),
            Lookup::Found("q1")
        );
    }

    #[test]
    fn malformed_cookie_values_are_invalid_not_errors() {
        for raw in [
            &b"abgate_uid="[..],
            b"abgate_uid=a b",
            b"abgate_uid=a,b",
            b"abgate_uid=\"",
        ] {
            let mut h = HeaderMap::new();
            h.append(http::header::COOKIE, HeaderValue::from_bytes(raw).unwrap());
            assert_eq!(
                cookie(&h, &CookieName::new("abgate_uid")),
                Lookup::Invalid,
                "{:?}",
                raw
            );
        }
        let long = format!("abgate_uid={}", "x".repeat(257));
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, HeaderValue::from_str(&long).unwrap());
        assert_eq!(cookie(&h, &CookieName::new("abgate_uid")), Lookup::Invalid);
        // a pair without `=` is skipped, the valid one still found
        let h = with_cookie(b"garbage; abgate_uid=ok");
        assert_eq!(
            cookie(&h, &CookieName::new("abgate_uid")),
            Lookup::Found("ok")
        );
    }

    #[test]
    fn header_ids_reject_control_chars_and_oversize() {
        let name = http::HeaderName::from_static("x-user-id");
        let mut h = HeaderMap::new();
        h.insert(&name, HeaderValue::from_bytes(b"a\tb").unwrap());
        assert_eq!(header_value(&h, &name), Lookup::Invalid);
        h.insert(&name, HeaderValue::from_str(&"y".repeat(257)).unwrap());
        assert_eq!(header_value(&h, &name), Lookup::Invalid);
        h.insert(&name, HeaderValue::from_static(" u-1 "));
        assert_eq!(header_value(&h, &name), Lookup::Found("u-1"));
        h.insert(&name, HeaderValue::from_static(""));
        assert_eq!(header_value(&h, &name), Lookup::Invalid);
        // non-ASCII ids: printable UTF-8 is an id; C1 controls, the line and paragraph
        // separators and broken UTF-8 are not (a fuzzing finding: they reached events)
        h.insert(&name, HeaderValue::from_bytes("zoë-7".as_bytes()).unwrap());
        assert_eq!(header_value(&h, &name), Lookup::Found("zoë-7"));
        for bad in ["a\u{85}b", "a\u{9f}", "a\u{2028}b", "\u{2029}"] {
            h.insert(&name, HeaderValue::from_bytes(bad.as_bytes()).unwrap());
            assert_eq!(header_value(&h, &name), Lookup::Invalid, "{bad:?}");
            assert!(!valid_id(bad.as_bytes()), "{bad:?}");
        }
        h.insert(&name, HeaderValue::from_bytes(b"a\xff").unwrap());
        assert_eq!(header_value(&h, &name), Lookup::Invalid);
    }

    #[test]
    fn minted_ids_are_url_safe_128_bit() {
        let a = mint();
        let b = mint();
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn set_cookie_has_required_attributes() {
        let s = set_cookie(
            "abgate_uid",
            "X",
            Some(std::time::Duration::from_secs(60)),
            true,
        );
        assert_eq!(
            s,
            "abgate_uid=X; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        let s = set_cookie("abgate_sid", "Y", None, false);
        assert_eq!(s, "abgate_sid=Y; Path=/; HttpOnly; SameSite=Lax");
    }
}
