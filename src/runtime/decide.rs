//! The one place a decision about a variant takes effect: persisted and applied by the
//! guard store, counted, logged, and written to the event log. The guardrail checks and
//! the admin API both call [`App::decide`].

use super::{App, Live};
use crate::events::Event;
use crate::guard::{Action, Decision, GuardError};

impl App {
    /// Take `decision` about variant `variant` of `exp`.
    ///
    /// The guard store persists it before the live state changes (a rollback that cannot
    /// be persisted is still applied in memory: serving control is the safe side, and the
    /// error says it will not survive a restart). Then `abgate_rollbacks_total` counts a
    /// rollback, the log says what happened and why, and a `guardrail` event records it.
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
        if decision.action.rolls_back() {
            self.metrics
                .rollbacks
                .with_label_values(&[name, &decision.variant, decision.guardrail.as_str()])
                .inc();
        }
        log(exp, &decision);
        if persisted.is_ok() || decision.action.rolls_back() {
            self.sink.send(Event::Guardrail(decision));
        }
        persisted
    }
}

fn log(exp: Live<'_>, d: &Decision) {
    let (name, variant, guardrail) = (&exp.config.name, &d.variant, d.guardrail.as_str());
    match d.action {
        Action::Rollback => tracing::warn!(
            "guardrail {guardrail} violated: experiment {name} variant {variant} rolled back to {} (control {:.4}, treatment {:.4}, p {:?}, n {}/{})",
            exp.config.variants[exp.config.control].name,
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
