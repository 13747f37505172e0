//! One experiment's report from its aggregates: units per variant and the SRM check,
//! every treatment against control on every metric of the experiment (with CUPED when
//! covariates were given) and on the request-level metrics, multiple-testing
//! adjustment, the verdict, and units over time.
//!
//! Comparisons come in a fixed order — per treatment (config order): the experiment's
//! metrics (primary first), then `latency_ms`, then `error_rate` — which the Holm and BH
//! adjustments and the report's output rely on.

use super::aggregate::{ExpAcc, UnitMap};
use super::compare::{adjust_p_values, compare, ComparisonInput, Pair, RequestMetric};
use super::report::{Comparison, CupedOut, ExperimentReport};
use super::verdict::{verdict, Evidence};
use super::Options;
use crate::config::{Config, Experiment, MetricDef};
use crate::stats::{self, Summary};

/// What the comparisons of one experiment read.
struct Inputs<'a> {
    cfg: &'a Config,
    e: &'a Experiment,
    acc: &'a ExpAcc,
    opts: &'a Options,
    /// Unit id of every record, only when covariates need them.
    ids: Vec<&'a str>,
}

/// The report of experiment `ei` of layer `li`, which is number `index` among the
/// experiments aggregated in `acc`; `units_seen` maps unit ids to their records.
pub(super) fn report(
    cfg: &Config,
    (li, ei): (usize, usize),
    (index, acc): (usize, &ExpAcc),
    units_seen: &UnitMap,
    opts: &Options,
) -> ExperimentReport {
    let e = &cfg.layers[li].experiments[ei];
    let (units, mixed) = acc.units_per_variant();
    let weights: Vec<f64> = e.variants.iter().map(|v| v.weight).collect();
    let srm = stats::srm_p_value(&units, &weights);
    let ids = if opts.covariates.is_some() {
        unit_ids(acc, index, units_seen)
    } else {
        Vec::new()
    };
    let inputs = Inputs {
        cfg,
        e,
        acc,
        opts,
        ids,
    };
    let mut comps = Vec::new();
    for t in (0..e.variants.len()).filter(|&t| t != e.control) {
        comparisons(&inputs, t, &mut comps);
    }
    adjust_p_values(&mut comps);
    let (verdict, reason) = verdict(&Evidence {
        experiment: e,
        units: &units,
        srm,
        mixed,
        comparisons: &comps,
        alpha: 1.0 - opts.confidence,
    });
    ExperimentReport {
        experiment: e.name.to_string(),
        layer: cfg.layers[li].name.to_string(),
        units: e
            .variants
            .iter()
            .zip(&units)
            .map(|(v, &n)| (v.name.to_string(), n))
            .collect(),
        variants: e.variants.iter().map(|v| v.name.to_string()).collect(),
        weights,
        mixed_units: mixed,
        srm_p_value: srm,
        verdict,
        reason,
        comparisons: comps,
        units_over_time: acc.units_over_time(),
    }
}

/// The unit id of every record of experiment number `index`.
fn unit_ids<'a>(acc: &ExpAcc, index: usize, units_seen: &'a UnitMap) -> Vec<&'a str> {
    let mut ids = vec![""; acc.records()];
    for (id, list) in units_seen {
        for &(x, ri) in list {
            if x as usize == index {
                ids[ri as usize] = id;
            }
        }
    }
    ids
}

/// Treatment `t` against control: every metric of the experiment, then the request-level
/// metrics when both sides have requests.
fn comparisons(inp: &Inputs, t: usize, comps: &mut Vec<Comparison>) {
    let (e, acc, c) = (inp.e, inp.acc, inp.e.control);
    let pair = Pair {
        variant: &e.variants[t].name,
        control_variant: &e.variants[c].name,
        confidence: inp.opts.confidence,
        tuning: inp.opts.tuning,
    };
    for (slot, &mi) in acc.metric_slots.iter().enumerate() {
        let m = &inp.cfg.metrics[mi];
        let per_unit = |v: usize| -> Vec<f64> {
            acc.in_variant(v)
                .map(|ri| acc.y(ri, slot, m.kind))
                .collect()
        };
        comps.push(compare(ComparisonInput {
            pair,
            metric: &m.name,
            kind: m.kind,
            higher_is_better: m.higher_is_better,
            control: Summary::of(&per_unit(c)),
            treatment: Summary::of(&per_unit(t)),
            cuped: cuped(inp, slot, m, (c, t)),
            primary: e.primary_metric.as_deref() == Some(&*m.name),
            guardrail: false,
        }));
    }
    // latency needs two observations a side for a sample variance; a rate, one request
    let ((lat_c, req_c), (lat_t, req_t)) = (acc.requests(c), acc.requests(t));
    if lat_c > 1.0 && lat_t > 1.0 {
        comps.push(pair.request_level(
            RequestMetric::LatencyMs,
            acc.latency_summary(c),
            acc.latency_summary(t),
        ));
    }
    if req_c > 0.0 && req_t > 0.0 {
        comps.push(pair.request_level(
            RequestMetric::ErrorRate,
            acc.error_summary(c),
            acc.error_summary(t),
        ));
    }
}

/// CUPED on metric `slot` for control `c` and treatment `t`, when covariates were given
/// and at least one unit of the two has one.
fn cuped(inp: &Inputs, slot: usize, m: &MetricDef, (c, t): (usize, usize)) -> Option<CupedOut> {
    let cov = inp.opts.covariates.as_ref()?;
    let pairs = |v: usize| -> Vec<(f64, f64)> {
        inp.acc
            .in_variant(v)
            .map(|ri| {
                let x = cov.get(inp.ids[ri]).copied().unwrap_or(f64::NAN);
                (inp.acc.y(ri, slot, m.kind), x)
            })
            .collect()
    };
    let (mut pc, mut pt) = (pairs(c), pairs(t));
    // Units without a covariate get the mean covariate (no information).
    let known: Vec<f64> = pc
        .iter()
        .chain(pt.iter())
        .map(|p| p.1)
        .filter(|x| x.is_finite())
        .collect();
    if known.is_empty() {
        return None;
    }
    let mean = known.iter().sum::<f64>() / known.len() as f64;
    for p in pc.iter_mut().chain(pt.iter_mut()) {
        if !p.1.is_finite() {
            p.1 = mean;
        }
    }
    stats::cuped(&pc, &pt, inp.opts.confidence).map(|r| CupedOut {
        theta: r.theta,
        variance_reduction: r.variance_reduction,
        abs_lift: r.diff.abs_lift,
        abs_ci: [r.diff.abs_ci.0, r.diff.abs_ci.1],
        p_value: r.diff.p_value,
    })
}
