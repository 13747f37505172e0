//! The guardrail decision rule, as a pure function of two windows.
//!
//! For each treatment against the control of the same experiment, in the same window:
//! - nothing is decided before both have `min_requests` (→ `InsufficientData`), except:
//! - **breaker**: more than half of the treatment's last 100 requests failed while
//!   control's last 100 had at most 20% errors → violation at once;
//! - **error rate**: always-valid mSPRT p-value of (p_t − p_c) below `alpha` **and**
//!   p_t − p_c above `max_increase`;
//! - **latency**: treatment p99 above `max_ratio` × control p99 **and** above control by
//!   `min_increase_ms` (p99 only once both have ≥ 1,000 requests, so the quantile rests on
//!   at least 10 samples above it; p50 with the same rule from `min_requests`), for
//!   `consecutive` checks in a row.

use super::decision::GuardrailKind;
use super::window::WindowStats;
use crate::config::Guardrails;

/// Requests needed before p99 is trusted.
pub const P99_MIN_SAMPLES: u64 = 1000;

/// What one check concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough data.
    InsufficientData,
    /// Within bounds.
    Pass {
        /// Whether the latency rule failed this check (counts toward `consecutive`).
        latency_strike: bool,
    },
    /// Violated.
    Violation(Violation),
}

/// The numbers behind a violation.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// The rule that fired.
    pub guardrail: GuardrailKind,
    /// Control statistic.
    pub control: f64,
    /// Treatment statistic.
    pub treatment: f64,
    /// Always-valid p-value (error rate).
    pub p_value: Option<f64>,
}

/// Evaluate one treatment against control. `strikes` is the number of consecutive
/// earlier checks whose latency rule failed.
pub fn evaluate(
    g: &Guardrails,
    control: &WindowStats,
    treatment: &WindowStats,
    recent_control: (u64, u64),
    recent_treatment: (u64, u64),
    strikes: u32,
) -> Verdict {
    let (tn, te) = recent_treatment;
    let (cn, ce) = recent_control;
    if tn >= 100 && te * 2 > tn && (cn < 100 || ce * 5 <= cn) {
        return Verdict::Violation(Violation {
            guardrail: GuardrailKind::Breaker,
            control: if cn > 0 { ce as f64 / cn as f64 } else { 0.0 },
            treatment: te as f64 / tn as f64,
            p_value: None,
        });
    }
    if control.n < g.min_requests || treatment.n < g.min_requests {
        return Verdict::InsufficientData;
    }
    if let Some(max_inc) = g.error_max_increase {
        let (pc, pt) = (control.error_rate(), treatment.error_rate());
        let v = pc * (1.0 - pc) / control.n as f64 + pt * (1.0 - pt) / treatment.n as f64;
        let p = crate::stats::msprt_p_value(
            pt - pc,
            v,
            (control.n + treatment.n) as f64,
            g.alpha,
            crate::stats::MSPRT_TUNING,
        );
        if p < g.alpha && pt - pc > max_inc {
            return Verdict::Violation(Violation {
                guardrail: GuardrailKind::ErrorRate,
                control: pc,
                treatment: pt,
                p_value: Some(p),
            });
        }
    }
    let mut latency_strike = None;
    if let Some((ratio, min_inc)) = g.latency {
        let check = |q: f64| -> Option<(f64, f64)> {
            let c = control.quantile_ms(q)?;
            let t = treatment.quantile_ms(q)?;
            (t > ratio * c && t - c > min_inc).then_some((c, t))
        };
        let p99 = if control.n >= P99_MIN_SAMPLES && treatment.n >= P99_MIN_SAMPLES {
            check(0.99).map(|x| (GuardrailKind::LatencyP99, x))
        } else {
            None
        };
        latency_strike = p99.or_else(|| check(0.5).map(|x| (GuardrailKind::LatencyP50, x)));
    }
    match latency_strike {
        Some((name, (c, t))) if strikes + 1 >= g.consecutive => Verdict::Violation(Violation {
            guardrail: name,
            control: c,
            treatment: t,
            p_value: None,
        }),
        Some(_) => Verdict::Pass {
            latency_strike: true,
        },
        None => Verdict::Pass {
            latency_strike: false,
        },
    }
}
