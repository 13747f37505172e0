//! The pingora `ProxyHttp` implementation: identify → assign → pick upstream → forward,
//! then record (metrics, windows, exposure) once the response is done.
//!
//! Per request this loads the config snapshot once, allocates the unit id, the
//! `x-abgate-assignments` value and the exposure record, and touches only atomics shared
//! with other requests. It never waits on the event writer or the guardrail evaluator.

use super::{App, InflightGuard, Snapshot};
use crate::assign::{self, identity, Assignments, RequestView, UnitIds};
use crate::config::{Config, Experiment, Unit, Variant};
use crate::events::{
    ErrorKind, Event, Exposure, ExposureAssignment, Outcome, OutcomeSource, RequestId,
};
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use smallvec::SmallVec;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Header a QA request uses to force variants: `exp=variant[,exp2=variant]`.
pub const FORCE_HEADER: &str = "x-abgate-force";
/// Header carrying the admin token for a force.
pub const TOKEN_HEADER: &str = "x-abgate-token";
// The same names, parsed once (looking a header up by `&str` parses the name each time).
const FORCE_NAME: HeaderName = HeaderName::from_static(FORCE_HEADER);
const TOKEN_NAME: HeaderName = HeaderName::from_static(TOKEN_HEADER);
// Headers abgate sets on backend requests.
const ASSIGNMENTS: HeaderName = HeaderName::from_static("x-abgate-assignments");
const HOLDOUT: HeaderName = HeaderName::from_static("x-abgate-holdout");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Largest accepted outcome body.
pub const OUTCOME_BODY_LIMIT: usize = 64 * 1024;

/// The service.
pub struct AbgateProxy {
    /// Shared state.
    pub app: Arc<App>,
}

/// Per-request state.
pub struct Ctx {
    start: Instant,
    snap: Option<Arc<Snapshot>>,
    _inflight: Option<InflightGuard>,
    user: Option<String>,
    session: Option<String>,
    request_unit: Option<String>,
    // Rarely used parts are plain (empty, unallocated) Vecs rather than inline arrays:
    // the context is allocated and initialised for every request.
    set_cookies: Vec<String>,
    assignments: Assignments,
    /// Served variant index per assignment.
    served: SmallVec<[u16; 8]>,
    /// Unit ids of header/session/request-unit experiments, per assignment (shorter, or
    /// empty, when the rest are user-unit experiments).
    unit_ids: Vec<Option<String>>,
    holdout: bool,
    upstream: usize,
    request_id: RequestId,
    error: Option<ErrorKind>,
    header_outcomes: Vec<(usize, f64)>,
    local: bool,
}

impl Ctx {
    /// Each experiment the request is in, with the variant serving it (control for a
    /// rolled-back or paused variant).
    fn served<'a>(
        &'a self,
        cfg: &'a Config,
    ) -> impl Iterator<Item = (&'a Experiment, &'a Variant)> {
        self.assignments
            .iter()
            .zip(&self.served)
            .map(|(a, &served)| {
                let exp = &cfg.layers[a.layer as usize].experiments[a.experiment as usize];
                (exp, &exp.variants[served as usize])
            })
    }
}

fn status_of(session: &Session) -> u16 {
    session
        .as_downstream()
        .response_written()
        .map(|r| r.status.as_u16())
        .unwrap_or(0)
}

/// A local response (errors, the outcome endpoint). Returned as a boxed future so the
/// hooks that can answer locally — on rare paths — do not carry its state in the future
/// every request allocates.
fn respond(
    session: &mut Session,
    status: u16,
    body: Option<String>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + '_>> {
    Box::pin(async move {
        let mut resp = ResponseHeader::build(status, Some(2))?;
        match body {
            Some(b) => {
                resp.insert_header("content-type", "application/json")?;
                resp.insert_header("content-length", b.len().to_string())?;
                session.write_response_header(Box::new(resp), false).await?;
                session
                    .write_response_body(Some(Bytes::from(b)), true)
                    .await
            }
            None => {
                resp.insert_header("content-length", "0")?;
                session.write_response_header(Box::new(resp), true).await
            }
        }
    })
}

