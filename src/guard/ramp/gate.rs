//! The ramp's gate: a pure function of the counts since the step began and the time
//! spent at the step.
//!
//! - `fail`: a guardrail fires on the counts since the step began (the rule of
//!   [`crate::guard::evaluator::evaluate`], so the same test at the same `alpha`);
//! - `pass`: the hold has elapsed, every variant has `min_requests` since the step
//!   began, no guardrail is failing, the SRM p-value is at least [`SRM_ALPHA`], and for
//!   every treatment the always-valid upper bound of the error-rate increase
//!   (treatment − control, the confidence sequence at level 1 − `alpha`) is below
//!   `max_increase`: "no regression" is shown, not merely not detected;
//! - `insufficient_data` otherwise, with the first reason that kept it from passing.

use crate::config::{Guardrails, Ramp};
use crate::guard::evaluator::{evaluate, Verdict, Violation};
use crate::guard::window::WindowStats;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Below this SRM p-value the counts are not trusted (section 4's threshold).
pub const SRM_ALPHA: f64 = 0.001;

/// What the gate concluded at one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateVerdict {
    /// A guardrail fires: roll back.
    Fail,
    /// Advance one step.
    Pass,
    /// Keep waiting.
    InsufficientData,
}

/// Why the gate did not pass (the first unmet condition), or `pass`/`fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateReason {
    /// Every condition holds.
    Pass,
    /// A guardrail fired.
    Guardrail,
    /// The hold has not elapsed.
    Hold,
    /// A variant has fewer than `min_requests` since the step began.
    MinRequests,
    /// The latency rule fails (not yet for `consecutive` checks).
    Latency,
    /// Sample-ratio mismatch: the counts are not trusted.
    Srm,
    /// The upper bound of the error-rate increase is not below `max_increase`.
    UpperBound,
}

/// The gate's numbers at one check, for the worst treatment (the highest upper bound,
/// or the one whose guardrail fired): what `ramp` events and the admin API show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateNumbers {
    /// The verdict.
    pub verdict: GateVerdict,
    /// Why.
    pub reason: GateReason,
    /// The treatment these numbers are about.
    pub variant: String,
    /// Control requests since the step began.
    pub n_control: u64,
    /// Treatment requests since the step began.
    pub n_treatment: u64,
    /// Control error rate since the step began.
    pub control_error_rate: f64,
    /// Treatment error rate since the step began.
    pub treatment_error_rate: f64,
    /// Always-valid upper bound of the error-rate increase (treatment − control).
    pub upper_bound: f64,
    /// The guardrail's `max_increase` the bound is held against.
    pub max_increase: f64,
    /// Always-valid p-value of the error-rate difference.
    pub p_value: f64,
    /// SRM chi-square p-value of the requests per variant since the step began.
    pub srm_p_value: f64,
    /// Seconds spent at the step.
    pub held_seconds: f64,
}

/// The gate's verdict and, on `fail`, the variant and violation to roll back.
#[derive(Debug, Clone, PartialEq)]
pub struct GateReport {
    /// Numbers of the worst treatment.
    pub numbers: GateNumbers,
    /// On `fail`: the variant index and the rule that fired.
    pub failed: Option<(usize, Violation)>,
}

impl GateReport {
    /// The verdict.
    pub fn verdict(&self) -> GateVerdict {
        self.numbers.verdict
    }
}

/// The counts of one experiment since its step began.
#[derive(Debug, Clone, Copy)]
pub struct StepCounts<'a> {
    /// Per variant, in config order: requests, errors and latency since the step began.
    pub stats: &'a [WindowStats],
    /// Per variant, the configured weights.
    pub weights: &'a [f64],
    /// Index of the control.
    pub control: usize,
    /// Variants already served by control (not judged).
    pub rolled_back: &'a [bool],
}

