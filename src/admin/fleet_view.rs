//! `GET /admin/fleet` and the `abgate_fleet_*` gauges at scrape: what this sidecar
//! knows of its fleet, read from [`crate::runtime::FleetStatus`] (the admin API never
//! talks to the broker itself).

use crate::runtime::{unix_ms, App};
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

/// `GET /admin/fleet`: whether `[fleet]` is on, this instance's name, the broker
/// connection, every instance seen with the age of its last heartbeat, the age of the
/// fleet state, the other sidecars' windows held (`share_windows`), and the shipper's
/// progress (shipped, backlog, dropped, checkpoint).
pub fn fleet_json(app: &App) -> serde_json::Value {
    let f = &app.fleet;
    let now = unix_ms(SystemTime::now());
    let (seen, fresh) = f.instances_seen(now);
    let checkpoint = f
        .checkpoint
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let instances: Vec<_> = seen
        .iter()
        .map(|(name, age_ms)| {
            json!({
                "instance": name,
                "last_report_age_seconds": *age_ms as f64 / 1000.0,
                "fresh": *age_ms <= crate::runtime::FleetStatus::INSTANCE_FRESH_MS,
            })
        })
        .collect();
    json!({
        "enabled": f.enabled.load(Relaxed),
        "instance": f.instance.get(),
        "connected": f.connected.load(Relaxed),
        "instances_fresh": fresh,
        "instances": instances,
        "state_age_seconds": f.state_age_seconds(now, app.started_unix_ms),
        "share_windows": f.share_windows.load(Relaxed),
        "peer_windows": peer_windows(app),
        "shipper": {
            "shipped": f.shipped.load(Relaxed),
            "backlog_bytes": f.backlog_bytes.load(Relaxed),
            "dropped": f.ship_dropped.load(Relaxed),
            "checkpoint": checkpoint.map(|(file, offset)| json!({"file": file, "offset": offset})),
        },
    })
}

/// The other sidecars' windows this sidecar holds, per experiment and variant: who
/// sent them, how old they are, their requests and errors (what `share_windows` adds
/// to the local window, while fresh).
fn peer_windows(app: &App) -> Vec<serde_json::Value> {
    let windows = app.fleet.windows.lock().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<_> = windows
        .iter()
        .flat_map(|((exp, variant), peers)| {
            peers.iter().map(move |(instance, w)| {
                json!({
                    "experiment": exp,
                    "variant": variant,
                    "instance": instance,
                    "age_seconds": w.received.elapsed().as_secs_f64(),
                    "requests": w.stats.n,
                    "errors": w.stats.errors,
                })
            })
        })
        .collect();
    out.sort_by(|a, b| {
        let key = |v: &serde_json::Value| {
            (
                v["experiment"].as_str().unwrap_or("").to_string(),
                v["variant"].as_str().unwrap_or("").to_string(),
                v["instance"].as_str().unwrap_or("").to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    out
}

/// Set the fleet's metrics from its status (called at scrape).
pub fn refresh_fleet_metrics(app: &App) {
    let f = &app.fleet;
    let now = unix_ms(SystemTime::now());
    app.metrics.set_fleet(crate::metrics::FleetFigures {
        enabled: f.enabled.load(Relaxed),
        connected: f.connected.load(Relaxed),
        instances_fresh: f.instances_seen(now).1,
        state_age_seconds: f.state_age_seconds(now, app.started_unix_ms),
        shipped: f.shipped.load(Relaxed),
        dropped: f.ship_dropped.load(Relaxed),
        backlog_bytes: f.backlog_bytes.load(Relaxed),
    });
}
