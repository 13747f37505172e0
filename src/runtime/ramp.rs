//! The one place a ramp's transition takes effect, like [`App::decide`] for decisions:
//! persisted by the ramp store, applied to the request path (the buckets served),
//! exported (`abgate_ramp_*`), logged and written as a `ramp` event. The ramp checks
//! (`crate::control::ramps`), the admin API and the fleet all go through
//! [`App::ramp_update`].

use super::{App, Live};
use crate::events::Event;
use crate::guard::ramp::store::served_buckets;
use crate::guard::ramp::{RampAction, RampState, Transition};
use crate::guard::GuardError;
use std::sync::atomic::Ordering::Relaxed;

impl App {
    /// Change the ramp of `exp` with `f` (a [`RampState`] method); a transition it makes
    /// is persisted, applied and announced. Returns the new state and the transition, or
    /// `None` when `f` changed nothing (or `exp` has no ramp).
    pub fn ramp_update(
        &self,
        exp: Live<'_>,
        f: impl FnOnce(&mut RampState) -> Option<Transition>,
    ) -> Result<Option<(RampState, Transition)>, GuardError> {
        let made = self.guard.ramps.update(&exp.config.name, f);
        let made = match made {
            Ok(m) => m,
            Err(e) => {
                // The store changed in memory; the transition holds until a restart.
                tracing::error!(
                    "{e}; the ramp of {} will resume from its saved step after a restart",
                    exp.config.name
                );
                let s = self.guard.ramps.get(&exp.config.name);
                let t = s.as_ref().and_then(|s| s.history.last().cloned());
                if let (Some(s), Some(t)) = (s, t) {
                    self.ramp_applied(exp, &s, &t);
                }
                return Err(e);
            }
        };
        if let Some((s, t)) = &made {
            self.ramp_applied(exp, s, t);
        }
        Ok(made)
    }

    /// Serve, export and announce ramp state `s` of `exp` after transition `t`.
    fn ramp_applied(&self, exp: Live<'_>, s: &RampState, t: &Transition) {
        self.ramp_serve(exp, s);
        self.ramp_announce(t);
        if let Some(fleet) = self.fleet_ramps.get() {
            let _ = fleet.send((exp.config.name.to_string(), s.clone()));
        }
    }

    /// Make the request path serve `s`'s traffic and export it.
    pub fn ramp_serve(&self, exp: Live<'_>, s: &RampState) {
        exp.state()
            .ramp_buckets
            .store(served_buckets(exp.config, s.traffic), Relaxed);
        self.metrics.ramps.set(&exp.config.name, s);
    }

    /// Log transition `t` and write its `ramp` event.
    pub fn ramp_announce(&self, t: &Transition) {
        let gate = t.gate.as_ref().map_or(String::new(), |g| {
            format!(
                " (gate {:?}: {:?}; n {}/{}, errors {:.4}/{:.4}, upper bound {:.4} vs max_increase {}, p {:.3}, srm p {:.3})",
                g.verdict, g.reason, g.n_control, g.n_treatment, g.control_error_rate,
                g.treatment_error_rate, g.upper_bound, g.max_increase, g.p_value, g.srm_p_value
            )
        });
        let line = format!(
            "ramp {}: {} by {:?}, step {} → {}, traffic {}, {}{gate}",
            t.experiment,
            serde_plain(&t.action),
            t.cause,
            t.from_step,
            t.to_step,
            t.traffic,
            t.status.as_str()
        );
        match t.action {
            RampAction::Rollback | RampAction::Hold => tracing::warn!("{line}"),
            _ => tracing::info!("{line}"),
        }
        self.sink.send(Event::Ramp(Box::new(t.clone())));
    }

    /// Announce the transitions made while building snapshots (a ramp's start, a
    /// reload's replan) and export every ramp of the current snapshot.
    pub fn ramp_pending(&self) {
        for t in self.guard.ramps.take_pending() {
            self.ramp_announce(&t);
        }
        let snap = self.snapshot.load();
        for exp in snap.live_experiments() {
            if exp.config.ramp.is_none() {
                continue;
            }
            if let Some(s) = self.guard.ramps.get(&exp.config.name) {
                self.metrics.ramps.set(&exp.config.name, &s);
            }
        }
    }
}

/// The snake_case word of a serde enum value.
fn serde_plain(a: &RampAction) -> String {
    serde_json::to_string(a)
        .unwrap_or_default()
        .trim_matches('"')
        .to_string()
}
