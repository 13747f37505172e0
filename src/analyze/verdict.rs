//! The verdict of one experiment and its wording, from its comparisons. First match wins:
//!
//! 1. `invalid` — sample ratio mismatch (SRM p < 0.001): no lift can be trusted;
//! 2. `keep_running` — no primary metric configured: nothing to decide on;
//! 3. `ship` — the treatment with the largest relative lift among those significantly
//!    better on the primary metric (raw p < α) that regressed no guardrail metric
//!    (significantly worse at Holm-adjusted p < α);
//! 4. `no_ship` — a treatment wins on the primary metric but every winner regressed a
//!    guardrail (the best one is named);
//! 5. `no_ship` — every treatment is significantly worse on the primary metric;
//! 6. `keep_running` — otherwise: not significant yet.
//!
//! The reason always names the numbers behind the verdict.

use super::report::Comparison;
use crate::config::Experiment;

/// SRM p-value below which the experiment is `invalid` (and the outputs flag a mismatch).
pub(super) const SRM_THRESHOLD: f64 = 0.001;

/// What the verdict is decided on.
pub(super) struct Evidence<'a> {
    /// The experiment (variant names, primary metric).
    pub experiment: &'a Experiment,
    /// Units per variant, in variant order.
    pub units: &'a [u64],
    /// SRM p-value.
    pub srm: f64,
    /// Units excluded for being seen in two variants.
    pub mixed: u64,
    /// Every comparison, adjusted p-values set.
    pub comparisons: &'a [Comparison],
    /// Significance level.
    pub alpha: f64,
}

/// The verdict (`ship`, `no_ship`, `keep_running`, `invalid`) and why.
pub(super) fn verdict(ev: &Evidence) -> (&'static str, String) {
    if ev.srm < SRM_THRESHOLD {
        return ("invalid", srm_reason(ev));
    }
    let Some(primary) = ev.experiment.primary_metric.as_deref() else {
        return (
            "keep_running",
            "no primary_metric configured: nothing to decide on".into(),
        );
    };
    let mixed = ev.mixed;
    let mixed_note = if mixed > 0 {
        format!("; {mixed} units seen in two variants were excluded")
    } else {
        String::new()
    };
    if let Some(v) = decide_on_winners(ev, primary, &mixed_note) {
        return v;
    }
    let alpha = ev.alpha;
    let prim: Vec<&Comparison> = ev
        .comparisons
        .iter()
        .filter(|c| c.metric == primary)
        .collect();
    let r: Vec<String> = prim
        .iter()
        .map(|c| format!("{}: {}", c.variant, fmt_lift(c)))
        .collect();
    if !prim.is_empty() && prim.iter().all(|c| regressed(c, alpha)) {
        return (
            "no_ship",
            format!(
                "every treatment is worse on the primary metric: {}{mixed_note}",
                r.join("; ")
            ),
        );
    }
    (
        "keep_running",
        format!(
            "{}: not significant at α={alpha:.3}{mixed_note}",
            if r.is_empty() {
                "no data".to_string()
            } else {
                r.join("; ")
            }
        ),
    )
}

fn srm_reason(ev: &Evidence) -> String {
    let list: Vec<String> = ev
        .experiment
        .variants
        .iter()
        .zip(ev.units)
        .map(|(v, n)| format!("{}={n}", v.name))
        .collect();
    format!(
        "sample ratio mismatch (p={}): units {} do not match weights; find the cause (targeting, redirects, bots, a rollback) before reading any lift",
        super::render::p(ev.srm),
        list.join(", ")
    )
}

/// `ship` the best winner on the primary metric without a guardrail regression, or
/// `no_ship` when every winner regressed one; `None` without a winner.
fn decide_on_winners(
    ev: &Evidence,
    primary: &str,
    mixed_note: &str,
) -> Option<(&'static str, String)> {
    let alpha = ev.alpha;
    let mut winners: Vec<&Comparison> = ev
        .comparisons
        .iter()
        .filter(|c| c.metric == primary && won(c, alpha))
        .collect();
    winners.sort_by(|a, b| b.rel_lift.total_cmp(&a.rel_lift));
    let regressions = |w: &Comparison| -> Vec<&Comparison> {
        ev.comparisons
            .iter()
            .filter(|c| c.variant == w.variant && c.guardrail && regressed(c, alpha))
            .collect()
    };
    if let Some(w) = winners.iter().find(|w| regressions(w).is_empty()) {
        return Some((
            "ship",
            format!(
                "{}: {}, no guardrail regressed{mixed_note}",
                w.variant,
                fmt_lift(w)
            ),
        ));
    }
    let w = winners.first()?;
    let r: Vec<String> = regressions(w).into_iter().map(fmt_lift).collect();
    Some((
        "no_ship",
        format!(
            "{}: {} but {} regressed{mixed_note}",
            w.variant,
            fmt_lift(w),
            r.join(", ")
        ),
    ))
}

/// Significantly worse, on the Holm-adjusted p-value (the rule for a guardrail
/// regression, and for a treatment worse on the primary metric).
fn regressed(c: &Comparison, alpha: f64) -> bool {
    let worse = if c.higher_is_better {
        c.abs_lift < 0.0
    } else {
        c.abs_lift > 0.0
    };
    worse && c.p_value_holm < alpha
}

/// Significantly better, on the raw p-value (the rule for a win on the primary metric).
fn won(c: &Comparison, alpha: f64) -> bool {
    let better = if c.higher_is_better {
        c.abs_lift > 0.0
    } else {
        c.abs_lift < 0.0
    };
    better && c.p_value < alpha
}

/// A p-value in a reason: 3 decimals, or the report's notation below 0.001 (`2.9e-7`,
/// `< 1e-300`) rather than a `0.000` that reads as certainty.
fn fmt_p(p: f64) -> String {
    if p >= 0.001 {
        format!("{p:.3}")
    } else {
        super::render::p(p)
    }
}

/// `metric +x.x% (p=…)`, or the absolute lift when the relative one is undefined.
fn fmt_lift(c: &Comparison) -> String {
    if c.rel_lift.is_finite() {
        format!(
            "{} {:+.1}% (p={})",
            c.metric,
            100.0 * c.rel_lift,
            fmt_p(c.p_value)
        )
    } else {
        format!("{} {:+.4} (p={})", c.metric, c.abs_lift, fmt_p(c.p_value))
    }
}
