//! Shadow traffic: a copy of a deterministic share of a variant's served requests goes
//! to a candidate upstream, and the two responses are compared. The client's response,
//! the exposure and the guardrail windows never depend on the copy.
//!
//! The life of a copy, hook by hook:
//! 1. **select** (`request_filter`, after routing): the first assignment served by its
//!    own variant (not forced, not rolled back or paused; holdout requests have none)
//!    whose variant has a shadow, when the method is listed and the request id's hash
//!    falls in `share`. A slot among `max_in_flight` is taken without waiting; with none
//!    free the copy is skipped (`busy`).
//! 2. **tee** (`request_body_filter`, `upstream_request_filter`, `response_body_filter`):
//!    the backend request's head (with `x-abgate-shadow: 1`), the request body chunks and
//!    the served response's body chunks are kept as reference-counted `Bytes` (no copy of
//!    the data), the request body up to `max_body_bytes` (past it the copy is dropped at
//!    once: `too_large`), the response up to `max_response_bytes` (past it only its
//!    length is counted).
//! 3. **dispatch** (`logging`, after the exposure is recorded): a request that did not
//!    complete is skipped (`incomplete`); otherwise a task is spawned and the hook
//!    returns. The task sends the copy through pingora's connector to a peer of the
//!    shadow upstream's pool (its protocol, TLS and timeouts), under `timeout`.
//! 4. **compare** (on the blocking pool, [`compare`]), then metrics, the live tally and
//!    one `shadow` record.
//!
//! Memory: a slot is held from selection to the end of the comparison, so at most
//! `max_in_flight × (max_body_bytes + 2 × max_response_bytes)` bytes of bodies are held
//! per variant (one request body, the served and the shadow response).

pub mod compare;

use super::context::Ctx;
use crate::analyze::shadow::Observed;
use crate::config::Shadow;
use crate::events::{Event, RequestId, ShadowRecord, ShadowResult};
use crate::runtime::shadow::{ShadowState, SkipReason, Slot};
use crate::runtime::{App, Snapshot};
use bytes::Bytes;
use http::HeaderValue;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The header that marks a copy.
pub const SHADOW_HEADER: &str = "x-abgate-shadow";

/// Body bytes kept for one side, as shared chunks.
#[derive(Default)]
struct Kept {
    chunks: Vec<Bytes>,
    len: u64,
    over: bool,
}

impl Kept {
    /// Keep `b` while the total stays within `limit`; past it, only count.
    fn push(&mut self, b: &Bytes, limit: u64) {
        self.len += b.len() as u64;
        if self.over {
            return;
        }
        if self.len > limit {
            self.over = true;
            self.chunks = Vec::new();
        } else if !b.is_empty() {
            self.chunks.push(b.clone());
        }
    }

    /// The whole body in one piece, if it was kept.
    fn joined(&self) -> Option<Vec<u8>> {
        if self.over {
            return None;
        }
        let mut v = Vec::with_capacity(self.len as usize);
        for c in &self.chunks {
            v.extend_from_slice(c);
        }
        Some(v)
    }
}

/// One request's copy while the request runs.
pub struct ShadowCopy {
    layer: usize,
    experiment: usize,
    variant: usize,
    /// `None` once skipped; the reason says why.
    slot: Option<Slot>,
    state: Arc<ShadowState>,
    skip: Option<SkipReason>,
    head: Option<Box<RequestHeader>>,
    body: Kept,
    body_done: bool,
    response: Kept,
    streamed: bool,
}

impl ShadowCopy {
    fn shadow<'s>(&self, snap: &'s Snapshot) -> Option<&'s Shadow> {
        snap.config.layers[self.layer].experiments[self.experiment].variants[self.variant]
            .shadow
            .as_ref()
    }

    fn skip(&mut self, why: SkipReason) {
        if self.skip.is_none() {
            self.skip = Some(why);
            self.state.skipped(why);
        }
        self.slot = None;
        self.head = None;
        self.body = Kept::default();
        self.response = Kept::default();
    }

    fn live(&self) -> bool {
        self.skip.is_none()
    }
}