fn json_error(msg: &str, item: Option<usize>) -> String {
    serde_json::json!({"error": msg, "item": item}).to_string()
}

impl AbgateProxy {
    /// Identify the unit; mint when allowed. Counts malformed values.
    fn identify(&self, snap: &Snapshot, session: &Session, ctx: &mut Ctx) {
        let cfg = &snap.config;
        let headers = &session.req_header().headers;
        let m = &self.app.metrics;
        let mut user = None;
        if let Some(h) = &cfg.identity.header {
            match identity::header_value(headers, h) {
                identity::Lookup::Found(v) => user = Some(v.to_string()),
                identity::Lookup::Invalid => {
                    m.identity_invalid.with_label_values(&["header"]).inc()
                }
                identity::Lookup::Absent => {}
            }
        }
        if user.is_none() {
            match identity::cookie(headers, &cfg.identity.cookie) {
                identity::Lookup::Found(v) => user = Some(v.to_string()),
                identity::Lookup::Invalid => {
                    m.identity_invalid.with_label_values(&["cookie"]).inc()
                }
                identity::Lookup::Absent => {}
            }
        }
        if user.is_none() && cfg.identity.mint {
            let id = identity::mint();
            ctx.set_cookies.push(identity::set_cookie(
                cfg.identity.cookie.as_str(),
                &id,
                Some(cfg.identity.max_age),
                cfg.identity.secure,
            ));
            m.identity_minted.inc();
            user = Some(id);
        }
        ctx.user = user;
        if cfg.uses_session {
            ctx.session = match identity::cookie(headers, &cfg.identity.session_cookie) {
                identity::Lookup::Found(v) => Some(v.to_string()),
                other => {
                    if other == identity::Lookup::Invalid {
                        m.identity_invalid.with_label_values(&["session"]).inc();
                    }
                    let id = identity::mint();
                    ctx.set_cookies.push(identity::set_cookie(
                        cfg.identity.session_cookie.as_str(),
                        &id,
                        None,
                        cfg.identity.secure,
                    ));
                    Some(id)
                }
            };
        }
        if cfg.uses_request_unit {
            ctx.request_unit = Some(identity::mint());
        }
    }

    async fn handle_outcome(
        &self,
        snap: &Snapshot,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if session.req_header().method != http::Method::POST {
            return respond(
                session,
                405,
                Some(json_error(
                    "use POST with a JSON object or array of {\"metric\", \"value\", \"unit_id\"?}",
                    None,
                )),
            )
            .await;
        }
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > OUTCOME_BODY_LIMIT {
                        return respond(
                            session,
                            413,
                            Some(json_error("body over 64 KiB; send smaller batches", None)),
                        )
                        .await;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(e),
            }
        }
        let cfg = &snap.config;
        let identity = {
            let headers = &session.req_header().headers;
            let from_header =
                cfg.identity.header.as_ref().and_then(|h| {
                    match identity::header_value(headers, h) {
                        identity::Lookup::Found(v) => Some(v.to_string()),
                        _ => None,
                    }
                });
            from_header.or_else(|| match identity::cookie(headers, &cfg.identity.cookie) {
                identity::Lookup::Found(v) => Some(v.to_string()),
                _ => None,
            })
        };
        match parse_outcomes(&body, cfg, identity.as_deref()) {
            Ok(items) => {
                let now = SystemTime::now();
                let n = items.len();
                for OutcomeItem {
                    metric: mi,
                    unit_id,
                    value,
                } in items
                {
                    snap.outcome_counters[mi].inc();
                    self.app.sink.send(Event::Outcome(Outcome {
                        ts: now,
                        unit_id,
                        metric: cfg.metrics[mi].name.clone(),
                        value,
                        source: OutcomeSource::Api,
                    }));
                }
                tracing::debug!("accepted {n} outcomes");
                let _ = ctx;
                respond(session, 204, None).await
            }
            Err((msg, item)) => respond(session, 400, Some(json_error(&msg, item))).await,
        }
    }
}

