//! The live sample-ratio-mismatch gauge: `abgate_srm_p_value{experiment}`, the
//! chi-square p-value of exposures per variant against the configured weights. It counts
//! requests, not units, so it is an early warning; `abgate analyze` confirms on units.

use crate::runtime::{App, Snapshot};
use std::time::Duration;

/// How often the gauge is refreshed.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Refresh the gauge of every experiment of `snap`.
pub fn update(app: &App, snap: &Snapshot) {
    for exp in snap.live_experiments() {
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
