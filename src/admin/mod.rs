//! The admin listener (loopback by default): health, readiness, metrics, experiments.
//!
//! | endpoint | method | token | what |
//! |---|---|---|---|
//! | `/healthz` | GET | no | 200 while the process runs |
//! | `/readyz` | GET | no | 200 once the config is loaded and listeners are bound, 503 otherwise |
//! | `/metrics` | GET | no | Prometheus text format 0.0.4 |
//! | `/admin/experiments` | GET | no | every experiment: state, allocation, live counts, guardrails |
//! | `/admin/upstreams` | GET | no | every upstream: protocol, TLS, each address with its health |
//! | `/admin/fleet` | GET | no | the fleet (`[fleet]`): this instance, broker connection, instances seen, state age |
//! | `/admin/experiments/{name}/report` | GET | no | live request-level statistics of one experiment |
//! | `/admin/experiments/{name}/bandit` | GET | no | a bandit's period, weights, P(best), units and rewards per arm, history |
//! | `/admin/experiments/{name}/shadow` | GET | no | live shadow comparison of each variant with a shadow |
//! | `/admin/experiments/{name}/rollback` | POST | yes | roll every treatment back to control |
//! | `/admin/experiments/{name}/resume` | POST | yes | clear rollbacks and pause |
//! | `/admin/experiments/{name}/pause` | POST | yes | serve control to everyone |
//! | `/admin/experiments/{name}/ramp` | GET | no | the experiment's ramp: step, traffic, status, gate, history |
//! | `/admin/experiments/{name}/ramp/advance` | POST | yes | advance the ramp one step now |
//! | `/admin/experiments/{name}/ramp/hold` | POST | yes | stop the ramp at its step |
//! | `/admin/reload` | POST | yes | re-read the config file |
//!
//! Mutations need `Authorization: Bearer <token>` (token from `admin.token_env`,
//! compared in constant time): 401 without it, 405 on the wrong method.

mod bandit_view;
mod fleet_view;
mod mutate;
mod ramp;
mod respond;
mod shadow_view;
mod views;

use crate::runtime::App;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use respond::{error, json_resp, text, Resp};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the admin API holds of the runtime: it reads the snapshot, metrics and
/// readiness, and asks the runtime to reload or to take a decision. It never touches the
/// request path's state directly.
#[derive(Clone)]
pub struct AdminHandle {
    app: Arc<App>,
}

impl AdminHandle {
    /// The admin API's handle on `app`.
    pub fn new(app: Arc<App>) -> AdminHandle {
        AdminHandle { app }
    }
}

/// Admin connections open at most; a new one beyond it is closed at once (scrapers and
/// operators need a handful).
pub const MAX_CONNECTIONS: usize = 64;

