//! `[identity]`: where the unit id of a request comes from (trusted header, cookie,
//! minted), and the cookies abgate sets.

use super::values::{dur, header_name};
use crate::assign::identity::CookieName;
use crate::config::raw::RawIdentity;
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
