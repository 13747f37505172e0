//! Control loops: the work that runs beside the request path on a timer and acts on what
//! the proxy recorded. Today: the guardrail checks ([`guardrails`]), the ramps' gates
//! ([`ramps`]), the bandit updates ([`bandit`]) and the live SRM gauge ([`srm`]). Nothing
//! here is ever waited on by a request.
//!
//! [`run`] ticks every 100 ms; each experiment is checked when its own `check_interval`
//! has elapsed, so the cost per tick depends on the number of experiments and variants,
//! not on traffic.

pub mod bandit;
pub mod guardrails;
pub mod ramps;
pub mod srm;

use crate::runtime::App;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Run the control loops until `shutdown` turns true.
pub async fn run(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut last_check: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_srm = Instant::now();
    let mut ramp_checks = ramps::RampChecks::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let snap = app.snapshot.load_full();
        let now = Instant::now();
        guardrails::check_due(&app, &snap, &mut last_check, now);
        ramps::check_due(&app, &snap, &mut ramp_checks, now);
        if snap.live_experiments().any(|e| e.runtime.bandit.is_some()) {
            // Posteriors, Monte Carlo and the fsync of the history: on a blocking thread.
            let (a, s) = (app.clone(), snap.clone());
            let now = bandit::now_unix_ms();
            let _ = tokio::task::spawn_blocking(move || bandit::update_due(&a, &s, now)).await;
        }
        if now.duration_since(last_srm) >= srm::INTERVAL {
            last_srm = now;
            srm::update(&app, &snap);
        }
    }
}
