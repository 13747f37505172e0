//! The backend request's headers: abgate's own (`x-abgate-assignments`,
//! `x-abgate-holdout`, exactly one `x-request-id`), every served variant's `headers`, the
//! upstream's `host` and, with `server.forwarded`, `X-Forwarded-For`/`-Proto` go in; the
//! QA headers (`x-abgate-force`, `x-abgate-token`) come out.

use super::context::Ctx;
use crate::config::{Config, UpstreamSpec};
use crate::events::RequestId;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::{Error, ErrorType};

/// Header a QA request uses to force variants: `exp=variant[,exp2=variant]`.
pub const FORCE_HEADER: &str = "x-abgate-force";
/// Header carrying the admin token for a force.
pub const TOKEN_HEADER: &str = "x-abgate-token";
// The same names, parsed once (looking a header up by `&str` parses the name each time).
pub(super) const FORCE_NAME: HeaderName = HeaderName::from_static(FORCE_HEADER);
pub(super) const TOKEN_NAME: HeaderName = HeaderName::from_static(TOKEN_HEADER);
// Headers abgate sets on backend requests.
const ASSIGNMENTS: HeaderName = HeaderName::from_static("x-abgate-assignments");
const HOLDOUT: HeaderName = HeaderName::from_static("x-abgate-holdout");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// `X-Forwarded-For` / `X-Forwarded-Proto` values for a backend request.
pub struct Forwarded {
    /// What arrived, with the client's address appended.
    pub for_: Option<HeaderValue>,
    /// `https` or `http` as the client connected, unless the request already said.
    pub proto: Option<HeaderValue>,
}

/// The forwarding headers of `req`, which arrived on `session`: the client's address is
/// appended to the `X-Forwarded-For` that arrived (every value, in order), and
/// `X-Forwarded-Proto` is kept when the client (a trusted ingress) sent one, else set
/// from the connection.
pub fn forwarded(session: &pingora::proxy::Session, req: &RequestHeader) -> Forwarded {
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_string());
    let for_ = client.and_then(|ip| {
        let mut v = String::new();
        for prior in req.headers.get_all(&FORWARDED_FOR) {
            if let Ok(p) = prior.to_str() {
                v.push_str(p.trim());
                v.push_str(", ");
            }
        }
        v.push_str(&ip);
        HeaderValue::try_from(v).ok()
    });
    let proto = if req.headers.contains_key(&FORWARDED_PROTO) {
        None
    } else {
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        Some(HeaderValue::from_static(if tls { "https" } else { "http" }))
    };
    Forwarded { for_, proto }
}

/// Edit the backend request `req` for the request of `ctx`.
///
/// Hot path: called once per backend request.
pub fn edit(
    req: &mut RequestHeader,
    cfg: &Config,
    upstream: &UpstreamSpec,
    forwarded: Option<Forwarded>,
    ctx: &Ctx,
) -> Result<()> {
    edit_backend_headers(req, cfg.server.preserve_header_case, |h| {
        for name in [&FORCE_NAME, &TOKEN_NAME] {
            h.remove(name);
        }
        if let Some(host) = &upstream.host {
            // pingora derives an HTTP/2 backend's `:authority` from `Host`.
            h.insert(&http::header::HOST, host.clone())?;
        }
        if let Some(f) = forwarded {
            if let Some(v) = f.for_ {
                h.insert(&FORWARDED_FOR, v)?;
            }
            if let Some(v) = f.proto {
                h.insert(&FORWARDED_PROTO, v)?;
            }
        }
        if ctx.assignments.is_empty() {
            h.remove(&ASSIGNMENTS);
        } else {
            // Sized exactly, so the header value takes the buffer over as it is.
            let len = ctx
                .served(cfg)
                .map(|(_, v)| v.label.len() + 1)
                .sum::<usize>()
                - 1;
            let mut labels = String::with_capacity(len);
            for (_, variant) in ctx.served(cfg) {
                if !labels.is_empty() {
                    labels.push(';');
                }
                labels.push_str(&variant.label);
                for (name, value) in &variant.headers {
                    h.insert(name, value.clone())?;
                }
            }
            let value = HeaderValue::try_from(labels)
                .map_err(|_| Error::explain(ErrorType::InternalError, "assignments header"))?;
            h.insert(&ASSIGNMENTS, value)?;
        }
        if ctx.holdout {
            h.insert(&HOLDOUT, HeaderValue::from_static("1"))?;
        }
        // A minted id replaces whatever unusable id the client sent, so the backend
        // and the exposure always share one.
        if let RequestId::Ulid(ulid) = ctx.request_id {
            let id = HeaderValue::from_bytes(&RequestId::ulid_bytes(ulid))
                .map_err(|_| Error::explain(ErrorType::InternalError, "request id"))?;
            h.insert(&REQUEST_ID, id)?;
        }
        Ok(())
    })
}

