//! The admin listener (loopback by default): health, readiness, metrics, experiments.
//!
//! | endpoint | method | token | what |
//! |---|---|---|---|
//! | `/healthz` | GET | no | 200 while the process runs |
//! | `/readyz` | GET | no | 200 once the config is loaded and listeners are bound, 503 otherwise |
//! | `/metrics` | GET | no | Prometheus text format 0.0.4 |
//! | `/admin/experiments` | GET | no | every experiment: state, allocation, live counts, guardrails |
//! | `/admin/experiments/{name}/report` | GET | no | live request-level statistics of one experiment |
//! | `/admin/experiments/{name}/rollback` | POST | yes | roll every treatment back to control |
//! | `/admin/experiments/{name}/resume` | POST | yes | clear rollbacks and pause |
//! | `/admin/experiments/{name}/pause` | POST | yes | serve control to everyone |
//! | `/admin/reload` | POST | yes | re-read the config file |
//!
//! Mutations need `Authorization: Bearer <token>` (token from `admin.token_env`,
//! compared in constant time): 401 without it, 405 on the wrong method.

use crate::guard::{Action, Decision};
use crate::runtime::{App, ReloadOutcome};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::watch;

type Resp = Response<Full<Bytes>>;

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

/// Serve the admin API until shutdown.
pub async fn run(
    listener: tokio::net::TcpListener,
    admin: AdminHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = admin.app;
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&app, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn json_resp(status: StatusCode, v: serde_json::Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("static response parts are valid")
}

fn error(status: StatusCode, msg: &str) -> Resp {
    json_resp(status, json!({ "error": msg }))
}

async fn handle(app: &Arc<App>, req: Request<Incoming>) -> Resp {
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
            let (ct, body) = app.metrics.render(app.sink.stats());
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", ct)
                .body(Full::new(Bytes::from(body)))
                .expect("valid response")
        }
        ["admin", "experiments"] if get_only(&method) => {
            json_resp(StatusCode::OK, experiments_json(app))
        }
        ["admin", "experiments", name, "report"] if get_only(&method) => {
            match report_json(app, name) {
                Some(v) => json_resp(StatusCode::OK, v),
                None => error(StatusCode::NOT_FOUND, &format!("no experiment `{name}`")),
            }
        }
        ["admin", "experiments", name, action @ ("rollback" | "resume" | "pause")]
            if method == Method::POST =>
        {
            if let Some(r) = check_token(app, &req) {
                return r;
            }
            mutate(app, name, action)
        }
        ["admin", "reload"] if method == Method::POST => {
            if let Some(r) = check_token(app, &req) {
                return r;
            }
            let a = app.clone();
            match tokio::task::spawn_blocking(move || a.reload("POST /admin/reload")).await {
                Ok(Ok(ReloadOutcome::Applied { version })) => json_resp(
                    StatusCode::OK,
                    json!({"result": "applied", "version": version}),
                ),
                Ok(Ok(ReloadOutcome::Unchanged)) => json_resp(
                    StatusCode::OK,
                    json!({"result": "unchanged", "version": app.snapshot.load().config.version}),
                ),
                Ok(Err(e)) => json_resp(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"result": "rejected", "error": e.to_string(), "serving": app.snapshot.load().config.version}),
                ),
                Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "reload task failed"),
            }
        }
        ["healthz"]
        | ["readyz"]
        | ["metrics"]
        | ["admin", "experiments"]
        | ["admin", "experiments", _, "report"] => error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
        ["admin", "experiments", _, "rollback" | "resume" | "pause"] | ["admin", "reload"] => {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST with Authorization: Bearer <token>",
            )
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "unknown endpoint; see /admin/experiments, /metrics, /healthz, /readyz",
        ),
    }
}

fn check_token(app: &App, req: &Request<Incoming>) -> Option<Resp> {
    let snap = app.snapshot.load();
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if snap.token.is_none() {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            &format!(
                "no admin token configured: set ${} and restart",
                snap.config.admin.token_env
            ),
        ));
    }
    if !snap.token_ok(presented.as_bytes()) {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send Authorization: Bearer <token>",
        ));
    }
    None
}

