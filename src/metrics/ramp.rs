//! The ramp's metric families: `abgate_ramp_step{experiment}`,
//! `abgate_ramp_traffic_ratio{experiment}` and `abgate_ramp_status{experiment,status}`
//! (1 for the current status, 0 for the others).

use crate::guard::ramp::{RampState, RampStatus};
use prometheus::{GaugeVec, IntGaugeVec, Opts, Registry};

/// The ramp families.
pub struct RampMetrics {
    /// `abgate_ramp_step{experiment}`: current step, 1-based.
    pub step: IntGaugeVec,
    /// `abgate_ramp_traffic_ratio{experiment}`: share of the layer served now.
    pub traffic_ratio: GaugeVec,
    /// `abgate_ramp_status{experiment,status}`.
    pub status: IntGaugeVec,
}

impl RampMetrics {
    /// Create and register the families in `registry`.
    pub(super) fn register(registry: &Registry) -> prometheus::Result<RampMetrics> {
        let step = IntGaugeVec::new(
            Opts::new(
                "abgate_ramp_step",
                "Current step of the experiment's ramp (1 = the first).",
            ),
            &["experiment"],
        )?;
        let traffic_ratio = GaugeVec::new(
            Opts::new(
                "abgate_ramp_traffic_ratio",
                "Share of its layer the experiment's ramp serves now.",
            ),
            &["experiment"],
        )?;
        let status = IntGaugeVec::new(
            Opts::new(
                "abgate_ramp_status",
                "1 for the ramp's current status (running, holding, completed, rolled_back), 0 for the others.",
            ),
            &["experiment", "status"],
        )?;
        registry.register(Box::new(step.clone()))?;
        registry.register(Box::new(traffic_ratio.clone()))?;
        registry.register(Box::new(status.clone()))?;
        Ok(RampMetrics {
            step,
            traffic_ratio,
            status,
        })
    }

    /// Export the state of the ramp of `experiment`.
    pub fn set(&self, experiment: &str, s: &RampState) {
        self.step
            .with_label_values(&[experiment])
            .set(s.step as i64);
        self.traffic_ratio
            .with_label_values(&[experiment])
            .set(s.traffic);
        for st in RampStatus::ALL {
            self.status
                .with_label_values(&[experiment, st.as_str()])
                .set((st == s.status) as i64);
        }
    }
}
