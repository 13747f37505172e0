//! The proxy: pingora's `ProxyHttp` hooks, each short, calling the module that owns the
//! step: identify → assign → route → forward (backend headers) → record.
//!
//! | file | step |
//! |---|---|
//! | [`context`] | the per-request context the hooks share |
//! | [`identify`] | user, session and request units; minted ids |
//! | [`route`] | served variants (rollback state) and the upstream |
//! | [`backend`] | the backend request's headers |
//! | [`outcome`] | the outcome endpoint |
//! | [`deadline`] | the backend-silence watchdog (`read_timeout` / `idle_timeout`) |
//! | [`failure`] | whose fault a failure is, and the status it gets; `grpc-status` |
//! | [`respond`] | responses abgate writes itself |
//! | [`record`] | metrics, guardrail windows and the exposure after the response |
//! | [`shadow`] | shadow copies: selection, the tee of bodies, dispatch, comparison |
//!
//! Per request this loads the config snapshot once, allocates the unit id, the
//! `x-abgate-assignments` value and the exposure record, and touches only atomics shared
//! with other requests. It never waits on the event writer or the control loops.

pub mod backend;
pub mod connections;
mod context;
mod deadline;
mod failure;
mod identify;
pub mod outcome;
mod record;
mod respond;
mod route;
pub mod shadow;

pub use context::Ctx;

use crate::assign::{self, RequestView, UnitIds};
use crate::events::RequestId;
use crate::runtime::{App, InflightGuard, Snapshot};
use async_trait::async_trait;
use backend::{FORCE_NAME, TOKEN_NAME};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use respond::{json_error, respond};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::SystemTime;

/// The pingora service.
pub struct AbgateProxy {
    app: Arc<App>,
    /// pingora's HTTP connector (and its connection pool) for shadow copies.
    shadow_connector: Arc<pingora::connectors::http::Connector>,
}

impl AbgateProxy {
    /// A service over the shared runtime state.
    pub fn new(app: Arc<App>) -> AbgateProxy {
        AbgateProxy {
            app,
            shadow_connector: Arc::new(pingora::connectors::http::Connector::new(None)),
        }
    }

    /// Apply a QA force (`x-abgate-force` with the admin token). `Err` carries the
    /// refusal to send: 403 without a valid token, 400 for a bad force.
    fn force(
        snap: &Snapshot,
        req: &RequestHeader,
        ctx: &mut Ctx,
    ) -> std::result::Result<(), (u16, String)> {
        let Some(force) = req.headers.get(&FORCE_NAME) else {
            return Ok(());
        };
        let token = req.headers.get(&TOKEN_NAME).map(|t| t.as_bytes());
        if !snap.token_ok(token.unwrap_or(b"")) {
            let msg = "x-abgate-force needs a valid x-abgate-token (the admin token)";
            return Err((403, json_error(msg, None)));
        }
        let spec = force.to_str().unwrap_or("");
        assign::apply_forced(&snap.config, spec, &mut ctx.assignments)
            .map_err(|msg| (400, json_error(&format!("x-abgate-force: {msg}"), None)))?;
        ctx.holdout = false;
        Ok(())
    }
}

fn status_of(session: &Session) -> u16 {
    session
        .as_downstream()
        .response_written()
        .map(|r| r.status.as_u16())
        .unwrap_or(0)
}

#[async_trait]
impl ProxyHttp for AbgateProxy {
    // Boxed: pingora keeps the context inside its per-request future and moves that
    // future several times; a pointer moves cheaper than the whole context.
    type CTX = Box<Ctx>;

