//! Guardrails: per experiment × variant sliding windows, the evaluator that compares
//! every treatment with its control, and the rollback state that survives restarts.
//!
//! # Design
//! - The request path only calls [`window::Window::record`] (atomics) and reads
//!   [`VariantState::served_by_control`] (one atomic load). It never waits on the evaluator.
//! - State lives here, keyed by experiment and variant *name*, not in the compiled config,
//!   so a hot reload keeps windows and rollback decisions of experiments it keeps.
//! - Decisions (`rollback`, `pause`, `resume`) are written atomically to
//!   `[state] dir/decisions.json` (temp file, fsync, rename) before they are announced; at
//!   start-up they are read back, so a rollback survives a restart and a reload. A
//!   rolled-back variant is never re-enabled automatically: only `resume` clears it.
//! - A bandit experiment's table, period counters and weight history live here too
//!   ([`bandit`]), shared across reloads and persisted beside the decisions.
//! - The evaluator ([`evaluator`]) runs off the request path, on its own task; its cost per
//!   check depends on the number of variants and histogram buckets, not on traffic.

pub mod bandit;
pub mod decision;
pub mod evaluator;
pub mod ramp;
pub mod saved;
mod state;
pub mod window;

pub use decision::{Action, Decision, GuardrailKind};
pub use state::{
    unix_ms, write_atomic, ExperimentState, Guard, GuardError, GuardStatus, VariantState,
};
