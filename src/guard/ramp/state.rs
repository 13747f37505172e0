//! Where a ramp is: its step, the traffic served, when the step began, its status and
//! the transitions that led there. Pure: every change takes the time as an argument and
//! returns the [`Transition`] it made (the `ramp` event), so a simulated clock drives it
//! exactly as the real one does.

use super::gate::{GateNumbers, GateReport, GateVerdict};
use crate::config::{OnInsufficient, Ramp};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Transitions kept in the history (older ones are in the event log).
pub const HISTORY: usize = 100;

/// Two traffic shares closer than this are the same step (steps are written in the
/// config with a few decimals).
const SAME: f64 = 1e-9;

/// A ramp's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RampStatus {
    /// The gate is checked and advances the ramp when it passes.
    Running,
    /// Stopped at its step (`POST …/ramp/hold`, or `max_wait` with `on_insufficient =
    /// "hold"`); guardrails still act; `POST …/ramp/advance` moves it on.
    Holding,
    /// The last step passed its gate.
    Completed,
    /// A guardrail fired (or `max_wait` with `on_insufficient = "rollback"`): the
    /// treatments are served by control until `resume`, which restarts the step.
    RolledBack,
}

impl RampStatus {
    /// Every status, in the order `abgate_ramp_status` exports them.
    pub const ALL: [RampStatus; 4] = [
        RampStatus::Running,
        RampStatus::Holding,
        RampStatus::Completed,
        RampStatus::RolledBack,
    ];

    /// The word used in events, the admin API and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RampStatus::Running => "running",
            RampStatus::Holding => "holding",
            RampStatus::Completed => "completed",
            RampStatus::RolledBack => "rolled_back",
        }
    }
}

/// What a transition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RampAction {
    /// The ramp began at its first step.
    Start,
    /// Traffic grew to the next step.
    Advance,
    /// The last step passed: the ramp is done.
    Complete,
    /// Stopped at the step.
    Hold,
    /// The treatments were rolled back.
    Rollback,
    /// A resumed experiment restarts its step.
    Restart,
    /// A reload changed the plan: the traffic stays, the step is the first at or above it.
    Replan,
}

/// Who caused a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RampCause {
    /// The gate's verdict.
    Gate,
    /// `max_wait` elapsed with too little data (`on_insufficient`).
    MaxWait,
    /// An operator (admin API).
    Admin,
    /// A config reload.
    Reload,
    /// A rollback decided elsewhere (guardrail checks, operator, another sidecar).
    Decision,
    /// Another sidecar of the fleet.
    Fleet,
}

/// One transition: the `ramp` event, and an entry of the persisted history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// When.
    #[serde(with = "crate::rfc3339")]
    pub ts: SystemTime,
    /// Experiment.
    pub experiment: Arc<str>,
    /// What happened.
    pub action: RampAction,
    /// Why.
    pub cause: RampCause,
    /// Step before (1-based; 0 before the start).
    pub from_step: usize,
    /// Step after (1-based).
    pub to_step: usize,
    /// Traffic served after (share of the layer).
    pub traffic: f64,
    /// Status after.
    pub status: RampStatus,
    /// The gate's numbers, when the gate decided.
    pub gate: Option<GateNumbers>,
}

/// The state of one ramp, as persisted in `[state] dir`/`ramps.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RampState {
    /// Current step, 1-based: the first step of the plan at or above `traffic`.
    pub step: usize,
    /// Traffic served now (share of the layer). Only grows.
    pub traffic: f64,
    /// When the current step began (its hold and `max_wait` count from here).
    #[serde(with = "crate::rfc3339")]
    pub step_began: SystemTime,
    /// Status.
    pub status: RampStatus,
    /// The last [`HISTORY`] transitions, oldest first.
    pub history: Vec<Transition>,
    /// A fleet generation: each transition increments it, so sidecars keep the latest.
    #[serde(default)]
    pub generation: u64,
}

impl RampState {
    /// A ramp starting at its first step at `now`.
    pub fn start(experiment: &Arc<str>, ramp: &Ramp, now: SystemTime) -> (RampState, Transition) {
        let mut s = RampState {
            step: 1,
            traffic: ramp.steps[0],
            step_began: now,
            status: RampStatus::Running,
            history: Vec::new(),
            generation: 0,
        };
        let t = s.record(experiment, now, RampAction::Start, RampCause::Gate, 0, None);
        (s, t)
    }

    /// Time spent at the current step at `now` (zero if the clock went back).
    pub fn held(&self, now: SystemTime) -> Duration {
        now.duration_since(self.step_began).unwrap_or_default()
    }

    /// The 0-based index of the current step in `ramp` (clamped to the plan).
    pub fn index(&self, ramp: &Ramp) -> usize {
        self.step.clamp(1, ramp.steps.len()) - 1
    }

