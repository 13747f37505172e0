//! The report of `abgate analyze` (and the comparisons of the live report): plain data,
//! serialised as-is by [`super::render::json`] and the admin API, so field names and
//! order are part of the output and do not change.

use std::collections::BTreeMap;

/// Reading statistics.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReadStats {
    /// Files read.
    pub files: usize,
    /// Lines read.
    pub lines: u64,
    /// Lines skipped (torn, invalid JSON, unknown shape).
    pub skipped: u64,
    /// Exposures read.
    pub exposures: u64,
    /// Outcomes read.
    pub outcomes: u64,
    /// Lines skipped because their `event_id` was already read (an event shipped or
    /// collected twice counts once).
    pub duplicates: u64,
}

/// One side of a comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Side {
    /// Observations (units, or requests for request-level metrics).
    pub n: f64,
    /// Mean.
    pub mean: f64,
    /// Sample variance.
    pub variance: f64,
}

/// CUPED part of a comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CupedOut {
    /// θ.
    pub theta: f64,
    /// Share of variance removed.
    pub variance_reduction: f64,
    /// Adjusted absolute lift.
    pub abs_lift: f64,
    /// Its CI.
    pub abs_ci: [f64; 2],
    /// Its p-value.
    pub p_value: f64,
}

/// Expected losses.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Losses {
    /// Of shipping control.
    pub control: f64,
    /// Of shipping the treatment.
    pub treatment: f64,
}

/// One treatment vs control on one metric.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    /// Metric name.
    pub metric: String,
    /// `binomial` or `continuous`.
    pub kind: &'static str,
    /// Treatment variant.
    pub variant: String,
    /// Control variant.
    pub control_variant: String,
    /// Control side.
    pub control: Side,
    /// Treatment side.
    pub treatment: Side,
    /// Treatment − control.
    pub abs_lift: f64,
    /// CI of `abs_lift`.
    pub abs_ci: [f64; 2],
    /// Relative lift.
    pub rel_lift: f64,
    /// Delta-method CI.
    pub rel_ci: [f64; 2],
    /// Two-sided p-value.
    pub p_value: f64,
    /// Holm-adjusted.
    pub p_value_holm: f64,
    /// BH-adjusted.
    pub p_value_bh: f64,
    /// Always-valid p-value.
    pub seq_p_value: f64,
    /// Confidence sequence.
    pub seq_ci: [f64; 2],
    /// P(treatment better).
    pub prob_better: f64,
    /// Expected losses.
    pub expected_loss: Losses,
    /// CUPED, when covariates were given (not for request-level metrics).
    pub cuped: Option<CupedOut>,
    /// Whether higher is better.
    pub higher_is_better: bool,
    /// Whether this is the experiment's primary metric.
    pub primary: bool,
    /// Whether this is a request-level guardrail metric (latency_ms, error_rate).
    pub guardrail: bool,
}

/// A point of the units-over-time series.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimePoint {
    /// Start of the bin (`2026-11-23T02:05`, UTC, with `:SS` for bins under a minute);
    /// bins are a second to a week wide, chosen from the data's span.
    pub time: String,
    /// Cumulative units per variant, in variant order.
    pub units: Vec<u64>,
}

/// One experiment's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExperimentReport {
    /// Name.
    pub experiment: String,
    /// Layer.
    pub layer: String,
    /// Units per variant (mixed units excluded).
    pub units: BTreeMap<String, u64>,
    /// Variant order of the config.
    pub variants: Vec<String>,
    /// Configured weights.
    pub weights: Vec<f64>,
    /// Units seen in more than one variant (excluded).
    pub mixed_units: u64,
    /// SRM chi-square p-value.
    pub srm_p_value: f64,
    /// `ship`, `no_ship`, `keep_running`, `invalid`.
    pub verdict: &'static str,
    /// Why.
    pub reason: String,
    /// Comparisons.
    pub comparisons: Vec<Comparison>,
    /// Cumulative units per variant by time of first exposure (mixed units excluded).
    pub units_over_time: Vec<TimePoint>,
    /// Per variant with shadow copies in the logs: what they found (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<super::shadow::ShadowReport>,
    /// A bandit experiment's section (the direct analysis only; absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandit: Option<super::bandit::BanditReport>,
}

/// The whole report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Per experiment.
    pub experiments: Vec<ExperimentReport>,
    /// What was read.
    pub read: ReadStats,
    /// Confidence level used.
    pub confidence: f64,
}
