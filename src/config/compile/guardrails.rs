//! `[layer.experiment.guardrails]`: when the evaluator may decide, the thresholds of
//! the error-rate and latency guardrails, and what it does on a violation.

use super::values::dur;
use crate::config::raw::{RawErrorRate, RawGuardrails, RawLatency};
use crate::config::{Diagnostics, GuardAction, Guardrails};

/// The guardrails at `path`, with defaults for what is left out.
pub(super) fn compile_guardrails(d: &mut Diagnostics, path: &str, g: &RawGuardrails) -> Guardrails {
    let min_requests = match g.min_requests {
        None => 300,
        Some(n) if n >= 1 => n as u64,
        Some(n) => {
            d.push(
                &format!("{path}.min_requests"),
                format!("{n} must be at least 1"),
            );
            1
        }
    };
    let alpha = match g.alpha {
        None => 0.01,
        Some(a) if a > 0.0 && a < 0.5 => a,
        Some(a) => {
            d.push(
                &format!("{path}.alpha"),
                format!("{a} must be between 0 and 0.5 (e.g. 0.01)"),
            );
            0.01
        }
    };
    let error_max_increase = g.error_rate.as_ref().map(|e| error_rate(d, path, e));
    let latency = g.latency_p99.as_ref().map(|l| latency(d, path, l));
    let action = action(d, path, g.action.as_deref());
    let check_interval = dur(
        d,
        &format!("{path}.check_interval"),
        &g.check_interval,
        "1s",
    );
    let window = dur(d, &format!("{path}.window"), &g.window, "5m");
    if window < check_interval {
        d.push(
            &format!("{path}.window"),
            "must be at least `check_interval`",
        );
    }
    let consecutive = match g.consecutive {
        None => 3,
        Some(c) if (1..=1000).contains(&c) => c as u32,
        Some(c) => {
            d.push(
                &format!("{path}.consecutive"),
                format!("{c} must be between 1 and 1000"),
            );
            3
        }
    };
    Guardrails {
        min_requests,
        check_interval,
        window,
        alpha,
        error_max_increase,
        latency,
        consecutive,
        action,
    }
}

/// The largest tolerated absolute increase of the error rate over control.
fn error_rate(d: &mut Diagnostics, path: &str, e: &RawErrorRate) -> f64 {
    match e.max_increase {
        Some(x) if (0.0..1.0).contains(&x) => x,
        Some(x) => {
            d.push(
                &format!("{path}.error_rate.max_increase"),
                format!("{x} must be between 0 and 1 (an absolute increase, e.g. 0.02)"),
            );
            0.02
        }
        None => 0.02,
    }
}

/// (largest tolerated p99 ratio over control, smallest increase in ms that counts).
fn latency(d: &mut Diagnostics, path: &str, l: &RawLatency) -> (f64, f64) {
    let ratio = match l.max_ratio {
        Some(r) if r >= 1.0 && r.is_finite() => r,
        Some(r) => {
            d.push(
                &format!("{path}.latency_p99.max_ratio"),
                format!("{r} must be at least 1.0 (e.g. 1.5)"),
            );
            1.5
        }
        None => 1.5,
    };
    let min_increase_ms = match l.min_increase_ms {
        Some(m) if m >= 0.0 && m.is_finite() => m,
        Some(m) => {
            d.push(
                &format!("{path}.latency_p99.min_increase_ms"),
                format!("{m} must be zero or more"),
            );
            20.0
        }
        None => 20.0,
    };
    (ratio, min_increase_ms)
}

/// `rollback` (the default) or `alert`.
fn action(d: &mut Diagnostics, path: &str, a: Option<&str>) -> GuardAction {
    match a {
        None | Some("rollback") => GuardAction::Rollback,
        Some("alert") => GuardAction::Alert,
        Some(a) => {
            d.push(
                &format!("{path}.action"),
                format!("`{a}` is not an action; valid: rollback, alert"),
            );
            GuardAction::Alert
        }
    }
}
