//! `[layer.experiment.guardrails]`: when the evaluator may decide, the thresholds of
//! the error-rate and latency guardrails, and what it does on a violation.

use super::values::dur;
use crate::config::raw::{RawErrorRate, RawGuardrails, RawLatency};
use crate::config::{Diagnostics, GuardAction, Guardrails, LatencyOf};

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
    let latency_of = match g.latency_p99.as_ref().and_then(|l| l.of.as_deref()) {
        None | Some("total") => LatencyOf::Total,
        Some("ttfb") => LatencyOf::Ttfb,
        Some(o) => {
            d.push(
                &format!("{path}.latency_p99.of"),
                format!("`{o}` is not a latency; valid: total (the whole response), ttfb (time to first byte: first token of a stream)"),
            );
            LatencyOf::Total
        }
    };
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
        latency_of,
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

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, parse, MINIMAL};
    use crate::config::GuardAction;
    use std::time::Duration;

    fn guarded(guardrails: &str) -> String {
        format!(
            "{MINIMAL}[[layer]]\nname = \"l\"\n[[layer.experiment]]\nname = \"e\"\n\
             traffic = 1.0\n\
             [[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
             [[layer.experiment.variant]]\nname = \"b\"\nweight = 1\n\
             [layer.experiment.guardrails]\n{guardrails}"
        )
    }

    #[test]
    fn guardrail_defaults_roll_back_after_300_requests() {
        let cfg = parse(&guarded("error_rate = {}\nlatency_p99 = {}\n")).unwrap();
        let g = cfg.layers[0].experiments[0].guardrails.clone().unwrap();
        assert_eq!(g.min_requests, 300);
        assert_eq!(g.check_interval, Duration::from_secs(1));
        assert_eq!(g.window, Duration::from_secs(300));
        assert_eq!(g.alpha, 0.01);
        assert_eq!(g.error_max_increase, Some(0.02));
        assert_eq!(g.latency, Some((1.5, 20.0)));
        assert_eq!(g.consecutive, 3);
        assert_eq!(g.action, GuardAction::Rollback);
    }

    #[test]
    fn guardrails_without_thresholds_have_no_error_or_latency_guardrail() {
        let cfg = parse(&guarded("action = \"alert\"\n")).unwrap();
        let g = cfg.layers[0].experiments[0].guardrails.clone().unwrap();
        assert_eq!((g.error_max_increase, g.latency), (None, None));
        assert_eq!(g.action, GuardAction::Alert);
    }

    #[test]
    fn bad_guardrail_values_are_each_reported_at_their_line() {
        let e = errors(&guarded(
            "min_requests = 0\nalpha = 0.5\nerror_rate = { max_increase = 1.0 }\n\
             latency_p99 = { max_ratio = 0.9, min_increase_ms = -1 }\naction = \"stop\"\n\
             check_interval = \"10s\"\nwindow = \"5s\"\nconsecutive = 1001\n",
        ));
        let p = "layer[0].experiment[0].guardrails";
        let got: Vec<_> = e
            .iter()
            .map(|(l, p, m)| (*l, p.as_str(), m.as_str()))
            .collect();
        let want = [
            (17, "min_requests", "0 must be at least 1"),
            (18, "alpha", "0.5 must be between 0 and 0.5 (e.g. 0.01)"),
            (
                19,
                "error_rate.max_increase",
                "1 must be between 0 and 1 (an absolute increase, e.g. 0.02)",
            ),
            (
                20,
                "latency_p99.max_ratio",
                "0.9 must be at least 1.0 (e.g. 1.5)",
            ),
            (20, "latency_p99.min_increase_ms", "-1 must be zero or more"),
            (
                21,
                "action",
                "`stop` is not an action; valid: rollback, alert",
            ),
            (23, "window", "must be at least `check_interval`"),
            (24, "consecutive", "1001 must be between 1 and 1000"),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(l, k, m)| (*l, format!("{p}.{k}"), *m))
            .collect();
        let want: Vec<_> = want.iter().map(|(l, k, m)| (*l, k.as_str(), *m)).collect();
        assert_eq!(got, want);
    }
}
