//! Bandit updates: every `update_interval` of a bandit experiment, close the open
//! period, compute the next weights (Thompson sampling, [`crate::guard::bandit`]) with
//! every arm served by control (rolled back) at weight 0, move the table and open the
//! next period; then export `abgate_bandit_weight` and `abgate_bandit_prob_best`. A
//! paused experiment is not updated. Runs in the control loop, never on the request path.

use crate::guard::bandit::{BanditState, Period};
use crate::runtime::{unix_ms, App, Live, Snapshot};
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

/// Update every bandit of `snap` whose open period has lasted `update_interval` at
/// `now_unix_ms`; export the gauges of every bandit.
pub fn update_due(app: &App, snap: &Snapshot, now_unix_ms: u64) {
    for exp in snap.live_experiments() {
        let Some(b) = &exp.runtime.bandit else {
            continue;
        };
        let due = b.due(now_unix_ms);
        // With the fleet, its bandit task opens every period (the fleet's).
        let shared = app.fleet.bandits.load(Relaxed);
        if due && !shared && !exp.state().paused.load(Relaxed) {
            update(exp, b, now_unix_ms);
        }
        app.announce_bandit_period(snap, exp);
        crate::runtime::export_bandit_gauges(&app.metrics, exp);
    }
}

/// Close the open period of `b` and open the next one.
pub fn update(exp: Live<'_>, b: &BanditState, now_unix_ms: u64) -> Period {
    let active: Vec<bool> = (0..exp.config.variants.len())
        .map(|i| !exp.state().variants[i].rolled_back.load(Relaxed))
        .collect();
    let started = std::time::Instant::now();
    b.close();
    let next = b.next_period(now_unix_ms, &active);
    tracing::info!(
        "bandit {}: period {} weights {:?} (P(best) {:?}{}) computed in {:?}",
        exp.config.name,
        next.period,
        rounded(&next.served),
        rounded(&next.prob_best),
        if next.explore { ", exploring" } else { "" },
        started.elapsed()
    );
    if let Err(e) = b.open(next.clone()) {
        tracing::error!("{e}; the new weights serve but will not survive a restart");
    }
    next
}

fn rounded(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| (v * 1e4).round() / 1e4).collect()
}

/// Unix time now (ms).
pub fn now_unix_ms() -> u64 {
    unix_ms(SystemTime::now())
}