    /// No downstream modules. pingora's default adds its response compression module,
    /// disabled, which still costs a module context and its hook calls (each a boxed
    /// future) per request; abgate never compresses (the backend's `Content-Encoding`
    /// passes through).
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx::new())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Box<Ctx>) -> Result<bool> {
        self.app.inflight.fetch_add(1, Relaxed);
        ctx.inflight = Some(InflightGuard(self.app.clone()));
        let snap = self.app.snapshot.load_full();
        if self.app.draining.load(Relaxed) {
            session.set_keepalive(None);
        } else {
            // A kept connection waits `keepalive_timeout` for its next request (pingora
            // would wait for ever once the client speaks HTTP/1.1). Only where pingora
            // keeps it: not for HTTP/1.0 without `Connection: keep-alive`, a client's
            // `Connection: close`, or a request pingora closes after (both
            // `Transfer-Encoding` and `Content-Length`). A no-op on HTTP/2.
            if session.get_keepalive().is_some() {
                session.set_keepalive(Some(snap.config.server.keepalive_timeout));
            }
            // HTTP/1.1 pipelining (RFC 9112 §9.3.2): a request sent before the previous
            // response arrived is answered after it, in order, instead of being dropped
            // with the connection. A no-op on HTTP/2.
            session.set_pipelining_enabled(true);
        }
        ctx.snap = Some(snap.clone());
        ctx.request_id = backend::client_request_id(&session.req_header().headers)
            .unwrap_or_else(|| RequestId::new(SystemTime::now()));
        let cfg = &snap.config;
        if session.req_header().uri.path() == cfg.server.outcome_path {
            ctx.local = true;
            outcome::handle(&self.app, &snap, session).await?;
            return Ok(true);
        }
        if let Some(msg) = failure::bad_framing(&session.req_header().headers) {
            // The client's fault, answered here: forwarded, the backend's rejection would
            // be recorded as an error of the variant.
            ctx.local = true;
            self.app
                .metrics
                .downstream_rejected
                .with_label_values(&["bad_framing"])
                .inc();
            session.set_keepalive(None);
            respond(session, 400, Some(json_error(msg, None)), &[]).await?;
            return Ok(true);
        }
        if failure::head_too_large(session.req_header(), cfg.server.max_header_bytes) {
            ctx.local = true;
            self.app
                .metrics
                .downstream_rejected
                .with_label_values(&["header_too_large"])
                .inc();
            session.set_keepalive(None);
            let msg = format!(
                "abgate: request header fields too large (over {} bytes: server.max_header_bytes)",
                cfg.server.max_header_bytes
            );
            respond(session, 431, Some(json_error(&msg, None)), &[]).await?;
            return Ok(true);
        }
        let req = session.req_header();
        identify::identify(&snap, &req.headers, &self.app.metrics, ctx);
        let view = RequestView {
            method: req.method.as_str(),
            path: req.uri.path(),
            query: req.uri.query(),
            headers: &req.headers,
        };
        let ids = UnitIds {
            user: ctx.user.as_deref(),
            session: ctx.session.as_deref(),
            request: ctx.request_unit.as_deref(),
        };
        ctx.holdout = assign::assign_with(cfg, &*snap, &ids, &view, &mut ctx.assignments);
        if let Err((status, body)) = Self::force(&snap, req, ctx) {
            ctx.local = true;
            let from = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map_or_else(|| "?".to_string(), |a| a.ip().to_string());
            let reason = if status == 403 {
                "force_token"
            } else {
                "force_invalid"
            };
            self.app.refused(reason, "x-abgate-force", &from);
            respond(session, status, Some(body), &[]).await?;
            return Ok(true);
        }
        route::route(&snap, &view, ctx);
        shadow::select(&snap, &req.method, ctx);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Box<Ctx>,
    ) -> Result<Box<HttpPeer>> {
        let snap = ctx
            .snap
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no snapshot"))?;
        ctx.attempts = ctx.attempts.saturating_add(1);
        if ctx.attempts > 1 {
            // pingora retries a failed attempt on a fresh connection: the request's
            // outcome is its last attempt's, and the retry is counted as a retry.
            snap.upstream_errors[ctx.upstream].retries.inc();
            ctx.error = None;
            ctx.timed_out = false;
            ctx.watchdog = None;
        }
        Ok(snap.pools[ctx.upstream].peer())
    }

    /// The backend connection is ready: arm the silence watchdog of an HTTP/1.x backend
    /// whose `read_timeout` and `idle_timeout` differ ([`deadline`]).
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        let Some(snap) = ctx.snap.as_ref() else {
            return Ok(());
        };
        let spec = &snap.pools[ctx.upstream].spec;
        if spec.read_timeout != spec.idle_timeout && peer.options.alpn.get_max_http_version() == 1 {
            ctx.watchdog = deadline::Watchdog::arm(fd, spec.read_timeout);
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        if let Some(w) = &ctx.watchdog {
            w.extend();
        }
        if let (Some(copy), Some(snap)) = (ctx.shadow.as_deref_mut(), ctx.snap.as_ref()) {
            shadow::tee_request(snap, copy, body.as_ref(), end_of_stream);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        let Some(snap) = ctx.snap.as_ref() else {
            return Ok(());
        };
        let forwarded = snap
            .config
            .server
            .forwarded
            .then(|| backend::forwarded(session, req));
        backend::edit(
            req,
            &snap.config,
            &snap.pools[ctx.upstream].spec,
            forwarded,
            ctx,
        )?;
        if let Some(copy) = ctx.shadow.as_deref_mut() {
            shadow::tee_head(snap, copy, req);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        // The header arrived: from now on the backend may be silent `idle_timeout`
        // (pingora's own per-read timeout when that is the longer one).
        if let (Some(w), Some(snap)) = (&ctx.watchdog, &ctx.snap) {
            let spec = &snap.pools[ctx.upstream].spec;
            if spec.idle_timeout < spec.read_timeout {
                w.set_timeout(spec.idle_timeout);
            } else {
                ctx.disarm_watchdog();
            }
        }
        let Some(snap) = ctx.snap.as_ref() else {
            return Ok(());
        };
        if let Some(copy) = ctx.shadow.as_deref_mut() {
            shadow::tee_response_head(copy, resp);
        }
        // A trailers-only gRPC response carries its status in the header.
        if let Some(code) = failure::grpc_status(&resp.headers) {
            ctx.grpc_status = Some(code);
        }
        for (i, m) in snap.config.metrics.iter().enumerate() {
            let Some(h) = &m.from_response_header else {
                continue;
            };
            let value = resp
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<f64>().ok());
            if let Some(v) = value.filter(|v| v.is_finite()) {
                ctx.header_outcomes.push((i, v));
            }
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(w) = &ctx.watchdog {
            w.extend();
        }
        Ok(None)
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        if let Some(code) = failure::grpc_status(trailers) {
            ctx.grpc_status = Some(code);
        }
        Ok(())
    }

    /// The first body byte handed to the client is the time to first byte (first token).
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<Option<std::time::Duration>> {
        if ctx.first_byte.is_none() && body.as_ref().is_some_and(|b| !b.is_empty()) {
            ctx.first_byte = Some(std::time::Instant::now());
        }
        if let (Some(copy), Some(snap)) = (ctx.shadow.as_deref_mut(), ctx.snap.as_ref()) {
            shadow::tee_response(snap, copy, body.as_ref());
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        ctx.header_sent = Some(std::time::Instant::now());
        // A request that was in flight when shutdown began: its response closes the
        // connection (pingora then says `Connection: close`).
        if self.app.draining.load(Relaxed) {
            session.set_keepalive(None);
        }
        for c in &ctx.set_cookies {
            resp.append_header("set-cookie", c.as_str())?;
        }
        let Some(snap) = ctx.snap.as_ref() else {
            return Ok(());
        };
        if snap.config.server.debug_header {
            resp.insert_header("x-abgate-variant", debug_header(&snap.config, ctx))?;
        }
        Ok(())
    }

    /// A failed connect sent nothing, so any request may be tried again: on the next
    /// address of the pool, while there is one this request has not tried.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Box<Ctx>,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.error = Some(failure::connect_failure(&e));
        let addrs = ctx
            .snap
            .as_ref()
            .map_or(0, |s| s.pools[ctx.upstream].spec.addrs.len());
        if (ctx.attempts as usize) < addrs {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Box<Ctx>,
        client_reused: bool,
    ) -> Box<Error> {
        ctx.disarm_watchdog();
        if e.esource() == &ErrorSource::Upstream && ctx.error.is_none() {
            ctx.error = Some(if ctx.timed_out {
                crate::events::ErrorKind::Timeout
            } else {
                failure::classify(&e)
            });
        }
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    /// pingora logs every failed request at ERROR, with whatever the error carries (a
    /// backend sending 300 headers puts its raw buffer, hundreds of KB, in each line).
    /// abgate writes those lines itself instead: a client that hangs up (a cancelled
    /// generation, its own timeout) is routine and says nothing about the backend — it
    /// is counted (`status_class="none"`), its exposure has status 0 and no error, and
    /// it is logged at DEBUG only; any other failure is logged at ERROR, truncated to
    /// 512 characters, at most one line per second with the count of the others
    /// (each is still counted in the metrics and recorded in its exposure).
    fn suppress_error_log(&self, session: &Session, ctx: &Self::CTX, e: &Error) -> bool {
        if failure::client_went_away(e) {
            tracing::debug!(
                "client went away: {e}, {}",
                session.as_ref().request_summary()
            );
        } else if let Some(n) = self.app.failure_log.hit() {
            let upstream = ctx
                .snap
                .as_ref()
                .map(|s| s.pools[ctx.upstream].spec.name.to_string())
                .unwrap_or_default();
            let mut what = format!("{e}, {}", session.as_ref().request_summary());
            if what.len() > 512 {
                let mut cut = 512;
                while !what.is_char_boundary(cut) {
                    cut -= 1;
                }
                what.truncate(cut);
                what.push_str("… (truncated)");
            }
            tracing::error!(
                "request failed (upstream `{upstream}`): {what}; {n} failed request(s) since the last line (abgate_upstream_errors_total counts them)"
            );
        }
        true
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<Ctx>,
    ) -> FailToProxy {
        ctx.disarm_watchdog();
        if ctx.timed_out && ctx.error.is_none() {
            ctx.error = Some(crate::events::ErrorKind::Timeout);
        }
        let code = failure::status_for(e, &mut ctx.error);
        if code == 400 {
            // A request abgate could not read or frame (bad body framing, an invalid
            // request to the backend). Requests pingora refuses before any hook runs
            // (bad syntax, too many headers) are answered 400 by pingora and not seen here.
            self.app
                .metrics
                .downstream_rejected
                .with_label_values(&["bad_request"])
                .inc();
        }
        // The response has started (a stream failed midway): it must look failed to the
        // client, so nothing is appended; the connection closes without the final chunk
        // (HTTP/1.1) or the stream is reset (HTTP/2) when pingora drops the session.
        if let Some(sent) = session.response_written().map(|r| r.status.as_u16()) {
            return FailToProxy {
                error_code: sent,
                can_reuse_downstream: false,
            };
        }
        if code > 0 {
            // The connection is not reused after a failed request (the request body may
            // be half read): say so, so the client does not send its next request into
            // a connection about to close.
            session.set_keepalive(None);
            let upstream = ctx
                .snap
                .as_ref()
                .map(|s| s.pools[ctx.upstream].spec.name.to_string())
                .unwrap_or_default();
            let msg = match ctx.error {
                Some(kind) => format!("abgate: upstream `{upstream}` failed ({})", kind.as_str()),
                // The client's fault (a body abgate could not read): not the upstream's.
                None => format!("abgate: bad request: {}", e.etype().as_str()),
            };
            let written = if respond::is_grpc(session.req_header()) {
                let grpc = respond::grpc_code_for(code);
                ctx.grpc_status = Some(grpc);
                respond::respond_grpc(session, grpc, &msg, &ctx.set_cookies).await
            } else {
                respond(
                    session,
                    code,
                    Some(json_error(&msg, None)),
                    &ctx.set_cookies,
                )
                .await
            };
            if written.is_err() {
                let _ = session.respond_error(code).await;
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Box<Ctx>) {
        ctx.watchdog = None;
        let Some(snap) = ctx.snap.take() else { return };
        let copy = ctx.shadow.take();
        let served = copy.as_ref().map(|_| shadow::Served {
            status: status_of(session),
            latency: ctx.start.elapsed(),
            ttfb: ctx.first_byte.or(ctx.header_sent).map_or_else(
                || ctx.start.elapsed(),
                |t| t.saturating_duration_since(ctx.start),
            ),
            request_id: ctx.request_id.clone(),
        });
        if !ctx.local {
            record::record(&self.app, &snap, status_of(session), ctx);
        } else if snap.config.admin.request_metrics {
            // abgate's own answers (outcome endpoint, refusals) count once too.
            let class = crate::metrics::status_class(status_of(session));
            self.app.metrics.proxied_by_class[class].inc();
        }
        // After the exposure: the copy goes out only once the served request is complete.
        if let (Some(copy), Some(served)) = (copy, served) {
            shadow::dispatch(&self.app, &self.shadow_connector, snap, copy, served);
        }
    }
}

/// `x-abgate-variant`: `exp=variant;…` of the served variants, `holdout`, or `none`.
fn debug_header(cfg: &crate::config::Config, ctx: &Ctx) -> String {
    if ctx.holdout {
        return "holdout".into();
    }
    let mut v = String::new();
    for (exp, variant) in ctx.served(cfg) {
        if !v.is_empty() {
            v.push(';');
        }
        v.push_str(&exp.name);
        v.push('=');
        v.push_str(&variant.name);
    }
    if v.is_empty() {
        v = "none".into();
    }
    v
}
