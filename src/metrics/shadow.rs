//! The shadow-traffic families: `abgate_shadow_requests_total{experiment,variant,result}`,
//! `abgate_shadow_latency_seconds{experiment,variant,target}` and
//! `abgate_shadow_in_flight{experiment,variant}`, and one variant's pre-resolved handles.

use super::{must, DURATION_BUCKETS};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The shadow-traffic families.
pub struct ShadowFamilies {
    /// `abgate_shadow_requests_total{experiment,variant,result}`
    pub requests: IntCounterVec,
    /// `abgate_shadow_latency_seconds{experiment,variant,target}`
    pub latency: HistogramVec,
    /// `abgate_shadow_in_flight{experiment,variant}`
    pub in_flight: IntGaugeVec,
}

impl ShadowFamilies {
    pub(super) fn register(registry: &Registry) -> ShadowFamilies {
        let requests = must(IntCounterVec::new(
            Opts::new(
                "abgate_shadow_requests_total",
                "Shadow copies of a variant's served requests by result: match, mismatch, error (the copy failed) or skipped (body too large, no free slot, request incomplete).",
            ),
            &["experiment", "variant", "result"],
        ));
        must(registry.register(Box::new(requests.clone())));
        let latency = must(HistogramVec::new(
            HistogramOpts::new(
                "abgate_shadow_latency_seconds",
                "Latency of the compared pairs, from dispatch to last byte: target=\"primary\" the served response, target=\"shadow\" its copy's.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["experiment", "variant", "target"],
        ));
        must(registry.register(Box::new(latency.clone())));
        let in_flight = must(IntGaugeVec::new(
            Opts::new(
                "abgate_shadow_in_flight",
                "Shadow copies in flight (from the first body byte kept to the comparison); at most the shadow's max_in_flight.",
            ),
            &["experiment", "variant"],
        ));
        must(registry.register(Box::new(in_flight.clone())));
        ShadowFamilies {
            requests,
            latency,
            in_flight,
        }
    }

    /// Handles of one variant's shadow, every series exported from the start.
    pub fn handles(&self, experiment: &str, variant: &str) -> ShadowMetrics {
        ShadowMetrics {
            results: crate::events::ShadowResult::ALL.map(|r| {
                self.requests
                    .with_label_values(&[experiment, variant, r.as_str()])
            }),
            primary: self
                .latency
                .with_label_values(&[experiment, variant, "primary"]),
            shadow: self
                .latency
                .with_label_values(&[experiment, variant, "shadow"]),
            in_flight: self.in_flight.with_label_values(&[experiment, variant]),
        }
    }
}

/// Pre-resolved handles of one variant's shadow.
#[derive(Clone)]
pub struct ShadowMetrics {
    /// `abgate_shadow_requests_total` by [`crate::events::ShadowResult::ALL`] order.
    pub results: [IntCounter; 4],
    /// `abgate_shadow_latency_seconds{target="primary"}`
    pub primary: Histogram,
    /// `abgate_shadow_latency_seconds{target="shadow"}`
    pub shadow: Histogram,
    /// `abgate_shadow_in_flight`
    pub in_flight: IntGauge,
}