/// Where the edits to a backend request go.
///
/// pingora's own header API keeps, next to the header map, a second map with each name in
/// the case the client wrote it, and parses the name of every insert again (allocating for
/// any name outside the standard set). `Plain` skips both: it edits the map directly with
/// names parsed once, and the request then goes out with lowercase names (pingora titles
/// the standard ones: `Host`, `Content-Type`, `Content-Length`…), as HAProxy and Envoy send
/// HTTP/1.1 headers. Names are case-insensitive (RFC 9110 §5.1), so only a backend that
/// wrongly depends on case needs `Cased` (`server.preserve_header_case = true`).
enum BackendHeaders<'a> {
    Plain(&'a mut http::HeaderMap),
    Cased(&'a mut RequestHeader),
}

impl BackendHeaders<'_> {
    fn remove(&mut self, name: &HeaderName) {
        match self {
            BackendHeaders::Plain(map) => {
                map.remove(name);
            }
            BackendHeaders::Cased(req) => {
                req.remove_header(name);
            }
        }
    }

    /// Sets `name` to `value`, replacing any value the client sent.
    fn insert(&mut self, name: &HeaderName, value: HeaderValue) -> Result<()> {
        match self {
            BackendHeaders::Plain(map) => {
                map.insert(name.clone(), value);
                Ok(())
            }
            // pingora copies a custom name into its case map (this path is opt-in).
            BackendHeaders::Cased(req) => req.insert_header(name.clone(), value),
        }
    }
}

/// Runs `edit` on the backend request's headers: on the plain header map unless
/// `preserve_case` is set or the request carries something a plain
/// [`http::request::Parts`] cannot hold (a request-target that is not the URI's own
/// rendering, e.g. absolute-form or not UTF-8), in which case pingora's API is used.
fn edit_backend_headers(
    req: &mut RequestHeader,
    preserve_case: bool,
    edit: impl FnOnce(&mut BackendHeaders) -> Result<()>,
) -> Result<()> {
    if preserve_case || !plain_parts_hold(req) {
        return edit(&mut BackendHeaders::Cased(req));
    }
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(req, empty).into();
    let result = edit(&mut BackendHeaders::Plain(&mut parts.headers));
    *req = RequestHeader::from(parts);
    result
}

/// Whether converting `req` to [`http::request::Parts`] and back loses nothing that goes
/// on the wire apart from the case of header names: the request-target must be exactly
/// what the URI renders (what a header rebuilt from parts sends), and the HTTP/2
/// end-of-stream flag must be at its default.
fn plain_parts_hold(req: &RequestHeader) -> bool {
    let uri = &req.uri;
    let rendered = uri
        .path_and_query()
        .map(|p| p.as_str().as_bytes())
        .or_else(|| uri.authority().map(|a| a.as_str().as_bytes()))
        .unwrap_or_default();
    req.raw_path_is_utf8() && req.raw_path() == rendered && req.send_end_stream() != Some(false)
}

/// The client's `x-request-id` as the request's id when it sent exactly one usable value
/// ([`RequestId::from_client`]); otherwise abgate mints one.
pub fn client_request_id(headers: &http::HeaderMap) -> Option<RequestId> {
    let mut values = headers.get_all(&REQUEST_ID).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => RequestId::from_client(v.as_bytes()),
        _ => None,
    }
}