/// Pick the request for a copy, or not (step 1).
///
/// Hot path: called once per request; without a shadow on a served variant it only
/// walks the assignments.
pub fn select(snap: &Snapshot, method: &http::Method, ctx: &mut Ctx) {
    for (a, &served) in ctx.assignments.iter().zip(&ctx.served) {
        if a.forced || served != a.variant {
            continue;
        }
        let exp = snap.experiment(a.layer as usize, a.experiment as usize);
        let (Some(shadow), Some(state)) = (
            exp.config.variants[served as usize].shadow.as_ref(),
            exp.runtime.shadows[served as usize].as_ref(),
        ) else {
            continue;
        };
        if !shadow.methods.contains(method)
            || !shadow.selects(id_hash(&ctx.request_id, shadow.seed))
        {
            return;
        }
        let mut copy = Box::new(ShadowCopy {
            layer: a.layer as usize,
            experiment: a.experiment as usize,
            variant: served as usize,
            slot: None,
            state: state.clone(),
            skip: None,
            head: None,
            body: Kept::default(),
            body_done: false,
            response: Kept::default(),
            streamed: false,
        });
        match state.try_acquire(shadow.max_in_flight) {
            Some(slot) => copy.slot = Some(slot),
            None => copy.skip(SkipReason::Busy),
        }
        ctx.shadow = Some(copy);
        return;
    }
}

fn id_hash(id: &RequestId, seed: u64) -> u64 {
    match id {
        RequestId::Ulid(u) => xxhash_rust::xxh3::xxh3_64_with_seed(&u.to_le_bytes(), seed),
        RequestId::Client(s) => xxhash_rust::xxh3::xxh3_64_with_seed(s.as_bytes(), seed),
    }
}

/// Keep a request body chunk (step 2).
pub fn tee_request(snap: &Snapshot, copy: &mut ShadowCopy, body: Option<&Bytes>, end: bool) {
    if !copy.live() || copy.body_done {
        return;
    }
    let Some(limit) = copy.shadow(snap).map(|s| s.max_body_bytes) else {
        return;
    };
    if let Some(b) = body {
        copy.body.push(b, limit);
        if copy.body.over {
            copy.skip(SkipReason::TooLarge);
            return;
        }
    }
    copy.body_done |= end;
}

/// Keep the backend request's head for the copy, marked `x-abgate-shadow: 1`, with the
/// shadow upstream's `host` if it sets one (step 2; the first attempt's only).
pub fn tee_head(snap: &Snapshot, copy: &mut ShadowCopy, req: &RequestHeader) {
    if !copy.live() || copy.head.is_some() {
        return;
    }
    let Some(shadow) = copy.shadow(snap) else {
        return;
    };
    let mut head = Box::new(req.clone());
    head.remove_header(&http::header::EXPECT);
    let _ = head.insert_header(SHADOW_HEADER, HeaderValue::from_static("1"));
    if let Some(host) = &snap.pools[shadow.upstream].spec.host {
        let _ = head.insert_header(http::header::HOST, host.clone());
    }
    copy.head = Some(head);
}

/// Note whether the served response is a stream (step 2).
pub fn tee_response_head(copy: &mut ShadowCopy, resp: &ResponseHeader) {
    copy.streamed = is_stream(resp);
}

/// Keep a served response body chunk (step 2).
pub fn tee_response(snap: &Snapshot, copy: &mut ShadowCopy, body: Option<&Bytes>) {
    if !copy.live() {
        return;
    }
    let (Some(b), Some(s)) = (body, copy.shadow(snap)) else {
        return;
    };
    copy.response.push(b, s.max_response_bytes);
}

fn is_stream(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            let t = t.trim_start().to_ascii_lowercase();
            t.starts_with("text/event-stream")
                || t.starts_with("application/grpc")
                || t.starts_with("application/x-ndjson")
        })
}

