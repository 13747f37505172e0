//! A compiled ramp: the plan an experiment's traffic follows, step by step, behind the
//! guardrail gate (the state it is at lives in `crate::guard::ramp`).

use std::time::Duration;

/// What a ramp does after `max_wait` at a step with too little data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInsufficient {
    /// Stay at the step (status `holding`) until an operator advances it.
    Hold,
    /// Roll the treatments back to control.
    Rollback,
    /// Advance one step anyway.
    Advance,
}

impl OnInsufficient {
    /// The word used in the config and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            OnInsufficient::Hold => "hold",
            OnInsufficient::Rollback => "rollback",
            OnInsufficient::Advance => "advance",
        }
    }
}

/// `[layer.experiment.ramp]`, validated: steps strictly increasing in (0, 1], one hold
/// per step.
#[derive(Debug, Clone, PartialEq)]
pub struct Ramp {
    /// The experiment's traffic (share of its layer) at each step; the last is the target
    /// and the experiment's reserved bucket range.
    pub steps: Vec<f64>,
    /// Least time at each step (same length as `steps`).
    pub hold: Vec<Duration>,
    /// Requests per variant since the step began before the gate may pass.
    pub min_requests: u64,
    /// Time at a step after which too little data triggers `on_insufficient`.
    pub max_wait: Duration,
    /// What to do after `max_wait` with too little data.
    pub on_insufficient: OnInsufficient,
}

impl Ramp {
    /// The target traffic (the last step).
    pub fn target(&self) -> f64 {
        self.steps[self.steps.len() - 1]
    }
}
