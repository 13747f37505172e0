//! The one place a decision about a variant takes effect: persisted and applied by the
//! guard store, counted, logged, and written to the event log. The guardrail checks and
//! the admin API both call [`App::decide`]; the fleet's decision store calls
//! [`App::announce`] for a decision this sidecar took and [`App::apply_remote`] for one
//! another sidecar took.

use super::{App, Live};
use crate::events::Event;
use crate::guard::{Action, Decision, GuardError};

impl App {
    /// Take `decision` about variant `variant` of `exp`.
    ///
    /// The guard store persists it before the live state changes (a rollback that cannot
    /// be persisted is still applied in memory: serving control is the safe side, and the
    /// error says it will not survive a restart). Then it is announced ([`App::announce`]):
    /// at once without a fleet; in a fleet, the decision store shares it first and
    /// announces it only if this sidecar's decision is the one the fleet keeps, so a
    /// decision taken by several sidecars at once is announced once.
    /// Returns the store's error, if persisting failed.
    pub fn decide(
        &self,
        exp: Live<'_>,
        variant: usize,
        decision: Decision,
    ) -> Result<(), GuardError> {
        let name = &exp.config.name;
        let persisted = self.guard.apply(exp.state(), variant, &decision);
        if let Err(e) = &persisted {
            if decision.action.rolls_back() {
                tracing::error!("{e}; the rollback is applied but will not survive a restart");
            } else {
                tracing::error!(
                    "{e}; experiment {name}: {} not applied",
                    decision.action.as_str()
                );
            }
        }
        if persisted.is_ok() || decision.action.rolls_back() {
            let shared = match (decision.action, self.fleet_decisions.get()) {
                (Action::Alert, _) | (_, None) => Some(decision),
                (_, Some(fleet)) => fleet.send(decision).err().map(|e| e.0),
            };
            if let Some(d) = shared {
                self.announce(&d);
            }
        }
        persisted
    }

    /// Announce a decision this sidecar took: `abgate_rollbacks_total` counts a rollback,
    /// the log says what happened and why, and a `guardrail` event records it.
    pub fn announce(&self, decision: &Decision) {
        if decision.action.rolls_back() {
            self.metrics
                .rollbacks
                .with_label_values(&[
                    &decision.experiment,
                    &decision.variant,
                    decision.guardrail.as_str(),
                ])
                .inc();
        }
        let snap = self.snapshot.load();
        let control = snap
            .find(&decision.experiment)
            .map(|e| e.config.variants[e.config.control].name.clone());
        log(control.as_deref().unwrap_or("control"), decision);
        self.sink.send(Event::Guardrail(decision.clone()));
    }

    /// Apply a decision another sidecar of the fleet took (`from`): the same store and
    /// live state as [`App::decide`], logged at INFO and counted in
    /// `abgate_fleet_decisions_applied_total`, but no `guardrail` event (its taker wrote
    /// that) and no `abgate_rollbacks_total`. Returns false when this config has no such
    /// experiment or variant (a sidecar on another config version).
    pub fn apply_remote(&self, decision: &Decision, from: &str) -> Result<bool, GuardError> {
        let snap = self.snapshot.load();
        let Some(exp) = snap.find(&decision.experiment) else {
            return Ok(false);
        };
        let Some(i) = exp
            .config
            .variants
            .iter()
            .position(|v| v.name == decision.variant)
        else {
            return Ok(false);
        };
        let applied = self.guard.apply(exp.state(), i, decision);
        tracing::info!(
            "fleet: experiment {} variant {}: {} ({}) taken by {from}, applied here",
            decision.experiment,
            decision.variant,
            decision.action.as_str(),
            decision.guardrail.as_str()
        );
        self.metrics
            .fleet_decisions_applied
            .with_label_values(&[decision.action.as_str()])
            .inc();
        applied.map(|()| true)
    }
}

fn log(control: &str, d: &Decision) {
    let (name, variant, guardrail) = (&d.experiment, &d.variant, d.guardrail.as_str());
    match d.action {
        Action::Rollback => tracing::warn!(
            "guardrail {guardrail} violated: experiment {name} variant {variant} rolled back to {control} (control {:.4}, treatment {:.4}, p {:?}, n {}/{})",
            d.control, d.treatment, d.p_value, d.n_control, d.n_treatment
        ),
        Action::Alert => tracing::warn!(
            "guardrail {guardrail} violated (alert only): experiment {name} variant {variant} (control {:.4}, treatment {:.4})",
            d.control, d.treatment
        ),
        Action::ManualRollback | Action::Pause | Action::Resume => tracing::info!(
            "admin: experiment {name} variant {variant}: {}",
            d.action.as_str()
        ),
    }
}
