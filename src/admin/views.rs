//! The admin API's read views: every experiment with its live state
//! (`GET /admin/experiments`), one experiment's live report
//! (`GET /admin/experiments/{name}/report`) and the upstreams' addresses with their
//! health (`GET /admin/upstreams`, and the `abgate_upstream_healthy` gauge at scrape).

use crate::runtime::{App, Live};
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;

fn variant_live(
    app: &App,
    live: Live<'_>,
    upstreams: &[crate::config::UpstreamSpec],
) -> Vec<serde_json::Value> {
    let (exp, rt) = (live.config, live.runtime);
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
                "upstream": v.upstream.map(|u| upstreams[u].name.to_string()),
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

/// `GET /admin/experiments`.
pub fn experiments_json(app: &App) -> serde_json::Value {
    let snap = app.snapshot.load();
    let mut list = Vec::new();
    for live in snap.live_experiments() {
        let (exp, rt) = (live.config, live.runtime);
        let variants = variant_live(app, live, &snap.config.upstreams);
        let exposures: Vec<u64> = rt.metrics.iter().map(|m| m.exposures.get()).collect();
        let weights: Vec<f64> = exp.variants.iter().map(|v| v.weight).collect();
        list.push(json!({
            "name": exp.name,
            "layer": live.layer.name,
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
    json!({ "config_version": snap.config.version, "experiments": list })
}

/// `GET /admin/experiments/{name}/report`.
pub fn report_json(app: &App, name: &str) -> Option<serde_json::Value> {
    use crate::analyze::live::{self, LiveInput, LiveVariant};
    let snap = app.snapshot.load();
    let found = snap.find(name)?;
    let (exp, rt) = (found.config, found.runtime);
    let variants = variant_live(app, found, &snap.config.upstreams);
    let now = app.now_ms();
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
        "layer": found.layer.name,
        "source": "live: request-level metrics over the guardrail window (latency from its histogram, 12.5% resolution); unit-level outcome metrics need `abgate analyze` on the event log",
        "srm_p_value": live.srm_p_value,
        "variants": variants,
        "comparisons": live.comparisons,
        "outcomes_received": outcomes,
    }))
}

/// `GET /admin/upstreams`: every upstream of the current config, each address in use
/// with the `addrs` entry it came from and its health.
pub fn upstreams_json(app: &App) -> serde_json::Value {
    let snap = app.snapshot.load();
    let upstreams: Vec<serde_json::Value> = snap
        .pools
        .iter()
        .map(|p| {
            let addrs: Vec<serde_json::Value> = p
                .health()
                .into_iter()
                .map(
                    |a| json!({ "addr": a.addr.to_string(), "host": a.host, "healthy": a.healthy }),
                )
                .collect();
            json!({
                "name": p.spec.name,
                "protocol": p.protocol(),
                "tls": p.spec.tls,
                "health_check": match &p.spec.health_check {
                    Some(hc) => format!("http GET {}", hc.path),
                    None => "tcp".to_string(),
                },
                "addrs": addrs,
            })
        })
        .collect();
    json!({ "config_version": snap.config.version, "upstreams": upstreams })
}

/// Set `abgate_upstream_healthy` from the current pools (before a scrape renders).
pub fn refresh_upstream_health(app: &App) {
    let snap = app.snapshot.load();
    let rows = snap.pools.iter().flat_map(|p| {
        p.health()
            .into_iter()
            .map(move |a| (&*p.spec.name, a.addr, a.healthy))
    });
    app.metrics.set_upstream_health(rows);
}