fn mutate(app: &App, name: &str, action: &str) -> Resp {
    let snap = app.snapshot.load();
    let Some(exp) = snap.find(name) else {
        return error(StatusCode::NOT_FOUND, &format!("no experiment `{name}`"));
    };
    let action = match action {
        "rollback" => Action::ManualRollback,
        "pause" => Action::Pause,
        _ => Action::Resume,
    };
    for (i, v) in exp.config.variants.iter().enumerate() {
        if i == exp.config.control {
            continue;
        }
        let decision = Decision::manual(&exp.config.name, &v.name, action);
        if let Err(e) = app.decide(exp, i, decision) {
            return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
    }
    json_resp(
        StatusCode::OK,
        json!({"experiment": name, "state": exp.state().state_word()}),
    )
}

fn variant_live(app: &App, li: usize, ei: usize) -> Vec<serde_json::Value> {
    let snap = app.snapshot.load();
    let exp = &snap.config.layers[li].experiments[ei];
    let rt = &snap.experiments[li][ei];
    let now = app.now_ms();
    exp.variants
        .iter()
        .enumerate()
        .map(|(vi, v)| {
            let st = &rt.state.variants[vi];
            let w = st.window.stats(now);
            let m = &rt.metrics[vi];
            let requests: u64 = m.requests.iter().map(|c| c.get()).sum();
            json!({
                "name": v.name,
                "weight": v.weight,
                "control": vi == exp.control,
                "upstream": v.upstream.map(|u| snap.config.upstreams[u].name.to_string()),
                "exposures": m.exposures.get(),
                "units": st.units.estimate().round(),
                "requests_served": requests,
                "window": {
                    "requests": w.n,
                    "errors": w.errors,
                    "error_rate": w.error_rate(),
                    "p50_ms": w.quantile_ms(0.5),
                    "p99_ms": w.quantile_ms(0.99),
                },
                "rolled_back": st.rolled_back.load(Relaxed),
                "guardrail_status": st.status(),
                "last_decision": *st.last_decision.lock().unwrap_or_else(|p| p.into_inner()),
            })
        })
        .collect()
}

fn experiments_json(app: &App) -> serde_json::Value {
    let snap = app.snapshot.load();
    let mut list = Vec::new();
    for (li, layer) in snap.config.layers.iter().enumerate() {
        for (ei, exp) in layer.experiments.iter().enumerate() {
            let rt = &snap.experiments[li][ei];
            let variants = variant_live(app, li, ei);
            let exposures: Vec<u64> = rt.metrics.iter().map(|m| m.exposures.get()).collect();
            let weights: Vec<f64> = exp.variants.iter().map(|v| v.weight).collect();
            list.push(json!({
                "name": exp.name,
                "layer": layer.name,
                "state": rt.state.state_word(),
                "traffic": exp.traffic,
                "buckets": [exp.start, exp.end],
                "unit": exp.unit.label(),
                "control": exp.variants[exp.control].name,
                "guardrails": exp.guardrails.is_some(),
                "srm_p_value": crate::stats::srm_p_value(&exposures, &weights),
                "variants": variants,
            }));
        }
    }
    json!({ "config_version": snap.config.version, "experiments": list })
}

fn report_json(app: &App, name: &str) -> Option<serde_json::Value> {
    use crate::analyze::live::{self, LiveInput, LiveVariant};
    let snap = app.snapshot.load();
    let (li, ei) = snap.config.experiment(name)?;
    let exp = &snap.config.layers[li].experiments[ei];
    let variants = variant_live(app, li, ei);
    let now = app.now_ms();
    let rt = &snap.experiments[li][ei];
    let live_variants: Vec<LiveVariant> = exp
        .variants
        .iter()
        .zip(&rt.state.variants)
        .zip(&rt.metrics)
        .map(|((v, st), m)| {
            let w = st.window.stats(now);
            LiveVariant {
                name: &v.name,
                weight: v.weight,
                exposures: m.exposures.get(),
                requests: w.n,
                errors: w.errors,
                latency: w.latency_summary(),
            }
        })
        .collect();
    let live = live::report(&LiveInput {
        variants: &live_variants,
        control: exp.control,
    });
    let outcomes: serde_json::Map<String, serde_json::Value> = snap
        .config
        .metrics
        .iter()
        .zip(&snap.outcome_counters)
        .map(|(m, c)| (m.name.to_string(), json!(c.get())))
        .collect();
    Some(json!({
        "experiment": name,
        "layer": snap.config.layers[li].name,
        "source": "live: request-level metrics over the guardrail window (latency from its histogram, 12.5% resolution); unit-level outcome metrics need `abgate analyze` on the event log",
        "srm_p_value": live.srm_p_value,
        "variants": variants,
        "comparisons": live.comparisons,
        "outcomes_received": outcomes,
    }))
}