/// What the dispatch needs of the served request.
pub struct Served {
    /// Status sent to the client (0: none).
    pub status: u16,
    /// From the request's start to its end.
    pub latency: Duration,
    /// To the first body byte sent.
    pub ttfb: Duration,
    /// The request's id.
    pub request_id: RequestId,
}

/// After the served request (step 3): skip an incomplete copy, or spawn its task.
pub fn dispatch(
    app: &Arc<App>,
    connector: &Arc<Connector>,
    snap: Arc<Snapshot>,
    mut copy: Box<ShadowCopy>,
    served: Served,
) {
    if copy.live() && (!copy.body_done || served.status == 0 || copy.head.is_none()) {
        copy.skip(SkipReason::Incomplete);
    }
    if let Some(why) = copy.skip {
        if snap.config.events.enabled {
            app.sink.send(Event::Shadow(Box::new(record(
                &snap,
                &copy,
                &served,
                why_record(why),
            ))));
        }
        return;
    }
    let (app, connector) = (app.clone(), connector.clone());
    tokio::spawn(async move {
        run(&app, &connector, &snap, *copy, served).await;
    });
}

/// The record fields of a copy that was not sent.
fn why_record(why: SkipReason) -> Finished {
    Finished {
        result: ShadowResult::Skipped,
        reason: Some(why.as_str()),
        ..Finished::default()
    }
}

/// What became of a copy.
struct Finished {
    result: ShadowResult,
    reason: Option<&'static str>,
    compared: Option<&'static str>,
    status: u16,
    latency: Option<Duration>,
    ttfb: Option<Duration>,
    pointers: Vec<String>,
    more: usize,
}

impl Default for Finished {
    fn default() -> Self {
        Finished {
            result: ShadowResult::Skipped,
            reason: None,
            compared: None,
            status: 0,
            latency: None,
            ttfb: None,
            pointers: Vec::new(),
            more: 0,
        }
    }
}

/// The shadow's response.
struct Answer {
    status: u16,
    body: Kept,
    streamed: bool,
    ttfb: Duration,
}

/// Send the copy, compare, count and record (step 4). The slot is released at the end.
async fn run(
    app: &App,
    connector: &Connector,
    snap: &Snapshot,
    mut copy: ShadowCopy,
    served: Served,
) {
    let Some(shadow) = copy.shadow(snap) else {
        return;
    };
    let pool = &snap.pools[shadow.upstream];
    let peer = pool.peer();
    let (head, body) = (copy.head.take(), std::mem::take(&mut copy.body));
    let Some(head) = head else { return };
    let start = Instant::now();
    let sent = tokio::time::timeout(
        shadow.timeout,
        exchange(
            connector,
            &peer,
            head,
            body,
            shadow.max_response_bytes,
            start,
        ),
    )
    .await;
    let latency = start.elapsed();
    let f = match sent {
        Err(_) => Finished {
            result: ShadowResult::Error,
            reason: Some("timeout"),
            ..Finished::default()
        },
        Ok(Err(e)) => Finished {
            result: ShadowResult::Error,
            reason: Some(super::failure::kind_of(e.etype()).as_str()),
            ..Finished::default()
        },
        Ok(Ok(answer)) => {
            let cfg = shadow.compare.clone();
            let primary = std::mem::take(&mut copy.response);
            let (p_status, p_streamed) = (served.status, copy.streamed);
            let diff = tokio::task::spawn_blocking(move || {
                let (a, b) = (primary.joined(), answer.body.joined());
                compare::compare(
                    &compare::Response {
                        status: p_status,
                        body: a.as_deref(),
                        len: primary.len,
                        streamed: p_streamed,
                    },
                    &compare::Response {
                        status: answer.status,
                        body: b.as_deref(),
                        len: answer.body.len,
                        streamed: answer.streamed,
                    },
                    &cfg,
                )
            })
            .await;
            match diff {
                Ok(d) => Finished {
                    result: if d.is_match() {
                        ShadowResult::Match
                    } else {
                        ShadowResult::Mismatch
                    },
                    reason: None,
                    compared: Some(d.method.as_str()),
                    status: answer.status,
                    latency: Some(latency),
                    ttfb: Some(answer.ttfb),
                    pointers: d.pointers,
                    more: d.more,
                },
                Err(_) => Finished {
                    result: ShadowResult::Error,
                    reason: Some("compare"),
                    status: answer.status,
                    ..Finished::default()
                },
            }
        }
    };
    let state = copy.state.clone();
    let m = &state.metrics;
    m.results[f.result as usize].inc();
    let rec = record(snap, &copy, &served, f);
    if let Some(s) = rec.shadow_latency_ms {
        m.primary.observe(served.latency.as_secs_f64());
        m.shadow.observe(s / 1000.0);
    }
    state.finished(&Observed::of(&rec), &pool.spec.name, &rec.pointers);
    if snap.config.events.enabled {
        app.sink.send(Event::Shadow(Box::new(rec)));
    }
    drop(copy);
}

