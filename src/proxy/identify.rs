//! Identity on the request path: the user id (header, cookie, or minted with a
//! `Set-Cookie`), the session id when a session-unit experiment exists, and a fresh
//! random unit when a request-unit experiment exists. Malformed values are counted.

use super::context::Ctx;
use crate::assign::identity;
use crate::metrics::Metrics;
use crate::runtime::Snapshot;
use http::HeaderMap;

/// Fill `ctx`'s unit ids from the request headers.
///
/// Hot path: called once per request.
pub fn identify(snap: &Snapshot, headers: &HeaderMap, metrics: &Metrics, ctx: &mut Ctx) {
    let cfg = &snap.config;
    let invalid = |s: identity::InvalidSource| {
        metrics
            .identity_invalid
            .with_label_values(&[s.as_str()])
            .inc()
    };
    let mut user = identity::user_id(&cfg.identity, headers, invalid).map(str::to_string);
    if user.is_none() && cfg.identity.mint {
        let id = identity::mint();
        ctx.set_cookies.push(identity::set_cookie(
            cfg.identity.cookie.as_str(),
            &id,
            Some(cfg.identity.max_age),
            cfg.identity.secure,
        ));
        metrics.identity_minted.inc();
        user = Some(id);
    }
    ctx.user = user;
    if cfg.uses_session {
        ctx.session = Some(session_id(snap, headers, metrics, ctx));
    }
    if cfg.uses_request_unit {
        ctx.request_unit = Some(identity::mint());
    }
}

/// The session cookie's id, or a minted one (a session cookie has no Max-Age).
fn session_id(snap: &Snapshot, headers: &HeaderMap, metrics: &Metrics, ctx: &mut Ctx) -> String {
    let cfg = &snap.config;
    match identity::cookie(headers, &cfg.identity.session_cookie) {
        identity::Lookup::Found(v) => v.to_string(),
        other => {
            if other == identity::Lookup::Invalid {
                metrics
                    .identity_invalid
                    .with_label_values(&[identity::InvalidSource::Session.as_str()])
                    .inc();
            }
            let id = identity::mint();
            ctx.set_cookies.push(identity::set_cookie(
                cfg.identity.session_cookie.as_str(),
                &id,
                None,
                cfg.identity.secure,
            ));
            id
        }
    }
}
