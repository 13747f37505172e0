//! One experiment's report from its sufficient statistics ([`ExperimentStats`]): units
//! per variant and the SRM check, every treatment against control on every metric of the
//! experiment (with CUPED when the statistics carry a covariate) and on the
//! request-level metrics, multiple-testing adjustment, the verdict, and units over time.
//! The direct analysis and `--summary` both end here.
//!
//! Comparisons come in a fixed order — per treatment (config order): the experiment's
//! metrics (primary first), then `latency_ms`, then `error_rate` — which the Holm and BH
//! adjustments and the report's output rely on.

use super::compare::{adjust_p_values, compare, ComparisonInput, Pair, RequestMetric};
use super::report::{Comparison, CupedOut, ExperimentReport};
use super::sufficient::{ExperimentStats, VariantMetric};
use super::timeline::units_over_time;
use super::verdict::{verdict, Evidence};
use super::Options;
use crate::config::{Config, Experiment};
use crate::stats;

/// What the report of a bandit experiment says without its bandit section.
pub const BANDIT_NEEDS_EVENTS: &str = "bandit experiment: the scale-out analysis (--summary) has no bandit section and a fixed-weight comparison would be wrong; run `abgate analyze --events` on the logs";

/// The report of the experiment whose sufficient statistics are `st`.
pub(super) fn report(cfg: &Config, st: &ExperimentStats, opts: &Options) -> ExperimentReport {
    let (li, ei) = st.at;
    let e = &cfg.layers[li].experiments[ei];
    let weights: Vec<f64> = e.variants.iter().map(|v| v.weight).collect();
    let mut comps = Vec::new();
    // A bandit is not a fixed experiment: its weights move, so neither the static SRM
    // nor pooled comparisons apply. The direct analysis adds its bandit section
    // (`bandit::apply`); from `--summary` this note is all there is.
    let (srm, verdict, reason) = if e.bandit.is_some() {
        (f64::NAN, "keep_running", BANDIT_NEEDS_EVENTS.to_string())
    } else {
        let srm = stats::srm_p_value(&st.units, &weights);
        for t in (0..e.variants.len()).filter(|&t| t != e.control) {
            comparisons(cfg, e, st, opts, t, &mut comps);
        }
        adjust_p_values(&mut comps);
        let (verdict, reason) = verdict(&Evidence {
            experiment: e,
            units: &st.units,
            srm,
            mixed: st.mixed,
            comparisons: &comps,
            alpha: 1.0 - opts.confidence,
        });
        (srm, verdict, reason)
    };
    ExperimentReport {
        experiment: e.name.to_string(),
        layer: cfg.layers[li].name.to_string(),
        units: e
            .variants
            .iter()
            .zip(&st.units)
            .map(|(v, &n)| (v.name.to_string(), n))
            .collect(),
        variants: e.variants.iter().map(|v| v.name.to_string()).collect(),
        weights,
        mixed_units: st.mixed,
        srm_p_value: srm,
        verdict,
        reason,
        comparisons: comps,
        units_over_time: units_over_time(&st.new_units, e.variants.len()),
        shadow: Vec::new(),
        bandit: None,
    }
}

/// Treatment `t` against control: every metric of the experiment, then the request-level
/// metrics when both sides have requests.
fn comparisons(
    cfg: &Config,
    e: &Experiment,
    st: &ExperimentStats,
    opts: &Options,
    t: usize,
    comps: &mut Vec<Comparison>,
) {
    let c = e.control;
    let pair = Pair {
        variant: &e.variants[t].name,
        control_variant: &e.variants[c].name,
        confidence: opts.confidence,
        tuning: opts.tuning,
    };
    for (mi, per_variant) in &st.metrics {
        let m = &cfg.metrics[*mi];
        comps.push(compare(ComparisonInput {
            pair,
            metric: &m.name,
            kind: m.kind,
            higher_is_better: m.higher_is_better,
            control: per_variant[c].y.summary(),
            treatment: per_variant[t].y.summary(),
            cuped: cuped(&per_variant[c], &per_variant[t], opts.confidence),
            primary: e.primary_metric.as_deref() == Some(&*m.name),
            guardrail: false,
        }));
    }
    // latency needs two observations a side for a sample variance; a rate, one request
    let (lat_c, lat_t) = (&st.latency[c], &st.latency[t]);
    if lat_c.n > 1 && lat_t.n > 1 {
        comps.push(pair.request_level(RequestMetric::LatencyMs, lat_c.summary(), lat_t.summary()));
    }
    let (err_c, err_t) = (&st.errors[c], &st.errors[t]);
    if err_c.n > 0 && err_t.n > 0 {
        comps.push(pair.request_level(RequestMetric::ErrorRate, err_c.summary(), err_t.summary()));
    }
}

/// CUPED of treatment `t` against control `c`, when both carry a covariate.
fn cuped(c: &VariantMetric, t: &VariantMetric, confidence: f64) -> Option<CupedOut> {
    let (c, t) = (c.co_moments()?, t.co_moments()?);
    stats::cuped(&c, &t, confidence).map(|r| CupedOut {
        theta: r.theta,
        variance_reduction: r.variance_reduction,
        abs_lift: r.diff.abs_lift,
        abs_ci: [r.diff.abs_ci.0, r.diff.abs_ci.1],
        p_value: r.diff.p_value,
    })
}