/// One valid item of an outcome body.
#[derive(Debug, PartialEq)]
pub struct OutcomeItem {
    /// Index into the config's metrics.
    pub metric: usize,
    pub unit_id: String,
    pub value: f64,
}

/// Why an outcome body was refused, and the index of the offending item if it is one.
pub type BadOutcome = (String, Option<usize>);

/// Validate an outcome body completely before anything is logged: all items or none.
pub fn parse_outcomes(
    body: &[u8],
    cfg: &crate::config::Config,
    identity: Option<&str>,
) -> std::result::Result<Vec<OutcomeItem>, BadOutcome> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| (format!("body is not valid JSON: {e}"), None))?;
    let items: Vec<&serde_json::Value> = match &v {
        serde_json::Value::Array(a) if a.is_empty() => {
            return Err(("empty array: send at least one outcome".into(), None))
        }
        serde_json::Value::Array(a) => a.iter().collect(),
        serde_json::Value::Object(_) => vec![&v],
        _ => {
            return Err((
                "body must be a JSON object or an array of objects".into(),
                None,
            ))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, it) in items.into_iter().enumerate() {
        let obj = it
            .as_object()
            .ok_or_else(|| ("item is not a JSON object".to_string(), Some(i)))?;
        for k in obj.keys() {
            if !matches!(k.as_str(), "metric" | "value" | "unit_id") {
                return Err((
                    format!("unknown field `{k}`; valid: metric, value, unit_id"),
                    Some(i),
                ));
            }
        }
        let metric = obj
            .get("metric")
            .and_then(|m| m.as_str())
            .ok_or_else(|| ("missing string field `metric`".to_string(), Some(i)))?;
        let mi = cfg
            .metrics
            .iter()
            .position(|m| &*m.name == metric)
            .ok_or_else(|| {
                let declared: Vec<&str> = cfg.metrics.iter().map(|m| &*m.name).collect();
                (
                    format!(
                        "unknown metric `{metric}`; declared: {}",
                        declared.join(", ")
                    ),
                    Some(i),
                )
            })?;
        let value = match obj.get("value") {
            Some(serde_json::Value::Number(n)) => n.as_f64().filter(|x| x.is_finite()),
            _ => None,
        }
        .ok_or_else(|| ("`value` must be a finite number".to_string(), Some(i)))?;
        let unit_id = match obj.get("unit_id") {
            None | Some(serde_json::Value::Null) => identity
                .ok_or_else(|| {
                    (
                        "no `unit_id` and the request carries no identity (header or cookie)"
                            .to_string(),
                        Some(i),
                    )
                })?
                .to_string(),
            Some(serde_json::Value::String(s)) if identity::valid_id(s.as_bytes()) => s.clone(),
            Some(_) => {
                return Err((
                    "`unit_id` must be a string of 1 to 256 printable characters".into(),
                    Some(i),
                ))
            }
        };
        out.push(OutcomeItem {
            metric: mi,
            unit_id,
            value,
        });
    }
    Ok(out)
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
        Box::new(Ctx {
            start: Instant::now(),
            snap: None,
            _inflight: None,
            user: None,
            session: None,
            request_unit: None,
            set_cookies: Vec::new(),
            assignments: Assignments::new(),
            served: SmallVec::new(),
            unit_ids: Vec::new(),
            holdout: false,
            upstream: 0,
            request_id: RequestId::default(),
            error: None,
            header_outcomes: Vec::new(),
            local: false,
        })
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Box<Ctx>) -> Result<bool> {
        self.app.inflight.fetch_add(1, Relaxed);
        ctx._inflight = Some(InflightGuard(self.app.clone()));
        let snap = self.app.snapshot.load_full();
        ctx.snap = Some(snap.clone());
        ctx.request_id = client_request_id(&session.req_header().headers)
            .unwrap_or_else(|| RequestId::new(SystemTime::now()));
        let cfg = snap.config.clone();

        if session.req_header().uri.path() == cfg.server.outcome_path {
            ctx.local = true;
            if !cfg.events.enabled {
                respond(
                    session,
                    503,
                    Some(json_error("event logging is off ([events] enabled = false): outcomes cannot be recorded", None)),
                )
                .await?;
                return Ok(true);
            }
            Box::pin(self.handle_outcome(&snap, session, ctx)).await?;
            return Ok(true);
        }

        self.identify(&snap, session, ctx);
        let req = session.req_header();
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
        ctx.holdout = assign::assign(&cfg, &ids, &view, &mut ctx.assignments);

        if let Some(force) = req.headers.get(&FORCE_NAME) {
            let token = req
                .headers
                .get(&TOKEN_NAME)
                .map(|t| t.as_bytes())
                .unwrap_or(b"");
            if !snap.token_ok(token) {
                ctx.local = true;
                respond(
                    session,
                    403,
                    Some(json_error(
                        "x-abgate-force needs a valid x-abgate-token (the admin token)",
                        None,
                    )),
                )
                .await?;
                return Ok(true);
            }
            let spec = force.to_str().unwrap_or("").to_string();
            if let Err(msg) = assign::apply_forced(&cfg, &spec, &mut ctx.assignments) {
                ctx.local = true;
                respond(
                    session,
                    400,
                    Some(json_error(&format!("x-abgate-force: {msg}"), None)),
                )
                .await?;
                return Ok(true);
            }
            ctx.holdout = false;
        }

        // Served variants (rollback state) and the routing decision.
        ctx.upstream = cfg.default_upstream;
        let mut routed = false;
        for a in &ctx.assignments {
            let exp = &cfg.layers[a.layer as usize].experiments[a.experiment as usize];
            let rt = &snap.experiments[a.layer as usize][a.experiment as usize];
            let served = if !a.forced && rt.state.served_by_control(a.variant as usize) {
                exp.control
            } else {
                a.variant as usize
            };
            let i = ctx.served.len();
            ctx.served.push(served as u16);
            let unit_id = match &exp.unit {
                Unit::Header(_) => ids.get(&exp.unit, &view).map(str::to_string),
                Unit::Session => ctx.session.clone(),
                Unit::Request => ctx.request_unit.clone(),
                Unit::User => None,
            };
            if unit_id.is_some() {
                ctx.unit_ids.resize(i, None);
                ctx.unit_ids.push(unit_id);
            }
            if !routed {
                if let Some(u) = exp.variants[served].upstream {
                    ctx.upstream = u;
                    routed = true;
                }
            }
        }
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
        let pool = &snap.pools[ctx.upstream];
        let mut peer = HttpPeer::new(pool.select(), false, String::new());
        peer.options.connection_timeout = Some(pool.spec.connect_timeout);
        peer.options.read_timeout = Some(pool.spec.read_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        let Some(snap) = ctx.snap.as_ref() else {
            return Ok(());
        };
        let cfg = &snap.config;
        let ctx = &**ctx;
        edit_backend_headers(req, cfg.server.preserve_header_case, |h| {
            for name in [&FORCE_NAME, &TOKEN_NAME] {
                h.remove(name);
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

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        let Some(snap) = ctx.snap.as_ref() else {
            return Ok(());
        };
        for (i, m) in snap.config.metrics.iter().enumerate() {
            if let Some(h) = &m.from_response_header {
                if let Some(v) = resp
                    .headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.trim().parse::<f64>().ok())
                {
                    if v.is_finite() {
                        ctx.header_outcomes.push((i, v));
                    }
                }
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        for c in &ctx.set_cookies {
            resp.append_header("set-cookie", c.as_str())?;
        }
        if let Some(snap) = ctx.snap.as_ref() {
            if snap.config.server.debug_header {
                let cfg = &snap.config;
                let mut v = String::new();
                for (exp, variant) in ctx.served(cfg) {
                    if !v.is_empty() {
                        v.push(';');
                    }
                    v.push_str(&exp.name);
                    v.push('=');
                    v.push_str(&variant.name);
                }
                if ctx.holdout {
                    v = "holdout".into();
                }
                if v.is_empty() {
                    v = "none".into();
                }
                resp.insert_header("x-abgate-variant", v)?;
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Box<Ctx>,
        e: Box<Error>,
    ) -> Box<Error> {
        ctx.error = Some(if matches!(e.etype(), ErrorType::ConnectTimedout) {
            ErrorKind::Timeout
        } else {
            ErrorKind::Connect
        });
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
        if e.esource() == &ErrorSource::Upstream && ctx.error.is_none() {
            ctx.error = Some(classify(&e));
        }
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    /// pingora logs every failed request at ERROR. A client that hangs up (a cancelled
    /// generation, its own timeout) is routine in front of model servers and says
    /// nothing about the backend: it is counted (`status_class="none"`), its exposure
    /// has status 0 and no error, and it is logged at DEBUG only.
    fn suppress_error_log(&self, session: &Session, _ctx: &Self::CTX, e: &Error) -> bool {
        let gone = client_went_away(e);
        if gone {
            tracing::debug!(
                "client went away: {e}, {}",
                session.as_ref().request_summary()
            );
        }
        gone
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<Ctx>,
    ) -> FailToProxy {
        let code = match e.esource() {
            ErrorSource::Upstream => {
                if ctx.error.is_none() {
                    ctx.error = Some(classify(e));
                }
                if matches!(ctx.error, Some(ErrorKind::Timeout)) {
                    504
                } else {
                    502
                }
            }
            ErrorSource::Downstream if client_went_away(e) => 0,
            ErrorSource::Downstream => 400,
            _ => {
                ctx.error = Some(ErrorKind::Proxy);
                500
            }
        };
        if code > 0 {
            let upstream = ctx
                .snap
                .as_ref()
                .map(|s| s.pools[ctx.upstream].spec.name.to_string())
                .unwrap_or_default();
            let what = ctx.error.map(|k| k.as_str()).unwrap_or("bad request");
            let body = json_error(
                &format!("abgate: upstream `{upstream}` failed ({what})"),
                None,
            );
            let mut ok = false;
            if let Ok(mut resp) = ResponseHeader::build(code, Some(3)) {
                let _ = resp.insert_header("content-type", "application/json");
                let _ = resp.insert_header("content-length", body.len().to_string());
                for c in &ctx.set_cookies {
                    let _ = resp.append_header("set-cookie", c.as_str());
                }
                if session
                    .write_response_header(Box::new(resp), false)
                    .await
                    .is_ok()
                {
                    ok = session
                        .write_response_body(Some(Bytes::from(body)), true)
                        .await
                        .is_ok();
                }
            }
            if !ok {
                let _ = session.respond_error(code).await;
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Box<Ctx>) {
        let Some(snap) = ctx.snap.take() else { return };
        if ctx.local {
            return;
        }
        let cfg = &snap.config;
        let status = status_of(session);
        if ctx.error.is_none() && (500..=599).contains(&status) {
            ctx.error = Some(ErrorKind::Upstream5xx);
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(ctx.start);
        let latency_us = elapsed.as_micros() as u64;
        // Whole microseconds: finer digits are timer noise, and the writer formats such a
        // value from integers.
        let latency_ms = latency_us as f64 / 1000.0;
        let m = &self.app.metrics;
        let class = crate::admin::metrics::status_class(status);
        // `[admin] request_metrics = false` skips the per-request families (benchmarks).
        let metrics_on = cfg.admin.request_metrics;
        let events_on = cfg.events.enabled;
        if metrics_on {
            m.proxied_by_class[class].inc();
        }
        if let Some(k) = ctx.error.filter(|_| metrics_on) {
            let idx = match k {
                ErrorKind::Connect => Some(0),
                ErrorKind::Timeout => Some(1),
                ErrorKind::Reset => Some(2),
                ErrorKind::Upstream5xx => Some(3),
                ErrorKind::Proxy => None,
            };
            if let Some(i) = idx {
                snap.upstream_errors[ctx.upstream][i].inc();
            }
        }
        let now_ms = self.app.ms_at(now);
        let is_err = ctx.error.is_some();
        let mut assignments = SmallVec::new();
        if ctx.assignments.is_empty() && metrics_on {
            snap.none_metrics.requests[class].inc();
            snap.none_metrics.duration.observe(elapsed.as_secs_f64());
        }
        for (i, (a, &served)) in ctx.assignments.iter().zip(&ctx.served).enumerate() {
            let exp = &cfg.layers[a.layer as usize].experiments[a.experiment as usize];
            let rt = &snap.experiments[a.layer as usize][a.experiment as usize];
            if metrics_on {
                let vm = &rt.metrics[served as usize];
                vm.requests[class].inc();
                vm.duration.observe(elapsed.as_secs_f64());
                rt.metrics[a.variant as usize].exposures.inc();
            }
            if !a.forced {
                rt.state.variants[served as usize]
                    .window
                    .record(now_ms, latency_us, is_err);
            }
            let unit_id = ctx.unit_ids.get_mut(i).and_then(|u| u.take());
            if let Some(u) = unit_id.as_deref().or(ctx.user.as_deref()) {
                rt.state.variants[a.variant as usize]
                    .units
                    .record(u.as_bytes());
            }
            if !events_on {
                continue;
            }
            assignments.push(ExposureAssignment {
                names: exp.exposure_names(
                    &cfg.layers[a.layer as usize].name,
                    a.variant as usize,
                    served as usize,
                ),
                unit: unit_id.as_ref().map(|_| Arc::from(exp.unit.label())),
                unit_id,
                forced: a.forced,
            });
        }
        if !events_on {
            return;
        }
        let ts = SystemTime::now();
        for &(mi, value) in &ctx.header_outcomes {
            if let Some(u) = &ctx.user {
                snap.outcome_counters[mi].inc();
                self.app.sink.send(Event::Outcome(Outcome {
                    ts,
                    unit_id: u.clone(),
                    metric: cfg.metrics[mi].name.clone(),
                    value,
                    source: OutcomeSource::Header,
                }));
            }
        }
        self.app.sink.send(Event::Exposure(Box::new(Exposure {
            ts,
            request_id: std::mem::take(&mut ctx.request_id),
            unit: "user",
            unit_id: ctx.user.take(),
            assignments,
            holdout: ctx.holdout,
            upstream: snap.pools[ctx.upstream].spec.name.clone(),
            status,
            latency_ms,
            error: ctx.error,
            config_version: snap.version.clone(),
        })));
    }
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
fn client_request_id(headers: &http::HeaderMap) -> Option<RequestId> {
    let mut values = headers.get_all(&REQUEST_ID).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => RequestId::from_client(v.as_bytes()),
        _ => None,
    }
}

/// Whether `e` is the client closing or breaking its connection.
fn client_went_away(e: &Error) -> bool {
    e.esource() == &ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
        )
}

fn classify(e: &Error) -> ErrorKind {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            ErrorKind::Timeout
        }
        ErrorType::ConnectRefused | ErrorType::ConnectNoRoute | ErrorType::ConnectError => {
            ErrorKind::Connect
        }
        ErrorType::HTTPStatus(c) if *c >= 500 => ErrorKind::Upstream5xx,
        _ => ErrorKind::Reset,
    }
}