/// Send the copy and read its answer, keeping at most `limit` body bytes.
async fn exchange(
    connector: &Connector,
    peer: &HttpPeer,
    head: Box<RequestHeader>,
    body: Kept,
    limit: u64,
    start: Instant,
) -> pingora::Result<Answer> {
    let mut head = head;
    // The whole body is at hand: send it with its length (whatever framing the client used).
    head.remove_header(&http::header::TRANSFER_ENCODING);
    let _ = head.insert_header(http::header::CONTENT_LENGTH, body.len.to_string());
    let (mut s, _reused) = connector.get_http_session(peer).await?;
    if s.as_http1().is_some() {
        // The client may have come over HTTP/2: say HTTP/1.1, with its authority as `Host`.
        head.set_version(http::Version::HTTP_11);
        if !head.headers.contains_key(http::header::HOST) {
            if let Some(a) = head.uri.authority().map(|a| a.as_str().to_string()) {
                let _ = head.insert_header(http::header::HOST, a);
            }
        }
    }
    s.write_request_header(head).await?;
    let n = body.chunks.len();
    for (i, c) in body.chunks.into_iter().enumerate() {
        s.write_request_body(c, i + 1 == n).await?;
    }
    s.finish_request_body().await?;
    s.read_response_header().await?;
    let (status, streamed) = s
        .response_header()
        .map_or((0, false), |h| (h.status.as_u16(), is_stream(h)));
    let mut kept = Kept::default();
    let mut ttfb = None;
    while let Some(b) = s.read_response_body().await? {
        if ttfb.is_none() && !b.is_empty() {
            ttfb = Some(start.elapsed());
        }
        kept.push(&b, limit);
    }
    let ttfb = ttfb.unwrap_or_else(|| start.elapsed());
    if s.response_done() {
        connector.release_http_session(s, peer, None).await;
    }
    Ok(Answer {
        status,
        body: kept,
        streamed,
        ttfb,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

fn record(snap: &Snapshot, copy: &ShadowCopy, served: &Served, f: Finished) -> ShadowRecord {
    let exp = &snap.config.layers[copy.layer].experiments[copy.experiment];
    let upstream = copy
        .shadow(snap)
        .map(|s| snap.pools[s.upstream].spec.name.clone())
        .unwrap_or_else(|| Arc::from(""));
    ShadowRecord {
        ts: SystemTime::now(),
        request_id: served.request_id.clone(),
        experiment: exp.name.clone(),
        variant: exp.variants[copy.variant].name.clone(),
        upstream,
        result: f.result,
        reason: f.reason,
        compared: f.compared,
        primary_status: served.status,
        shadow_status: f.status,
        primary_latency_ms: ms(served.latency),
        primary_ttfb_ms: ms(served.ttfb),
        shadow_latency_ms: f.latency.map(ms),
        shadow_ttfb_ms: f.ttfb.map(ms),
        pointers: f.pointers,
        pointers_more: f.more,
    }
}
