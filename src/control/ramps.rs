//! Ramp checks: every `check_interval`, each ramped experiment's gate
//! ([`crate::guard::ramp::gate`]) on the counts since its step began, and the
//! transition it calls for taken through [`App::ramp_update`]; a rollback is a decision
//! taken through [`App::decide`] like a guardrail's.
//!
//! A rollback decided elsewhere (the guardrail checks on the window, an operator,
//! another sidecar) stops the ramp; a resume after it restarts the step.

use crate::config::{GuardAction, Guardrails, Ramp};
use crate::guard::evaluator::Violation;
use crate::guard::ramp::totals::since;
use crate::guard::ramp::{gate, RampAction, RampCause, RampStatus, StepCounts, Transition};
use crate::guard::window::WindowStats;
use crate::guard::{unix_ms, Action, Decision, GuardrailKind};
use crate::runtime::{App, Live, Snapshot};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime};

/// What the checks remember between ticks.
#[derive(Default)]
pub struct RampChecks {
    /// Experiment → when it was last checked.
    last: HashMap<String, Instant>,
    /// Experiment → the step's start and the variants' totals then.
    base: HashMap<String, (SystemTime, Vec<WindowStats>)>,
}

/// Check every ramped experiment whose interval has elapsed at `now`.
pub fn check_due(app: &App, snap: &Snapshot, checks: &mut RampChecks, now: Instant) {
    app.ramp_pending();
    for exp in snap.live_experiments() {
        let (Some(ramp), Some(g)) = (&exp.config.ramp, &exp.config.guardrails) else {
            continue;
        };
        let name = &*exp.config.name;
        let due = checks
            .last
            .get(name)
            .is_none_or(|t| now.duration_since(*t) >= g.check_interval);
        if !due {
            continue;
        }
        checks.last.insert(name.to_string(), now);
        check(app, exp, ramp, g, checks, SystemTime::now());
    }
}

/// One check of the ramp of `exp` at `now`.
fn check(
    app: &App,
    exp: Live<'_>,
    ramp: &Ramp,
    g: &Guardrails,
    checks: &mut RampChecks,
    now: SystemTime,
) {
    let Some(s) = app.guard.ramps.get(&exp.config.name) else {
        return;
    };
    let state = exp.state();
    if state.paused.load(Relaxed) {
        return;
    }
    let rolled_back: Vec<bool> = state
        .variants
        .iter()
        .map(|v| v.rolled_back.load(Relaxed))
        .collect();
    let any_rolled_back = rolled_back.iter().any(|r| *r);
    let name = &exp.config.name;
    match s.status {
        RampStatus::Running | RampStatus::Holding if any_rolled_back => {
            let _ = app.ramp_update(exp, |s| s.rolled_back(name, now));
            return;
        }
        RampStatus::RolledBack => {
            let stopped = s.history.last().map_or(0, |t| unix_ms(t.ts));
            if !any_rolled_back && state.resumed_unix_ms.load(Relaxed) > stopped {
                let _ = app.ramp_update(exp, |s| s.restart(name, now));
            }
            return;
        }
        RampStatus::Completed => return,
        _ => {}
    }
    let totals: Vec<WindowStats> = state
        .variants
        .iter()
        .map(|v| v.totals.as_ref().map(|t| t.stats()).unwrap_or_default())
        .collect();
    let base = checks
        .base
        .entry(name.to_string())
        .or_insert_with(|| (s.step_began, totals.clone()));
    if base.0 != s.step_began {
        *base = (s.step_began, totals.clone());
    }
    let stats: Vec<WindowStats> = totals
        .iter()
        .zip(&base.1)
        .map(|(t, b)| since(t, b))
        .collect();
    let weights: Vec<f64> = exp.config.variants.iter().map(|v| v.weight).collect();
    let counts = StepCounts {
        stats: &stats,
        weights: &weights,
        control: exp.config.control,
        rolled_back: &rolled_back,
    };
    let names: Vec<&str> = exp.config.variants.iter().map(|v| &*v.name).collect();
    let report = gate(ramp, g, s.index(ramp), s.held(now), counts).name_variants(&names);
    let made = app.ramp_update(exp, |s| s.on_gate(name, ramp, &report, now));
    let Ok(Some((after, t))) = made else {
        return;
    };
    if t.action == RampAction::Advance {
        checks
            .base
            .insert(name.to_string(), (after.step_began, totals));
    }
    if t.action == RampAction::Rollback {
        roll_back(app, exp, g, &t, report.failed.as_ref(), &stats);
    }
}

/// Take the rollback the ramp's transition `t` calls for: of the variant whose
/// guardrail fired (`failed`), or of every treatment after `max_wait`.
fn roll_back(
    app: &App,
    exp: Live<'_>,
    g: &Guardrails,
    t: &Transition,
    failed: Option<&(usize, Violation)>,
    stats: &[WindowStats],
) {
    let c = exp.config.control;
    let decision = |vi: usize, guardrail, control, treatment, p_value| Decision {
        ts: t.ts,
        experiment: exp.config.name.clone(),
        variant: exp.config.variants[vi].name.clone(),
        action: match (t.cause, g.action) {
            (RampCause::Gate, GuardAction::Alert) => Action::Alert,
            _ => Action::Rollback,
        },
        guardrail,
        control,
        treatment,
        p_value,
        n_control: stats[c].n,
        n_treatment: stats[vi].n,
    };
    match (t.cause, failed) {
        (RampCause::Gate, Some((vi, v))) => {
            let d = decision(*vi, v.guardrail, v.control, v.treatment, v.p_value);
            // A store error is logged by `decide`; the rollback holds in memory.
            let _ = app.decide(exp, *vi, d);
        }
        _ => {
            for vi in (0..exp.config.variants.len()).filter(|vi| *vi != c) {
                let (ce, te) = (stats[c].error_rate(), stats[vi].error_rate());
                let d = decision(vi, GuardrailKind::RampMaxWait, ce, te, None);
                let _ = app.decide(exp, vi, d);
            }
        }
    }
}