    /// Act on the gate's `report` at `now`: roll back on `fail`, advance on `pass`
    /// (unless holding), and after `max_wait` with too little data take the
    /// `on_insufficient` action. Returns the transition, if any.
    pub fn on_gate(
        &mut self,
        experiment: &Arc<str>,
        ramp: &Ramp,
        report: &GateReport,
        now: SystemTime,
    ) -> Option<Transition> {
        let gate = Some(report.numbers.clone());
        match (self.status, report.verdict()) {
            (RampStatus::Completed | RampStatus::RolledBack, _) => None,
            (_, GateVerdict::Fail) => {
                self.status = RampStatus::RolledBack;
                let from = self.step;
                Some(self.record(
                    experiment,
                    now,
                    RampAction::Rollback,
                    RampCause::Gate,
                    from,
                    gate,
                ))
            }
            (RampStatus::Holding, _) => None,
            (_, GateVerdict::Pass) => {
                Some(self.advance(experiment, ramp, now, RampCause::Gate, gate))
            }
            (_, GateVerdict::InsufficientData) if self.held(now) >= ramp.max_wait => {
                let from = self.step;
                Some(match ramp.on_insufficient {
                    OnInsufficient::Hold => {
                        self.status = RampStatus::Holding;
                        self.record(
                            experiment,
                            now,
                            RampAction::Hold,
                            RampCause::MaxWait,
                            from,
                            gate,
                        )
                    }
                    OnInsufficient::Rollback => {
                        self.status = RampStatus::RolledBack;
                        self.record(
                            experiment,
                            now,
                            RampAction::Rollback,
                            RampCause::MaxWait,
                            from,
                            gate,
                        )
                    }
                    OnInsufficient::Advance => {
                        self.advance(experiment, ramp, now, RampCause::MaxWait, gate)
                    }
                })
            }
            (_, GateVerdict::InsufficientData) => None,
        }
    }

    /// Grow the traffic to the first step above it (the step's timer restarts), or,
    /// at the last step, complete the ramp.
    pub fn advance(
        &mut self,
        experiment: &Arc<str>,
        ramp: &Ramp,
        now: SystemTime,
        cause: RampCause,
        gate: Option<GateNumbers>,
    ) -> Transition {
        let from = self.step;
        match ramp.steps.iter().position(|s| *s > self.traffic + SAME) {
            Some(next) => {
                self.step = next + 1;
                self.traffic = ramp.steps[next];
                self.step_began = now;
                self.status = RampStatus::Running;
                self.record(experiment, now, RampAction::Advance, cause, from, gate)
            }
            None => {
                self.status = RampStatus::Completed;
                self.record(experiment, now, RampAction::Complete, cause, from, gate)
            }
        }
    }

    /// Stop at the current step (an operator's hold). `None` unless running.
    pub fn hold(&mut self, experiment: &Arc<str>, now: SystemTime) -> Option<Transition> {
        if self.status != RampStatus::Running {
            return None;
        }
        self.status = RampStatus::Holding;
        let from = self.step;
        Some(self.record(
            experiment,
            now,
            RampAction::Hold,
            RampCause::Admin,
            from,
            None,
        ))
    }

    /// The treatments were rolled back by a decision taken elsewhere: the ramp stops.
    pub fn rolled_back(&mut self, experiment: &Arc<str>, now: SystemTime) -> Option<Transition> {
        if matches!(self.status, RampStatus::RolledBack | RampStatus::Completed) {
            return None;
        }
        self.status = RampStatus::RolledBack;
        let from = self.step;
        Some(self.record(
            experiment,
            now,
            RampAction::Rollback,
            RampCause::Decision,
            from,
            None,
        ))
    }

    /// The experiment was resumed after a rollback: the step starts again at `now`
    /// (its counts too), at the same traffic.
    pub fn restart(&mut self, experiment: &Arc<str>, now: SystemTime) -> Option<Transition> {
        if self.status != RampStatus::RolledBack {
            return None;
        }
        self.status = RampStatus::Running;
        self.step_began = now;
        let from = self.step;
        Some(self.record(
            experiment,
            now,
            RampAction::Restart,
            RampCause::Decision,
            from,
            None,
        ))
    }

    /// A reload changed the plan to `ramp`: the traffic stays (shrinking it would move
    /// units out) and the step becomes the first at or above it; the step's timer goes
    /// on. Past the last step the ramp is completed; a completed ramp given higher steps
    /// runs again. `None` when nothing changed.
    pub fn replan(
        &mut self,
        experiment: &Arc<str>,
        ramp: &Ramp,
        now: SystemTime,
    ) -> Option<Transition> {
        let from = self.step;
        let before = self.status;
        match ramp.steps.iter().position(|s| *s >= self.traffic - SAME) {
            Some(i) => {
                self.step = i + 1;
                if self.status == RampStatus::Completed {
                    self.status = RampStatus::Running;
                    self.step_began = now;
                }
            }
            None => {
                self.step = ramp.steps.len();
                if self.status != RampStatus::RolledBack {
                    self.status = RampStatus::Completed;
                }
            }
        }
        (from != self.step || before != self.status).then(|| {
            self.record(
                experiment,
                now,
                RampAction::Replan,
                RampCause::Reload,
                from,
                None,
            )
        })
    }

    /// Append a transition to the history (bounded) and return it.
    fn record(
        &mut self,
        experiment: &Arc<str>,
        now: SystemTime,
        action: RampAction,
        cause: RampCause,
        from_step: usize,
        gate: Option<GateNumbers>,
    ) -> Transition {
        self.generation += 1;
        let t = Transition {
            ts: now,
            experiment: experiment.clone(),
            action,
            cause,
            from_step,
            to_step: self.step,
            traffic: self.traffic,
            status: self.status,
            gate,
        };
        if self.history.len() >= HISTORY {
            self.history.remove(0);
        }
        self.history.push(t.clone());
        t
    }
}
