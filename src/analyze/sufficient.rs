//! The sufficient statistics of an analysis: everything the report is computed from, and
//! nothing more. Per experiment × variant × metric the moments of the per-unit values
//! (units, mean, sum of squared deviations) and, with covariates, the covariate's mean,
//! sum of squared deviations and the co-moment; per experiment × variant the units, the
//! request-level moments of `latency_ms` and `error_rate`, and the new units per second
//! or minute of first exposure;
//! per experiment the mixed units.
//!
//! Two producers fill [`Sufficient`] — the direct analysis from its per-unit aggregates
//! (`aggregate`), and `--summary` from the CSV an engine computed with the emitted SQL
//! (`summary`) — and one consumer turns it into the report (`experiment`), so both give
//! the same numbers by construction.

use super::report::ReadStats;
use crate::config::{Config, Experiment};
use crate::stats::{CoMoments, Moments};
use std::collections::BTreeMap;

/// The sufficient statistics of every experiment of a config, and what was read.
#[derive(Debug, Clone, Default)]
pub struct Sufficient {
    /// Every experiment of the config, in config order (layers, then experiments).
    pub experiments: Vec<ExperimentStats>,
    /// What was read to compute them.
    pub read: ReadStats,
}

/// One experiment's sufficient statistics. Vectors indexed by variant follow the
/// config's variant order.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentStats {
    /// (layer index, experiment index) in the config.
    pub at: (usize, usize),
    /// Units per variant (mixed units excluded).
    pub units: Vec<u64>,
    /// Units seen in more than one variant (excluded everywhere else).
    pub mixed: u64,
    /// Per metric of the experiment, in [`metric_slots`] order: the metric's index in
    /// `cfg.metrics`, and its statistics per variant.
    pub metrics: Vec<(usize, Vec<VariantMetric>)>,
    /// `latency_ms` per variant, over the requests that reported one.
    pub latency: Vec<Moments>,
    /// `error_rate` per variant: 1 per failed request, 0 per other request.
    pub errors: Vec<Moments>,
    /// Time key of first exposure (`2026-11-23T02:05:07` within one clock hour, else
    /// `2026-11-23T02:05`: see `timeline`) → new units per variant (mixed units
    /// excluded).
    pub new_units: BTreeMap<String, Vec<u64>>,
}

/// One variant's statistics on one metric.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VariantMetric {
    /// The per-unit values.
    pub y: Moments,
    /// The covariate, when covariates were given and the experiment has any.
    pub x: Option<Covariate>,
}

/// The covariate part of [`VariantMetric`] (over the same units as `y`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Covariate {
    /// Mean of the covariate.
    pub mean: f64,
    /// Σ(x − x̄)².
    pub m2: f64,
    /// Σ(y − ȳ)(x − x̄).
    pub c_xy: f64,
}

impl VariantMetric {
    /// From the co-moments of (y, x).
    pub fn with_covariate(co: &CoMoments) -> VariantMetric {
        VariantMetric {
            y: co.y,
            x: Some(Covariate {
                mean: co.mean_x,
                m2: co.m2_x,
                c_xy: co.c_xy,
            }),
        }
    }

    /// The co-moments CUPED needs, when there is a covariate.
    pub fn co_moments(&self) -> Option<CoMoments> {
        self.x.map(|x| CoMoments {
            y: self.y,
            mean_x: x.mean,
            m2_x: x.m2,
            c_xy: x.c_xy,
        })
    }
}

impl ExperimentStats {
    /// Nothing seen yet for experiment `at` of `cfg`.
    pub fn empty(cfg: &Config, at: (usize, usize)) -> ExperimentStats {
        let e = &cfg.layers[at.0].experiments[at.1];
        let nv = e.variants.len();
        ExperimentStats {
            at,
            units: vec![0; nv],
            mixed: 0,
            metrics: metric_slots(cfg, e)
                .into_iter()
                .map(|m| (m, vec![VariantMetric::default(); nv]))
                .collect(),
            latency: vec![Moments::default(); nv],
            errors: vec![Moments::default(); nv],
            new_units: BTreeMap::new(),
        }
    }
}

/// Every experiment of `cfg` as (layer index, experiment index), in config order.
pub fn experiments_of(cfg: &Config) -> Vec<(usize, usize)> {
    cfg.layers
        .iter()
        .enumerate()
        .flat_map(|(li, l)| (0..l.experiments.len()).map(move |ei| (li, ei)))
        .collect()
}

/// The metrics experiment `e` reports, as indices into `cfg.metrics`: the primary metric
/// first, then `metrics`, then a bandit's reward, each once.
pub fn metric_slots(cfg: &Config, e: &Experiment) -> Vec<usize> {
    let mut slots: Vec<usize> = Vec::new();
    let reward = e.bandit.as_ref().map(|b| &b.reward);
    for m in e
        .primary_metric
        .iter()
        .chain(e.metrics.iter())
        .chain(reward)
    {
        if let Some(i) = cfg.metrics.iter().position(|d| d.name == *m) {
            if !slots.contains(&i) {
                slots.push(i);
            }
        }
    }
    slots
}
