//! Guardrail checks: every `check_interval`, each treatment against its control (the
//! rule is [`crate::guard::evaluator::evaluate`]), then a violation becomes a
//! [`Decision`] taken through [`App::decide`]. With `[fleet] share_windows` the windows
//! judged are the sum of this sidecar's and the fresh ones of the others.

use crate::config::{GuardAction, Guardrails};
use crate::guard::evaluator::{evaluate, Verdict, Violation};
use crate::guard::window::WindowStats;
use crate::guard::{Action, Decision, GuardStatus, GuardrailKind, VariantState};
use crate::runtime::{App, Live, Snapshot};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime};

/// Check every experiment whose interval has elapsed at `now`.
pub fn check_due(app: &App, snap: &Snapshot, last: &mut HashMap<String, Instant>, now: Instant) {
    for exp in snap.live_experiments() {
        let Some(g) = &exp.config.guardrails else {
            continue;
        };
        let due = last
            .get(&*exp.config.name)
            .is_none_or(|t| now.duration_since(*t) >= g.check_interval);
        if !due {
            continue;
        }
        last.insert(exp.config.name.to_string(), now);
        if !exp.state().paused.load(Relaxed) {
            check(app, exp, g);
        }
    }
}

/// Check each treatment of `exp` that is not rolled back against its control.
fn check(app: &App, exp: Live<'_>, g: &Guardrails) {
    let now_ms = app.now_ms();
    let state = exp.state();
    let control = &state.variants[exp.config.control];
    let (cstats, crecent) = fleet_window(app, exp, g, control, now_ms);
    for (vi, v) in state.variants.iter().enumerate() {
        if vi == exp.config.control || v.rolled_back.load(Relaxed) {
            continue;
        }
        let (tstats, trecent) = fleet_window(app, exp, g, v, now_ms);
        let strikes = v.latency_strikes.load(Relaxed);
        match evaluate(g, &cstats, &tstats, crecent, trecent, strikes) {
            Verdict::InsufficientData => v.set_status(GuardStatus::InsufficientData),
            Verdict::Pass { latency_strike } => {
                v.set_status(GuardStatus::Pass);
                if latency_strike {
                    v.latency_strikes.fetch_add(1, Relaxed);
                } else {
                    v.latency_strikes.store(0, Relaxed);
                }
                for kind in GuardrailKind::CHECKED {
                    violation_gauge(app, exp, v, kind, 0);
                }
            }
            Verdict::Violation(viol) => {
                // An alert stays raised while the violation lasts: announce it once.
                if g.action == GuardAction::Alert && v.status() == GuardStatus::Fail {
                    continue;
                }
                violation_gauge(app, exp, v, viol.guardrail, 1);
                let decision = decision(exp, v, g.action, &viol, &cstats, &tstats);
                // A store error is logged by `decide`; the rollback holds in memory.
                let _ = app.decide(exp, vi, decision);
            }
        }
    }
}

/// The window the rule judges for variant `v`: this sidecar's, plus with
/// `share_windows` the other sidecars' windows received within two check intervals
/// that start after the last resume known here. A cut-off sidecar receives none, so it
/// judges its own traffic alone.
fn fleet_window(
    app: &App,
    exp: Live<'_>,
    g: &Guardrails,
    v: &VariantState,
    now_ms: u64,
) -> (WindowStats, (u64, u64)) {
    let (mut stats, mut recent) = (v.window.stats(now_ms), v.window.recent());
    if app.fleet.share_windows.load(Relaxed) {
        let state = exp.state();
        let peers = app.fleet.peer_windows(
            &exp.config.name,
            &v.name,
            g.check_interval * 2,
            state.resumed_unix_ms.load(Relaxed),
        );
        stats.add(&peers.stats);
        recent = (recent.0 + peers.recent.0, recent.1 + peers.recent.1);
    }
    (stats, recent)
}

fn violation_gauge(app: &App, exp: Live<'_>, v: &VariantState, kind: GuardrailKind, val: i64) {
    app.metrics
        .guardrail_violation
        .with_label_values(&[&exp.config.name, &v.name, kind.as_str()])
        .set(val);
}

fn decision(
    exp: Live<'_>,
    v: &VariantState,
    action: GuardAction,
    viol: &Violation,
    control: &WindowStats,
    treatment: &WindowStats,
) -> Decision {
    Decision {
        ts: SystemTime::now(),
        experiment: exp.config.name.clone(),
        variant: v.name.clone(),
        action: match action {
            GuardAction::Rollback => Action::Rollback,
            GuardAction::Alert => Action::Alert,
        },
        guardrail: viol.guardrail,
        control: viol.control,
        treatment: viol.treatment,
        p_value: viol.p_value,
        n_control: control.n,
        n_treatment: treatment.n,
    }
}
