//! The live sample-ratio-mismatch gauge: `abgate_srm_p_value{experiment}`, the
//! chi-square p-value of exposures per variant against the configured weights. It counts
//! requests, not units, so it is an early warning; `abgate analyze` confirms on units.
//! A bandit experiment's weights change every period: its gauge judges the open
//! period's exposures against the shares its table serves.

use crate::runtime::{App, Snapshot};
use std::time::Duration;

/// How often the gauge is refreshed.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Refresh the gauge of every experiment of `snap`.
pub fn update(app: &App, snap: &Snapshot) {
    for exp in snap.live_experiments() {
        if let Some(b) = &exp.runtime.bandit {
            let arms = exp.config.variants.len();
            let mut shares = b.serving.load().table.shares(arms);
            // Units of an arm served by control are no exposures of that arm.
            for (i, s) in shares.iter_mut().enumerate() {
                if exp.state().served_by_control(i) {
                    *s = 0.0;
                }
            }
            let p = crate::stats::srm_p_value(&b.open_exposures(), &shares);
            app.metrics
                .srm_p_value
                .with_label_values(&[&exp.config.name])
                .set(p);
            continue;
        }
        let exposures: Vec<u64> = exp
            .runtime
            .metrics
            .iter()
            .map(|m| m.exposures.get())
            .collect();
        let weights: Vec<f64> = exp.config.variants.iter().map(|v| v.weight).collect();
        app.metrics
            .srm_p_value
            .with_label_values(&[&exp.config.name])
            .set(crate::stats::srm_p_value(&exposures, &weights));
    }
}