/// Judge the step: `ramp` and `g` are the experiment's, `step` the index (0-based) of
/// the step being held, `held` the time spent at it.
pub fn gate(
    ramp: &Ramp,
    g: &Guardrails,
    step: usize,
    held: Duration,
    counts: StepCounts<'_>,
) -> GateReport {
    let control = &counts.stats[counts.control];
    let requests: Vec<u64> = counts.stats.iter().map(|s| s.n).collect();
    let srm_p_value = crate::stats::srm_p_value(&requests, counts.weights);
    let max_increase = g.error_max_increase.unwrap_or(0.0);
    let hold = ramp.hold.get(step).copied().unwrap_or_default();
    let mut worst: Option<(GateNumbers, Option<(usize, Violation)>)> = None;
    for (vi, t) in counts.stats.iter().enumerate() {
        if vi == counts.control || counts.rolled_back.get(vi).copied().unwrap_or(false) {
            continue;
        }
        let (pc, pt) = (control.error_rate(), t.error_rate());
        let v = pc * (1.0 - pc) / control.n.max(1) as f64 + pt * (1.0 - pt) / t.n.max(1) as f64;
        let n = (control.n + t.n) as f64;
        let (alpha, tuning) = (g.alpha, crate::stats::MSPRT_TUNING);
        let upper_bound = if control.n == 0 || t.n == 0 {
            f64::INFINITY
        } else {
            pt - pc + crate::stats::msprt_half_width(v, n, alpha, tuning)
        };
        let p_value = crate::stats::msprt_p_value(pt - pc, v, n, alpha, tuning);
        // The breaker acts on the sliding window (the guardrail checks); here only
        // the rules over the step's counts.
        let verdict = evaluate(g, control, t, (0, 0), (0, 0), 0);
        let (verdict, reason, failed) = match verdict {
            Verdict::Violation(viol) => {
                (GateVerdict::Fail, GateReason::Guardrail, Some((vi, viol)))
            }
            _ if held < hold => (GateVerdict::InsufficientData, GateReason::Hold, None),
            _ if control.n < ramp.min_requests || t.n < ramp.min_requests => {
                (GateVerdict::InsufficientData, GateReason::MinRequests, None)
            }
            Verdict::InsufficientData => {
                (GateVerdict::InsufficientData, GateReason::MinRequests, None)
            }
            Verdict::Pass {
                latency_strike: true,
            } => (GateVerdict::InsufficientData, GateReason::Latency, None),
            Verdict::Pass { .. } if srm_p_value < SRM_ALPHA => {
                (GateVerdict::InsufficientData, GateReason::Srm, None)
            }
            Verdict::Pass { .. } if !(upper_bound < max_increase) => {
                (GateVerdict::InsufficientData, GateReason::UpperBound, None)
            }
            Verdict::Pass { .. } => (GateVerdict::Pass, GateReason::Pass, None),
        };
        let numbers = GateNumbers {
            verdict,
            reason,
            variant: t_name(vi),
            n_control: control.n,
            n_treatment: t.n,
            control_error_rate: pc,
            treatment_error_rate: pt,
            upper_bound,
            max_increase,
            p_value,
            srm_p_value,
            held_seconds: held.as_secs_f64(),
        };
        let replace = worst.as_ref().is_none_or(|(w, _)| {
            let (a, b) = (rank_of(numbers.verdict), rank_of(w.verdict));
            a > b || (a == b && numbers.upper_bound > w.upper_bound)
        });
        if replace {
            worst = Some((numbers, failed));
        }
    }
    let (numbers, failed) = worst.unwrap_or_else(|| {
        // Every treatment is rolled back: nothing left to judge.
        (
            GateNumbers {
                verdict: GateVerdict::InsufficientData,
                reason: GateReason::Guardrail,
                variant: String::new(),
                n_control: control.n,
                n_treatment: 0,
                control_error_rate: control.error_rate(),
                treatment_error_rate: 0.0,
                upper_bound: f64::INFINITY,
                max_increase,
                p_value: 1.0,
                srm_p_value,
                held_seconds: held.as_secs_f64(),
            },
            None,
        )
    });
    GateReport { numbers, failed }
}

/// Variant names are filled in by the caller ([`GateReport::name_variants`]); the pure
/// gate knows indices only.
fn t_name(vi: usize) -> String {
    vi.to_string()
}

/// Order of badness: fail > insufficient > pass.
fn rank_of(v: GateVerdict) -> u8 {
    match v {
        GateVerdict::Fail => 2,
        GateVerdict::InsufficientData => 1,
        GateVerdict::Pass => 0,
    }
}

impl GateReport {
    /// Replace the variant index in the numbers by its name.
    pub fn name_variants(mut self, names: &[impl AsRef<str>]) -> GateReport {
        if let Some(n) = self
            .numbers
            .variant
            .parse::<usize>()
            .ok()
            .and_then(|i| names.get(i))
        {
            self.numbers.variant = n.as_ref().to_string();
        }
        self
    }
}