/// How long a connection may take to send a request head, and stay idle between
/// requests: a silent or dripping client is disconnected after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest any admin connection lives (a request whose body drips, a client that
/// never reads): every admin request is answered in well under a second.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serve the admin API until shutdown.
pub async fn run(
    listener: tokio::net::TcpListener,
    admin: AdminHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = admin.app;
    let mut backoff = AcceptBackoff::default();
    let open = Arc::new(AtomicUsize::new(0));
    let refusals = crate::ratelog::RateLog::new(Duration::from_secs(10));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => { backoff.reset(); s }
                Err(e) => {
                    // Out of file descriptors (or another transient error): retrying at
                    // once would spin. Wait, longer each time, and log a summary.
                    let pause = backoff.failed(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            },
            _ = shutdown.changed() => return,
        };
        if open.load(Relaxed) >= MAX_CONNECTIONS {
            drop(stream);
            if let Some(n) = refusals.hit() {
                tracing::warn!(
                    "admin: {n} connection(s) refused in the last 10 s: {MAX_CONNECTIONS} already open (latest from {peer})"
                );
            }
            continue;
        }
        let slot = OpenSlot::take(&open);
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |mut req: Request<Incoming>| {
                let app = app.clone();
                // The client's address, for the log line of a refused token.
                req.extensions_mut().insert(peer);
                async move { Ok::<_, std::convert::Infallible>(route(&app, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
}

/// One open admin connection, given back when its task ends (whichever way).
struct OpenSlot(Arc<AtomicUsize>);

impl OpenSlot {
    fn take(open: &Arc<AtomicUsize>) -> OpenSlot {
        open.fetch_add(1, Relaxed);
        OpenSlot(open.clone())
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Accept failures: a pause that doubles from 5 ms to 1 s while they last, and a log
/// line at most every 10 s that counts them.
#[derive(Default)]
struct AcceptBackoff {
    pause: Duration,
    failures: u64,
    last_log: Option<Instant>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(10);

    fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.failures += 1;
        self.pause = (self.pause * 2).clamp(Self::FIRST, Self::MAX);
        if self.last_log.is_none_or(|t| t.elapsed() >= Self::LOG_EVERY) {
            tracing::warn!(
                "admin accept failed {} times since the last report: {e} (retrying with backoff; raise the open-files limit if this is EMFILE)",
                self.failures
            );
            self.failures = 0;
            self.last_log = Some(Instant::now());
        }
        self.pause
    }

    fn reset(&mut self) {
        self.pause = Duration::ZERO;
    }
}

async fn route(app: &Arc<App>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let method = req.method().clone();
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get_only = |m: &Method| *m == Method::GET || *m == Method::HEAD;
    match parts.as_slice() {
        ["healthz"] if get_only(&method) => text(StatusCode::OK, "ok\n"),
        ["readyz"] if get_only(&method) => {
            if app.ready.load(Relaxed) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: starting or stopping\n",
                )
            }
        }
        ["metrics"] if get_only(&method) => {
            views::refresh_upstream_health(app);
            fleet_view::refresh_fleet_metrics(app);
            let (ct, body) = app.metrics.render(app.sink.stats());
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", ct)
                .body(Full::new(Bytes::from(body)))
                .expect("valid response")
        }
        ["admin", "experiments"] if get_only(&method) => {
            let a = app.clone();
            match tokio::task::spawn_blocking(move || views::experiments_json(&a)).await {
                Ok(v) => json_resp(StatusCode::OK, v),
                Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "admin task failed"),
            }
        }
        ["admin", "upstreams"] if get_only(&method) => {
            json_resp(StatusCode::OK, views::upstreams_json(app))
        }
        ["admin", "fleet"] if get_only(&method) => json_resp(StatusCode::OK, fleet_view::fleet_json(app)),
        ["admin", "experiments", name, "report"] if get_only(&method) => {
            match views::report_json(app, name) {
                Some(v) => json_resp(StatusCode::OK, v),
                None => error(StatusCode::NOT_FOUND, &format!("no experiment `{name}`")),
            }
        }
        ["admin", "experiments", name, "bandit"] if get_only(&method) => {
            match bandit_view::bandit_json(app, name) {
                Ok(v) => json_resp(StatusCode::OK, v),
                Err(why) => error(StatusCode::NOT_FOUND, &why),
            }
        }
        ["admin", "experiments", name, "shadow"] if get_only(&method) => {
            match shadow_view::shadow_json(app, name) {
                Some(v) => json_resp(StatusCode::OK, v),
                None => error(StatusCode::NOT_FOUND, &format!("no experiment `{name}`")),
            }
        }
        ["admin", "experiments", name, action @ ("rollback" | "resume" | "pause")]
            if method == Method::POST =>
        {
            if let Some(r) = mutate::check_token(app, &req) {
                return r;
            }
            mutate::experiment(app, name, action).await
        }
        ["admin", "experiments", name, "ramp"] if get_only(&method) => ramp::view(app, name),
        ["admin", "experiments", name, "ramp", action @ ("advance" | "hold")]
            if method == Method::POST =>
        {
            if let Some(r) = mutate::check_token(app, &req) {
                return r;
            }
            ramp::mutate(app, name, action).await
        }
        ["admin", "reload"] if method == Method::POST => {
            if let Some(r) = mutate::check_token(app, &req) {
                return r;
            }
            mutate::reload(app).await
        }
        ["healthz"]
        | ["readyz"]
        | ["metrics"]
        | ["admin", "experiments"]
        | ["admin", "upstreams"]
        | ["admin", "fleet"]
        | ["admin", "experiments", _, "report" | "bandit" | "ramp" | "shadow"] => {
            error(StatusCode::METHOD_NOT_ALLOWED, "use GET")
        }
        ["admin", "experiments", _, "ramp", "advance" | "hold"] => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST with Authorization: Bearer <token>",
        ),
        ["admin", "experiments", _, "rollback" | "resume" | "pause"] | ["admin", "reload"] => {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST with Authorization: Bearer <token>",
            )
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "unknown endpoint; see /admin/experiments, /admin/upstreams, /admin/fleet, /metrics, /healthz, /readyz",
        ),
    }
}
