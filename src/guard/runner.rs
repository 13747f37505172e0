//! The evaluator's loop body: every `check_interval`, each treatment against control,
//! then the action (rollback or alert), its event, its metrics and its persisted record.

use super::evaluator::{evaluate, Verdict};
use super::{Decision, GuardStatus};
use crate::config::GuardAction;
use crate::events::{Event, GuardrailEvent};
use crate::proxy::{App, Snapshot};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime};

/// Check every experiment whose interval has elapsed.
pub fn check_all(app: &App, snap: &Snapshot, last: &mut HashMap<String, Instant>, now: Instant) {
    let now_ms = app.now_ms();
    for (li, layer) in snap.config.layers.iter().enumerate() {
        for (ei, exp) in layer.experiments.iter().enumerate() {
            let Some(g) = &exp.guardrails else { continue };
            let due = last
                .get(&*exp.name)
                .is_none_or(|t| now.duration_since(*t) >= g.check_interval);
            if !due {
                continue;
            }
            last.insert(exp.name.to_string(), now);
            let rt = &snap.experiments[li][ei];
            let state = &rt.state;
            if state.paused.load(Relaxed) {
                continue;
            }
            let control = &state.variants[exp.control];
            let cstats = control.window.stats(now_ms);
            let crecent = control.window.recent();
            for (vi, v) in state.variants.iter().enumerate() {
                if vi == exp.control || v.rolled_back.load(Relaxed) {
                    continue;
                }
                let tstats = v.window.stats(now_ms);
                let strikes = v.latency_strikes.load(Relaxed);
                let verdict = evaluate(g, &cstats, &tstats, crecent, v.window.recent(), strikes);
                let gauge = |name: &str, val: i64| {
                    app.metrics
                        .guardrail_violation
                        .with_label_values(&[&exp.name, &v.name, name])
                        .set(val)
                };
                match verdict {
                    Verdict::InsufficientData => v.set_status(GuardStatus::InsufficientData),
                    Verdict::Pass { latency_strike } => {
                        v.set_status(GuardStatus::Pass);
                        if latency_strike {
                            v.latency_strikes.fetch_add(1, Relaxed);
                        } else {
                            v.latency_strikes.store(0, Relaxed);
                        }
                        for name in ["error_rate", "latency_p99", "latency_p50", "breaker"] {
                            gauge(name, 0);
                        }
                    }
                    Verdict::Violation(viol) => {
                        let action = g.action;
                        // An alert stays raised while the violation lasts: announce it once.
                        if action == GuardAction::Alert && v.status() == GuardStatus::Fail {
                            continue;
                        }
                        let decision = Decision {
                            ts: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
                            action: match action {
                                GuardAction::Rollback => "rollback".into(),
                                GuardAction::Alert => "alert".into(),
                            },
                            guardrail: viol.guardrail.into(),
                            control: viol.control,
                            treatment: viol.treatment,
                            p_value: viol.p_value,
                            n_control: cstats.n,
                            n_treatment: tstats.n,
                        };
                        gauge(viol.guardrail, 1);
                        v.set_status(GuardStatus::Fail);
                        if action == GuardAction::Rollback {
                            if let Err(e) = app.guard.rollback(state, vi, decision.clone()) {
                                // Roll back in memory anyway: serving control is the safe side.
                                tracing::error!(
                                    "{e}; the rollback is applied but will not survive a restart"
                                );
                                v.rolled_back.store(true, Relaxed);
                            }
                            app.metrics
                                .rollbacks
                                .with_label_values(&[&exp.name, &v.name, viol.guardrail])
                                .inc();
                            tracing::warn!(
                                "guardrail {} violated: experiment {} variant {} rolled back to {} (control {:.4}, treatment {:.4}, p {:?}, n {}/{})",
                                viol.guardrail, exp.name, v.name, exp.variants[exp.control].name,
                                viol.control, viol.treatment, viol.p_value, cstats.n, tstats.n
                            );
                        } else {
                            *v.last_decision.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(decision.clone());
                            tracing::warn!(
                                "guardrail {} violated (alert only): experiment {} variant {} (control {:.4}, treatment {:.4})",
                                viol.guardrail, exp.name, v.name, viol.control, viol.treatment
                            );
                        }
                        app.sink.send(Event::Guardrail(GuardrailEvent {
                            ts: SystemTime::now(),
                            experiment: exp.name.clone(),
                            variant: v.name.clone(),
                            action: match action {
                                GuardAction::Rollback => "rollback",
                                GuardAction::Alert => "alert",
                            },
                            guardrail: viol.guardrail,
                            control: viol.control,
                            treatment: viol.treatment,
                            p_value: viol.p_value,
                            n_control: cstats.n,
                            n_treatment: tstats.n,
                        }));
                    }
                }
            }
        }
    }
}
