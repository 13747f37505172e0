//! The live report of the admin API (`/admin/experiments/{name}/report`): the
//! request-level metrics of every treatment against control over the guardrail window,
//! with the statistics of the offline report ([`compare`]) at the default settings
//! (confidence 0.95, [`crate::stats::MSPRT_TUNING`]), and the SRM check of exposures.
//!
//! The caller gathers the live counts; nothing here reads a clock or shared state, so
//! the same counts always give the same report.

use super::compare::{adjust_p_values, Pair, RequestMetric};
use super::report::Comparison;
use super::Options;
use crate::stats::{self, Summary};

/// One variant's live counts.
#[derive(Debug, Clone)]
pub struct LiveVariant<'a> {
    /// Variant name.
    pub name: &'a str,
    /// Configured weight.
    pub weight: f64,
    /// Exposures since start (the SRM check).
    pub exposures: u64,
    /// Requests in the window.
    pub requests: u64,
    /// Failed requests in the window.
    pub errors: u64,
    /// Latency in ms over the window.
    pub latency: Summary,
}

/// What a live report is computed from.
#[derive(Debug, Clone)]
pub struct LiveInput<'a> {
    /// Every variant, in config order.
    pub variants: &'a [LiveVariant<'a>],
    /// Index of the control variant.
    pub control: usize,
}

/// The computed part of a live report.
#[derive(Debug, Clone)]
pub struct LiveReport {
    /// SRM chi-square p-value of exposures against weights.
    pub srm_p_value: f64,
    /// Per treatment with more than one request on both sides: `latency_ms` then
    /// `error_rate`, with Holm and BH adjusted p-values over all of them.
    pub comparisons: Vec<Comparison>,
}

/// Compute the live report.
pub fn report(input: &LiveInput<'_>) -> LiveReport {
    let opts = Options::default();
    let vs = input.variants;
    let c = &vs[input.control];
    let mut comparisons = Vec::new();
    for (vi, t) in vs.iter().enumerate() {
        if vi == input.control || !(c.requests > 1 && t.requests > 1) {
            continue;
        }
        let pair = Pair {
            variant: t.name,
            control_variant: c.name,
            confidence: opts.confidence,
            tuning: opts.tuning,
        };
        comparisons.push(pair.request_level(RequestMetric::LatencyMs, c.latency, t.latency));
        comparisons.push(pair.request_level(
            RequestMetric::ErrorRate,
            error_summary(c),
            error_summary(t),
        ));
    }
    adjust_p_values(&mut comparisons);
    let exposures: Vec<u64> = vs.iter().map(|v| v.exposures).collect();
    let weights: Vec<f64> = vs.iter().map(|v| v.weight).collect();
    LiveReport {
        srm_p_value: stats::srm_p_value(&exposures, &weights),
        comparisons,
    }
}

fn error_summary(v: &LiveVariant) -> Summary {
    Summary::binomial(v.requests as f64, v.errors as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(name: &str, requests: u64, errors: u64, latency: (f64, f64)) -> LiveVariant<'_> {
        LiveVariant {
            name,
            weight: 1.0,
            exposures: requests,
            requests,
            errors,
            latency: Summary {
                n: requests as f64,
                mean: latency.0,
                variance: latency.1,
            },
        }
    }

    #[test]
    fn compares_every_treatment_with_requests_on_both_sides() {
        let vs = [
            variant("t1", 1000, 30, (101.0, 400.0)),
            variant("control", 900, 20, (100.0, 400.0)),
            variant("t2", 1, 0, (90.0, 0.0)),
        ];
        let r = report(&LiveInput {
            variants: &vs,
            control: 1,
        });
        let names: Vec<(&str, &str)> = r
            .comparisons
            .iter()
            .map(|c| (c.variant.as_str(), c.metric.as_str()))
            .collect();
        assert_eq!(names, [("t1", "latency_ms"), ("t1", "error_rate")]);
        assert!(r.comparisons.iter().all(|c| c.guardrail && !c.primary));
        let e = &r.comparisons[1];
        assert_eq!((e.control.mean, e.treatment.mean), (20.0 / 900.0, 0.03));
        assert!(e.p_value_holm >= e.p_value);
        assert_eq!(
            r.srm_p_value,
            stats::srm_p_value(&[1000, 900, 1], &[1.0, 1.0, 1.0])
        );
    }
}
