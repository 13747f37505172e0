//! One treatment against control on one metric: every statistic of the report (fixed
//! horizon, sequential, Bayesian; see `docs/analysis.md`) but CUPED, which needs per-unit
//! data and is computed by the caller. Used by the offline report and the live one, so
//! both give the same numbers for the same summaries.
//!
//! Also the multiple-testing adjustment of a report's comparisons, and the request-level
//! metrics (`latency_ms`, `error_rate`) that both reports carry.

use super::report::{Comparison, CupedOut, Losses, Side};
use crate::config::MetricKind;
use crate::stats::{self, Summary};

/// One treatment against control, at the report's settings: what every comparison of
/// that pair shares.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    /// Treatment variant.
    pub variant: &'a str,
    /// Control variant.
    pub control_variant: &'a str,
    /// Confidence level of intervals (α = 1 − confidence for tests).
    pub confidence: f64,
    /// mSPRT tuning.
    pub tuning: f64,
}

/// What [`compare`] needs for one comparison.
#[derive(Debug, Clone)]
pub struct ComparisonInput<'a> {
    /// Which treatment against which control, and the settings.
    pub pair: Pair<'a>,
    /// Metric name.
    pub metric: &'a str,
    /// Binomial (per-unit 0/1, tested as two proportions) or continuous (Welch).
    pub kind: MetricKind,
    /// Whether higher is better (the direction of the Bayesian results).
    pub higher_is_better: bool,
    /// Control side.
    pub control: Summary,
    /// Treatment side.
    pub treatment: Summary,
    /// CUPED result, when the caller computed one.
    pub cuped: Option<CupedOut>,
    /// Whether this is the experiment's primary metric.
    pub primary: bool,
    /// Whether this is a request-level guardrail metric.
    pub guardrail: bool,
}

/// The request-level metrics: computed over requests (one observation per exposure
/// offline, the guardrail window live), not per unit; lower is better for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestMetric {
    /// `latency_ms`, continuous.
    LatencyMs,
    /// `error_rate`, binomial.
    ErrorRate,
}

impl RequestMetric {
    /// The metric's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            RequestMetric::LatencyMs => "latency_ms",
            RequestMetric::ErrorRate => "error_rate",
        }
    }

    /// How it is tested.
    pub fn kind(self) -> MetricKind {
        match self {
            RequestMetric::LatencyMs => MetricKind::Continuous,
            RequestMetric::ErrorRate => MetricKind::Binomial,
        }
    }
}

impl Pair<'_> {
    /// Compare on a request-level metric: a guardrail, never primary, without CUPED.
    pub fn request_level(
        self,
        metric: RequestMetric,
        control: Summary,
        treatment: Summary,
    ) -> Comparison {
        compare(ComparisonInput {
            pair: self,
            metric: metric.name(),
            kind: metric.kind(),
            higher_is_better: false,
            control,
            treatment,
            cuped: None,
            primary: false,
            guardrail: true,
        })
    }
}

/// Compare one treatment with control on one metric. The adjusted p-values start equal
/// to the raw one; [`adjust_p_values`] sets them once all comparisons are known.
pub fn compare(input: ComparisonInput<'_>) -> Comparison {
    let ComparisonInput {
        pair,
        control: c,
        treatment: t,
        kind,
        higher_is_better,
        ..
    } = input;
    let conf = pair.confidence;
    let alpha = 1.0 - conf;
    let d = match kind {
        MetricKind::Binomial => {
            stats::two_proportions((c.mean * c.n, c.n), (t.mean * t.n, t.n), conf)
        }
        MetricKind::Continuous => stats::welch(&c, &t, conf),
    };
    let (var_mc, var_mt) = match kind {
        MetricKind::Binomial => (c.mean * (1.0 - c.mean) / c.n, t.mean * (1.0 - t.mean) / t.n),
        MetricKind::Continuous => (c.variance / c.n, t.variance / t.n),
    };
    let (rel, rel_ci) = stats::relative_lift(c.mean, t.mean, var_mc, var_mt, conf);
    let n = c.n + t.n;
    let seq_p = stats::msprt_p_value(d.abs_lift, d.var_diff, n, alpha, pair.tuning);
    let hw = if d.var_diff > 0.0 {
        stats::msprt_half_width(d.var_diff, n, alpha, pair.tuning)
    } else {
        f64::NAN
    };
    let bayes = match kind {
        MetricKind::Binomial => stats::bayes_binomial(
            ((c.mean * c.n).round(), c.n),
            ((t.mean * t.n).round(), t.n),
            higher_is_better,
        ),
        MetricKind::Continuous => stats::bayes_normal(d.abs_lift, d.var_diff, higher_is_better),
    };
    Comparison {
        metric: input.metric.to_string(),
        kind: kind.as_str(),
        variant: pair.variant.to_string(),
        control_variant: pair.control_variant.to_string(),
        control: side(&c),
        treatment: side(&t),
        abs_lift: d.abs_lift,
        abs_ci: [d.abs_ci.0, d.abs_ci.1],
        rel_lift: rel,
        rel_ci: [rel_ci.0, rel_ci.1],
        p_value: d.p_value,
        p_value_holm: d.p_value,
        p_value_bh: d.p_value,
        seq_p_value: seq_p,
        seq_ci: [d.abs_lift - hw, d.abs_lift + hw],
        prob_better: bayes.prob_better,
        expected_loss: Losses {
            control: bayes.loss_control,
            treatment: bayes.loss_treatment,
        },
        cuped: input.cuped,
        higher_is_better,
        primary: input.primary,
        guardrail: input.guardrail,
    }
}

fn side(s: &Summary) -> Side {
    Side {
        n: s.n,
        mean: s.mean,
        variance: s.variance,
    }
}

/// Set the Holm and Benjamini–Hochberg adjusted p-values of `comps`, adjusting over all
/// of them (every treatment and metric of one experiment form one family).
pub fn adjust_p_values(comps: &mut [Comparison]) {
    let ps: Vec<f64> = comps.iter().map(|c| c.p_value).collect();
    let (holm, bh) = (stats::holm(&ps), stats::benjamini_hochberg(&ps));
    for (i, cmp) in comps.iter_mut().enumerate() {
        cmp.p_value_holm = holm[i];
        cmp.p_value_bh = bh[i];
    }
}
