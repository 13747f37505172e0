//! Ramps: an experiment's traffic grown step by step (1% → 5% → 20% → 50%), each step
//! held until the guardrail gate passes.
//!
//! # Design
//! - **Nobody moves.** The experiment's bucket range is reserved up to the last step at
//!   config load; the request path serves the part of it the current step covers (one
//!   atomic load: [`crate::guard::ExperimentState::ramp_buckets`]). Traffic only grows,
//!   and the variant hash does not depend on the range, so a unit once in stays in, in
//!   the same variant.
//! - **The gate** ([`gate::gate`]) is a pure function of the counts since the step began
//!   ([`totals`]) and the time at the step; **the state** ([`state::RampState`]) changes
//!   only through methods that take the time and return the transition they made. Both
//!   run on a simulated clock in the tests exactly as on the real one.
//! - **Persistence.** [`store::RampStore`] writes `[state] dir`/`ramps.json` atomically
//!   after every transition (step, when it began, status, history with the gate's
//!   numbers). After a crash the ramp resumes its step and timer; the counts since the
//!   step began restart at zero (the gate needs `min_requests` again: the safe side).
//! - **Rollback** is a decision like any other (`App::decide`); the ramp then stops
//!   (`rolled_back`) until the experiment is resumed, which restarts the step.

pub mod gate;
pub mod state;
pub mod store;
pub mod totals;

pub use gate::{gate, GateNumbers, GateReason, GateReport, GateVerdict, StepCounts};
pub use state::{RampAction, RampCause, RampState, RampStatus, Transition};
pub use store::RampStore;

#[cfg(test)]
mod tests;
